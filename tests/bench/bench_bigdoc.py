#!/usr/bin/python3
# Memory of agentd while it receives the document of issue 9 kind 7: 16 MiB
# (just under STACK_MAX_BYTES) of small integers, 8 million values. Prints the
# resident floor (idle, small stack), the peak (VmHWM) once the document was
# handled, and what is kept after switching back to the small stack.
# Figures only: it never fails on them. AGENTD_BUILD picks the build (default
# build/), so the same script measures a tree before and after a change.
import json
import os
import sys
import tempfile
import shutil

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))

import conftest  # noqa: E402


def status_kb(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def big_doc(good):
    bad = json.loads(json.dumps(good))
    bad["numbers"] = [0]
    text = json.dumps(bad)
    head, tail = text.split("[0]", 1)
    n = (16 * 1024 * 1024 - len(text) - 16) // 2
    return head + "[" + "1," * n + "1]" + tail


def main():
    tmp = tempfile.mkdtemp(prefix="agentd-bench-bigdoc-")
    os.chmod(tmp, 0o755)
    a = None
    try:
        good = conftest.simple_stack()
        a = conftest.Agent(tmp, good)
        a.start()
        a.wait_runs(3)
        a.wait_idle()
        pid = a.proc.pid
        floor = status_kb(pid, "VmRSS")
        rev = a.status()["source"]["stack_revision"]

        a.write_stack(big_doc(good))
        # Handled when the source reports an error (refused) or a new revision (accepted).
        src = conftest.wait_for(lambda: (lambda s: (s["error"] or s["stack_revision"] != rev) and s)(
            a.status()["source"]), timeout=120, what="the big document to be handled")
        a.wait_idle(timeout=300)
        peak = status_kb(pid, "VmHWM")
        outcome = f"refused: {src['error']}" if src["error"] else "accepted"

        a.write_stack(good)
        conftest.wait_for(lambda: a.status()["source"]["stack_revision"] == rev and
                          a.status()["source"]["error"] is None, timeout=60, what="the small stack again")
        a.wait_idle(timeout=300)
        kept = status_kb(pid, "VmRSS")
        print(f"bench_bigdoc ({conftest.AGENTD}): 16 MiB of small integers {outcome}")
        print(f"bench_bigdoc: RSS floor {floor / 1024:.1f} MiB, peak (VmHWM) {peak / 1024:.1f} MiB, "
              f"kept after the small stack again {kept / 1024:.1f} MiB")
        return 0
    finally:
        if a:
            a.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
