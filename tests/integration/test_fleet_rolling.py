"""Rolling deploys on etcd (design.md §9, issue 12): agent.rolling.<app>
takes a slot of the semaphore deploy-<app> before the deploy's first step and
gives it back once the health check passed; a failed deploy keeps its slot,
so a bad release stops at max_parallel instances. Without etcd the gates are
not taken.

Five agents on one real etcd deploy one app whose custom recipe appends its
start and end times to a shared file; the overlap is computed from it."""
import json
import os
import sys

from conftest import wait_for
from etcd_fixture import etcd, etcd_source  # noqa: F401 (fixture)

PREFIX = "/agentd/roll"
N = 5
SLOTS = 2

RECIPE = r"""
import json, os, sys, time
doc = json.load(sys.stdin)
rev = doc["deploy"]["site"]["scm"]["revision"]
host = os.environ["AGENT_INSTANCE"]
with open(sys.argv[1], "a") as f:
    f.write("start %s %s %.6f\n" % (host, rev, time.time()))
time.sleep(float(sys.argv[2]))
with open(sys.argv[1], "a") as f:
    f.write("end %s %s %.6f\n" % (host, rev, time.time()))
sys.exit(1 if rev == "bad" else 0)
"""


def stack(tmp, rev, slots=SLOTS, sleep=0.3, health=None):
    script = os.path.join(tmp, "deploy.py")
    if not os.path.exists(script):
        with open(script, "w") as f:
            f.write(RECIPE)
    return {
        "opsworks": {"stack": {"name": "roll"}, "layers": {"web": {"name": "Web", "instances": {}}}},
        "deploy": {"site": {"scm": {"scm_type": "git", "repository": "https://example.com/x.git",
                                    "revision": rev}}},
        "agent": {
            "recipes": {
                "rel": {"command": [sys.executable, script, os.path.join(tmp, "times"), str(sleep)]},
                "noop": {"command": ["/bin/true"]},
            },
            "layers": {"web": {"setup": ["noop"], "configure": ["noop"], "deploy": ["rel"]}},
            "rolling": {"site": {"max_parallel": slots,
                                 "health": health or {"command": ["/bin/true"], "timeout": 5}}},
        },
    }


def times(tmp, rev):
    """[(host, start, end or None)] of the deploys of rev, from the shared file."""
    path = os.path.join(tmp, "times")
    runs = {}
    order = []
    if not os.path.exists(path):
        return []
    with open(path) as f:
        for line in f:
            what, host, r, t = line.split()
            if r != rev:
                continue
            if what == "start":
                order.append([host, float(t), None])
                runs[host] = order[-1]
            else:
                runs[host][2] = float(t)
    return [tuple(x) for x in order]


def max_overlap(spans):
    ev = []
    for _, s, e in spans:
        ev.append((s, 1))
        ev.append((e if e is not None else float("inf"), -1))
    ev.sort(key=lambda x: (x[0], x[1]))  # an end before a start at the same instant
    cur = best = 0
    for _, d in ev:
        cur += d
        best = max(best, cur)
    return best


def fleet(make_agent, etcd, tmp, n=N):  # noqa: F811
    agents = []
    for i in range(n):
        a = make_agent(conf_extra={"instance": f"h{i}", "layers": ["web"], "lease_ttl": 2,
                                   "watch_timeout": 5, "settle": 0.05, "settle_max": 1},
                       source=etcd_source(etcd, PREFIX))
        agents.append(a.start())
    return agents


def deploys_of(a, rev_runs_after):
    return [r for r in a.runs() if r["event"] == "deploy" and r["id"] > rev_runs_after.get(a.conf["instance"], 0)]


