# First start (design.md §3): when setup fails, that boot's configure and
# deploy do not run; the retry of setup is followed by them once it
# succeeds. The same for a layer the instance joins.
import os

from conftest import simple_stack, wait_for

FLAKY = ["/bin/sh", "-c", 'echo "$AGENT_EVENT $AGENT_LAYER $AGENT_APP" >> "$AGENT_ROOT/events.log"; '
         'test "$AGENT_EVENT" != setup || test ! -e "$AGENT_ROOT/setup-fails"']


def events(agent):
    p = os.path.join(agent.root, "events.log")
    return open(p).read().split("\n")[:-1] if os.path.exists(p) else []


def flaky_stack(**kw):
    return simple_stack(recipes={"touch": {"command": FLAKY}}, **kw)


def test_failed_setup_holds_configure_and_deploy_until_its_retry_succeeds(make_agent):
    a = make_agent(flaky_stack(extra={"deploy": {"shop": {}}}))
    open(os.path.join(a.root, "setup-fails"), "w").close()
    a.start()
    wait_for(lambda: any(r["event"] == "setup" and r["status"] == "failed" for r in a.runs()), what="setup to fail")
    # A retry of setup comes (retry_min 1 s) and fails too; meanwhile
    # configure and deploy do not start.
    wait_for(lambda: any(r["event"] == "setup" and r["trigger"] == "retry" and r["status"] == "failed"
                         for r in a.runs()), what="a failed retry of setup", timeout=15)
    assert {(r["event"], r["status"]) for r in a.runs() if r["event"] != "setup"} == {
        ("configure", "queued"), ("deploy", "queued")}
    assert all(e.startswith("setup ") for e in events(a)), events(a)
    assert a.status()["state"] == "failed"
    # setup can succeed now: its next retry does, then configure and deploy follow.
    os.unlink(os.path.join(a.root, "setup-fails"))
    wait_for(lambda: {r["event"] for r in a.runs() if r["status"] == "success"} == {"setup", "configure", "deploy"},
             what="setup, then configure and deploy", timeout=20)
    st = a.wait_idle()
    assert st["state"] == "idle"
    done = sorted((r for r in a.runs() if r["status"] == "success"), key=lambda r: r["started"])
    assert [(r["event"], r["trigger"]) for r in done] == [("setup", "retry"), ("configure", "boot"), ("deploy", "boot")]
    assert events(a)[-4:] == ["configure web ", "configure db ", "deploy web shop", "deploy db shop"]


def test_operator_run_is_not_held_by_a_failed_setup(make_agent):
    a = make_agent(flaky_stack(), conf_extra={"retry_min": 600, "retry_max": 600})
    open(os.path.join(a.root, "setup-fails"), "w").close()
    a.start()
    wait_for(lambda: any(r["event"] == "setup" and r["status"] == "failed" for r in a.runs()), what="setup to fail")
    p = a.ctl("run", "configure", "--wait")
    assert p.returncode == 0, p.stdout + p.stderr
    # The boot's own configure still waits.
    assert [r["status"] for r in a.runs() if r["event"] == "configure" and r["trigger"] == "boot"] == ["queued"]
    # An operator's setup that succeeds lets the boot go on.
    os.unlink(os.path.join(a.root, "setup-fails"))
    assert a.ctl("run", "setup", "--wait").returncode == 0
    wait_for(lambda: [r["status"] for r in a.runs() if r["trigger"] == "boot" and r["event"] != "setup"] ==
             ["success", "success"], what="the boot's configure and deploy")


def test_joined_layer_waits_for_its_own_setup(make_agent):
    stack = flaky_stack()
    a = make_agent(stack, conf_extra={"retry_min": 1, "retry_max": 1})
    a.start()
    a.wait_runs(3)
    a.wait_idle()
    # The instance joins "extra", whose setup fails at first.
    stack["opsworks"]["layers"]["extra"] = {"name": "Extra", "instances": {"app1": {"private_ip": "10.0.0.1",
                                                                                      "status": "online"}}}
    stack["agent"]["layers"]["extra"] = {e: ["touch"] for e in ("setup", "configure", "deploy", "undeploy", "shutdown")}
    open(os.path.join(a.root, "setup-fails"), "w").close()
    a.write_stack(stack)
    wait_for(lambda: any(r["event"] == "setup" and r["layer"] == "extra" and r["status"] == "failed"
                         for r in a.runs()), what="the layer's setup to fail")
    assert {(r["event"], r["status"]) for r in a.runs() if r["layer"] == "extra" and r["event"] != "setup"} == {
        ("configure", "queued"), ("deploy", "queued")}
    os.unlink(os.path.join(a.root, "setup-fails"))
    wait_for(lambda: {r["event"] for r in a.runs() if r["layer"] == "extra" and r["status"] == "success"} ==
             {"setup", "configure", "deploy"}, what="the layer's setup, configure, deploy", timeout=20)
    assert events(a)[-2:] == ["configure extra ", "deploy extra "]
