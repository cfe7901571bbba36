# The engine through the real daemon: events and their order, coalescing,
# idempotence, invalid stacks, crashes and restarts, failures and retries.
import copy
import glob
import json
import os
import signal

import pytest

from conftest import simple_stack, wait_for

SEEN = ["/bin/sh", "-c", 'cat > "$AGENT_ROOT/seen-$AGENT_EVENT.json"; echo "$AGENT_EVENT $AGENT_LAYER $AGENT_APP" >> "$AGENT_ROOT/events.log"']


def seen_stack(**kw):
    return simple_stack(recipes={"touch": {"command": SEEN}}, **kw)


def events_log(agent):
    p = os.path.join(agent.root, "events.log")
    return open(p).read().split("\n")[:-1] if os.path.exists(p) else []


def test_first_start_runs_setup_configure_deploy_in_order(make_agent):
    stack = seen_stack(extra={"deploy": {"shop": {}, "blog": {}}})
    a = make_agent(stack).start()
    runs = a.wait_runs(4)
    a.wait_idle()
    runs = list(reversed(a.runs()))
    assert [(r["event"], r["app"]) for r in runs] == [
        ("setup", None), ("configure", None), ("deploy", "shop"), ("deploy", "blog")]
    assert all(r["status"] == "success" and r["trigger"] == "boot" for r in runs)
    # Each run ran the recipe of both layers, web then db, with AGENT_APP set for deploys.
    assert events_log(a) == ["setup web ", "setup db ", "configure web ", "configure db ",
                             "deploy web shop", "deploy db shop", "deploy web blog", "deploy db blog"]
    st = a.status()
    assert st["state"] == "idle" and st["layers"] == ["web", "db"] and st["instance"] == "app1"
    assert st["last_run"]["event"] == "deploy" and st["source"]["error"] is None
    # The recipe got the stack JSON on stdin.
    assert json.load(open(os.path.join(a.root, "seen-setup.json")))["opsworks"]["stack"]["name"] == "test"


def test_membership_change_gives_one_configure(make_agent):
    stack = seen_stack()
    a = make_agent(stack).start()
    a.wait_runs(3)
    a.wait_idle()
    stack["opsworks"]["layers"]["web"]["instances"]["app2"] = {"private_ip": "10.0.0.2", "status": "online"}
    a.write_stack(stack)
    runs = a.wait_runs(4)
    a.wait_idle()
    runs = a.runs()
    assert len(runs) == 4
    assert runs[0]["event"] == "configure" and runs[0]["layer"] is None
    assert runs[0]["trigger"] == "stack-change" and runs[0]["status"] == "success"
    # An offline member joining changes nothing.
    stack["opsworks"]["layers"]["web"]["instances"]["app3"] = {"private_ip": "10.0.0.3", "status": "stopped"}
    a.write_stack(stack)
    wait_for(lambda: a.status()["source"]["stack_revision"] != runs[0]["stack_revision"], what="new revision")
    a.wait_idle()
    assert len(a.runs()) == 4


def test_ten_quick_edits_coalesce_and_the_last_wins(make_agent):
    stack = seen_stack()
    a = make_agent(stack).start()
    a.wait_runs(3)
    a.wait_idle()
    for i in range(10):
        stack["custom_value"] = i
        a.write_stack(stack)
    wait_for(lambda: json.load(open(os.path.join(a.root, "seen-configure.json"))).get("custom_value") == 9,
             what="the last edit to be applied")
    a.wait_idle()
    new = a.runs()[:-3]
    assert 1 <= len(new) <= 2, new
    assert all(r["event"] == "configure" and r["status"] == "success" for r in new)
    assert a.status()["source"]["stack_revision"] == new[0]["stack_revision"]


def test_second_run_of_same_event_changes_nothing(make_agent):
    stack = seen_stack()
    stack["agent"]["layers"]["web"]["configure"] = ["touch", "files"]
    stack["agent"]["files"] = {"web": [{"path": "/etc/demo/a.conf", "content": "a=1\n"},
                                        {"path": "/etc/demo/b.conf", "content": "b=2\n", "mode": "0600"}]}
    a = make_agent(stack).start()
    a.wait_runs(3)
    a.wait_idle()
    assert open(os.path.join(a.root, "etc/demo/a.conf")).read() == "a=1\n"
    assert oct(os.stat(os.path.join(a.root, "etc/demo/b.conf")).st_mode & 0o777) == "0o600"
    first = [r for r in a.runs() if r["event"] == "configure"][0]
    assert first["changed"] >= 3
    p = a.ctl("run", "configure", "--wait")
    assert p.returncode == 0, p.stdout + p.stderr
    a.wait_idle()
    second = a.runs()[0]
    assert second["event"] == "configure" and second["trigger"] == "ctl" and second["status"] == "success"
    assert second["changed"] == 0
    info = a.ctl_json("show", second["id"])
    # 2 files, 2 execs, and the 2 removals of agentd's apt files (no apt key).
    assert [s["status"] for s in info["steps"]] == ["unchanged"] * 6
    # plan agrees: nothing to do
    plan = a.ctl_json("plan", "configure")
    assert [s["action"] for s in plan["steps"] if s["kind"] == "file"] == ["none", "none"]