def test_rolling_two_at_a_time_and_a_bad_release_stops_at_two(make_agent, etcd, tmpdir_agent):  # noqa: F811
    etcd.put(PREFIX + "/stack", stack(tmpdir_agent, "r1"))
    agents = fleet(make_agent, etcd, tmpdir_agent)
    # First start: setup, configure and the deploy of r1, two at a time too.
    for a in agents:
        wait_for(lambda: any(r["event"] == "deploy" and r["status"] == "success" for r in a.runs()), 20,
                 "the first deploy of %s" % a.conf["instance"])
    for a in agents:
        a.wait_idle(20)
    first = times(tmpdir_agent, "r1")
    assert len(first) >= N and max_overlap(first) <= SLOTS, first
    last_id = {a.conf["instance"]: max(r["id"] for r in a.runs()) for a in agents}

    # One stack put of a new revision: every agent deploys it, at most two at once.
    etcd.put(PREFIX + "/stack", stack(tmpdir_agent, "r2"))
    seen_waiting = []

    def all_done():
        for a in agents:
            for r in deploys_of(a, last_id):
                if r["status"] == "waiting":
                    seen_waiting.append(r)
        return all(any(r["status"] == "success" for r in deploys_of(a, last_id)) for a in agents)
    wait_for(all_done, 30, "every agent's deploy of r2", interval=0.05)
    spans = times(tmpdir_agent, "r2")
    assert sorted(h for h, _, _ in spans) == sorted(a.conf["instance"] for a in agents), spans
    assert max_overlap(spans) <= SLOTS, spans
    # With 5 agents and 2 slots some must have waited, and said for what.
    assert seen_waiting, "no deploy was ever seen waiting"
    w = seen_waiting[0]["waiting_for"]
    # "holders" is absent until the first ranking, never empty.
    assert w["semaphore"] == "deploy-site" and 1 <= len(w.get("holders", ["?"])) <= SLOTS, w
    assert all(1 <= len(r["waiting_for"].get("holders", ["?"])) <= SLOTS for r in seen_waiting), seen_waiting
    for a in agents:
        a.wait_idle(20)
    assert etcd.get_prefix(PREFIX + "/semaphores/deploy-site/") == {}  # every slot given back

    # A failing release: exactly two instances run it (and keep failing on
    # retries, holding their slots); the three others never start it.
    last_id = {a.conf["instance"]: max(r["id"] for r in a.runs()) for a in agents}
    etcd.put(PREFIX + "/stack", stack(tmpdir_agent, "bad"))

    def two_failed_three_waiting():
        failed = [a for a in agents if any(r["status"] == "failed" for r in deploys_of(a, last_id))]
        waiting = [a for a in agents
                   if ((a.status().get("current_run") or {}).get("waiting_for") or {}).get("holders")]
        return len(failed) == SLOTS and len(waiting) == N - SLOTS and (failed, waiting)
    failed, waiting = wait_for(two_failed_three_waiting, 30, "2 failed deploys and 3 waiting", interval=0.05)
    bad = times(tmpdir_agent, "bad")
    assert sorted({h for h, _, _ in bad}) == sorted(a.conf["instance"] for a in failed), bad
    held = etcd.get_prefix(PREFIX + "/semaphores/deploy-site/")
    by_rev = [v.decode() for v, _, _ in sorted(held.values(), key=lambda x: x[1])]
    assert sorted(by_rev[:SLOTS]) == sorted(a.conf["instance"] for a in failed), by_rev
    for a in waiting:
        cur = a.status()["current_run"]
        assert cur["waiting_for"]["semaphore"] == "deploy-site"
        assert sorted(cur["waiting_for"]["holders"]) == sorted(x.conf["instance"] for x in failed), cur
        assert cur["event"] == "deploy" and cur["app"] == "site"
    # Still nobody else started after the failures were retried.
    assert {h for h, _, _ in times(tmpdir_agent, "bad")} == {a.conf["instance"] for a in failed}

    # clear-failed gives a kept slot back: a waiter starts (and fails too).
    wait_for(lambda: failed[0].status()["current_run"] is None, 15, "the failed instance between retries",
             interval=0.02)
    failed[0].ctl("clear-failed", check=0)
    wait_for(lambda: len({h for h, _, _ in times(tmpdir_agent, "bad")}) == SLOTS + 1, 15,
             "a third instance to take the freed slot")


