# Settling (design.md §3): a lone stack change starts its run at once; a
# burst of changes gives one or two runs; a flapping member reloads at most
# once per settle_max. Counted in runs, never timed.
import json
import os
import subprocess
import time

from conftest import AGENTD, simple_stack, wait_for

SEEN = ["/bin/sh", "-c", 'cat > "$AGENT_ROOT/seen-$AGENT_EVENT.json"']


def seen_stack():
    return simple_stack(recipes={"touch": {"command": SEEN}})


def configures(agent, after):
    return [r for r in agent.runs() if r["event"] == "configure" and r["id"] > after]


def boot(agent):
    agent.start()
    agent.wait_runs(3)
    agent.wait_idle()
    return agent.runs()[0]["id"]


def test_ten_edits_20ms_apart_give_one_or_two_configure_runs(make_agent):
    stack = seen_stack()
    a = make_agent(stack)
    last = boot(a)
    for i in range(10):
        stack["custom_value"] = i
        a.write_stack(stack)
        time.sleep(0.02)  # the pace of the edits, the input under test
    wait_for(lambda: json.load(open(os.path.join(a.root, "seen-configure.json"))).get("custom_value") == 9,
             what="the last edit to be applied")
    a.wait_idle()
    new = configures(a, last)
    assert 1 <= len(new) <= 2, new
    assert len(a.runs()) == 3 + len(new)
    st = a.status()
    assert st["applied_revision"] == st["source"]["stack_revision"] == new[0]["stack_revision"]


def test_flapping_member_reloads_at_most_once_per_settle_max(make_agent):
    stack = seen_stack()
    a = make_agent(stack, conf_extra={"settle": 0.2, "settle_max": 1})
    last = boot(a)
    web = stack["opsworks"]["layers"]["web"]["instances"]
    flaps = 30  # 3 s of a member going on and off every 100 ms
    for i in range(flaps):
        web["app2"] = {"private_ip": "10.0.0.2", "status": "online" if i % 2 == 0 else "stopped"}
        a.write_stack(stack)
        time.sleep(0.1)
    wait_for(lambda: a.status()["applied_revision"] == a.status()["source"]["stack_revision"],
             what="the last state to be applied", timeout=10)
    a.wait_idle()
    n = len(configures(a, last))
    # One leading edge, then one per settle_max (1 s) of flapping: about 4,
    # never one per change (30).
    assert 1 <= n <= 6, n


def test_lone_change_after_quiet_starts_at_once(make_agent):
    stack = seen_stack()
    # With settle at 30 s, a run that waited for settle would start 30 s late.
    a = make_agent(stack, conf_extra={"settle": 30, "settle_max": 60})
    last = boot(a)
    stack["custom_value"] = "lone"
    a.write_stack(stack)
    wait_for(lambda: configures(a, last), what="the configure of a lone change", timeout=10)
    a.wait_idle(timeout=10)
    assert [r["status"] for r in configures(a, last)] == ["success"]


def test_change_after_a_run_waits_for_the_burst_and_is_never_dropped(make_agent):
    stack = seen_stack()
    a = make_agent(stack, conf_extra={"settle": 30, "settle_max": 2})
    last = boot(a)
    stack["custom_value"] = 1
    a.write_stack(stack)
    # Settling counts from the start of the run of a change.
    first = wait_for(lambda: [r for r in configures(a, last) if r.get("stack_revision")],
                     what="the leading edge's configure to start", timeout=10)[0]
    stack["custom_value"] = 2
    a.write_stack(stack)
    # Its configure waits in the queue (status shows it) for the burst to settle ...
    queued = wait_for(lambda: [r for r in a.status()["queue"] if r["event"] == "configure"],
                      what="the second change's configure to be queued")
    assert queued[0]["id"] != first["id"] and queued[0].get("started") is None
    # ... no longer than settle_max (2 s), not settle (30 s): the trailing
    # edge comes, with the last change.
    wait_for(lambda: len([r for r in configures(a, last) if r["status"] == "success"]) == 2,
             what="the trailing edge's configure", timeout=20)
    assert json.load(open(os.path.join(a.root, "seen-configure.json")))["custom_value"] == 2


def test_settle_keys_are_checked(tmp_path):
    def check(conf):
        p = tmp_path / "agentd.conf"
        p.write_text(json.dumps(conf))
        return subprocess.run([AGENTD, "--check-config", "--config", str(p)], capture_output=True, text=True)

    p = check({"settle": 0.5, "settle_max": 10})
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["settle"] == 0.5 and out["settle_max"] == 10
    p = check({})
    assert p.returncode == 0 and json.loads(p.stdout)["settle"] == 0.2 and json.loads(p.stdout)["settle_max"] == 5
    assert check({"settle": 0}).returncode == 0
    for bad in ({"settle": -1}, {"settle": "0.2"}, {"settle_max": None}, {"settle_max": True}):
        p = check(bad)
        assert p.returncode == 1, bad
        assert "settle" in p.stderr + p.stdout, bad
