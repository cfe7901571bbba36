#!/usr/bin/python3
# Figures for the apps family (issue 3), on the demo buildout app with two
# clients under a private supervisord (the same set-up as
# tests/integration/test_apps.py):
#   - a no-op deploy (nothing changed: no build, no restart, no fork);
#   - a configure after one changed ZEO address: deploy.cfg rendered,
#     buildout run, two clients restarted one after another; buildout's own
#     time is shown separately.
# Prints figures; never fails on timing.
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
os.environ.setdefault("AGENTD_BUILD", os.path.join(HERE, "..", "..", "build"))

from conftest import Agent  # noqa: E402
from apps_fixtures import BUILDOUT, CONF_DIR, Supervisord, answers, apps_stack, make_repo  # noqa: E402
from conftest import wait_for  # noqa: E402

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "10"))


def steps(a, run_id):
    return a.ctl_json("show", run_id)["steps"]


def main():
    tmp = tempfile.mkdtemp(prefix="agentd-bench-apps-")
    os.chmod(tmp, 0o755)
    sup = a = None
    try:
        repo = make_repo(tmp)
        os.makedirs(os.path.join(tmp, "a"))
        a = Agent(os.path.join(tmp, "a"), None, conf_extra={
            "supervisor_socket": os.path.join(tmp, "supervisor.sock"),
            "supervisor_conf_dir": CONF_DIR, "buildout_command": [BUILDOUT],
            # No network, no changes to this machine: say what would be installed.
            "package_install_command": ["echo", "would install"]})
        sup = Supervisord(tmp, a.root)
        a.write_stack(apps_stack(repo))
        t0 = time.monotonic()
        a.start()
        a.wait_runs(3, timeout=180)
        a.wait_idle(timeout=180)
        wait_for(lambda: answers(8081) and answers(8082), timeout=60, what="clients")
        first = time.monotonic() - t0
        dep = [r for r in a.runs() if r["event"] == "deploy"][0]
        print(f"apps: first start (setup, configure, deploy from git, buildout, 2 clients up): {first * 1000:.0f} ms "
              f"(deploy run {dep['duration_ms']:.0f} ms)")

        wall, run_ms = [], []
        for _ in range(ROUNDS):
            t = time.monotonic()
            a.ctl("run", "deploy", "--app", "plone_instances", "--wait", check=0)
            wall.append((time.monotonic() - t) * 1000)
            r = [r for r in a.runs() if r["event"] == "deploy"][0]
            assert r["changed"] == 0, r
            run_ms.append(r["duration_ms"])
        print(f"apps: no-op deploy of the demo app: run {statistics.median(run_ms):.1f} ms median "
              f"(min {min(run_ms):.1f}, max {max(run_ms):.1f}; {ROUNDS} rounds), "
              f"agentctl run --wait round trip {statistics.median(wall):.1f} ms median")

        conf_ms, build_ms, restart_ms = [], [], []
        for i in range(3):
            n = len(a.finished_runs())
            a.write_stack(apps_stack(repo, zeo_ip=f"10.9.1.{i + 10}"))
            a.wait_runs(n + 1, timeout=180)
            a.wait_idle(timeout=180)
            r = [r for r in a.runs() if r["event"] == "configure"][0]
            st = steps(a, r["id"])
            conf_ms.append(r["duration_ms"])
            build_ms.append(sum(s["duration_ms"] for s in st if s["target"] == "buildout"))
            restart_ms.append(sum(s["duration_ms"] for s in st
                                  if s["kind"] == "service" and s["target"].startswith("supervisor:plone_instances-")))
        print(f"apps: configure with one changed ZEO address (render + buildout + rolling restart of 2 clients): "
              f"{statistics.median(conf_ms):.0f} ms median of 3; of which buildout {statistics.median(build_ms):.0f} ms, "
              f"restarts {statistics.median(restart_ms):.0f} ms (supervisord's startsecs=1 per client), "
              f"agentd's own share {statistics.median(conf_ms) - statistics.median(build_ms) - statistics.median(restart_ms):.0f} ms")
    finally:
        if a:
            a.stop()
        if sup:
            sup.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
