# Engine edge cases found in review: operator runs while paused, retries of
# runs tied to an old stack, queued runs whose app vanished, unreadable state
# records, credentials in the source URL, a second SIGTERM.
import json
import os
import signal

from conftest import simple_stack, wait_for

SLOW = ["/bin/sh", "-c", 'echo $$ > "$AGENT_ROOT/slow.pid"; exec sleep 60']


def test_ctl_run_while_paused_does_not_join_a_waiting_boot_run(make_agent):
    stack = simple_stack()
    # setup waits for the test's go-ahead, so configure and deploy stay queued.
    stack["agent"]["recipes"]["gate"] = {"command": ["/bin/sh", "-c",
                                                     'while [ ! -e "$AGENT_ROOT/go" ]; do sleep 0.02; done']}
    stack["agent"]["layers"]["web"]["setup"] = ["gate"]
    a = make_agent(stack).start()
    wait_for(lambda: len(a.status()["queue"]) == 2, what="two queued boot runs")
    a.ctl("pause", "hold", check=0)
    open(os.path.join(a.root, "go"), "w").close()
    wait_for(lambda: a.status()["current_run"] is None, what="setup to finish")
    assert len(a.status()["queue"]) == 2
    p = a.ctl("--json", "run", "configure", "--wait", timeout=30)
    assert p.returncode == 0, p.stdout + p.stderr
    runs = a.runs()
    ctl = [r for r in runs if r["trigger"] == "ctl"]
    assert len(ctl) == 1 and ctl[0]["status"] == "success"
    assert [r["status"] for r in runs if r["trigger"] == "boot" and r["event"] != "setup"] == ["queued", "queued"]
    a.ctl("resume", check=0)
    a.wait_runs(4)


def test_failed_undeploy_of_a_left_layer_is_retried_against_the_old_stack(make_agent):
    stack = simple_stack()
    stack["agent"]["recipes"]["flaky"] = {"command": ["/bin/sh", "-c", 'test ! -e "$AGENT_ROOT/fail-flag"']}
    stack["agent"]["layers"]["db"]["undeploy"] = ["flaky"]
    a = make_agent(stack).start()
    a.wait_runs(3)
    a.wait_idle()
    open(os.path.join(a.root, "fail-flag"), "w").close()
    del stack["opsworks"]["layers"]["db"]["instances"]["app1"]
    a.write_stack(stack)
    wait_for(lambda: any(r["event"] == "undeploy" and r["status"] == "failed" for r in a.runs()),
             what="the failed undeploy")
    wait_for(lambda: any(r["event"] == "undeploy" and r["trigger"] == "retry" and r["status"] == "failed"
                         for r in a.runs()), what="a failed retry", timeout=15)
    retry = [r for r in a.runs() if r["event"] == "undeploy" and r["trigger"] == "retry"][0]
    info = a.ctl_json("show", retry["id"])
    assert "no longer available" not in json.dumps(info), info
    assert [s["target"] for s in info["steps"]] == ["flaky"]
    os.unlink(os.path.join(a.root, "fail-flag"))
    wait_for(lambda: a.status()["state"] == "idle" and not a.status()["queue"], what="a successful retry",
             timeout=20)


def test_queued_deploy_of_a_removed_app_is_cancelled(make_agent):
    stack = simple_stack(extra={"deploy": {"shop": {}}})
    stack["agent"]["recipes"]["slow"] = {"command": SLOW}
    a = make_agent(stack).start()
    a.wait_runs(3)
    a.wait_idle()
    stack["agent"]["layers"]["web"]["configure"] = ["slow"]
    a.write_stack(stack)
    wait_for(lambda: os.path.exists(os.path.join(a.root, "slow.pid")), what="the slow configure")
    p = a.ctl_json("run", "deploy", "--app", "shop")
    deploy_id = p["id"]
    del stack["deploy"]["shop"]
    stack["agent"]["layers"]["web"]["configure"] = ["touch"]
    a.write_stack(stack)
    rec = wait_for(lambda: [r for r in a.runs() if r["id"] == deploy_id and r["status"] == "failed"],
                   what="the queued deploy to be cancelled")[0]
    assert "no longer in the stack" in a.ctl_json("show", deploy_id)["error"]
    os.kill(int(open(os.path.join(a.root, "slow.pid")).read()), signal.SIGKILL)
    wait_for(lambda: a.status()["current_run"] is None and not a.status()["queue"], what="idle", timeout=20)
    assert a.status()["failed"] == [] or all(f.get("app") != "shop" for f in a.status()["failed"])


