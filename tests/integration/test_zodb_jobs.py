"""ZODB pack and backup as maintenance jobs (design.md §8.1, issue 13 item 3),
with the real daemon: `agentctl run maintenance --recipe JOB --wait` runs
the buildout scripts of a test release (stand-in bin/zeopack, bin/backup,
bin/zodbpack that record their argv, uid and working directory) as the app
user in <deploy_to>/current; the backup after a pack is full and the next
one is not; a missing script fails naming its path; and a RelStorage pack
asked of three agents on etcd at once runs on exactly one of them (the
lock pack-<app>), the others recording it done elsewhere."""
import json
import os
import pwd
import secrets
import subprocess
import sys

import pytest

from conftest import AGENTCTL, wait_for
from etcd_fixture import etcd, etcd_source  # noqa: F401 (fixture)

PREFIX = "/agentd/zodb"
TTL = 2

STANDIN = r"""#!%s
import json, os, sys, time
with open(%r, "a") as f:
    f.write(json.dumps({"argv": sys.argv, "uid": os.getuid(), "cwd": os.getcwd(),
                        "host": os.uname().nodename, "start": time.time()}) + "\n")
time.sleep(%s)
"""


@pytest.fixture
def app_user():
    """A throwaway user and group of the same name, removed at the end."""
    name = "agzodb-" + secrets.token_hex(4)
    subprocess.run(["useradd", "--no-create-home", "--user-group", "--home-dir", "/nonexistent", "--shell",
                    "/usr/sbin/nologin", name], check=True)
    yield pwd.getpwnam(name)
    subprocess.run(["userdel", name], check=False)


def release(root, app, scripts, record, user, sleep=0):
    """<root>/srv/www/<app>: releases/r1 with the stand-in scripts (each
    appends a JSON line to record), current -> releases/r1, shared/ owned
    by the app user."""
    base = os.path.join(root, "srv/www", app)
    for d in ("releases/r1/bin", "releases/r1/parts", "shared"):
        os.makedirs(os.path.join(base, d), exist_ok=True)
    os.chown(os.path.join(base, "shared"), user.pw_uid, user.pw_gid)
    for s in scripts:
        path = os.path.join(base, "releases/r1", s)
        with open(path, "w") as f:
            f.write(STANDIN % (sys.executable, record, sleep))
        os.chmod(path, 0o755)
    with open(os.path.join(base, "releases/r1/parts/zodbpack.cfg"), "w") as f:
        f.write("<relstorage>\n</relstorage>\n")
    os.symlink("releases/r1", os.path.join(base, "current"))
    return base


def calls(record):
    """The recorded calls, then forgotten."""
    if not os.path.exists(record):
        return []
    with open(record) as f:
        got = [json.loads(line) for line in f]
    os.unlink(record)
    return got


def run_job(a, job, ok=True):
    p = a.ctl("--json", "run", "maintenance", "--recipe", job, "--wait", timeout=30)
    rid = json.loads(p.stdout.splitlines()[0])["run"]  # {"event": "run-queued", "run": N}
    r = a.ctl_json("show", rid)
    assert (r["status"] == "success") == ok, (p.stdout, p.stderr, r)
    return r


def zeo_stack(user):
    return {
        "opsworks": {"stack": {"name": "zodb"},
                     "layers": {"zeoserver": {"instances": {"app1": {"private_ip": "127.0.0.1",
                                                                      "status": "online"}}}}},
        "deploy": {"zeoserver": {"user": user.pw_name, "group": user.pw_name}},
        "plone_zeoserver": {"enable_backup": True, "pack": {"days": 3}},
        # The instance runs zeoserver recipes (configure only: nothing to
        # set up here), so the zeoserver app's jobs are its own.
        "agent": {"layers": {"zeoserver": {"configure": ["zeoserver-configure"]}}},
    }


