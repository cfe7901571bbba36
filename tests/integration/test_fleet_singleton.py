"""Singleton maintenance jobs on etcd (design.md §8.1, §9, issue 12): a
custom recipe with "singleton": true takes the stack's lock locks/<job>
before it runs; after a success PREFIX/jobs/<job> records who ran it and
when, and a holder that finds the job done since it was asked for records
its run as a success with its steps skipped ("done by HOST at TIME"). A
holder killed with -9 frees the lock when its lease expires."""
import json
import os
import subprocess
import sys
import time

from conftest import AGENTCTL, wait_for
from etcd_fixture import etcd, etcd_source  # noqa: F401 (fixture)

PREFIX = "/agentd/single"
TTL = 2

JOB = r"""
import os, sys, time
with open(sys.argv[1], "a") as f:
    f.write("start %s %.6f\n" % (os.environ["AGENT_INSTANCE"], time.time()))
time.sleep(float(sys.argv[2]))
with open(sys.argv[1], "a") as f:
    f.write("end %s %.6f\n" % (os.environ["AGENT_INSTANCE"], time.time()))
"""


def stack(tmp, sleep):
    script = os.path.join(tmp, "job.py")
    with open(script, "w") as f:
        f.write(JOB)
    return {
        "opsworks": {"stack": {"name": "single"}, "layers": {"db": {"name": "DB", "instances": {}}}},
        "deploy": {},
        "agent": {
            "recipes": {
                "pack": {"command": [sys.executable, script, os.path.join(tmp, "ran"), str(sleep)],
                         "singleton": True},
                "noop": {"command": ["/bin/true"]},
            },
            "layers": {"db": {"setup": ["noop"], "configure": ["noop"]}},
        },
    }


def lines(tmp, what="start"):
    path = os.path.join(tmp, "ran")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [line.split() for line in f if line.startswith(what + " ")]


