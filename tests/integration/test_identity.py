# Identity (design.md §3): the instance is found by `instance`, else by the
# host name, else by the host name's first label; an instance in no layer
# is "unassigned" (status, plan, the journal) and its runs are no
# successes; a layer set that changed across a restart (another
# `instance`, another host name) runs the layers added and removed.
import json
import os
import subprocess

from conftest import AGENTD, simple_stack, wait_for

LOG = ["/bin/sh", "-c", 'echo "$AGENT_EVENT $AGENT_LAYER $AGENT_INSTANCE" >> "$AGENT_ROOT/events.log"']


def stack_for(*hosts):
    members = {h: {"private_ip": "10.0.0.1", "status": "online"} for h in hosts}
    return simple_stack(recipes={"touch": {"command": LOG}},
                        layers={"web": {"name": "Web", "instances": members}})


def events(agent):
    p = os.path.join(agent.root, "events.log")
    return open(p).read().split("\n")[:-1] if os.path.exists(p) else []


def start_as_host(agent, hostname):
    """Starts agent in a UTS namespace of its own, under hostname (the
    machine's own host name is left alone)."""
    agent.stderr = open(agent.stderr_path, "ab")
    env = dict(os.environ)
    env.pop("NOTIFY_SOCKET", None)
    cmd = ["unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"', hostname,
           AGENTD, "-d", "--config", agent.conf_path]
    agent.proc = subprocess.Popen(cmd, stdout=agent.stderr, stderr=agent.stderr, env=env)
    wait_for(lambda: agent.ctl_ok("status"), what="agentd to answer on its socket")
    return agent


def set_conf(agent, **kw):
    agent.conf.update(kw)
    with open(agent.conf_path, "w") as f:
        json.dump(agent.conf, f)


def test_fqdn_host_name_finds_its_first_label(make_agent):
    a = make_agent(stack_for("web1", "web2"), conf_extra={"instance": None})
    start_as_host(a, "web1.eu-west-1.compute.internal")
    a.wait_runs(3)
    st = a.wait_idle()
    assert st["instance"] == "web1" and st["layers"] == ["web"] and st["state"] == "idle"
    assert st.get("warning") is None
    runs = a.runs()
    assert all(r["status"] == "success" for r in runs), runs
    assert events(a) == ["setup web web1", "configure web web1", "deploy web web1"]
    assert a.ctl_json("show", runs[-1]["id"])["steps"], "a setup of 0 steps"


def test_full_host_name_wins_over_its_first_label(make_agent):
    a = make_agent(stack_for("web1", "web1.example.com"), conf_extra={"instance": None})
    start_as_host(a, "web1.example.com")
    a.wait_runs(3)
    st = a.wait_idle()
    assert st["instance"] == "web1.example.com" and st["layers"] == ["web"]


def test_instance_in_no_layer_is_unassigned_and_fixing_it_runs_its_layer(make_agent):
    a = make_agent(stack_for("web1"), conf_extra={"instance": None})
    start_as_host(a, "web9.eu-west-1.compute.internal")
    runs = a.wait_runs(3)
    st = a.wait_idle()
    assert st["state"] == "unassigned" and st["layers"] == []
    assert "web9.eu-west-1.compute.internal" in st["warning"] and "no layer" in st["warning"]
    # Runs of no layer are not successes.
    assert [r["status"] for r in runs] == ["failed"] * 3, runs
    assert all("no layer" in r["error"] for r in a.runs()), a.runs()
    assert events(a) == []
    # The journal (stderr under -d) says why.
    assert "web9.eu-west-1.compute.internal" in a.stderr_text() and "no layer" in a.stderr_text()
    # plan says so.
    plan = a.ctl_json("plan", "setup")
    assert plan["steps"] == [] and plan["state"] == "unassigned" and "no layer" in plan["warning"]
    text = a.ctl("plan", "setup").stdout
    assert text.startswith("Warning: ") and "no layer" in text and "Nothing to do" not in text, text
    # No retry of what cannot succeed: nothing is recorded as failed to retry.
    assert st["failed"] == []
    # The operator sets `instance` and restarts: the layer's setup,
    # configure and deploy run, as for a layer added.
    a.stop()
    set_conf(a, instance="web1")
    a.start()
    wait_for(lambda: len([r for r in a.runs() if r["status"] == "success"]) >= 3, what="the layer's runs")
    st = a.wait_idle()
    assert st["state"] == "idle" and st["layers"] == ["web"] and st.get("warning") is None
    new = [r for r in reversed(a.runs()) if r["status"] == "success"]
    assert [(r["event"], r["layer"]) for r in new] == [("setup", "web"), ("configure", "web"), ("deploy", "web")]
    assert events(a) == ["setup web web1", "configure web web1", "deploy web web1"]
    # Another restart reruns nothing.
    a.stop()
    a.start()
    a.wait_idle()
    assert len(a.runs()) == 6