BAD_STACKS = [
    ("syntax", lambda s: '{"opsworks": {', "$"),
    ("wrong type", lambda s: dict(s, opsworks=dict(s["opsworks"], layers=[])), "$.opsworks.layers"),
    ("deploy_to escapes", lambda s: dict(s, deploy={"shop": {"deploy_to": "../../etc"}}), "$.deploy.shop.deploy_to"),
    ("app with slash", lambda s: dict(s, deploy={"a/b": {}}), "$.deploy"),
    ("layer with slash", lambda s: dict(s, opsworks=dict(s["opsworks"], layers=dict(
        s["opsworks"]["layers"], **{"x/y": {"instances": {}}}))), "$.opsworks.layers"),
    ("unknown recipe", lambda s: dict(s, agent=dict(s["agent"], layers={"web": {"setup": ["touch", "nope"]}})),
     "$.agent.layers.web.setup[1]"),
]


@pytest.mark.parametrize("name,mutate,path", BAD_STACKS, ids=[b[0] for b in BAD_STACKS])
def test_invalid_stack_starts_nothing_and_keeps_the_last_good(make_agent, name, mutate, path):
    stack = seen_stack()
    a = make_agent(stack).start()
    a.wait_runs(3)
    a.wait_idle()
    good_rev = a.status()["source"]["stack_revision"]
    bad = mutate(copy.deepcopy(stack))
    a.write_stack(bad)
    st = wait_for(lambda: a.status()["source"]["error"] and a.status(), what="the error in status")
    assert st["source"]["error_path"].startswith(path), st["source"]
    assert path in st["source"]["error"]
    assert st["source"]["stack_revision"] == good_rev
    assert len(a.runs()) == 3
    p = a.ctl("status")
    assert path in p.stdout
    # The next good version is applied and clears the error.
    stack["opsworks"]["layers"]["web"]["instances"]["app2"] = {"private_ip": "10.0.0.2", "status": "online"}
    a.write_stack(stack)
    a.wait_runs(4)
    st = a.wait_idle()
    assert st["source"]["error"] is None and st["source"]["stack_revision"] != good_rev
    assert a.runs()[0]["event"] == "configure"


def test_oversized_stack_is_rejected(make_agent):
    stack = seen_stack()
    a = make_agent(stack).start()
    a.wait_runs(3)
    a.wait_idle()
    big = dict(stack, filler="x" * (20 * 1024 * 1024))
    a.write_stack(big)
    st = wait_for(lambda: a.status()["source"]["error"] and a.status(), what="the size error")
    assert "16777216" in st["source"]["error"]
    assert len(a.runs()) == 3


def test_invalid_first_stack_runs_nothing_until_fixed(make_agent):
    a = make_agent('{"opsworks": [}').start()
    st = wait_for(lambda: a.status()["source"]["error"] and a.status(), what="the error")
    assert st["source"]["stack_revision"] is None and a.runs() == []
    a.write_stack(seen_stack())
    a.wait_runs(3)
    assert a.status()["source"]["error"] is None


def state_files_parse(agent):
    files = glob.glob(os.path.join(agent.state, "**", "*.json"), recursive=True)
    assert files
    for f in files:
        json.load(open(f))
    return files


def test_kill_9_mid_run_marks_interrupted_and_runs_again(make_agent):
    stack = seen_stack()
    a = make_agent(stack).start()
    a.wait_runs(3)
    a.wait_idle()
    stack["agent"]["recipes"]["slow"] = {"command": ["/bin/sh", "-c", 'echo $$ > "$AGENT_ROOT/slow.$AGENT_RUN_ID"; exec sleep 60']}
    stack["agent"]["layers"]["web"]["configure"] = ["slow"]
    a.write_stack(stack)
    run = wait_for(lambda: a.status()["current_run"], what="the slow run to start")
    wait_for(lambda: os.path.exists(os.path.join(a.root, f"slow.{run['id']}")), what="the slow recipe to run")
    # The agent records the step's process group right after the spawn;
    # the recipe can be faster than that write.
    wait_for(lambda: '"_pgid"' in open(os.path.join(a.state, "state.json")).read(),
             what="the step's process group to be saved")
    a.kill9()
    # Every state file parses after the kill.
    state_files_parse(a)
    orphan = int(open(os.path.join(a.root, f"slow.{run['id']}")).read())
    assert os.path.exists(f"/proc/{orphan}"), "the recipe outlived the killed agent (its own process group)"
    # Fix the recipe so that the re-run completes.
    stack["agent"]["recipes"]["slow"]["command"] = ["/bin/true"]
    a.write_stack(stack)
    a.start()
    runs = a.runs()
    old = [r for r in runs if r["id"] == run["id"]][0]
    assert old["status"] == "interrupted"
    # The restarted agent ended the orphaned recipe before running the event again.
    wait_for(lambda: not os.path.exists(f"/proc/{orphan}") or
             open(f"/proc/{orphan}/stat").read().rsplit(")", 1)[1].split()[0] == "Z",
             what="the orphaned recipe to be killed")
    assert f"Killed process group {orphan}" in a.stderr_text()
    wait_for(lambda: any(r["event"] == "configure" and r["id"] > run["id"] and r["status"] in ("success", "failed")
                         for r in a.runs()), what="the interrupted event to run again", timeout=90)
    again = [r for r in a.runs() if r["id"] > run["id"] and r["event"] == "configure"]
    assert again[-1]["trigger"] == "retry"
    state_files_parse(a)