def ask_all(agents):
    """agentctl run maintenance --recipe pack on every agent at once; the ids."""
    procs = [subprocess.Popen([AGENTCTL, "--socket", a.sock, "--json", "run", "maintenance", "--recipe", "pack"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for a in agents]
    ids = []
    for p in procs:
        out, err = p.communicate(timeout=10)
        assert p.returncode == 0, err
        ids.append(json.loads(out)["id"])
    return ids


def run_of(a, rid):
    return a.ctl_json("show", rid)


def finished(a, rid):
    r = run_of(a, rid)
    return r["status"] not in ("queued", "running", "waiting") and r


def test_singleton_runs_once_and_moves_on_when_its_holder_dies(make_agent, etcd, tmpdir_agent):  # noqa: F811
    etcd.put(PREFIX + "/stack", stack(tmpdir_agent, 1.0))
    agents = [make_agent(conf_extra={"instance": f"h{i}", "layers": ["db"], "lease_ttl": TTL, "watch_timeout": 5,
                                     "settle": 0.05, "settle_max": 1},
                         source=etcd_source(etcd, PREFIX)).start() for i in range(3)]
    for a in agents:
        wait_for(lambda: a.status()["source"].get("stack_revision"), 10, "the stack")
        a.wait_idle(20)

    # All three asked at once: exactly one runs it, the others record it as done by that one.
    ids = ask_all(agents)
    res = [wait_for(lambda a=a, i=i: finished(a, i), 15, "the job's run") for a, i in zip(agents, ids)]
    assert all(r["status"] == "success" and r["recipe"] == "pack" for r in res), res
    starts = lines(tmpdir_agent)
    assert len(starts) == 1, starts
    holder = starts[0][1]
    job, _ = etcd.get(PREFIX + "/jobs/pack")
    job = json.loads(job)
    assert job["hostname"] == holder
    for a, r in zip(agents, res):
        st = r["steps"]
        if a.conf["instance"] == holder:
            assert st[0]["status"] in ("changed", "unchanged"), st
            assert job["run"] == r["id"] and job["finished"] == r["finished"]
        else:
            assert st[0]["status"] == "skipped", st
            assert st[0]["message"].startswith("done by %s at %s" % (holder, job["finished"])), st
    assert etcd.get_prefix(PREFIX + "/locks/pack/") == {}  # given back

    # Asked again (the job is due again): its holder is killed -9 mid-run,
    # and another instance takes over within the lease's TTL.
    ids = ask_all(agents)
    wait_for(lambda: len(lines(tmpdir_agent)) == 2, 10, "the job to start again")
    victim_name = lines(tmpdir_agent)[1][1]
    victim = next(a for a in agents if a.conf["instance"] == victim_name)
    # The others wait for the lock, and say who holds it.
    others = [(a, i) for a, i in zip(agents, ids) if a is not victim]
    for a, i in others:
        w = wait_for(lambda a=a, i=i: (run_of(a, i).get("waiting_for") or {}).get("holders") and
                     run_of(a, i)["waiting_for"], 5, "a waiting run")
        assert w == {"lock": "pack", "holders": [victim_name]}, w
    killed = time.monotonic()
    victim.kill9()
    wait_for(lambda: len(lines(tmpdir_agent)) == 3, TTL + 2.5, "another instance to take over the job")
    took = time.monotonic() - killed
    successor = lines(tmpdir_agent)[2][1]
    assert successor != victim_name
    res = [wait_for(lambda a=a, i=i: finished(a, i), 15, "the job's run") for a, i in others]
    assert all(r["status"] == "success" for r in res), res
    # The third one found it done by the successor: no third run.
    assert len(lines(tmpdir_agent)) == 3
    third = next(r for (a, _), r in zip(others, res) if a.conf["instance"] != successor)
    assert third["steps"][0]["status"] == "skipped" and ("done by %s" % successor) in third["steps"][0]["message"]
    assert took <= TTL + 2.5, took
    print("takeover after kill -9: %.2f s (lease_ttl %d s)" % (took, TTL))


def test_junk_under_the_lock_holds_nothing(make_agent, etcd, tmpdir_agent):  # noqa: F811
    """Issue 12, #6: a key under locks/<job> that is no contender's (its
    last part not a lease id in hex, no lease) is ignored: the job runs (it
    used to wait forever on the holder "junk"), and a waiter names it as
    ignored beside the real holder."""
    junk = PREFIX + "/locks/pack/zz"
    etcd.put(junk, "junk")
    etcd.put(PREFIX + "/stack", stack(tmpdir_agent, 0.8))
    agents = [make_agent(conf_extra={"instance": f"h{i}", "layers": ["db"], "lease_ttl": TTL, "watch_timeout": 5,
                                     "settle": 0.05, "settle_max": 1},
                         source=etcd_source(etcd, PREFIX)).start() for i in range(2)]
    for a in agents:
        wait_for(lambda: a.status()["source"].get("stack_revision"), 10, "the stack")
        a.wait_idle(20)
    ids = ask_all(agents)
    wait_for(lambda: len(lines(tmpdir_agent)) == 1, 5, "the job to start despite the junk key")
    holder = lines(tmpdir_agent)[0][1]
    other, oid = next((a, i) for a, i in zip(agents, ids) if a.conf["instance"] != holder)
    w = wait_for(lambda: (run_of(other, oid).get("waiting_for") or {}).get("holders") and
                 run_of(other, oid)["waiting_for"], 5, "the other waiting")
    assert w == {"lock": "pack", "holders": [holder], "ignored": [junk]}, w
    res = [wait_for(lambda a=a, i=i: finished(a, i), 10, "the job's run") for a, i in zip(agents, ids)]
    assert all(r["status"] == "success" for r in res), res
    assert len(lines(tmpdir_agent)) == 1
    assert set(etcd.get_prefix(PREFIX + "/locks/pack/")) == {junk}
