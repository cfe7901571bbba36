# Issue 9, kind 2 "paths compared as strings" and the bounds half of kind 7,
# end to end with the real daemon: two spellings of one directory are one
# directory (refused as overlapping, with the JSON path); an undeploy never
# removes another app's tree or a mount below it; the same file twice in
# agent.files is refused; a 16 MiB document of small integers is refused
# before it is built, and the last good stack is kept.
import json
import os
import subprocess

import pytest

from apps_fixtures import apps_env  # noqa: F401
from conftest import simple_stack, wait_for

ME = {"app1": {"private_ip": "127.0.0.1", "status": "online"}}


def app(deploy_to):
    # No scm: setup makes the tree, deploy has nothing to fetch; enough for undeploy.
    return {"deploy_to": deploy_to, "user": "root", "group": "root"}


def paths_stack(apps):
    return {
        "opsworks": {"stack": {"name": "paths"}, "layers": {
            "plone_instances": {"name": "Plone", "instances": dict(ME)},
            "zeoserver": {"name": "ZEO", "instances": dict(ME)},
        }},
        "deploy": apps,
        "plone_instances": {"instance_count": 1},
        "plone_zeoserver": {"enable_pack": False},
    }


def rejected_at(a, path, before_rev, word):
    """Waits for the document to be refused at path with word in the error;
    the last good stack stays."""
    def ok():
        src = a.status()["source"]
        return src["error_path"] == path and word in (src["error"] or "") and src
    src = wait_for(ok, timeout=20, what=f"the stack to be refused at {path} with {word!r}")
    assert src["stack_revision"] == before_rev
    return src["error"]


def write_file(root, path, content):
    p = os.path.join(root, path.lstrip("/"))
    os.makedirs(os.path.dirname(p), exist_ok=True)
    with open(p, "w") as f:
        f.write(content)
    return p


@pytest.mark.parametrize("first,second,path,word", [
    ("/srv/www/shared", "/srv/www//shared", "$.deploy.zeoserver.deploy_to", "the same as"),
    ("/srv/www/a/", "/srv/www/a/b", "$.deploy.zeoserver.deploy_to", "inside"),
    ("/srv/www/a/b/", "//srv/www/a", "$.deploy.plone_instances.deploy_to", "inside"),
])
def test_two_spellings_of_one_tree_are_refused(apps_env, first, second, path, word):
    make, _ = apps_env
    a, _ = make(paths_stack({"plone_instances": app("/srv/www/pi")}))
    a.wait_runs(3, timeout=60)
    a.wait_idle(timeout=60)
    rev = a.status()["source"]["stack_revision"]
    n = len(a.runs())

    a.write_stack(paths_stack({"plone_instances": app(first), "zeoserver": app(second)}))
    rejected_at(a, path, rev, word)
    assert len(a.runs()) == n


def test_a_trailing_slash_is_the_same_directory(apps_env):
    # One app, spelled with a trailing slash: accepted, kept in normal form.
    make, _ = apps_env
    a, _ = make(paths_stack({"plone_instances": app("/srv/www/pi/")}))
    a.wait_runs(3, timeout=60)
    a.wait_idle(timeout=60)
    assert all(r["status"] == "success" for r in a.runs()), [r.get("error") for r in a.runs()]
    stack = a.ctl_json("stack")
    stack = stack.get("stack", stack)
    assert stack["deploy"]["plone_instances"]["deploy_to"] == "/srv/www/pi"
    assert os.path.isdir(os.path.join(a.root, "srv/www/pi/shared"))


def test_undeploy_keeps_another_apps_tree_inside(apps_env):
    # A document that gets through: the zeoserver app at /srv/www/a is removed
    # while the current stack puts plone_instances at /srv/www/a/b. The
    # undeploy runs against the old stack; its absent step must not take
    # /srv/www/a/b (Data.fs included) with it.
    make, _ = apps_env
    a, _ = make(paths_stack({"plone_instances": app("/srv/www/pi"), "zeoserver": app("/srv/www/a")}))
    a.wait_runs(4, timeout=60)
    a.wait_idle(timeout=60)
    assert all(r["status"] == "success" for r in a.runs()), [r.get("error") for r in a.runs()]
    assert os.path.isdir(os.path.join(a.root, "srv/www/a/shared"))
    data = write_file(a.root, "/srv/www/a/b/var/filestorage/Data.fs", "zodb")

    a.write_stack(paths_stack({"plone_instances": app("/srv/www/a/b")}))
    r = wait_for(lambda: [r for r in a.runs() if r["event"] == "undeploy" and r["status"] == "failed"],
                 timeout=60, what="the undeploy of zeoserver to fail")[0]
    assert r["app"] == "zeoserver"
    steps = a.ctl_json("show", r["id"])["steps"]
    absent = [s for s in steps if s["kind"] == "absent"]
    assert absent and absent[0]["status"] == "failed", steps
    assert "the deploy_to of app plone_instances" in absent[0]["error"], absent[0]
    assert open(data).read() == "zodb"
    assert os.path.isdir(os.path.join(a.root, "srv/www/a/shared"))


