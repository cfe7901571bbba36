# What the fleet tests share: a stack for PREFIX/stack with an lb layer (the
# built-in haproxy recipe, checked by the real haproxy) and a
# plone_instances layer of custom recipes, and agents on an etcd source.
import json
import os
import time

from conftest import wait_for
from etcd_fixture import etcd_source

PREFIX = "/agentd/test"
EVENTS = ("setup", "configure", "deploy", "undeploy", "shutdown")
LEASE_TTL = 2
SETTLE = 0.1


def fleet_stack(extra=None, members=True):
    """App members are static but without status (not peers) until their
    agents register as online; their addresses come from here."""
    apps = {"app1": {"private_ip": "127.0.0.2"}, "app2": {"private_ip": "127.0.0.3"}} if members else {}
    doc = {
        "opsworks": {
            "stack": {"name": "fleet"},
            "layers": {
                "lb": {"name": "LB", "instances": {"lb1": {"private_ip": "127.0.0.1"}} if members else {}},
                "plone_instances": {"name": "Plone", "instances": apps},
            },
        },
        "deploy": {},
        "plone_instances": {"instance_count": 1},
        "agent": {
            "recipes": {"touch": {"command": ["/bin/true"]}},
            "layers": {
                "lb": {"setup": ["haproxy"], "configure": ["haproxy"], "deploy": [], "undeploy": [], "shutdown": []},
                "plone_instances": {e: ["touch"] for e in EVENTS},
            },
        },
    }
    if extra:
        doc.update(extra)
    return doc


def fleet_conf(source, instance, lb=False, **extra):
    c = {"source": source, "instance": instance, "lease_ttl": LEASE_TTL, "watch_timeout": 2,
         "settle": SETTLE, "settle_max": 1}
    if lb:
        c.update({"haproxy_command": ["haproxy"], "haproxy_reload_command": ["/bin/true"],
                  "haproxy_bind": "127.0.0.1:1", "haproxy_address": "127.0.0.1:1", "haproxy_stats_socket": None})
    c.update(extra)
    return c


def start_agent(make_agent, etcd, instance, lb=False, url=None, **extra):
    a = make_agent(None, conf_extra=fleet_conf(url or etcd_source(etcd, PREFIX), instance, lb, **extra))
    a.start()
    return a


def haproxy_cfg(agent):
    try:
        with open(os.path.join(agent.root, "etc/haproxy/haproxy.cfg")) as f:
            return f.read()
    except FileNotFoundError:
        return ""


def wait_idle_runs(agent, n, timeout=20):
    """Waits for at least n finished runs and nothing running or queued."""
    def done():
        s = agent.status()
        fin = agent.finished_runs()
        return len(fin) >= n and s["current_run"] is None and not s["queue"] and fin
    return wait_for(done, timeout, f"{n} finished runs and an idle agent")


def registration(etcd, host):
    v, _ = etcd.get(f"{PREFIX}/instances/{host}")
    return json.loads(v) if v else None


def stopwatch():
    t0 = time.monotonic()
    return lambda: time.monotonic() - t0


def wait_registered(agent, host, layer="plone_instances", timeout=10):
    """Waits until the agent's own stack holds host's registration (its static
    member online): the effective stack is settled from then on."""
    def online():
        doc = agent.ctl_json("stack")
        m = doc["opsworks"]["layers"][layer]["instances"].get(host) or {}
        return m.get("status") == "online" and agent.status()["current_run"] is None and not agent.status()["queue"]
    return wait_for(online, timeout, f"{host} registered in {layer}")
