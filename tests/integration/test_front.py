# Issue 5: the front end (haproxy, varnish, nginx) driven by live stack
# membership, with real haproxy, varnishd and nginx on 127.0.0.2-127.0.0.4.
import json
import os
import subprocess

import pytest

from conftest import wait_for
from front_env import Front, Loop, stack_doc


@pytest.fixture(scope="module")
def front():
    f = Front()
    try:
        f.start_backends()
        f.start_varnish()
        a = f.start_agent(stack_doc(["app1", "app2"]))
        runs = a.wait_runs(3, timeout=60)
        assert all(r["status"] == "success" for r in runs), [a.ctl_json("show", str(r["id"])) for r in runs]
        f.start_haproxy_nginx()
        yield f
    finally:
        rc, err = f.close()
    # Under the sanitizer build, a report makes this fail.
    assert "Sanitizer" not in err and "runtime error:" not in err, err[-4000:]
    assert rc == 0, err[-2000:]


def last_run(agent):
    return agent.finished_runs()[0]


def wait_new_run(agent, before, timeout=60):
    def done():
        fin = agent.finished_runs()
        return len(fin) > before and agent.status()["current_run"] is None and not agent.status()["queue"] and fin[0]
    return wait_for(done, timeout, "a new finished run")


def haproxy_cfg(front):
    with open(os.path.join(front.agent.root, "etc/haproxy/haproxy.cfg")) as f:
        return f.read()


def test_membership_changes_under_load_lose_no_request(front):
    a = front.agent
    cfg = haproxy_cfg(front)
    assert "server app1-1 127.0.0.2:8081" in cfg and "server app2-2 127.0.0.3:8082" in cfg
    assert "app3" not in cfg
    assert "option httpchk" in cfg and "http-check send meth OPTIONS uri /" in cfg
    with Loop(front) as loop:
        loop.wait_more(50)
        assert front.backends.member_hits("app1") > 0 and front.backends.member_hits("app2") > 0

        # A third member comes online.
        n = len(a.finished_runs())
        a.write_stack(stack_doc(["app1", "app2", "app3"]))
        run = wait_new_run(a, n)
        assert run["status"] == "success" and run["event"] == "configure", run
        assert "server app3-1 127.0.0.4:8081" in haproxy_cfg(front)
        wait_for(lambda: front.backends.member_hits("app3") > 0, timeout=30, what="traffic to app3")

        # One goes offline.
        n = len(a.finished_runs())
        doc = stack_doc(["app1", "app2", "app3"])
        doc["opsworks"]["layers"]["plone_instances"]["instances"]["app1"]["status"] = "stopped"
        a.write_stack(doc)
        run = wait_new_run(a, n)
        assert run["status"] == "success", run
        assert "app1-1" not in haproxy_cfg(front)
        # Requests still in flight on the old worker may finish there; after
        # that, app1 gets nothing more.
        loop.wait_more(20)
        before = front.backends.member_hits("app1")
        loop.wait_more(200)
        assert front.backends.member_hits("app1") == before
        assert front.backends.member_hits("app3") > 0
    assert loop.failed == [], loop.failed[:5]
    assert loop.ok > 200


def test_second_configure_changes_nothing_and_reloads_nothing(front):
    a = front.agent
    a.wait_idle()
    reloads = front.reloads()
    plan = a.ctl_json("plan", "configure")["steps"]
    kinds = {s["kind"] for s in plan}
    assert {"checked-file", "varnish-vcl", "exec"} <= kinds, plan
    assert all(s["action"] == "none" for s in plan), plan
    p = a.ctl("run", "configure", "--wait")
    assert p.returncode == 0, p.stdout + p.stderr
    run = last_run(a)
    assert run["event"] == "configure" and run["status"] == "success"
    assert run["changed"] == 0, a.ctl_json("show", str(run["id"]))
    assert front.reloads() == reloads
    # Several VCLs were loaded so far; all but the active one were
    # discarded (varnishd may keep a discarded one while it is busy).
    vcls = subprocess.run(front.varnishadm + ["vcl.list"], capture_output=True, text=True, check=True).stdout
    ours = [line.split() for line in vcls.splitlines() if "agentd_" in line]
    assert [v[0] for v in ours if v[0] != "discarded"] == ["active"], vcls


