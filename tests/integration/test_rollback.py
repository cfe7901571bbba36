# agentctl rollback APP: current goes back one release, inside root only.
import json
import os

from conftest import simple_stack, wait_for


def releases(root, base, names, current):
    d = os.path.join(root, base.lstrip("/"))
    for n in names:
        os.makedirs(os.path.join(d, "releases", n), exist_ok=True)
    os.symlink(f"releases/{current}", os.path.join(d, "current"))
    return d


def test_rollback_switches_current_to_the_previous_release(make_agent):
    a = make_agent(simple_stack(extra={"deploy": {"shop": {}}})).start()
    a.wait_runs(3)
    d = releases(a.root, "/srv/www/shop", ["20261101000000", "20261102000000", "20261103000000"],
                 "20261103000000")
    assert a.ctl("rollback", "shop", user="nobody").returncode == 4
    r = a.ctl_json("rollback", "shop")
    assert r == {"app": "shop", "from": "20261103000000", "to": "20261102000000"}
    assert os.readlink(os.path.join(d, "current")) == "releases/20261102000000"
    # The rollback was a run like any other, and says so.
    run = a.ctl_json("runs")["runs"][0]
    assert run["recipe"] == "rollback" and run["event"] == "deploy" and run["app"] == "shop", run
    assert a.ctl_json("show", run["id"])["steps"][0]["recipe"] == "rollback"
    a.ctl("rollback", "shop", check=0)
    assert os.readlink(os.path.join(d, "current")) == "releases/20261101000000"
    p = a.ctl("rollback", "shop")
    assert p.returncode == 1 and "no release before" in p.stderr
    assert a.ctl("rollback", "nosuchapp").returncode == 1


def test_rollback_does_not_follow_a_symlink_out_of_root(make_agent):
    a = make_agent(simple_stack(extra={"deploy": {"shop": {}}})).start()
    a.wait_runs(3)
    outside = os.path.join(a.tmp, "outside")
    releases(outside, "/", ["1", "2"], "2")
    os.makedirs(os.path.join(a.root, "srv/www"), exist_ok=True)
    # deploy_to is a symlink to a directory outside root (absolute target).
    os.symlink(outside, os.path.join(a.root, "srv/www/shop"))
    assert a.ctl("rollback", "shop").returncode == 1
    assert os.readlink(os.path.join(outside, "current")) == "releases/2"


def test_plan_rollback_shows_the_switch_and_changes_nothing(make_agent):
    # Rollback is a plan of the apps family like any other run's: `plan
    # rollback APP` shows it without doing it, to any local user.
    a = make_agent(simple_stack(extra={"deploy": {"shop": {}}})).start()
    a.wait_runs(3)
    d = releases(a.root, "/srv/www/shop", ["20261101000000", "20261102000000"], "20261102000000")
    runs_before = len(a.ctl_json("runs")["runs"])
    plan = a.ctl_json("plan", "rollback", "shop", user="nobody")
    assert plan["recipe"] == "rollback" and plan["app"] == "shop"
    step = plan["steps"][0]
    assert step["kind"] == "rollback" and step["action"] == "update", step
    assert "-releases/20261102000000\n+releases/20261101000000" in step["diff"], step["diff"]
    assert os.readlink(os.path.join(d, "current")) == "releases/20261102000000"
    assert len(a.ctl_json("runs")["runs"]) == runs_before
    # Nothing to go back to: the plan says why.
    os.remove(os.path.join(d, "current"))
    os.symlink("releases/20261101000000", os.path.join(d, "current"))
    plan = json.loads(a.ctl("--json", "plan", "rollback", "shop").stdout)
    assert plan["steps"][0]["action"] == "fail"
    assert "no release before" in plan["steps"][0]["error"]
    assert a.ctl("plan", "rollback").returncode == 2
    # The rollback plan is the deploy of one app: asked as another event,
    # for a layer, or without an app, it is refused, not relabelled.
    from test_control import request
    for params in ({"event": "setup", "app": "shop", "recipe": "rollback"},
                   {"event": "deploy", "layer": "web", "app": "shop", "recipe": "rollback"},
                   {"event": "deploy", "recipe": "rollback"}):
        reply = request(a, {"method": "plan", "params": params})
        assert reply["ok"] is False and "deploy of one app" in reply["error"]["message"], (params, reply)


def test_a_rollback_killed_after_its_switch_is_not_rolled_back_twice(make_agent, tmp_path):
    # The switch and the restarts are one run. Killed (-9) while a restart
    # hangs, the run is queued again on the next start as the restarts
    # only: current stays one release back, never two (a tester's case).
    import socket
    import threading
    from apps_fixtures import apps_stack
    stack = apps_stack(str(tmp_path / "no-such-repo"), pi={"instance_count": 1})
    sup = str(tmp_path / "supervisor.sock")
    a = make_agent(stack, conf_extra={"supervisor_socket": sup, "retry_min": 3600, "retry_max": 3600,
                                      "package_install_command": ["/bin/true"]}).start()
    a.wait_runs(3, timeout=60)
    a.wait_idle(timeout=60)
    d = releases(a.root, "/srv/www/plone_instances", ["20261101000000", "20261102000000", "20261103000000"],
                 "20261103000000")
    # A supervisord that accepts and never answers: the restart hangs.
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(sup)
    srv.listen(8)
    held = []
    def accept():
        try:
            while True:
                held.append(srv.accept())
        except OSError:
            pass
    threading.Thread(target=accept, daemon=True).start()
    try:
        r = a.ctl_json("rollback", "plone_instances")
        assert r["from"] == "20261103000000" and r["to"] == "20261102000000" and r["restart_run"], r
        assert os.readlink(os.path.join(d, "current")) == "releases/20261102000000"
        wait_for(lambda: held, what="the restart to reach the hanging supervisord")
        a.kill9()
    finally:
        srv.close()
        for c, _ in held:
            c.close()
        os.unlink(sup)
    a.start()
    wait_for(lambda: any(x.get("recipe") == "restart" and x["status"] in ("success", "failed")
                         for x in a.ctl_json("runs")["runs"]), timeout=60, what="the restarts queued again")
    assert os.readlink(os.path.join(d, "current")) == "releases/20261102000000"
    runs = a.ctl_json("runs")["runs"]
    assert not any(x.get("recipe") == "rollback" and x["id"] > r["restart_run"] for x in runs), runs
