#!/usr/bin/python3
"""Front-end figures (issue 5), printed, never asserted.

Starts the private front end of the integration tests (tests/integration/
front_env.py: Python backends on 127.0.0.2-4, varnishd, haproxy -W, nginx,
and build/agentd driving them), runs a request loop through nginx -> varnish
-> haproxy, and makes 20 membership changes (member app3 comes online, then
goes offline, ten times). Prints:

  - stack edit -> HAProxy serving the new member: from just before the stack
    file is renamed into place to the first request app3 answers (the loop
    sends one request at a time, on a new connection each);
  - stack edit -> configure run finished (agentd's side of it);
  - requests served and failed during the 20 changes.
"""
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
os.environ.setdefault("AGENTD_BUILD", os.path.join(HERE, "..", "..", "build"))

from conftest import wait_for  # noqa: E402
from front_env import Front, Loop, stack_doc  # noqa: E402

CHANGES = 20


def fmt(xs):
    if not xs:
        return "n/a"
    xs = sorted(xs)
    return (f"median {statistics.median(xs) * 1000:.0f} ms, min {xs[0] * 1000:.0f} ms, "
            f"max {xs[-1] * 1000:.0f} ms (n={len(xs)})")


def main():
    f = Front()
    try:
        f.start_backends()
        f.start_varnish()
        a = f.start_agent(stack_doc(["app1", "app2"]))
        a.wait_runs(3, timeout=60)
        f.start_haproxy_nginx()
        to_serving, to_run = [], []
        with Loop(f) as loop:
            loop.wait_more(50)
            ok0, failed0 = loop.ok, len(loop.failed)
            t_start = time.monotonic()
            for i in range(CHANGES):
                online = ["app1", "app2", "app3"] if i % 2 == 0 else ["app1", "app2"]
                n = len(a.finished_runs())
                hits = f.backends.member_hits("app3")
                t0 = time.monotonic()
                a.write_stack(stack_doc(online))
                if i % 2 == 0:
                    wait_for(lambda: f.backends.member_hits("app3") > hits, timeout=60, what="app3 serving",
                             interval=0.001)
                    to_serving.append(time.monotonic() - t0)
                wait_for(lambda: len(a.finished_runs()) > n, timeout=60, what="the configure run", interval=0.005)
                to_run.append(time.monotonic() - t0)
                a.wait_idle()
                loop.wait_more(10)
            elapsed = time.monotonic() - t_start
            served, failed = loop.ok - ok0, len(loop.failed) - failed0
        statuses = [r["status"] for r in a.finished_runs()[:CHANGES]]
        print("front end (nginx -> varnish -> haproxy -> 2-3 members x 2 clients, loopback)")
        print(f"  stack edit -> haproxy serving the new member: {fmt(to_serving)}")
        print(f"  stack edit -> configure run finished:         {fmt(to_run)}")
        print(f"  {CHANGES} membership changes in {elapsed:.1f} s under a request loop: "
              f"{served} requests served, {failed} failed")
        print(f"  configure runs: {statuses.count('success')} succeeded, "
              f"{len(statuses) - statuses.count('success')} other")
        if loop.failed:
            print("  first failures:", loop.failed[:3])
    finally:
        f.close()


if __name__ == "__main__":
    main()
