# A daemon run under valgrind: first start, a stack change, agentctl traffic,
# a failing recipe, SIGTERM. valgrind's exit status 99 means errors or
# definite leaks. Run by `make check` as its own stage (AGENTD_VALGRIND=1).
import os

import pytest

from conftest import simple_stack, wait_for

pytestmark = pytest.mark.skipif(os.environ.get("AGENTD_VALGRIND") != "1", reason="valgrind stage only")


def test_daemon_is_valgrind_clean(make_agent):
    stack = simple_stack(extra={"deploy": {"shop": {}}})
    stack["agent"]["recipes"]["bad"] = {"command": ["/bin/sh", "-c", "echo oops; exit 3"]}
    stack["agent"]["files"] = {"web": [{"path": "/etc/x.conf", "content": "x\n"}]}
    stack["agent"]["layers"]["web"]["configure"] = ["touch", "files"]
    a = make_agent(stack)
    a.start(valgrind=True)
    a.wait_runs(3, timeout=120)
    stack["opsworks"]["layers"]["web"]["instances"]["app2"] = {"private_ip": "10.0.0.2", "status": "online"}
    a.write_stack(stack)
    a.wait_runs(4, timeout=120)
    for verb in (["status"], ["runs"], ["stack"], ["show", "1"], ["log", "last"], ["plan", "configure"]):
        assert a.ctl(*verb, timeout=60).returncode == 0, verb
    assert a.ctl("run", "deploy", "--app", "shop", "--wait", timeout=120).returncode == 0
    stack["agent"]["layers"]["db"]["configure"] = ["bad"]
    a.write_stack(stack)
    wait_for(lambda: a.status()["state"] == "failed", timeout=120, what="the failed run")
    a.wait_idle(timeout=120)
    rc = a.stop(timeout=120)
    assert rc == 0, a.stderr_text()[-4000:]


def test_daemon_on_etcd_is_valgrind_clean(make_agent):
    """The fleet's paths under valgrind: range and watch, registration and
    keepalives, a membership change, fleet, stack push (good, stale,
    invalid), a rolling deploy through a semaphore and its health step, a
    singleton job through a lock, etcd going away and coming back, SIGTERM."""
    import json

    from etcd_fixture import Etcd, etcd_source
    from fleet_env import PREFIX, fleet_stack

    e = Etcd().start()
    try:
        stack = fleet_stack(extra={"deploy": {"site": {"scm": {"scm_type": "local", "repository": "/srv/x",
                                                               "revision": "a"}}}})
        stack["agent"]["recipes"]["job"] = {"command": ["/bin/true"], "singleton": True}
        stack["agent"]["rolling"] = {"site": {"max_parallel": 1, "health": {"command": ["/bin/true"],
                                                                              "timeout": 30}}}
        e.put(PREFIX + "/stack", stack)
        a = make_agent(None, conf_extra={"source": etcd_source(e, PREFIX), "instance": "app1", "lease_ttl": 5,
                                         "watch_timeout": 30, "settle": 0.1, "settle_max": 1})
        a.start(valgrind=True)
        wait_for(lambda: e.get(PREFIX + "/instances/app1")[0], timeout=60, what="the registration")
        a.wait_idle(timeout=120)
        n = len(a.finished_runs())
        # Another member registers: a membership change, one configure.
        lease = e.grant(30)
        e.put(PREFIX + "/instances/app2", {"layers": ["plone_instances"], "private_ip": "127.0.0.3",
                                           "status": "online"}, lease=lease)
        a.wait_runs(n + 1, timeout=120)
        a.wait_idle(timeout=120)
        fleet = a.ctl_json("fleet")
        assert sorted(i["hostname"] for i in fleet["instances"]) == ["app1", "app2"]
        # A new revision: a rolling deploy through the semaphore and health step.
        stack["deploy"]["site"]["scm"]["revision"] = "b"
        path = os.path.join(a.tmp, "push.json")
        with open(path, "w") as f:
            json.dump(stack, f)
        base = e.get(PREFIX + "/stack")[1]
        assert a.ctl("stack", "push", path, timeout=60).returncode == 0
        assert a.ctl("stack", "push", path, "--base", str(base), timeout=60).returncode == 1
        with open(path, "w") as f:
            json.dump({"opsworks": {"layers": 3}}, f)
        assert a.ctl("stack", "push", path, timeout=60).returncode == 1
        wait_for(lambda: any(r["event"] == "deploy" and r["app"] == "site" and r["status"] == "success"
                             for r in a.runs()), timeout=120, what="the rolling deploy")
        assert a.ctl("run", "maintenance", "--recipe", "job", "--wait", timeout=120).returncode == 0
        # The job's key is put as the lock is given back, just after the run.
        job = wait_for(lambda: e.get(PREFIX + "/jobs/job")[0], timeout=60, what="PREFIX/jobs/job")
        assert json.loads(job)["hostname"] == "app1"
        # etcd away and back: the watch and keepalives fail, then reconnect.
        e.stop()
        wait_for(lambda: a.status()["source"]["error"], timeout=60, what="the source error")
        e.start()
        wait_for(lambda: not a.status()["source"]["error"], timeout=60, what="the reconnect")
        a.wait_idle(timeout=120)
        rc = a.stop(timeout=120)
        assert rc == 0, a.stderr_text()[-4000:]
    finally:
        e.remove()
