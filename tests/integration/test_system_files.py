"""What every instance gets (design.md §8.1, issue 13 items 4 and 5): the
logrotate files agentd writes for the logs its recipes make, read by the real
`logrotate -d` beside the packages' own files (no error, no duplicate log
entry), and the unattended-upgrades files read back by the real `apt-config`.

The instance serves the app plone_instances through a layer whose only
built-in recipe is a pending one (a note): that is enough for the logs to be
its, without buildout or supervisord."""
import grp
import json
import os
import pwd
import re
import subprocess

from conftest import wait_for

USER, GROUP = "nobody", grp.getgrgid(pwd.getpwnam("nobody").pw_gid).gr_name
DEPLOY_TO = "/srv/www/plone_instances"
UU = {"package_blacklist": ["linux-.*", "semi;colon{braces}#hash"], "enable": True, "mail": "ops@example.com",
      "auto_fix_interrupted_dpkg": True, "automatic_reboot": True, "automatic_reboot_time": "03:30"}
EVENTS = ("setup", "configure", "deploy", "undeploy", "shutdown")


def stack(uu=UU, serves=True, deploy_to=DEPLOY_TO, apt=True):
    """app1 in the layers plone_instances (when serves) and web. The
    plone_instances layer's only built-in recipe is a pending one
    (instances-celerybeat: a note), enough to make the app's logs this
    instance's without buildout or supervisord."""
    members = {"app1": {"private_ip": "10.0.0.1", "status": "online"}}
    doc = {
        "opsworks": {"stack": {"name": "sys"},
                     "layers": {"plone_instances": {"name": "Plone", "instances": members if serves else {}},
                                "web": {"name": "Web", "instances": members}}},
        "deploy": {"plone_instances": {"deploy_to": deploy_to, "user": USER, "group": GROUP}},
        "agent": {"recipes": {"touch": {"command": ["/bin/true"]}},
                  "layers": {"plone_instances": {e: ["touch"] for e in EVENTS},
                             "web": {e: ["touch"] for e in EVENTS}}},
    }
    doc["agent"]["layers"]["plone_instances"]["shutdown"] = ["instances-celerybeat"]
    if apt:
        doc["apt"] = {"unattended_upgrades": uu} if uu is not None else {}
    return doc


def settled(a, n):
    a.wait_runs(n, timeout=20)
    a.wait_idle(20)
    bad = [r for r in a.runs() if r["status"] != "success"]
    assert not bad, bad


def logrotate_check(tmp, files):
    """logrotate -d (debug: nothing is rotated) with its own state file;
    returns its output. Debian's haproxy and nginx files come first, as
    /etc/logrotate.d is read in name order."""
    pkg = [p for p in ("/etc/logrotate.d/haproxy", "/etc/logrotate.d/nginx") if os.path.exists(p)]
    p = subprocess.run(["logrotate", "-d", "-s", os.path.join(tmp, "lr.state")] + pkg + files,
                       capture_output=True, text=True, timeout=20)
    out = p.stdout + p.stderr
    assert p.returncode == 0 and not re.search(r"^error:", out, re.M) and "duplicate" not in out, out
    return out


def apt_dump(tmp, parts):
    conf = os.path.join(tmp, "apt.conf")
    with open(conf, "w") as f:
        f.write('Dir::Etc::Parts "%s";\n' % parts)
    p = subprocess.run(["apt-config", "dump"], capture_output=True, text=True, timeout=20,
                       env=dict(os.environ, APT_CONFIG=conf))
    assert p.returncode == 0, p.stderr
    return [l for l in p.stdout.splitlines() if l.startswith(("APT::Periodic", "Unattended-Upgrade"))]


