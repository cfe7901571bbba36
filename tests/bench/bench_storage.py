#!/usr/bin/python3
# Storage figures: the cost of a converged `configure` whose only work is
# checking one mounted EBS volume (a loop device with ext4 under a temporary
# root), and of the first mount (probe + mkfs + mount). Runs agentd in a
# private mount namespace; prints figures, never fails on timing.
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))

import conftest  # noqa: E402
from storage_helpers import VOLID, Loop, namespaced, volume_stack  # noqa: E402

N = int(os.environ.get("BENCH_STORAGE_RUNS", "20"))


def main():
    if os.geteuid() != 0:
        print("bench_storage: skipped (needs root for loop devices and mounts)")
        return 0
    tmp = tempfile.mkdtemp(prefix="agentd-bench-storage-")
    os.chmod(tmp, 0o755)
    loop = None
    a = None
    try:
        loop = Loop(tmp, "vol")
        conftest.AGENTD = namespaced(tmp)
        sub = os.path.join(tmp, "a")
        os.makedirs(sub)
        a = conftest.Agent(sub, volume_stack([{"volume_id": VOLID, "mount_point": "/data", "fstype": "ext4",
                                                "mkfs": True}]))
        loop.node_in(a.root, "nvme-Amazon_Elastic_Block_Store_vol" + VOLID[4:])
        a.start()
        a.wait_runs(3, timeout=120)
        a.wait_idle(timeout=120)
        setup = [r for r in a.runs() if r["event"] == "setup"][0]
        vol = [s for s in a.ctl_json("show", setup["id"])["steps"] if s["kind"] == "volume"][0]
        print(f"bench_storage: first setup: volume step (find, probe, mkfs ext4 320 MB, mount, fstab) "
              f"{vol['duration_ms']:.1f} ms")
        step_ms, run_ms, wall_ms = [], [], []
        for _ in range(N):
            t0 = time.monotonic()
            p = a.ctl("run", "configure", "--wait")
            wall_ms.append((time.monotonic() - t0) * 1000)
            if p.returncode != 0:
                print("bench_storage: configure failed:", p.stdout, p.stderr)
                return 0
            r = a.runs()[0]
            run_ms.append(r.get("duration_ms") or 0.0)
            info = a.ctl_json("show", r["id"])
            step_ms.append([s for s in info["steps"] if s["kind"] == "volume"][0]["duration_ms"])
        print(f"bench_storage: no-op volume step (mounted, fstab in place), median of {N}: "
              f"{statistics.median(step_ms):.2f} ms (min {min(step_ms):.2f}, max {max(step_ms):.2f})")
        print(f"bench_storage: no-op configure run, median: {statistics.median(run_ms):.2f} ms; "
              f"agentctl run --wait round trip median: {statistics.median(wall_ms):.1f} ms")
    finally:
        if a:
            a.stop()
        if loop:
            loop.detach()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