def test_rolling_without_etcd_takes_no_gate(make_agent, tmpdir_agent):
    s = stack(tmpdir_agent, "r1", slots=1, sleep=0)
    s["opsworks"]["layers"]["web"]["instances"] = {"app1": {"private_ip": "10.0.0.1", "status": "online"}}
    s["agent"]["recipes"]["job"] = {"command": ["/bin/sh", "-c", "echo ran >> %s/job" % tmpdir_agent],
                                    "singleton": True}
    a = make_agent(s).start()
    a.wait_idle(20)
    dep = [r for r in a.runs() if r["event"] == "deploy"]
    assert dep and dep[0]["status"] == "success", dep
    info = a.ctl_json("show", dep[0]["id"])
    assert [st["kind"] for st in info["steps"]] == ["exec", "health"], info
    assert "waiting_for" not in info
    # The plan names the gate it would take with etcd.
    plan = a.ctl_json("plan", "deploy", "--app", "site")
    assert plan["gate"] == {"semaphore": "deploy-site", "slots": 1}, plan
    # ... and what its health step checks.
    health = plan["steps"][-1]
    assert health["kind"] == "health" and health["action"] == "check", plan
    assert health["message"] == "/bin/true exits 0 within 5 s", health
    # A singleton job runs at once, alone; maintenance needs its job.
    p = a.ctl("run", "maintenance", "--recipe", "job", "--wait")
    assert p.returncode == 0, p.stdout + p.stderr
    assert open(os.path.join(tmpdir_agent, "job")).read() == "ran\n"
    runs = a.runs()
    assert runs[0]["event"] == "maintenance" and runs[0]["recipe"] == "job" and runs[0]["trigger"] == "ctl"
    p = a.ctl("run", "maintenance")
    assert p.returncode == 2 and "--recipe" in p.stderr, p.stderr
    p = a.ctl("run", "maintenance", "--recipe", "nope")
    assert p.returncode == 1 and '"nope"' in (p.stdout + p.stderr), p.stdout + p.stderr
    p = a.ctl("run", "deploy", "--recipe", "job")
    assert p.returncode == 2, p.stderr
    # A health check that never passes fails the deploy after its timeout, with its last answer.
    s["agent"]["rolling"]["site"]["health"] = {"command": ["/bin/sh", "-c", "echo not yet; exit 3"], "timeout": 1}
    rev = a.status()["source"]["stack_revision"]
    a.write_stack(s)
    wait_for(lambda: a.status()["source"]["stack_revision"] != rev, 10, "the new stack")
    a.wait_idle(20)
    p = a.ctl("run", "deploy", "--app", "site", "--wait")
    assert p.returncode == 1, p.stdout + p.stderr
    run = a.ctl_json("show", a.runs()[0]["id"])
    health = run["steps"][-1]
    assert health["kind"] == "health" and health["status"] == "failed", run
    assert "not healthy within 1 s" in health["error"] and "exited with status 3: not yet" in health["error"], health