def test_files_at_setup_read_by_logrotate_and_apt_config(make_agent, tmpdir_agent):
    a = make_agent(stack()).start()
    settled(a, 3)
    lr = os.path.join(a.root, "etc/logrotate.d")
    parts = os.path.join(a.root, "etc/apt/apt.conf.d")
    assert sorted(os.listdir(lr)) == ["agentd-apps", "agentd-supervisor"]
    for d, names in ((lr, ("agentd-apps", "agentd-supervisor")),
                     (parts, ("20auto-upgrades", "52agentd-unattended-upgrades"))):
        for n in names:
            st = os.stat(os.path.join(d, n))
            assert st.st_mode & 0o777 == 0o644 and st.st_uid == 0, (n, oct(st.st_mode))
    sup = open(os.path.join(lr, "agentd-supervisor")).read()
    logs = re.findall(r"^(/\S+\.log)$", sup, re.M)
    assert logs and all(l.startswith(a.root + "/var/log/supervisor/plone_instances") for l in logs), sup
    assert "rotate 7" in sup and "copytruncate" in sup and "daily" in sup
    apps = open(os.path.join(lr, "agentd-apps")).read()
    assert f"{a.root}{DEPLOY_TO}/shared/log/*.log {{" in apps and "rotate 30" in apps and f"su {USER} {GROUP}" in apps
    # Neither names the logs the haproxy and nginx packages rotate.
    assert "haproxy" not in sup + apps and "nginx" not in sup + apps

    # The logs exist: logrotate considers each, once, beside the packages' files.
    for l in logs:
        os.makedirs(os.path.dirname(l), exist_ok=True)
        open(l, "w").write("x\n")
    shared = f"{a.root}{DEPLOY_TO}/shared/log"
    os.makedirs(shared, exist_ok=True)
    open(os.path.join(shared, "instance.log"), "w").write("x\n")
    out = logrotate_check(tmpdir_agent, [os.path.join(lr, "agentd-supervisor"), os.path.join(lr, "agentd-apps")])
    for l in logs + [os.path.join(shared, "instance.log")]:
        assert out.count(f"considering log {l}\n") == 1, (l, out)

    # A 50unattended-upgrades of the package's with its own blacklist: ours replaces it.
    with open(os.path.join(parts, "50unattended-upgrades"), "w") as f:
        f.write('Unattended-Upgrade::Package-Blacklist { "from-the-package"; };\n'
                'Unattended-Upgrade::Automatic-Reboot "true";\n')
    got = apt_dump(tmpdir_agent, parts)
    assert got == [
        'APT::Periodic "";',
        'APT::Periodic::Update-Package-Lists "1";',
        'APT::Periodic::Unattended-Upgrade "1";',
        'Unattended-Upgrade "";',
        'Unattended-Upgrade::Package-Blacklist "";',
        'Unattended-Upgrade::Package-Blacklist:: "linux-.*";',
        'Unattended-Upgrade::Package-Blacklist:: "semi;colon{braces}#hash";',
        'Unattended-Upgrade::Automatic-Reboot "true";',
        'Unattended-Upgrade::Mail "ops@example.com";',
        'Unattended-Upgrade::AutoFixInterruptedDpkg "true";',
        'Unattended-Upgrade::Automatic-Reboot-Time "03:30";',
    ], got
    # Without etcd, unattended-upgrades reboots by itself (the value is
    # ours: "true" both ways here), and there is no reboot job.
    assert 'Unattended-Upgrade::Automatic-Reboot "true";' in open(
        os.path.join(parts, "52agentd-unattended-upgrades")).read()
    p = a.ctl("run", "maintenance", "--recipe", "reboot")
    assert p.returncode != 0 and "reboot" in p.stdout + p.stderr

    # A second configure changes nothing.
    n = len(a.runs())
    a.ctl("run", "configure", "--wait", check=0)
    last = a.ctl_json("show", str(a.runs()[0]["id"]))
    assert len(a.runs()) == n + 1 and last["changed"] == 0, last