def test_unreadable_state_records_are_dropped_not_fatal(make_agent):
    a = make_agent(simple_stack()).start()
    a.wait_runs(3)
    a.wait_idle()
    assert a.stop() == 0
    path = os.path.join(a.state, "state.json")
    st = json.load(open(path))
    st["runs"].insert(0, {"id": "x", "status": None})
    st["runs"].insert(0, {"id": 99, "event": "bogus", "status": "queued", "trigger": "ctl"})
    st["runs"].insert(0, {"id": 98, "event": "setup", "status": "running", "trigger": "ctl", "layer": "../x"})
    st["failed"]["junk"] = {"count": 1}
    json.dump(st, open(path, "w"))
    a.start()
    assert [r["id"] for r in a.runs()] == [3, 2, 1]
    assert a.status()["state"] == "idle"


def test_credentials_in_the_source_url_are_hidden(make_agent):
    a = make_agent(None, source="http://deploy:S3cretPw@127.0.0.1:1/stack.json?token=abc&x=1",
                   conf_extra={"poll_interval": 1})
    a.start()
    st = wait_for(lambda: a.status()["source"]["error"] and a.status(), what="the fetch error")
    shown = json.dumps(st) + a.ctl("status").stdout + a.stderr_text()
    assert "S3cretPw" not in shown and "abc" not in shown
    assert st["source"]["url"] == "http://***@127.0.0.1:1/stack.json?token=***&x=1"


def test_second_sigterm_terminates_the_step(make_agent):
    stack = simple_stack()
    stack["agent"]["recipes"]["slow"] = {"command": SLOW}
    stack["agent"]["layers"]["web"]["setup"] = ["slow"]
    a = make_agent(stack).start()
    wait_for(lambda: os.path.exists(os.path.join(a.root, "slow.pid")), what="the slow step")
    a.proc.send_signal(signal.SIGTERM)
    wait_for(lambda: "letting the current step" in a.stderr_text(), what="the first SIGTERM to be seen")
    assert a.proc.poll() is None
    a.proc.send_signal(signal.SIGTERM)
    assert a.proc.wait(30) == 0
    a.proc = None
    a.start()
    assert [r["status"] for r in a.runs() if r["id"] == 1] == ["interrupted"]


def test_hanging_recipe_is_killed_at_its_timeout(make_agent):
    stack = simple_stack()
    stack["agent"]["recipes"]["hang"] = {
        "command": ["/bin/sh", "-c", 'sleep 300 & echo $! > "$AGENT_ROOT/child.pid"; wait'], "timeout": 1}
    stack["agent"]["layers"]["web"]["setup"] = ["hang"]
    a = make_agent(stack).start()
    run = wait_for(lambda: [r for r in a.runs() if r["event"] == "setup" and r["status"] == "failed"],
                   what="the setup to fail at its timeout", timeout=20)[0]
    step = [s for s in a.ctl_json("show", run["id"])["steps"] if s["kind"] == "exec"][0]
    assert step["status"] == "failed" and "timed out after 1 s" in step["error"], step
    # The recipe's own child went with it (its process group was signalled).
    pid = int(open(os.path.join(a.root, "child.pid")).read())
    wait_for(lambda: not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z",
             what="the recipe's child to be gone")
    # The rest of the boot waits for a setup that succeeds (design.md §3 First start).
    assert {(r["event"], r["status"]) for r in a.runs() if r["event"] != "setup"} == {
        ("configure", "queued"), ("deploy", "queued")}


def test_recipe_output_is_capped_in_the_log(make_agent):
    stack = simple_stack()
    stack["agent"]["recipes"]["loud"] = {"command": ["/bin/sh", "-c", "head -c 3000000 /dev/zero | tr '\\\\0' x; echo"]}
    stack["agent"]["layers"]["web"]["setup"] = ["loud"]
    a = make_agent(stack, conf_extra={"step_output_max": 4096}).start()
    a.wait_runs(3)
    log = open(os.path.join(a.logs, "runs", "1.log")).read()
    assert "truncated" in log and len(log) < 64 * 1024
    assert a.runs()[-1]["status"] == "success"