def test_zeopack_then_full_backup_as_the_app_user(make_agent, tmpdir_agent, app_user):
    record = os.path.join(tmpdir_agent, "calls")
    os.chmod(tmpdir_agent, 0o777)  # the stand-ins write record as the app user
    a = make_agent(zeo_stack(app_user))
    a.start()
    a.wait_idle()  # its configure did nothing: the app is not deployed yet
    base = release(a.root, "zeoserver", ["bin/zeopack", "bin/backup"], record, app_user)
    cur = os.path.join(base, "releases/r1")
    marker = os.path.join(base, "shared/agentd-packed")

    # deploy.cfg, as configure would write it now: bin/backup is still
    # built, the cron parts are left out (agentd runs the jobs).
    plan = a.ctl_json("plan", "configure")
    cfg = [s for s in plan["steps"] if s["target"] == "/srv/www/zeoserver/current/deploy.cfg"]
    assert len(cfg) == 1 and "+parts +=\n+    zeoserver\n+    backup\n" in cfg[0]["diff"], plan
    assert "cronjob" not in cfg[0]["diff"]

    # An incremental backup: no pack before it.
    run_job(a, "backup")
    got = calls(record)
    assert [c["argv"] for c in got] == [["bin/backup"]], got
    assert got[0]["uid"] == app_user.pw_uid and got[0]["cwd"] == cur, got

    # The pack, as the app user in current; the backup after it is full,
    # the one after that is not.
    r = run_job(a, "zeopack")
    assert r["recipe"] == "zeopack"
    assert os.path.exists(marker) and os.stat(marker).st_uid == app_user.pw_uid
    run_job(a, "backup")
    run_job(a, "backup")
    got = calls(record)
    assert [(os.path.basename(c["argv"][0]), c["argv"][1:]) for c in got] == [
        ("zeopack", ["-d", "3"]), ("backup", ["-F"]), ("backup", [])], got
    assert all(c["uid"] == app_user.pw_uid and c["cwd"] == cur for c in got), got
    assert not os.path.exists(marker)

    # With collective.recipe.backup's bin/fullbackup, that one is the full backup.
    with open(os.path.join(cur, "bin/fullbackup"), "w") as f:
        f.write(STANDIN % (sys.executable, record, 0))
    os.chmod(os.path.join(cur, "bin/fullbackup"), 0o755)
    run_job(a, "zeopack")
    run_job(a, "backup")
    got = calls(record)
    assert [(os.path.basename(c["argv"][0]), c["argv"][1:]) for c in got] == [
        ("zeopack", ["-d", "3"]), ("fullbackup", [])], got

    # A missing script: the run fails naming it, nothing runs.
    os.unlink(os.path.join(cur, "bin/zeopack"))
    r = run_job(a, "zeopack", ok=False)
    errors = " ".join(s.get("error") or "" for s in r["steps"])
    assert "/srv/www/zeoserver/current/bin/zeopack does not exist" in errors, r
    assert calls(record) == []


def fleet_stack(user):
    return {
        "opsworks": {"stack": {"name": "zodb"}, "layers": {"plone_instances": {"name": "Plone", "instances": {}}}},
        "deploy": {"plone_instances": {"user": user.pw_name, "group": user.pw_name}},
        "plone_instances": {"enable_relstorage": True, "relstorage": {"enable_pack": True, "pack": {"days": 5}}},
        "agent": {"layers": {"plone_instances": {"undeploy": ["instances-undeploy"]}}},
    }


def test_one_packer_among_three_agents_on_etcd(make_agent, etcd, tmpdir_agent, app_user):  # noqa: F811
    record = os.path.join(tmpdir_agent, "calls")
    os.chmod(tmpdir_agent, 0o777)
    etcd.put(PREFIX + "/stack", fleet_stack(app_user))
    agents = []
    for i in range(3):
        a = make_agent(conf_extra={"instance": f"h{i}", "layers": ["plone_instances"], "lease_ttl": TTL,
                                   "watch_timeout": 5, "settle": 0.05, "settle_max": 1},
                       source=etcd_source(etcd, PREFIX))
        release(a.root, "plone_instances", ["bin/zodbpack"], record, app_user, sleep=0.5)
        agents.append(a.start())
    for a in agents:
        wait_for(lambda a=a: a.status()["source"].get("stack_revision"), 10, "the stack")
        a.wait_idle(20)

    procs = [subprocess.Popen([AGENTCTL, "--socket", a.sock, "--json", "run", "maintenance", "--recipe", "zodbpack"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for a in agents]
    ids = []
    for p in procs:
        out, err = p.communicate(timeout=10)
        assert p.returncode == 0, err
        ids.append(json.loads(out)["id"])

    def finished(a, rid):
        r = a.ctl_json("show", rid)
        return r["status"] not in ("queued", "running", "waiting") and r
    res = [wait_for(lambda a=a, i=i: finished(a, i), 15, "the pack's run") for a, i in zip(agents, ids)]
    assert all(r["status"] == "success" and r["recipe"] == "zodbpack" for r in res), res
    got = calls(record)
    assert len(got) == 1, got
    assert got[0]["argv"][1:] == ["-d", "5", "parts/zodbpack.cfg"] and got[0]["uid"] == app_user.pw_uid, got
    assert got[0]["cwd"].endswith("/srv/www/plone_instances/releases/r1")
    job, _ = etcd.get(PREFIX + "/jobs/zodbpack")
    holder = json.loads(job)["hostname"]
    assert got[0]["cwd"].startswith(next(a.root for a in agents if a.conf["instance"] == holder))
    for a, r in zip(agents, res):
        if a.conf["instance"] != holder:
            assert all(s["status"] == "skipped" for s in r["steps"]), r["steps"]
            assert r["steps"][0]["message"].startswith("done by %s" % holder), r["steps"]
    assert etcd.get_prefix(PREFIX + "/locks/pack-plone_instances/") == {}
