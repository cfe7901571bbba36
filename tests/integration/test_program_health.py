# Program health (design.md §8, issue 11 kind 7): a supervisor program that a
# run starts, restarts or adds must reach RUNNING, or the step fails naming
# it; a converged run starts the app's programs that are not running. And the
# plan half of kind 8 (design.md §5): right after a converged run, every step
# that the next run reports unchanged plans "none".
#
# Real supervisord, Debian's buildout and the demo app (apps_fixtures.py).
# Each test gives its one client a port the kernel picked, so that nothing
# else on the machine (another test, the demo) decides the outcome.
import os
import re
import socket

import pytest

from apps_fixtures import BUILDOUT, CONF_DIR, Supervisord, answers, apps_stack, commit, last_run, make_repo, run_steps
from conftest import wait_for

APP = "plone_instances"
PROG = "plone_instances-client1"


def listening_socket():
    """A socket listening on a port of the kernel's choice: the port is taken
    until it is closed (the demo client binds with SO_REUSEADDR, which a
    listening socket still refuses)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    return s


def free_port():
    with listening_socket() as s:
        return s.getsockname()[1]


def repo_on_port(repo, port, tag="p1"):
    """The demo app with client1 on port (client1's port is the app's own
    buildout's, base.cfg); returns the tag to deploy."""
    path = os.path.join(repo, "cfg", "base.cfg")
    cfg, n = re.subn(r"(\[client1\]\nrecipe = demo_recipe\nhttp-address = )\d+", rf"\g<1>{port}",
                     open(path).read())
    assert n == 1
    commit(repo, tag, path="cfg/base.cfg", content=cfg)
    return tag


@pytest.fixture
def env(make_agent, tmpdir_agent):
    """(make, repo): make(stack) starts an agent wired to a private
    supervisord, as apps_env does, but with retries far off: a failed run is
    not retried behind the test's back (the test runs the next one)."""
    made = {}
    repo = make_repo(tmpdir_agent)
    recorder = os.path.join(tmpdir_agent, "install-packages")
    with open(recorder, "w") as f:
        f.write("#!/bin/sh\nexit 0\n")
    os.chmod(recorder, 0o755)

    def make(stack):
        a = make_agent(None, conf_extra={
            "supervisor_socket": os.path.join(tmpdir_agent, "supervisor.sock"),
            "supervisor_conf_dir": CONF_DIR,
            "buildout_command": [BUILDOUT],
            "package_install_command": [recorder],
            "retry_min": 3600, "retry_max": 3600,
        })
        made["sup"] = Supervisord(tmpdir_agent, a.root)
        a.write_stack(stack)
        a.start()
        return a, made["sup"]

    yield make, repo
    if "sup" in made:
        made["sup"].stop()


def one_client_stack(repo, tag):
    return apps_stack(repo, revision=tag, pi={"instance_count": 1})


def service_steps(a, run):
    return [s for s in run_steps(a, run["id"]) if s["kind"] == "service"]


def ctl_deploy(a):
    a.ctl("run", "deploy", "--app", APP, "--wait", timeout=180)
    return last_run(a, event="deploy")


def update_step(a, run):
    steps = [s for s in service_steps(a, run) if s["target"] == "supervisor:" + APP]
    assert len(steps) == 1, steps
    return steps[0]


def state(sup):
    return sup.info()[PROG]["statename"]


def plan_actions(a, *args):
    return {(s["kind"], s["target"]): s["action"] for s in a.ctl_json("plan", *args)["steps"]}


def assert_plans_none(a):
    """design.md §5: a converged instance plans none for every step that its
    next run reports unchanged (here: every step of deploy and configure)."""
    for args in (("deploy", "--app", APP), ("configure", "--layer", APP)):
        actions = plan_actions(a, *args)
        assert set(actions.values()) == {"none"}, (args, actions)


def test_port_taken_fails_the_deploy_then_a_converged_deploy_starts_the_client(env):
    # The case: the client's port is taken before the first deploy.
    make, repo = env
    held = listening_socket()
    port = held.getsockname()[1]
    a, sup = make(one_client_stack(repo, repo_on_port(repo, port)))
    a.wait_runs(3, timeout=120)
    a.wait_idle(timeout=120)
    r = last_run(a, event="deploy")
    assert r["status"] == "failed", r
    assert PROG in r["error"] and "did not reach RUNNING" in r["error"], r
    # supervisord's own word for it, and the last line of the client's stderr.
    assert "BACKOFF" in r["error"] or "FATAL" in r["error"], r
    assert "Address already in use" in r["error"], r
    step = update_step(a, r)
    assert step["status"] == "failed" and PROG in step["error"], step
    # The run log has the tail of the program's stderr log.
    log = a.ctl("log", r["id"]).stdout
    assert "stderr of " + PROG in log and "Address already in use" in log, log
    # It is left stopped, not flapping: the next run starts it.
    assert state(sup) in ("STOPPED", "FATAL"), sup.info()
    p = a.ctl("run", "deploy", "--app", APP, "--wait", timeout=180)
    assert p.returncode == 1, p.stdout + p.stderr
    r = last_run(a, event="deploy")
    assert r["status"] == "failed" and PROG in r["error"], r

    # The port is free: a deploy with nothing else changed starts the client.
    held.close()
    p = a.ctl("run", "deploy", "--app", APP, "--wait", timeout=180)
    r = last_run(a, event="deploy")
    assert p.returncode == 0 and r["status"] == "success", (p.stdout, r)
    assert update_step(a, r)["status"] == "changed"
    assert r["changed"] >= 1, r
    assert state(sup) == "RUNNING"
    assert wait_for(lambda: answers(port), what="the client")["part"] == "client1"

    # Converged: the plan says none, and the next deploy changes nothing.
    assert_plans_none(a)
    p = a.ctl("run", "deploy", "--app", APP, "--wait", timeout=180)
    r = last_run(a, event="deploy")
    assert p.returncode == 0 and r["status"] == "success" and r["changed"] == 0, r
    assert update_step(a, r)["status"] == "unchanged"
    assert state(sup) == "RUNNING"


def converged(env):
    make, repo = env
    port = free_port()
    a, sup = make(one_client_stack(repo, repo_on_port(repo, port)))
    a.wait_runs(3, timeout=120)
    a.wait_idle(timeout=120)
    assert all(r["status"] == "success" for r in a.runs()), a.runs()
    # (Before programs were waited for, the deploy ended with the client STARTING.)
    wait_for(lambda: state(sup) == "RUNNING", timeout=30, what="the client to run")
    return a, sup, repo, port


@pytest.mark.parametrize("event", ["configure", "deploy"])
def test_converged_run_starts_a_stopped_client(env, event):
    a, sup, repo, port = converged(env)
    assert_plans_none(a)
    sup.rpc.supervisor.stopProcess(PROG)
    assert state(sup) == "STOPPED"
    # The plan says the run would start it.
    args = ("deploy", "--app", APP) if event == "deploy" else ("configure", "--layer", APP)
    assert plan_actions(a, *args)[("service", "supervisor:" + APP)] == "start"
    p = a.ctl("run", *args, "--wait", timeout=180)
    r = last_run(a, event=event)
    assert p.returncode == 0 and r["status"] == "success", r
    assert update_step(a, r)["status"] == "changed"
    assert state(sup) == "RUNNING"
    assert answers(port)["part"] == "client1"
    assert_plans_none(a)


def test_converged_run_restarts_a_fatal_client_or_fails_naming_it(env):
    # A client that gave up (FATAL: its port was taken while supervisord
    # retried it): a configure starts it again, and fails while the port is
    # still taken.
    a, sup, repo, port = converged(env)
    sup.rpc.supervisor.stopProcess(PROG)
    held = socket.socket()
    held.bind(("127.0.0.1", port))
    held.listen(1)
    try:
        sup.rpc.supervisor.startProcess(PROG, False)
        wait_for(lambda: state(sup) == "FATAL", timeout=60, what="the client to give up")
        p = a.ctl("run", "configure", "--layer", APP, "--wait", timeout=180)
        r = last_run(a, event="configure")
        assert p.returncode == 1 and r["status"] == "failed", r
        assert PROG in r["error"] and "Address already in use" in r["error"], r
    finally:
        held.close()
    p = a.ctl("run", "configure", "--layer", APP, "--wait", timeout=180)
    r = last_run(a, event="configure")
    assert p.returncode == 0 and r["status"] == "success", r
    assert update_step(a, r)["status"] == "changed"
    assert state(sup) == "RUNNING"


def test_restart_into_a_release_whose_client_cannot_start_fails_naming_it(env):
    # A new release moves client1 to a port that is taken: the update finds
    # the old client running (its program file did not change), the restart
    # must see the new one reach RUNNING, and fails the run when it does not.
    a, sup, repo, port = converged(env)
    held = listening_socket()
    try:
        tag = repo_on_port(repo, held.getsockname()[1], tag="p2")
        n = len(a.finished_runs())
        a.write_stack(one_client_stack(repo, tag))
        a.wait_runs(n + 1, timeout=120)
        a.wait_idle(timeout=120)
        r = last_run(a, event="deploy")
        assert r["status"] == "failed", r
        steps = service_steps(a, r)
        restart = [s for s in steps if s["target"] == "supervisor:" + PROG]
        assert restart and restart[0]["status"] == "failed", steps
        assert PROG in restart[0]["error"] and "Address already in use" in restart[0]["error"], restart
    finally:
        held.close()


def test_plan_matches_the_next_run_of_a_converged_instance(env):
    # design.md §5: each step plans "none" exactly when its next run reports
    # it unchanged (or skips it), for every event of the app's layer.
    a, sup, repo, port = converged(env)
    for event, args in (("setup", ("--layer", APP)), ("configure", ("--layer", APP)),
                         ("deploy", ("--app", APP)), ("configure", ("--layer", APP))):
        plan = a.ctl_json("plan", event, *args)["steps"]
        p = a.ctl("run", event, *args, "--wait", timeout=180)
        r = last_run(a, event=event)
        assert p.returncode == 0 and r["status"] == "success", r
        steps = run_steps(a, r["id"])
        assert [(s["kind"], s["target"]) for s in plan] == [(s["kind"], s["target"]) for s in steps]
        for planned, ran in zip(plan, steps):
            want_none = ran["status"] in ("unchanged", "skipped")
            assert (planned["action"] == "none") == want_none, (event, planned, ran)
    assert state(sup) == "RUNNING"