def test_site_change_reloads_nginx_under_load(front):
    a = front.agent
    a.wait_idle()
    reloads = front.reloads()
    site = os.path.join(a.root, "etc/nginx/sites-available/instances")
    with Loop(front) as loop:
        loop.wait_more(20)
        n = len(a.finished_runs())
        doc = stack_doc(["app2", "app3"])
        doc["plone_instances"]["subsites"] = {"www.example.test": "Plone/sub"}
        a.write_stack(doc)
        run = wait_new_run(a, n)
        assert run["status"] == "success", run
        with open(site) as f:
            assert "server_name www.example.test;" in f.read()
        # Only nginx's config changed: one reload (nginx HUP).
        assert front.reloads() == reloads + 1
        # A request for the subsite goes through the new server block once
        # nginx's master has handled the HUP (asynchronous).
        import http.client

        def subsite_body():
            c = http.client.HTTPConnection(*front.nginx_addr, timeout=10)
            try:
                c.request("GET", "/x", headers={"Host": "www.example.test"})
                r = c.getresponse()
                body = r.read().decode()
                assert r.status == 200, body
                return body
            finally:
                c.close()
        want = f"/VirtualHostBase/http/www.example.test:{front.np}/Plone/sub/VirtualHostRoot/x"
        body = wait_for(lambda: want in subsite_body() and subsite_body(), timeout=20,
                        what="nginx serving the new subsite block")
        assert body.startswith(("app2/", "app3/")), body
        loop.wait_more(50)
    assert loop.failed == [], loop.failed[:5]


def test_bad_health_check_url_is_rejected_at_validation(front):
    a = front.agent
    a.wait_idle()
    good = haproxy_cfg(front)
    n = len(a.finished_runs())
    with Loop(front) as loop:
        loop.wait_more(20)
        doc = stack_doc(["app2", "app3"], extra={"haproxy": {"health_check_url": "/ok\n\tbind :1"}})
        a.write_stack(doc)
        err = wait_for(lambda: a.status()["source"]["error"], timeout=20, what="a validation error")
        assert "$.haproxy.health_check_url" in json.dumps(err)
        doc = stack_doc(["app2", "app3"], extra={"haproxy": {"enable_stats": True, "stats_password": "a b#c"}})
        a.write_stack(doc)
        wait_for(lambda: "stats_password" in json.dumps(a.status()["source"]["error"]), timeout=20,
                 what="the stats password rejected")
        loop.wait_more(50)
    assert len(a.finished_runs()) == n
    assert haproxy_cfg(front) == good
    assert loop.failed == [], loop.failed[:5]


def test_config_the_checker_rejects_keeps_the_old_one_serving(front):
    a = front.agent
    # Restore a valid stack first (the previous test left an invalid one).
    n = len(a.finished_runs())
    a.write_stack(stack_doc(["app2", "app3"]))
    wait_for(lambda: a.status()["source"]["error"] is None, timeout=20, what="the stack accepted again")
    a.wait_idle()
    good = haproxy_cfg(front)
    reloads = front.reloads()
    with Loop(front) as loop:
        loop.wait_more(20)
        # A well-formed host name that does not resolve: validation accepts
        # it, `haproxy -c` refuses it.
        n = len(a.finished_runs())
        a.write_stack(stack_doc(["app2", "app3"], addresses={"app3": "no-such-host.invalid"}))
        run = wait_new_run(a, n)
        assert run["status"] == "failed", run
        info = a.ctl_json("show", str(run["id"]))
        failed = [s for s in info["steps"] if s["status"] == "failed"]
        assert failed and failed[0]["kind"] == "checked-file", failed
        assert "haproxy rejected" in failed[0]["error"] and "no-such-host.invalid" in failed[0]["error"]
        loop.wait_more(50)
    assert haproxy_cfg(front) == good
    assert front.reloads() == reloads
    assert not [f for f in os.listdir(os.path.join(a.root, "etc/haproxy")) if f != "haproxy.cfg"]
    assert loop.failed == [], loop.failed[:5]
    # Back to a good stack so the fixture ends clean.
    a.write_stack(stack_doc(["app2", "app3"]))


def test_varnish_purge_bans_the_listed_urls_and_restart_runs_its_command(front):
    a = front.agent
    a.wait_idle()
    lb = ["haproxy", "varnish", "nginx"]
    doc = stack_doc(["app2", "app3"], extra={
        "varnish_purge_urls": ["^/news/.*", "\\.css$"],
        "agent": {"layers": {"lb": {"setup": lb, "configure": lb, "deploy": ["varnish-purge", "varnish-restart"]}}},
    })
    n = len(a.finished_runs())
    a.write_stack(doc)
    wait_new_run(a, n)
    p = a.ctl("run", "deploy", "--layer", "lb", "--wait")
    assert p.returncode == 0, p.stdout + p.stderr
    bans = subprocess.run(front.varnishadm + ["ban.list"], capture_output=True, text=True, check=True).stdout
    assert "req.url ~ ^/news/.*" in bans, bans
    assert "req.url ~ \\.css$" in bans, bans
    with open(front.restart_log) as f:
        assert f.read().splitlines() == ["restart"]