def test_restart_reruns_nothing(make_agent):
    stack = seen_stack(extra={"deploy": {"shop": {}}})
    a = make_agent(stack).start()
    a.wait_runs(3)
    a.wait_idle()
    before = events_log(a)
    assert a.stop() == 0
    a.start()
    wait_for(lambda: a.status()["source"]["last_fetch"], what="the first fetch after restart")
    a.wait_idle()
    assert events_log(a) == before
    assert len(a.runs()) == 3
    # The restarted agent still reacts to changes.
    stack["opsworks"]["layers"]["db"]["instances"]["db2"] = {"private_ip": "10.0.0.9", "status": "online"}
    a.write_stack(stack)
    a.wait_runs(4)
    assert a.runs()[0]["event"] == "configure"


def test_sigterm_lets_the_step_finish(make_agent):
    stack = seen_stack()
    stack["agent"]["recipes"]["slowish"] = {"command": ["/bin/sh", "-c", 'touch "$AGENT_ROOT/began"; sleep 1; touch "$AGENT_ROOT/ended"']}
    stack["agent"]["layers"]["web"]["setup"] = ["slowish", "touch"]
    a = make_agent(stack).start()
    wait_for(lambda: os.path.exists(os.path.join(a.root, "began")), what="the step to begin")
    assert a.stop() == 0
    assert os.path.exists(os.path.join(a.root, "ended")), "the running step was not allowed to finish"
    a.start(wait=True)
    runs = list(reversed(a.runs()))
    assert runs[0]["event"] == "setup" and runs[0]["status"] == "interrupted"
    a.wait_runs(4)
    # The interrupted setup runs again before the configure queued after it.
    done = sorted((r for r in a.runs() if r["status"] == "success"), key=lambda r: r["started"])
    assert [r["event"] for r in done] == ["setup", "configure", "deploy"]


def test_failed_run_is_retried_with_backoff_and_cleared(make_agent):
    stack = seen_stack()
    a = make_agent(stack).start()
    a.wait_runs(3)
    a.wait_idle()
    flag = os.path.join(a.root, "fail-flag")
    open(flag, "w").close()
    stack["agent"]["recipes"]["flaky"] = {"command": ["/bin/sh", "-c", 'echo trying; test ! -e "$AGENT_ROOT/fail-flag"']}
    stack["agent"]["layers"]["web"]["configure"] = ["flaky"]
    a.write_stack(stack)
    failed = wait_for(lambda: [r for r in a.runs() if r["status"] == "failed"], what="a failed run")
    st = wait_for(lambda: a.status()["state"] == "failed" and a.status(), what="state failed")
    info = a.ctl_json("show", failed[0]["id"])
    step = [s for s in info["steps"] if s["status"] == "failed"][0]
    assert "exited with status 1" in step["error"] and step["target"] == "flaky"
    assert "trying" in a.ctl("log", failed[0]["id"]).stdout
    # retry_min=1, retry_max=4 in the test config: a retry comes by itself.
    wait_for(lambda: any(r["trigger"] == "retry" for r in a.runs()), what="a retry", timeout=15)
    os.unlink(flag)
    wait_for(lambda: a.runs()[0]["trigger"] == "retry" and a.runs()[0]["status"] == "success",
             what="a successful retry", timeout=30)
    assert a.wait_idle()["state"] == "idle"


def test_clear_failed_and_pause(make_agent):
    stack = seen_stack()
    stack["agent"]["recipes"]["bad"] = {"command": ["/bin/false"]}
    a = make_agent(stack).start()
    a.wait_runs(3)
    a.ctl("run", "configure", "--layer", "web", "--wait", check=0)
    # Changing the agent key is a Custom JSON change: a configure, which fails.
    stack["agent"]["layers"]["web"]["configure"] = ["bad"]
    a.write_stack(stack)
    wait_for(lambda: a.status()["state"] == "failed", what="state failed")
    a.ctl("clear-failed", check=0)
    assert a.status()["state"] == "idle"
    assert a.status()["failed"] == []
    a.ctl("pause", "maintenance window", check=0)
    st = a.status()
    assert st["state"] == "paused" and st["paused"] == "maintenance window"
    n = len(a.runs())
    stack["opsworks"]["layers"]["web"]["instances"]["app5"] = {"private_ip": "10.0.0.5", "status": "online"}
    stack["agent"]["layers"]["web"]["configure"] = ["touch"]
    a.write_stack(stack)
    wait_for(lambda: a.status()["source"]["stack_revision"] != st["source"]["stack_revision"], what="new stack seen")
    assert len(a.runs()) == n
    a.ctl("resume", check=0)
    a.wait_runs(n + 1)
    assert a.runs()[0]["event"] == "configure"
