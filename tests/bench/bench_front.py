#!/usr/bin/python3
"""Front-end figures (issues 5 and 12), printed, never asserted.

Starts the private front end of the integration tests (tests/integration/
front_env.py: Python backends on 127.0.0.2-4, varnishd, haproxy -W, nginx,
and agentd driving them), runs a request loop through nginx -> varnish
-> haproxy, and makes 20 membership changes (member app3 comes online, then
goes offline, ten times). Prints, per agentd build:

  - stack edit -> HAProxy serving the new member: from just before the stack
    file is renamed into place to the first request app3 answers (the loop
    sends one request at a time, on a new connection each);
  - stack edit -> configure run started and finished (the run's own
    timestamps, ms): at "finished" haproxy was reloaded, the new VCL is
    active in varnishd and nginx's site was checked (unchanged here), i.e.
    the front end converged (design.md §10: <= 400 ms);
  - the median duration of the run's front-end steps (where the time goes);
  - requests served and failed during the 20 changes.

Usage: bench_front.py [--build DIR]... [--rounds N] [--varnish-param NAME=VALUE]... [--no-loop]
Several --build (e.g. the old main built with `make BUILD=build-old` and
this tree's build) are measured in the same run, one after the other, N
rounds each (interleaved), and printed side by side. --varnish-param is
given to the test's varnishd as -p (e.g. a cc_command at -O1: varnishd
compiles each VCL with the C compiler, and its default -O2 is most of a
vcl.load). --no-loop makes the changes without the request loop (which
takes most of this machine's two cores from the compiles): no "serving"
figure then.
"""
import argparse
import datetime
import math
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
os.environ.setdefault("AGENTD_BUILD", os.path.join(HERE, "..", "..", "build"))

import conftest  # noqa: E402
from conftest import wait_for  # noqa: E402
from front_env import Front, Loop, stack_doc  # noqa: E402

CHANGES = 20


def p95(xs):
    xs = sorted(xs)
    return xs[max(0, math.ceil(0.95 * len(xs)) - 1)]


def fmt(xs):
    if not xs:
        return "n/a"
    return (f"median {statistics.median(xs) * 1000:4.0f} ms, p95 {p95(xs) * 1000:4.0f} ms, "
            f"min {min(xs) * 1000:4.0f}, max {max(xs) * 1000:4.0f} (n={len(xs)})")


def ts(s):
    """A run's RFC 3339 timestamp (UTC, ms) as seconds since the epoch."""
    return datetime.datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc).timestamp()


def use_build(build):
    conftest.AGENTD = os.path.join(build, "agentd")
    conftest.AGENTCTL = os.path.join(build, "agentctl")


class NoLoop:
    ok = 0
    failed = []

    def __enter__(self):
        return self

    def __exit__(self, *a):
        pass

    def wait_more(self, n):
        pass


def one_round(build, varnish_params, res, loop_on=True):
    use_build(build)
    f = Front()
    try:
        f.start_backends()
        f.start_varnish(extra=[a for p in varnish_params for a in ("-p", p)])
        a = f.start_agent(stack_doc(["app1", "app2"]))
        a.wait_runs(3, timeout=60)
        f.start_haproxy_nginx()
        with Loop(f) if loop_on else NoLoop() as loop:
            loop.wait_more(50)
            ok0, failed0 = loop.ok, len(loop.failed)
            t_start = time.monotonic()
            for i in range(CHANGES):
                online = ["app1", "app2", "app3"] if i % 2 == 0 else ["app1", "app2"]
                n = len(a.finished_runs())
                hits = f.backends.member_hits("app3")
                t0, w0 = time.monotonic(), time.time()
                a.write_stack(stack_doc(online))
                if i % 2 == 0 and loop_on:
                    wait_for(lambda: f.backends.member_hits("app3") > hits, timeout=60, what="app3 serving",
                             interval=0.001)
                    res["serving"].append(time.monotonic() - t0)
                # The figures come from the run's timestamps: poll gently,
                # so that agentctl does not compete with the run for CPU.
                run = wait_for(lambda: len(a.finished_runs()) > n and a.finished_runs()[0], timeout=60,
                               what="the configure run", interval=0.05)
                res["started"].append(ts(run["started"]) - w0)
                res["finished"].append(ts(run["finished"]) - w0)
                res["statuses"].append(run["status"])
                for s in a.ctl_json("show", str(run["id"]))["steps"]:
                    if s.get("status") in ("changed", "unchanged", "failed"):
                        # A VCL's target is its name, new in each run.
                        target = "" if s["kind"] == "varnish-vcl" else os.path.basename(s["target"] or "")
                        key = f"{s.get('recipe') or '-'}: {s['kind']} {target}"
                        res["steps"].setdefault(key, []).append(s.get("duration_ms") or 0)
                a.wait_idle()
                loop.wait_more(10)
            res["elapsed"] += time.monotonic() - t_start
            res["served"] += loop.ok - ok0
            res["failed"] += len(loop.failed) - failed0
            res["failures"] += loop.failed[failed0:failed0 + 3]
    finally:
        f.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", action="append", help="an agentd build directory (repeatable)")
    ap.add_argument("--rounds", type=int, default=1, help=f"rounds of {CHANGES} changes per build")
    ap.add_argument("--varnish-param", action="append", default=[], help="NAME=VALUE for the test varnishd")
    ap.add_argument("--no-loop", action="store_true", help="no request loop during the changes")
    args = ap.parse_args()
    builds = args.build or [os.environ["AGENTD_BUILD"]]
    results = {b: {"serving": [], "started": [], "finished": [], "statuses": [], "steps": {}, "elapsed": 0.0,
                   "served": 0, "failed": 0, "failures": []} for b in builds}
    for _ in range(args.rounds):
        for b in builds:
            one_round(b, args.varnish_param, results[b], loop_on=not args.no_loop)
    print("front end (nginx -> varnish -> haproxy -> 2-3 members x 2 clients, loopback)")
    if args.varnish_param:
        print("  varnishd -p " + " -p ".join(args.varnish_param))
    for b in builds:
        r = results[b]
        print(f"\n[{b}]")
        print(f"  stack edit -> haproxy serving the new member:      {fmt(r['serving'])}")
        print(f"  stack edit -> configure run started:               {fmt(r['started'])}")
        print(f"  stack edit -> front end converged (run finished):  {fmt(r['finished'])}")
        print("  steps (median ms):")
        for k, v in r["steps"].items():
            if statistics.median(v) >= 1:
                print(f"    {statistics.median(v):6.0f}  {k}")
        ok = r["statuses"].count("success")
        print(f"  {len(r['statuses'])} membership changes in {r['elapsed']:.1f} s"
              f"{'' if args.no_loop else ' under a request loop'}: "
              f"{r['served']} requests served, {r['failed']} failed; configure runs: {ok} succeeded, "
              f"{len(r['statuses']) - ok} other")
        if r["failures"]:
            print("  first failures:", r["failures"][:3])


if __name__ == "__main__":
    main()