def test_undeploy_removes_nothing_when_a_mount_is_inside(apps_env, tmpdir_agent):
    make, _ = apps_env
    a, _ = make(paths_stack({"plone_instances": app("/srv/www/pi"), "zeoserver": app("/srv/www/zeo")}))
    a.wait_runs(4, timeout=60)
    a.wait_idle(timeout=60)
    keep = [write_file(a.root, p, "keep") for p in ("/srv/www/zeo/var/filestorage/Data.fs", "/srv/www/zeo/a",
                                                      "/srv/www/zeo/zz/b")]
    src = os.path.join(tmpdir_agent, "bind-src")
    os.makedirs(src)
    mnt = os.path.join(a.root, "srv/www/zeo/m/mnt")
    os.makedirs(mnt)
    if subprocess.run(["mount", "--bind", src, mnt], capture_output=True).returncode != 0:
        pytest.skip("cannot bind-mount here")
    try:
        a.write_stack(paths_stack({"plone_instances": app("/srv/www/pi")}))
        r = wait_for(lambda: [r for r in a.runs() if r["event"] == "undeploy" and r["status"] == "failed"],
                     timeout=60, what="the undeploy of zeoserver to fail")[0]
        absent = [s for s in a.ctl_json("show", r["id"])["steps"] if s["kind"] == "absent"][0]
        # Nothing was removed before the mount was found.
        for p in keep:
            assert os.path.exists(p) and open(p).read() == "keep", (p, absent)
        assert os.path.isdir(os.path.join(a.root, "srv/www/zeo/shared"))
        assert "contains a mount point" in absent["error"] and mnt in absent["error"], absent
    finally:
        subprocess.run(["umount", "-l", mnt], check=True)


def test_the_same_file_twice_is_refused(make_agent):
    good = simple_stack(extra=None)
    good["agent"]["files"] = {"web": [{"path": "/etc/motd", "content": "a\n"}]}
    good["agent"]["layers"]["web"]["configure"] = ["files"]
    a = make_agent(good)
    a.start()
    a.wait_runs(3)
    a.wait_idle()
    rev = a.status()["source"]["stack_revision"]
    n = len(a.runs())

    for files, path, word in [
        ([{"path": "/etc/motd", "content": "a\n"}, {"path": "/etc//motd", "content": "b\n"}],
         "$.agent.files.web[1].path", "the same file as $.agent.files.web[0]"),
        ([{"path": "/etc/motd/", "content": "a\n"}, {"path": "/etc/motd", "content": "b\n"}],
         "$.agent.files.web[1].path", "the same file"),
        ([{"path": "/etc/x", "content": "a\n"}, {"path": "/etc/x/y", "content": "b\n"}],
         "$.agent.files.web[1].path", "inside the file"),
        ([{"path": "/", "content": "a\n"}], "$.agent.files.web[0].path", '"/"'),
    ]:
        bad = json.loads(json.dumps(good))
        bad["agent"]["files"] = {"web": files}
        a.write_stack(bad)
        rejected_at(a, path, rev, word)
        # Between cases, the good one again (the same error would not show a change).
        a.write_stack(good)
        wait_for(lambda: a.status()["source"]["error"] is None, what="the good stack again")
    # Both layers of this instance writing one file.
    bad = json.loads(json.dumps(good))
    bad["agent"]["files"] = {"web": [{"path": "/etc/motd", "content": "a\n"}],
                             "db": [{"path": "/etc/motd", "content": "b\n"}]}
    a.write_stack(bad)
    rejected_at(a, "$.agent.files.db[0].path", rev, "in both layers")
    assert len(a.runs()) == n
    assert open(os.path.join(a.root, "etc/motd")).read() == "a\n"