def test_a_waiting_deploy_runs_the_newest_revision_once(make_agent, etcd, tmpdir_agent):  # noqa: F811
    """Two agents, one slot. While h-a deploys a slow revision A, the other
    waits for the slot; B then C are pushed meanwhile. The waiter, which ran
    no step yet, deploys C once when its turn comes (planned again, the
    queued run of B and C joined to it): never A, never B, never C twice."""
    etcd.put(PREFIX + "/stack", stack(tmpdir_agent, "r1", slots=1, sleep=0))
    agents = fleet(make_agent, etcd, tmpdir_agent, n=2)
    for a in agents:
        wait_for(lambda: any(r["event"] == "deploy" and r["status"] == "success" for r in a.runs()), 20,
                 "the first deploy of %s" % a.conf["instance"])
        a.wait_idle(20)
    last_id = {a.conf["instance"]: max(r["id"] for r in a.runs()) for a in agents}

    etcd.put(PREFIX + "/stack", stack(tmpdir_agent, "A", slots=1, sleep=2.5))

    def one_runs_one_waits():
        cur = [(a, a.status()) for a in agents]
        running = [a for a, s in cur if (s.get("current_run") or {}).get("status") == "running"]
        waiting = [(a, s) for a, s in cur if (s.get("current_run") or {}).get("status") == "waiting"
                   and s["current_run"]["waiting_for"].get("holders")]
        return len(running) == 1 and len(waiting) == 1 and (running[0], waiting[0])
    holder, (waiter, st) = wait_for(one_runs_one_waits, 15, "one deploy of A running, the other waiting",
                                    interval=0.02)
    # status while the only run waits: state running, the run waiting and for what.
    assert st["state"] == "running", st
    cur = st["current_run"]
    assert cur["event"] == "deploy" and cur["app"] == "site", cur
    assert cur["waiting_for"]["semaphore"] == "deploy-site", cur
    assert cur["waiting_for"]["holders"] == [holder.conf["instance"]], cur
    waiting_id = cur["id"]

    for rev in ("B", "C"):
        seen = waiter.status()["source"]["stack_revision"]
        etcd.put(PREFIX + "/stack", stack(tmpdir_agent, rev, slots=1, sleep=0.2))
        wait_for(lambda: waiter.status()["source"]["stack_revision"] != seen, 10, "the waiter to see " + rev)
    # Still waiting: the slow A has not finished (the pushes took far less than its 2.5 s).
    assert (waiter.status()["current_run"] or {}).get("id") == waiting_id
    assert len(times(tmpdir_agent, "A")) == 1 and not times(tmpdir_agent, "A")[0][2]

    def both_deployed_c():
        return all(any(r["status"] == "success" and r["stack_revision"] == a.status()["source"]["stack_revision"]
                       for r in deploys_of(a, last_id)) for a in agents)
    wait_for(both_deployed_c, 20, "both agents' deploy of C")
    for a in agents:
        a.wait_idle(20)
    assert times(tmpdir_agent, "B") == [], times(tmpdir_agent, "B")
    assert [h for h, _, _ in times(tmpdir_agent, "A")] == [holder.conf["instance"]]
    c = times(tmpdir_agent, "C")
    assert sorted(h for h, _, _ in c) == sorted(a.conf["instance"] for a in agents), c
    assert max_overlap(times(tmpdir_agent, "A") + c) == 1
    # The waiter: one deploy run, the one that waited, now of C; the queued run joined it.
    dep = deploys_of(waiter, last_id)
    assert [r["id"] for r in dep] == [waiting_id], dep
    assert dep[0]["status"] == "success" and dep[0]["stack_revision"] == waiter.status()["source"]["stack_revision"]
    log = waiter.ctl("log", str(waiting_id), check=0).stdout
    assert "planning it again against" in log and "joins this one" in log, log
    assert etcd.get_prefix(PREFIX + "/semaphores/deploy-site/") == {}