def test_restart_under_another_name_runs_layers_added_and_removed(make_agent):
    stack = stack_for("app1")
    stack["opsworks"]["layers"]["db"] = {"name": "DB", "instances": {"app2": {"private_ip": "10.0.0.2", "status": "online"}}}
    stack["agent"]["layers"]["db"] = {e: ["touch"] for e in ("setup", "configure", "deploy", "undeploy", "shutdown")}
    a = make_agent(stack)
    a.start()
    a.wait_runs(3)
    a.wait_idle()
    assert events(a) == ["setup web app1", "configure web app1", "deploy web app1"]
    # Same stack, another name in agentd.conf: web is left, db is joined.
    a.stop()
    set_conf(a, instance="app2")
    a.start()
    wait_for(lambda: len(events(a)) >= 8, what="the layers' runs")
    st = a.wait_idle()
    assert st["layers"] == ["db"] and st["instance"] == "app2"
    got = events(a)[3:]
    assert sorted(got) == sorted(["setup db app2", "configure db app2", "deploy db app2",
                                  "undeploy web app1", "shutdown web app1"]), got
    assert all(r["status"] == "success" for r in a.runs()), a.runs()


def test_restart_under_another_host_name_runs_layers_added_and_removed(make_agent):
    stack = stack_for("web1")
    stack["opsworks"]["layers"]["db"] = {"name": "DB", "instances": {"db1": {"private_ip": "10.0.0.2", "status": "online"}}}
    stack["agent"]["layers"]["db"] = {e: ["touch"] for e in ("setup", "configure", "deploy", "undeploy", "shutdown")}
    a = make_agent(stack, conf_extra={"instance": None})
    start_as_host(a, "web1.example.internal")
    a.wait_runs(3)
    a.wait_idle()
    # The same state_dir under another host name (an image reused, a rename).
    a.stop()
    start_as_host(a, "db1.example.internal")
    wait_for(lambda: len(events(a)) >= 8, what="the layers' runs")
    st = a.wait_idle()
    assert st["instance"] == "db1" and st["layers"] == ["db"]
    assert sorted(events(a)[3:]) == sorted(["setup db db1", "configure db db1", "deploy db db1",
                                            "undeploy web web1", "shutdown web web1"]), events(a)
    assert all(r["status"] == "success" for r in a.runs()), a.runs()


def test_layers_in_the_config_and_their_change_across_a_restart(make_agent):
    stack = stack_for("app1")
    stack["opsworks"]["layers"]["db"] = {"name": "DB", "instances": {"app2": {"private_ip": "10.0.0.2", "status": "online"}}}
    stack["agent"]["layers"]["db"] = {e: ["touch"] for e in ("setup", "configure", "deploy", "undeploy", "shutdown")}
    a = make_agent(stack, conf_extra={"layers": ["web", "db"]})
    a.start()
    a.wait_runs(3)
    st = a.wait_idle()
    assert st["layers"] == ["web", "db"]
    assert events(a) == ["setup web app1", "setup db app1", "configure web app1", "configure db app1",
                         "deploy web app1", "deploy db app1"]
    # `layers` loses web: its undeploy and shutdown run on the next start.
    a.stop()
    set_conf(a, layers=["db"])
    a.start()
    wait_for(lambda: len(events(a)) >= 8, what="web's undeploy and shutdown")
    st = a.wait_idle()
    assert st["layers"] == ["db"]
    assert events(a)[6:] == ["undeploy web app1", "shutdown web app1"]
    # null: the layers that name it in the stack (web) again.
    a.stop()
    set_conf(a, layers=None)
    a.start()
    wait_for(lambda: len(events(a)) >= 13, what="web's setup, configure, deploy and db's teardown")
    st = a.wait_idle()
    assert st["layers"] == ["web"]
    assert sorted(events(a)[8:]) == sorted(["setup web app1", "configure web app1", "deploy web app1",
                                            "undeploy db app1", "shutdown db app1"]), events(a)
    assert all(r["status"] == "success" for r in a.runs()), a.runs()