def test_key_and_layer_gone_remove_the_files(make_agent, tmpdir_agent):
    a = make_agent(stack(uu={"enable": False})).start()
    settled(a, 3)
    parts = os.path.join(a.root, "etc/apt/apt.conf.d")
    assert 'APT::Periodic::Unattended-Upgrade "0";' in open(os.path.join(parts, "20auto-upgrades")).read()
    # Defaults: no mail, no blacklist, no reboot.
    got = apt_dump(tmpdir_agent, parts)
    assert 'Unattended-Upgrade::Automatic-Reboot "false";' in got and not any("Mail" in l for l in got), got
    # auto_fix_interrupted_dpkg unset: unattended-upgrades' own default, not a "false" of ours.
    assert not any("AutoFixInterruptedDpkg" in l for l in got), got
    n = len(a.runs())
    # The instance leaves the app's layer (its undeploy rewrites the files
    # as the stack that stays places them: none) and apt loses the key.
    a.write_stack(stack(uu=None, serves=False))
    wait_for(lambda: {r["event"] for r in a.finished_runs()[:3]} >= {"undeploy", "configure"}, 20,
             "the undeploy and configure")
    a.wait_idle(20)
    assert all(r["status"] == "success" for r in a.runs()), a.runs()[:4]
    assert (os.listdir(parts), os.listdir(os.path.join(a.root, "etc/logrotate.d"))) == ([], []), a.ctl("show", a.runs()[0]["id"]).stdout
    # A 20auto-upgrades that agentd did not write (the package's debconf) stays.
    with open(os.path.join(parts, "20auto-upgrades"), "w") as f:
        f.write('APT::Periodic::Unattended-Upgrade "1";\n')
    a.ctl("run", "configure", "--wait", check=0)
    assert os.listdir(parts) == ["20auto-upgrades"]
    # The key back, then "apt" dropped whole: the configure of that change
    # removes agentd's files (the stack applied before had them).
    os.unlink(os.path.join(parts, "20auto-upgrades"))
    n = len(a.runs())
    a.write_stack(stack(uu={"enable": True}, serves=False))
    a.wait_runs(n + 1)
    a.wait_idle(20)
    assert sorted(os.listdir(parts)) == ["20auto-upgrades", "52agentd-unattended-upgrades"]
    n = len(a.runs())
    a.write_stack(stack(uu=None, serves=False, apt=False))
    a.wait_runs(n + 1)
    a.wait_idle(20)
    assert os.listdir(parts) == [], a.ctl("show", a.runs()[0]["id"]).stdout
    # Without apt at all, and without an app here, the family plans only
    # the removals, which find nothing to remove.
    n = len(a.runs())
    doc = stack(uu=None, serves=False, apt=False)
    doc["note"] = "another Custom JSON change: a configure"
    a.write_stack(doc)
    a.wait_runs(n + 1)
    a.wait_idle(20)
    assert len(a.runs()) == n + 1 and a.runs()[0]["event"] == "configure", a.runs()[:2]
    steps = a.ctl_json("show", str(a.runs()[0]["id"]))["steps"]
    assert [(s["target"], s["status"]) for s in steps] == [
        ("/etc/apt/apt.conf.d/20auto-upgrades", "unchanged"),
        ("/etc/apt/apt.conf.d/52agentd-unattended-upgrades", "unchanged"), ("touch", "changed")], steps


def source_error(a):
    return wait_for(lambda: (a.status()["source"].get("error") or ""), 10, "the stack to be refused")


def test_hostile_values_refused_with_their_json_path(make_agent):
    cases = [
        (dict(UU, mail='x"; Unattended-Upgrade::Automatic-Reboot "true'), "$.apt.unattended_upgrades.mail"),
        (dict(UU, mail="a\nb"), "$.apt.unattended_upgrades.mail"),
        (dict(UU, package_blacklist=["ok", "a%20b"]), "$.apt.unattended_upgrades.package_blacklist[1]"),
        (dict(UU, package_blacklist=["ok", ""]), "$.apt.unattended_upgrades.package_blacklist[1]"),
        (dict(UU, automatic_reboot_time="25:00"), "$.apt.unattended_upgrades.automatic_reboot_time"),
        (dict(UU, enable="yes"), "$.apt.unattended_upgrades.enable"),
        (dict(UU, reboot=True), "$.apt.unattended_upgrades"),
    ]
    a = make_agent(stack()).start()
    settled(a, 3)
    good = open(os.path.join(a.root, "etc/apt/apt.conf.d/52agentd-unattended-upgrades")).read()
    for uu, path in cases:
        a.write_stack(stack(uu=uu))
        wait_for(lambda: path in (a.status()["source"].get("error") or ""), 10, f"{path} refused")
    a.write_stack(stack(deploy_to="/srv/www/a b {x}"))
    wait_for(lambda: "$.deploy.plone_instances.deploy_to" in (a.status()["source"].get("error") or ""), 10,
             "deploy_to refused")
    # Nothing ran with them: the files are as before.
    a.wait_idle(10)
    assert open(os.path.join(a.root, "etc/apt/apt.conf.d/52agentd-unattended-upgrades")).read() == good
    assert json.dumps(a.runs()).count('"configure"') == 1
