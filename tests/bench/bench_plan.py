#!/usr/bin/python3
# Memory and time of agentd answering `plan` for an unprivileged caller (issue 9
# kind 7, break3 finding 5): a valid 16 MiB stack whose agent.files holds one
# file of 8.4 million "\n" (absent on disk), planned by nobody, once and then by
# 8 callers at once that never read their replies. Prints for each of two
# plans the resident size before, the peak (VmHWM, reset before it) and what
# is kept afterwards (the first plan also gives back what the first run
# left), the reply's size and root's `status` latency while the 8
# replies are pending. Figures only: it never fails on them. AGENTD_BUILD picks
# the build (default build/), so the same script measures a tree before and
# after a change.
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))

import conftest  # noqa: E402


def status_kb(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def big_stack():
    st = conftest.simple_stack()
    st["agent"]["layers"]["web"]["configure"] = ["files"]
    n = (16 * 1024 * 1024 - 4096) // 2
    st["agent"]["files"] = {"web": [{"path": "/etc/big.txt", "content": "\n" * n}]}
    return st


def nobody_cmd(a, *args):
    pw = pwd.getpwnam("nobody")
    return ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--clear-groups", conftest.AGENTCTL,
            "--socket", a.sock] + [str(x) for x in args]



def reset_peak(pid):
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")


def main():
    tmp = tempfile.mkdtemp(prefix="agentd-bench-plan-")
    os.chmod(tmp, 0o755)
    a = None
    socks = []
    try:
        a = conftest.Agent(tmp, json.dumps(big_stack()))
        a.start()
        a.wait_idle(timeout=300)
        pid = a.proc.pid
        big = os.path.join(a.root, "etc/big.txt")
        if os.path.exists(big):
            os.unlink(big)
        print(f"bench_plan ({conftest.AGENTD}): 16 MiB stack, one file of {len(big_stack()['agent']['files']['web'][0]['content'])} "
              f"newlines, absent on disk")

        for i in (1, 2):
            before = status_kb(pid, "VmRSS")
            reset_peak(pid)
            t = time.monotonic()
            p = subprocess.run(nobody_cmd(a, "--json", "plan", "configure", "--layer", "web"), capture_output=True,
                               text=True, timeout=300)
            took = time.monotonic() - t
            peak = status_kb(pid, "VmHWM")
            kept = status_kb(pid, "VmRSS")
            diff = ""
            if p.returncode == 0:
                for s in json.loads(p.stdout)["steps"]:
                    if s["target"] == "/etc/big.txt":
                        diff = s.get("diff", "")
            print(f"bench_plan: nobody plan {i}: rc {p.returncode}, reply {len(p.stdout)} bytes, {took:.2f} s; "
                  f"diff {diff[:100]!r}")
            print(f"bench_plan: nobody plan {i}: RSS before {before / 1024:.1f} MiB, peak (VmHWM) "
                  f"{peak / 1024:.1f} MiB, kept {kept / 1024:.1f} MiB")

        reset_peak(pid)
        for _ in range(8):
            s = conftest.nobody_socket(a)
            s.sendall(json.dumps({"method": "plan", "params": {"event": "configure", "layer": "web"}}).encode()
                      + b"\n")
            socks.append(s)
        t = time.monotonic()
        st = a.ctl("status")
        lat = time.monotonic() - t
        peak8 = status_kb(pid, "VmHWM")
        kept8 = status_kb(pid, "VmRSS")
        print(f"bench_plan: 8 unread nobody plans: root status rc {st.returncode} in {lat:.2f} s, "
              f"peak (VmHWM) {peak8 / 1024:.1f} MiB, RSS {kept8 / 1024:.1f} MiB")
        return 0
    finally:
        for s in socks:
            s.close()
        if a:
            a.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