def vm_hwm_kb(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def test_16_mib_of_small_integers_is_refused(make_agent):
    good = simple_stack()
    a = make_agent(good)
    a.start()
    a.wait_runs(3)
    a.wait_idle()
    rev = a.status()["source"]["stack_revision"]
    before = vm_hwm_kb(a.proc.pid)

    bad = json.loads(json.dumps(good))
    bad["numbers"] = [0]
    text = json.dumps(bad)
    head, tail = text.split("[0]", 1)
    n = (16 * 1024 * 1024 - len(text) - 16) // 2
    a.write_stack(head + "[" + "1," * n + "1]" + tail)
    rejected_at(a, "$", rev, "more than 200000 elements")
    # Still answering, with the last good stack.
    assert a.ctl_json("stack")
    assert a.status()["source"]["stack_revision"] == rev
    print(f"\npeak RSS of agentd (VmHWM) before the 16 MiB document: {before / 1024:.1f} MiB, "
          f"after: {vm_hwm_kb(a.proc.pid) / 1024:.1f} MiB")

    # Too deep, too.
    a.write_stack(json.dumps(good)[:-1] + ', "deep": ' + "[" * 100 + "]" * 100 + "}")
    rejected_at(a, "$", rev, "deeper than 64 levels")


def check_config(tmp_path, conf):
    from conftest import AGENTD
    p = tmp_path / "agentd.conf"
    p.write_text(conf if isinstance(conf, str) else json.dumps(conf))
    return subprocess.run([AGENTD, "--check-config", "--config", str(p)], capture_output=True, text=True)


def test_config_paths_in_normal_form_and_bounded(tmp_path):
    r = check_config(tmp_path, {"state_dir": "/var/lib//agentd/", "root": "//", "ephemeral_mount_point": "/mnt//eph/"})
    assert r.returncode == 0, r.stderr
    c = json.loads(r.stdout)
    assert c["state_dir"] == "/var/lib/agentd" and c["root"] == "/" and c["ephemeral_mount_point"] == "/mnt/eph"
    r = check_config(tmp_path, {"root": "/srv/./x"})
    assert r.returncode == 1 and "root" in r.stderr
    # A config is a few dozen keys: 1 MiB of integers is refused before it is built.
    r = check_config(tmp_path, '{"instance": "web1", "x": [' + "1," * 500000 + "1]}")
    assert r.returncode == 1 and "more than 10000 elements" in r.stderr, r.stderr
    r = check_config(tmp_path, '{"x": ' + "[" * 40 + "]" * 40 + "}")
    assert r.returncode == 1 and "deeper than 16 levels" in r.stderr, r.stderr


def test_deploy_to_holding_the_default_file_storage_is_refused(apps_env):
    # break1 k2def: zeoserver's file storage left at its default
    # (<ephemeral_mount_point>/shared/zodb/filestorage, /mnt here) and the
    # instances app moved to /mnt/shared. It was accepted, and removing that
    # app later deleted Data.fs. Now the document is refused at the
    # deploy_to, nothing runs, and Data.fs stays.
    make, _ = apps_env
    zeo = {"user": "root", "group": "root"}
    a, _ = make(paths_stack({"plone_instances": app("/srv/www/pi"), "zeoserver": zeo}))
    a.wait_runs(4, timeout=60)
    a.wait_idle(timeout=60)
    assert all(r["status"] == "success" for r in a.runs()), [r.get("error") for r in a.runs()]
    fs = os.path.join(a.root, "mnt/shared/zodb/filestorage")
    assert os.path.isdir(fs)
    data = write_file(a.root, "/mnt/shared/zodb/filestorage/Data.fs", "zodb")
    rev = a.status()["source"]["stack_revision"]
    n = len(a.runs())

    for deploy_to, word in [("/mnt/shared", "holds the file storage"),
                            ("/mnt//shared/zodb/", "holds the file storage"),
                            ("/mnt/shared/zodb/filestorage/x", "is inside the file storage")]:
        a.write_stack(paths_stack({"plone_instances": app(deploy_to), "zeoserver": zeo}))
        rejected_at(a, "$.deploy.plone_instances.deploy_to", rev, word)
        a.write_stack(paths_stack({"plone_instances": app("/srv/www/pi"), "zeoserver": zeo}))
        wait_for(lambda: a.status()["source"]["error"] is None, what="the good stack again")
    # And the undeploy the tester ran: instances gone from the stack.
    a.write_stack(paths_stack({"zeoserver": zeo}))
    wait_for(lambda: [r for r in a.runs() if r["event"] == "undeploy" and r["status"] in ("success", "failed")],
             timeout=60, what="the undeploy of plone_instances")
    a.wait_idle(timeout=60)
    assert len([r for r in a.runs() if r["event"] == "undeploy"]) == 1
    assert len(a.runs()) >= n
    assert open(data).read() == "zodb"


def blobs_files_stack(files):
    return {
        "opsworks": {"stack": {"name": "p"}, "layers": {"shared_blobs": {"name": "Blobs", "instances": dict(ME)}}},
        "deploy": {}, "plone_blobs": {"network": "127.0.0.0/8"},
        "agent": {"layers": {"shared_blobs": {"setup": ["files", "nfs_blobs"], "configure": ["files", "nfs_blobs"]}},
                  "files": {"shared_blobs": files}},
    }


def test_a_file_a_recipe_writes_is_refused_in_agent_files(make_agent):
    # break1 k2f: agent.files and the nfs_blobs recipe both wrote
    # /etc/default/nfs-common; every configure reported changed=2 and
    # flipped its content. Now the document is refused with the JSON path.
    a = make_agent(blobs_files_stack([{"path": "/etc/motd", "content": "hi\n"}]),
                   conf_extra={"exportfs_command": ["/bin/true"]})
    a.start()
    a.wait_runs(1, timeout=60)
    a.wait_idle(timeout=60)
    nfs = os.path.join(a.root, "etc/default/nfs-common")
    before = open(nfs).read()
    rev = a.status()["source"]["stack_revision"]
    n = len(a.runs())
    for path, word in [("/etc/default//nfs-common", "nfs_blobs"),
                       ("/etc/exports.d/agentd-blobs.exports", "exports file"),
                       ("/srv/exports/blobstorage/x", "is inside the NFS export")]:
        a.write_stack(blobs_files_stack([{"path": "/etc/motd", "content": "hi\n"},
                                         {"path": path, "content": "mine\n"}]))
        rejected_at(a, "$.agent.files.shared_blobs[1].path", rev, word)
        a.write_stack(blobs_files_stack([{"path": "/etc/motd", "content": "hi\n"}]))
        wait_for(lambda: a.status()["source"]["error"] is None, what="the good stack again")
    assert len(a.runs()) == n
    assert open(nfs).read() == before


def test_one_device_in_volumes_and_ebs_devices_is_refused(make_agent):
    # break1 k2c: /dev/sdf in agent.volumes and /dev//sdf in ebs.devices, at
    # two mount points, was accepted and two mounts of one device planned.
    good = simple_stack(extra=None)
    a = make_agent(good)
    a.start()
    a.wait_runs(3)
    a.wait_idle()
    rev = a.status()["source"]["stack_revision"]
    n = len(a.runs())
    vol = {"volume_id": "vol-0123456789abcdef0", "device": "/dev/sdf", "mount_point": "/srv/data", "fstype": "xfs"}
    for devices, path, word in [
        ({"/dev//sdf": {"mount_point": "/srv/other", "fstype": "xfs"}}, '$.ebs.devices["/dev/sdf"]', "one device"),
        ({"/dev/xvdf/": {"mount_point": "/srv/other"}}, '$.ebs.devices["/dev/xvdf"]', "one device"),
    ]:
        bad = json.loads(json.dumps(good))
        bad["agent"]["volumes"] = {"app1": [vol]}
        bad["ebs"] = {"devices": devices}
        a.write_stack(bad)
        rejected_at(a, path, rev, word)
        a.write_stack(good)
        wait_for(lambda: a.status()["source"]["error"] is None, what="the good stack again")
    assert len(a.runs()) == n


def test_dot_components_are_named_in_the_error(make_agent):
    # break1 kind 2 item 4: "/etc/./motd" was refused "without ..".
    good = simple_stack(extra=None)
    a = make_agent(good)
    a.start()
    a.wait_runs(3)
    a.wait_idle()
    rev = a.status()["source"]["stack_revision"]
    bad = json.loads(json.dumps(good))
    bad["agent"]["files"] = {"web": [{"path": "/etc/./motd", "content": "a\n"}]}
    a.write_stack(bad)
    err = rejected_at(a, "$.agent.files.web[0].path", rev, '"."')
    assert '".."' not in err, err
