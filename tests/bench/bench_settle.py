#!/usr/bin/python3
# Settling's figures (design.md §3, issue 11 kind 1): a lone stack change
# after a quiet period -> its configure run started (the leading edge, target
# <= 50 ms), from time.time() just before rename(2) to the run's "started"
# timestamp (1 ms resolution); and the runs that bursts give: ten edits 20 ms
# apart, and a member flapping every 100 ms for 3 s (settle 0.2, settle_max
# 1). Figures only: it never fails on them. AGENTD_BUILD picks the build
# (default build/), so the same script measures a tree before and after.
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))

import conftest  # noqa: E402


def rfc3339(s):
    return datetime.strptime(s.replace("Z", "+0000"), "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()


def write(a, stack):
    t = time.time()
    a.write_stack(stack)
    return t


def configures(a, after):
    return [r for r in a.runs() if r["event"] == "configure" and r["id"] > after]


def main():
    samples = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    tmp = tempfile.mkdtemp(prefix="agentd-bench-settle-")
    os.chmod(tmp, 0o755)
    stack = conftest.simple_stack()
    a = conftest.Agent(tmp, stack, conf_extra={"settle": 0.2, "settle_max": 1})
    out = {}
    try:
        a.start()
        a.wait_runs(3)
        a.wait_idle()
        lat = []
        for i in range(samples):
            a.wait_idle()
            time.sleep(0.3)  # a quiet period longer than settle: the case measured
            last = a.runs()[0]["id"]
            stack["custom_value"] = i
            t = write(a, stack)
            run = conftest.wait_for(lambda: [r for r in configures(a, last) if r.get("started")],
                                    what="the run", timeout=10)[0]
            lat.append((rfc3339(run["started"]) - t) * 1000)
        out["lone_change_run_started_ms"] = {"median": round(statistics.median(lat), 1),
                                             "max": round(max(lat), 1), "n": len(lat)}
        a.wait_idle()
        time.sleep(0.3)
        last = a.runs()[0]["id"]
        for i in range(10):
            stack["custom_value"] = 1000 + i
            write(a, stack)
            time.sleep(0.02)
        conftest.wait_for(lambda: a.status()["applied_revision"] == a.status()["source"]["stack_revision"],
                          what="the burst applied")
        a.wait_idle()
        out["ten_edits_20ms_configure_runs"] = len(configures(a, last))
        time.sleep(0.3)
        last = a.runs()[0]["id"]
        web = stack["opsworks"]["layers"]["web"]["instances"]
        for i in range(30):
            web["app2"] = {"private_ip": "10.0.0.2", "status": "online" if i % 2 == 0 else "stopped"}
            write(a, stack)
            time.sleep(0.1)
        conftest.wait_for(lambda: a.status()["applied_revision"] == a.status()["source"]["stack_revision"],
                          what="the flapping applied")
        a.wait_idle()
        out["flapping_3s_100ms_configure_runs"] = len(configures(a, last))
    finally:
        a.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
