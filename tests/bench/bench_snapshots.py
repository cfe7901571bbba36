#!/usr/bin/python3
# ebs_snapshots figures against the local EC2 endpoint (its SigV4 check by
# botocore included, tests/integration/ec2_fixture.py): the run time of one
# job (2 volumes, 20 existing snapshots of ours per volume, keep 15, pages of
# 2), as `agentctl run maintenance --recipe ebs_snapshots --wait` end to end
# and as the step's own duration_ms, and the requests per job by Action
# (DescribeSnapshots calls per volume's listing with pagination). Prints
# figures, never fails on timing.
import datetime
import os
import shutil
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))

import conftest  # noqa: E402
from ec2_fixture import Ec2Fixture  # noqa: E402
from test_ebs_snapshots import KEY, SECRET, VOLS, snap_stack  # noqa: E402

N = int(os.environ.get("BENCH_SNAPSHOT_RUNS", "10"))
EXISTING = int(os.environ.get("BENCH_SNAPSHOT_EXISTING", "20"))
PAGE = int(os.environ.get("BENCH_SNAPSHOT_PAGE", "2"))


def seed(ec2):
    """EXISTING completed snapshots of ours per volume, one a day back."""
    ec2.snapshots = []
    now = datetime.datetime.utcnow()
    for vol, _d, _m in VOLS:
        for day in range(EXISTING):
            ec2.add(vol, start=now - datetime.timedelta(days=day + 1),
                    tags={"agentd:stack": "prod", "agentd:job": "ebs_snapshots"})


def main():
    tmp = tempfile.mkdtemp(prefix="agentd-bench-snap-")
    os.chmod(tmp, 0o755)
    a = None
    try:
        with Ec2Fixture(keys={KEY: (SECRET, None)}, page=PAGE) as ec2:
            a = conftest.Agent(tmp, None, conf_extra={"ec2_endpoint": ec2.url, "imds_endpoint": "http://127.0.0.1:9"})
            a.start()
            a.ctl("pause", "bench", check=0)
            a.write_stack(snap_stack({"aws_key": KEY, "aws_secret": SECRET, "region": "eu-west-1", "keep": 15}))
            conftest.wait_for(lambda: a.status()["source"]["stack_revision"], 10, "the stack")
            walls, steps, counts = [], [], []
            for _ in range(N):
                seed(ec2)
                ec2.reset_counts()
                t0 = time.monotonic()
                p = a.ctl("run", "maintenance", "--recipe", "ebs_snapshots", "--wait", timeout=120)
                walls.append((time.monotonic() - t0) * 1000)
                if p.returncode != 0:
                    print(p.stdout, p.stderr)
                    return 1
                info = a.ctl_json("show", str(a.runs()[0]["id"]))
                steps.append(info["steps"][0]["duration_ms"])
                counts.append(dict(ec2.counts))
            print(f"bench_snapshots: {len(VOLS)} volumes, {EXISTING} existing snapshots each, keep 15, "
                  f"DescribeSnapshots pages of {PAGE}, {N} runs")
            print(f"  run (agentctl, end to end): median {statistics.median(walls):.1f} ms, "
                  f"min {min(walls):.1f}, max {max(walls):.1f}")
            print(f"  ec2_snapshot step: median {statistics.median(steps):.1f} ms, "
                  f"min {min(steps)}, max {max(steps)}")
            c = counts[-1]
            total = sum(c.values())
            print(f"  requests per job: {total} ({', '.join(f'{k} {v}' for k, v in sorted(c.items()))})")
            print(f"  DescribeSnapshots per volume's listing: {c.get('DescribeSnapshots', 0) / len(VOLS):.0f} "
                  f"(ceil({EXISTING}/{PAGE}) pages), per deleted snapshot: "
                  f"{c.get('DescribeSnapshots', 0) / max(1, c.get('DeleteSnapshot', 0)):.2f}")
            print(f"  per request: {statistics.median(steps) / total:.2f} ms")
    finally:
        if a:
            a.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