def test_a_retry_queued_before_a_success_is_dropped(make_agent, etcd, tmpdir_agent):  # noqa: F811
    """Issue 12, B2. A bad release fails (keeping its slot) and its retry is
    due in 1 s; the fix v3, pushed at once, deploys slowly, so the retry is
    queued while it runs. v3 succeeds: the queued retry is superseded and
    dropped, so v3 is deployed exactly once (it used to wait for the slot
    again and deploy v3 a second time)."""
    etcd.put(PREFIX + "/stack", stack(tmpdir_agent, "r1", slots=1, sleep=0))
    a = make_agent(conf_extra={"instance": "h0", "layers": ["web"], "lease_ttl": 2, "watch_timeout": 5,
                               "settle": 0.05, "settle_max": 1, "retry_min": 1, "retry_max": 1},
                   source=etcd_source(etcd, PREFIX)).start()
    wait_for(lambda: any(r["event"] == "deploy" and r["status"] == "success" for r in a.runs()), 20, "the first deploy")
    a.wait_idle(20)
    last = max(r["id"] for r in a.runs())
    etcd.put(PREFIX + "/stack", stack(tmpdir_agent, "bad", slots=1, sleep=0))
    wait_for(lambda: any(r["status"] == "failed" and r["id"] > last for r in a.runs()), 10, "the bad deploy to fail",
             interval=0.02)
    etcd.put(PREFIX + "/stack", stack(tmpdir_agent, "v3", slots=1, sleep=1.6))
    retry = wait_for(lambda: [r for r in a.runs() if r["status"] == "queued" and r["trigger"] == "retry"
                              and r["id"] > last], 10, "the retry queued while v3 deploys", interval=0.02)[0]
    assert [h for h, _, _ in times(tmpdir_agent, "v3")] == ["h0"]
    wait_for(lambda: any(r["status"] == "success" and r["id"] > last for r in a.runs()), 10, "v3's success")
    a.wait_idle(10)
    assert [h for h, _, _ in times(tmpdir_agent, "v3")] == ["h0"], times(tmpdir_agent, "v3")
    assert [r for r in a.runs() if r["id"] == retry["id"]] == []
    assert a.status()["state"] != "failed"
    assert etcd.get_prefix(PREFIX + "/semaphores/deploy-site/") == {}


def test_no_bad_deploy_after_the_fix_is_pushed(make_agent, etcd, tmpdir_agent):  # noqa: F811
    """Issue 12, B1. Three agents, one slot, a failing release: the first to
    deploy it fails and keeps the slot; clear-failed on it frees the slot,
    the next fails too and keeps it; the third waits. The fix v3 pushed
    then: no agent deploys `bad` after the push (the waiter, planned again
    when its slot opens, deploys v3), and all three end on v3."""
    import time
    etcd.put(PREFIX + "/stack", stack(tmpdir_agent, "r1", slots=1, sleep=0))
    agents = []
    for i in range(3):
        agents.append(make_agent(conf_extra={"instance": f"h{i}", "layers": ["web"], "lease_ttl": 2,
                                             "watch_timeout": 5, "settle": 0.05, "settle_max": 1,
                                             "retry_min": 60, "retry_max": 60},
                                 source=etcd_source(etcd, PREFIX)).start())
    for a in agents:
        wait_for(lambda: any(r["event"] == "deploy" and r["status"] == "success" for r in a.runs()), 20,
                 "the first deploy of %s" % a.conf["instance"])
        a.wait_idle(20)
    etcd.put(PREFIX + "/stack", stack(tmpdir_agent, "bad", slots=1, sleep=0))

    def failed_hosts():
        return [h for h, _, e in times(tmpdir_agent, "bad") if e]
    wait_for(lambda: len(failed_hosts()) == 1, 15, "the first bad deploy")
    first = next(a for a in agents if a.conf["instance"] == failed_hosts()[0])
    wait_for(lambda: first.status()["current_run"] is None, 10, "the failed run to end")
    first.ctl("clear-failed", check=0)
    wait_for(lambda: len(failed_hosts()) == 2, 15, "a second instance to take the freed slot and fail")
    second = next(a for a in agents if a.conf["instance"] == failed_hosts()[1])
    third = next(a for a in agents if a not in (first, second))
    wait_for(lambda: (third.status().get("current_run") or {}).get("status") == "waiting", 10, "the third waiting")
    pushed = time.time()
    etcd.put(PREFIX + "/stack", stack(tmpdir_agent, "v3", slots=1, sleep=0))
    wait_for(lambda: sorted(h for h, _, e in times(tmpdir_agent, "v3") if e) == ["h0", "h1", "h2"], 20,
             "every agent's deploy of v3")
    late = [(h, s) for h, s, _ in times(tmpdir_agent, "bad") if s >= pushed]
    assert late == [], (late, times(tmpdir_agent, "bad"))
    assert len(times(tmpdir_agent, "v3")) == 3, times(tmpdir_agent, "v3")
    for a in agents:
        a.wait_idle(10)
    assert etcd.get_prefix(PREFIX + "/semaphores/deploy-site/") == {}


