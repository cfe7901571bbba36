# The shipped examples (conf/examples/*.json) are stacks the real daemon
# accepts: each is loaded by an agent under a temporary root, must validate
# with no source error, give the instance the layers the example says, plan a
# setup, and keep its secrets from unprivileged callers.
#
# The agent is paused before the stack appears, so nothing is ever run: the
# built-in Plone recipes will, as they arrive, install packages and start
# services, and a test of the examples must not do that to the host. Planning
# does no I/O, so `agentctl plan setup` is still a full check of the recipes'
# view of the stack.
import json
import os
import pwd
import subprocess

import pytest

from conftest import AGENTCTL, wait_for

EXAMPLES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "conf", "examples")
PLACEHOLDER_SECRET = "***** AWS SECRET FOR SNAPSHOTTING (IAM USER) *****"


def load(name):
    with open(os.path.join(EXAMPLES, name)) as f:
        return json.load(f)


def as_nobody(agent, *args):
    """agentctl as nobody with nobody's own primary group (Debian calls it
    nogroup, so Agent.ctl(user="nobody"), which passes --regid=nobody, fails)."""
    pw = pwd.getpwnam("nobody")
    cmd = ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--clear-groups",
           AGENTCTL, "--socket", agent.sock] + [str(a) for a in args]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, f"{cmd} exited {p.returncode}: {p.stdout}{p.stderr}"
    return p


def expected_layers(stack):
    """The instance's layers as the example states them: OpsWorks' own list."""
    return stack["opsworks"]["instance"]["layers"]


def start_paused(make_agent, stack):
    """An agent whose instance is the example's, paused, then given the stack."""
    hostname = stack["opsworks"]["instance"]["hostname"]
    a = make_agent(conf_extra={"instance": hostname}).start()
    a.ctl("pause", "test of the shipped examples: plan only", check=0)
    a.write_stack(stack)

    def loaded():
        s = a.status()
        return s["source"]["stack_revision"] and s
    s = wait_for(loaded, timeout=10, what="the example stack to be loaded")
    return a, s


@pytest.mark.parametrize("name", ["plone-full.json", "seed-compat.json"])
def test_example_validates_and_plans(make_agent, name):
    stack = load(name)
    a, s = start_paused(make_agent, stack)
    assert s["source"]["error"] is None, (s["source"]["error"], s["source"]["error_path"])
    assert s["instance"] == stack["opsworks"]["instance"]["hostname"]
    assert s["layers"] == expected_layers(stack)
    # Paused: the stack was taken in, and nothing ran.
    assert s["paused"] and s["current_run"] is None and s["last_run"] is None

    p = a.ctl("plan", "setup")
    assert p.returncode == 0, p.stdout + p.stderr
    plan = a.ctl_json("plan", "setup")
    assert plan["stack_revision"] == s["source"]["stack_revision"]
    # Every layer of the instance with setup recipes (all but ebs_snapshots,
    # a Configure-only layer) plans steps, and no other layer does.
    # The storage family's EBS volume steps come before the layers, with no
    # layer, and so do the system family's logrotate and apt files.
    family = {"storage", "logrotate", "unattended-upgrades"}
    planned = {step["layer"] for step in plan["steps"] if step["recipe"] not in family}
    assert planned == set(expected_layers(stack)) - {"ebs_snapshots"}
    volumes = [step["target"] for step in plan["steps"] if step["kind"] == "volume"]
    assert volumes == [v["mount_point"] for v in stack.get("ebs", {}).get("devices", {}).values()]

    # The stack as agentd serves it is the example, untouched (Custom JSON
    # included), to a privileged caller.
    assert a.ctl_json("stack") == stack


@pytest.mark.parametrize("name", ["plone-full.json", "seed-compat.json"])
def test_example_secrets_are_hidden_from_unprivileged_callers(make_agent, name):
    stack = load(name)
    a, s = start_paused(make_agent, stack)
    assert s["source"]["error"] is None
    assert stack["ebs_snapshots"]["aws_secret"] == PLACEHOLDER_SECRET
    assert a.ctl_json("stack")["ebs_snapshots"]["aws_secret"] == PLACEHOLDER_SECRET
    nobody = json.loads(as_nobody(a, "--json", "stack").stdout)
    assert nobody["ebs_snapshots"]["aws_secret"] == "***"
    assert nobody["ebs_snapshots"]["aws_key"] == "***"
    # What is not secret is still there for everyone.
    assert nobody["opsworks"]["stack"]["name"] == stack["opsworks"]["stack"]["name"]
    assert nobody["deploy"].keys() == stack["deploy"].keys()
    text = as_nobody(a, "stack").stdout
    assert "AWS SECRET FOR SNAPSHOTTING" not in text


def test_plone_full_shape(make_agent):
    """The full example has every layer of the cookbook (reference §1), the
    three git apps, an offline member, and the Custom JSON keys the seeds use."""
    stack = load("plone-full.json")
    layers = stack["opsworks"]["layers"]
    assert set(layers) == {"plone_instances", "zeoserver", "shared_blobs", "lb", "ebs_snapshots",
                           "db_packing", "solr"}
    statuses = [m["status"] for m in layers["plone_instances"]["instances"].values()]
    assert statuses.count("online") == 2 and len(statuses) == 3
    assert set(stack["deploy"]) == {"plone_instances", "zeoserver", "solr"}
    assert all(app["scm"]["scm_type"] == "git" for app in stack["deploy"].values())
    for key in ("plone_instances", "plone_zeoserver", "plone_blobs", "plone_solr", "ebs_snapshots", "apt",
                "varnish_purge_urls"):
        assert key in stack, key

    a, s = start_paused(make_agent, stack)
    assert s["source"]["error"] is None
    # plan deploy of each app is accepted for the app server's layers.
    for app in stack["deploy"]:
        p = a.ctl("plan", "deploy", "--app", app)
        assert p.returncode == 0, p.stdout + p.stderr