def test_waiting_names_the_holders_of_now_and_junk_holds_nothing(make_agent, etcd, tmpdir_agent):  # noqa: F811
    """Issue 12, B4 and #6. A key under the semaphore that is no contender's
    (not a lease id in hex, no lease) was there first: it is ignored, so the
    deploys proceed (it used to hold the only slot forever), and waiting
    runs name it as ignored. Three agents, one slot, a slow release: the
    last in line names the first holder, then, when it is done, the next
    one (it used to keep naming the first)."""
    junk = PREFIX + "/semaphores/deploy-site/nothex"
    etcd.put(junk, "garbage")
    etcd.put(PREFIX + "/stack", stack(tmpdir_agent, "r1", slots=1, sleep=0))
    agents = fleet(make_agent, etcd, tmpdir_agent, n=3)
    for a in agents:
        wait_for(lambda: any(r["event"] == "deploy" and r["status"] == "success" for r in a.runs()), 15,
                 "the first deploy of %s despite the junk key" % a.conf["instance"])
        a.wait_idle(10)
    etcd.put(PREFIX + "/stack", stack(tmpdir_agent, "A", slots=1, sleep=0.8))

    def line():
        """(holder, first waiter, last waiter) once one runs A and two wait behind it."""
        spans = times(tmpdir_agent, "A")
        if len(spans) != 1:
            return None
        cur = {a.conf["instance"]: a.status().get("current_run") or {} for a in agents}
        waits = {h: c["waiting_for"] for h, c in cur.items() if c.get("status") == "waiting"}
        if len(waits) != 2 or not all(w.get("holders") for w in waits.values()):
            return None
        return spans[0][0], waits
    holder, waits = wait_for(line, 10, "one deploy of A running, two waiting", interval=0.02)
    for w in waits.values():
        assert w == {"semaphore": "deploy-site", "holders": [holder], "ignored": [junk]}, w
    # Text output: runs' STATUS column and status's "Waiting for" line.
    last = next(a for a in agents if a.conf["instance"] in waits)
    out = last.ctl("status", check=0).stdout
    assert "Waiting for: semaphore deploy-site held by %s, ignoring junk keys %s" % (holder, junk) in out, out
    assert ("waiting (%s)" % holder) in last.ctl("runs", check=0).stdout
    wait_for(lambda: len(times(tmpdir_agent, "A")) == 2, 10, "the next deploy of A")
    nxt = times(tmpdir_agent, "A")[1][0]
    still = [a for a in agents if a.conf["instance"] not in (holder, nxt)]
    assert len(still) == 1
    w = wait_for(lambda: (still[0].status().get("current_run") or {}).get("waiting_for", {}).get("holders") == [nxt]
                 and still[0].status()["current_run"]["waiting_for"], 3, "the last waiter to name the new holder",
                 interval=0.02)
    assert w["holders"] == [nxt], w
    shown = still[0].ctl("show", still[0].status()["current_run"]["id"], check=0).stdout
    assert "Waiting for: semaphore deploy-site held by %s" % nxt in shown, shown
    wait_for(lambda: len([x for x in times(tmpdir_agent, "A") if x[2]]) == 3, 10, "every deploy of A")
    assert max_overlap(times(tmpdir_agent, "A")) == 1
    for a in agents:
        a.wait_idle(10)
    assert set(etcd.get_prefix(PREFIX + "/semaphores/deploy-site/")) == {junk}  # only the junk is left
