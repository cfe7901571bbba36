# Shared blobs over NFS (issue 4). This kernel has no NFS client: agentd
# runs in a private mount namespace where a stand-in mount.nfs is bind-mounted
# over the real one. The stand-in records how libmount called it, then mounts
# a tmpfs named like the NFS source, so the next run sees "mounted".
import os

import pytest

import conftest
from conftest import wait_for
from storage_helpers import fstab_lines, mounts_of, namespaced, step_of

SERVER = "10.213.5.1"
BLOBS = "/mnt/shared/blobs"


def blob_stack(server_status="online", section=None, blobs=None):
    stack = conftest.simple_stack(layers={
        "plone_instances": {"name": "Plone", "instances": {"app1": {"private_ip": "10.213.5.2", "status": "online"}}},
        "shared_blobs": {"name": "Blobs", "instances": {"nfs1": {"private_ip": SERVER, "status": server_status}}},
    })
    stack["deploy"] = {"plone_instances": {}}
    stack["plone_instances"] = section or {"nfs_blobs": True}
    if blobs:
        stack["plone_blobs"] = blobs
    stack["agent"]["layers"] = {"plone_instances": {"setup": ["blob_mounts"], "configure": ["blob_mounts"],
                                                    "deploy": [], "undeploy": [], "shutdown": []}}
    return stack


@pytest.fixture
def nfs_agent(make_agent, tmpdir_agent, monkeypatch):
    log = os.path.join(tmpdir_agent, "mount.nfs.log")
    fail = os.path.join(tmpdir_agent, "mount.nfs.fail")
    fake = os.path.join(tmpdir_agent, "mount.nfs")
    with open(fake, "w") as f:
        f.write("#!/bin/sh\n"
                f"{{ printf '%s\\n' \"$@\"; echo --; }} >> {log}\n"
                f"[ -e {fail} ] && {{ echo 'mount.nfs: access denied by server' >&2; exit 32; }}\n"
                "exec mount -t tmpfs -o size=1m \"$1\" \"$2\"\n")
    os.chmod(fake, 0o755)
    monkeypatch.setattr(conftest, "AGENTD", namespaced(tmpdir_agent, f"mount --bind {fake} /sbin/mount.nfs &&"))

    def calls():
        try:
            text = open(log).read()
        except FileNotFoundError:
            return []
        return [c.strip("\n").split("\n") for c in text.split("--\n") if c.strip()]

    make_agent.calls = calls
    make_agent.fail = fail
    return make_agent


def test_nfs_client_mounts_server_export_with_reference_options(nfs_agent):
    a = nfs_agent(blob_stack())
    a.start()
    a.wait_runs(3)
    a.wait_idle()
    assert all(r["status"] == "success" for r in a.runs()), a.runs()
    target = os.path.join(a.root, BLOBS.lstrip("/"))
    calls = nfs_agent.calls()
    assert len(calls) == 1, calls
    argv = calls[0]
    # Exactly how mount(8) would call it: source, target, -n (agentd keeps
    # no utab/mtab), the reference's options less the fstab-only words.
    assert argv == [f"{SERVER}:/srv/exports", target, "-n", "-o", "rw,noatime,nodiratime,_netdev"], argv
    assert mounts_of(a.proc.pid)[target][0] == f"{SERVER}:/srv/exports"
    (line,) = fstab_lines(a.root)
    f = line.split()
    assert f[:3] == [f"{SERVER}:/srv/exports", BLOBS, "nfs"]
    assert f[3].split(",") == ["rw", "noatime", "nodiratime", "_netdev", "nofail", "x-agentd"]
    link = os.path.join(a.root, "srv/www/plone_instances/shared/var/blobstorage")
    assert os.readlink(link) == os.path.relpath(BLOBS + "/blobstorage", "/srv/www/plone_instances/shared/var")
    # Converged: the next configure changes nothing and calls no helper.
    p = a.ctl("run", "configure", "--wait")
    assert p.returncode == 0 and a.runs()[0]["changed"] == 0, a.ctl_json("show", a.runs()[0]["id"])
    assert len(nfs_agent.calls()) == 1
    # Shutdown unmounts what agentd mounted, after the layer's recipes.
    p = a.ctl("run", "shutdown", "--wait")
    assert p.returncode == 0, p.stdout + p.stderr
    (un,) = step_of(a, a.runs()[0]["id"], "unmount")
    assert un["status"] == "changed" and un["target"] == BLOBS
    assert target not in mounts_of(a.proc.pid)
    assert a.stop() == 0, a.stderr_text()[-3000:]


def test_zeoserver_blobs_and_filestorage_links(nfs_agent):
    stack = blob_stack()
    stack["opsworks"]["layers"]["zeoserver"] = stack["opsworks"]["layers"].pop("plone_instances")
    stack["agent"]["layers"] = {"zeoserver": stack["agent"]["layers"].pop("plone_instances")}
    stack["deploy"] = {"zeoserver": {"user": "root", "group": "root"}}
    stack["plone_zeoserver"] = {"nfs_blobs": True}
    del stack["plone_instances"]
    a = nfs_agent(stack)
    a.start()
    a.wait_runs(3)
    a.wait_idle()
    assert all(r["status"] == "success" for r in a.runs()), a.ctl_json("show", a.runs()[0]["id"])
    fs = os.path.join(a.root, "mnt/shared/zodb/filestorage")
    assert oct(os.stat(fs).st_mode & 0o7777) == "0o700"
    var = os.path.join(a.root, "srv/www/zeoserver/shared/var")
    assert os.path.realpath(os.path.join(var, "filestorage")) == fs
    assert os.readlink(os.path.join(var, "blobstorage")) == os.path.relpath(BLOBS + "/blobstorage",
                                                                             "/srv/www/zeoserver/shared/var")
    assert nfs_agent.calls()[0][:2] == [f"{SERVER}:/srv/exports", os.path.join(a.root, BLOBS.lstrip("/"))]
    assert a.stop() == 0, a.stderr_text()[-3000:]


def test_shutdown_leaves_mounts_that_are_not_agentds(nfs_agent):
    a = nfs_agent(blob_stack())
    a.start()
    a.wait_runs(3)
    a.wait_idle()
    target = os.path.join(a.root, BLOBS.lstrip("/"))
    assert target in mounts_of(a.proc.pid)
    # An operator takes the line over (drops agentd's marker): shutdown must
    # leave the mount alone.
    path = os.path.join(a.root, "etc/fstab")
    text = open(path).read().replace(",x-agentd", "")
    open(path, "w").write(text)
    p = a.ctl("run", "shutdown", "--wait")
    assert p.returncode == 0, p.stdout + p.stderr
    (un,) = step_of(a, a.runs()[0]["id"], "unmount")
    assert un["status"] == "unchanged", un
    assert target in mounts_of(a.proc.pid)
    assert a.stop() == 0, a.stderr_text()[-3000:]


def test_failing_helper_fails_the_step(nfs_agent):
    open(nfs_agent.fail, "w").close()
    a = nfs_agent(blob_stack())
    a.start()
    failed = wait_for(lambda: [r for r in a.finished_runs() if r["status"] == "failed"], what="a failed run")
    (m,) = step_of(a, failed[0]["id"], "mount")
    assert m["status"] == "failed" and "status 32" in m["error"], m
    assert fstab_lines(a.root) == []
    assert os.path.join(a.root, BLOBS.lstrip("/")) not in mounts_of(a.proc.pid)


def test_no_server_yet_notes_then_mounts_when_one_appears(nfs_agent):
    a = nfs_agent(blob_stack(server_status="stopped"))
    a.start()
    a.wait_runs(3)
    a.wait_idle()
    setup = [r for r in a.runs() if r["event"] == "setup"][0]
    info = a.ctl_json("show", setup["id"])
    notes = [s for s in info["steps"] if s["kind"] == "note"]
    assert any("no online member in layer shared_blobs" in (s.get("message") or "") for s in notes), info
    assert nfs_agent.calls() == [] and fstab_lines(a.root) == []
    n = len(a.finished_runs())
    a.write_stack(blob_stack())
    wait_for(lambda: nfs_agent.calls(), what="the mount once the server is online")
    a.wait_idle()
    assert nfs_agent.calls()[0][0] == f"{SERVER}:/srv/exports"
    assert a.runs()[0]["event"] == "configure" and a.runs()[0]["status"] == "success"


def test_plone_blobs_host_overrides_layer(nfs_agent):
    a = nfs_agent(blob_stack(server_status="stopped", blobs={"host": "nfs.example.internal"}))
    a.start()
    wait_for(lambda: nfs_agent.calls(), what="the helper call")
    assert nfs_agent.calls()[0][0] == "nfs.example.internal:/srv/exports"


def test_bad_plone_blobs_is_rejected_with_its_path(nfs_agent):
    a = nfs_agent(blob_stack(blobs={"host": "-o evil"}))
    a.start()
    st = wait_for(lambda: a.status()["source"]["error"] and a.status(), what="the error in status")
    assert st["source"]["error_path"] == "$.plone_blobs.host", st["source"]
    assert nfs_agent.calls() == []


def test_blob_server_address_that_could_pass_for_an_option_is_rejected(nfs_agent):
    stack = blob_stack()
    stack["opsworks"]["layers"]["shared_blobs"]["instances"]["nfs1"]["private_ip"] = "-oexec=/tmp/x"
    a = nfs_agent(stack)
    a.start()
    st = wait_for(lambda: a.status()["source"]["error"] and a.status(), what="the error in status")
    assert st["source"]["error_path"] == "$.opsworks.layers.shared_blobs.instances.nfs1.private_ip", st["source"]
    assert nfs_agent.calls() == [] and a.runs() == []



def test_blob_member_hostname_fallback_that_could_pass_for_an_option_is_rejected(nfs_agent):
    # No address at all: the hostname would be the mount source's host.
    stack = blob_stack()
    stack["opsworks"]["layers"]["shared_blobs"]["instances"] = {
        "-V": {"private_ip": "", "private_dns_name": "", "ip": "", "public_dns_name": "", "status": "online"}}
    a = nfs_agent(stack)
    a.start()
    st = wait_for(lambda: a.status()["source"]["error"] and a.status(), what="the error in status")
    path = st["source"]["error_path"]
    assert path.startswith("$.opsworks.layers.shared_blobs.instances") and "-V" in path, st["source"]
    assert nfs_agent.calls() == [] and a.runs() == []


SYSTEM_DIRS = [
    ("filestorage_dir", "plone_zeoserver", {"filestorage_dir": "/etc"}, "$.plone_zeoserver.filestorage_dir"),
    ("filestorage_dir var", "plone_instances", {"filestorage_dir": "/var"}, "$.plone_instances.filestorage_dir"),
    ("blob_dir", "plone_blobs", {"blob_dir": "/usr/share"}, "$.plone_blobs.blob_dir"),
    ("blob_dir root", "plone_blobs", {"blob_dir": "/"}, "$.plone_blobs.blob_dir"),
]


@pytest.mark.parametrize("what,section,value,path", SYSTEM_DIRS, ids=[d[0] for d in SYSTEM_DIRS])
def test_system_directories_are_rejected_with_their_path(nfs_agent, what, section, value, path):
    stack = blob_stack()
    stack[section] = dict(stack.get(section) or {}, **value)
    a = nfs_agent(stack)
    a.start()
    st = wait_for(lambda: a.status()["source"]["error"] and a.status(), what="the error in status")
    assert st["source"]["error_path"] == path, st["source"]
    assert nfs_agent.calls() == [] and a.runs() == []

def test_nfs_server_exports(make_agent, tmpdir_agent):
    log = os.path.join(tmpdir_agent, "exportfs.log")
    rec = os.path.join(tmpdir_agent, "exportfs")
    with open(rec, "w") as f:
        f.write(f"#!/bin/sh\necho \"$@\" >> {log}\n")
    os.chmod(rec, 0o755)
    stack = conftest.simple_stack(layers={
        "shared_blobs": {"name": "Blobs", "instances": {"app1": {"private_ip": SERVER, "status": "online"}}}})
    del stack["agent"]["layers"]
    a = make_agent(stack, conf_extra={"exportfs_command": [rec, "-ra"]})
    a.start()
    a.wait_runs(3)
    a.wait_idle()
    assert all(r["status"] == "success" for r in a.runs()), a.runs()
    modes = {d: oct(os.stat(os.path.join(a.root, d)).st_mode & 0o7777) for d in
             ("srv/exports", "srv/exports/blobstorage", "srv/exports/tmp")}
    assert modes == {"srv/exports": "0o750", "srv/exports/blobstorage": "0o750", "srv/exports/tmp": "0o1777"}
    text = open(os.path.join(a.root, "etc/exports.d/agentd-blobs.exports")).read()
    assert f"/srv/exports {SERVER}/8(rw,sync,no_subtree_check,no_root_squash)\n" in text
    assert open(log).read() == "-ra\n"  # once: setup changed the file, configure did not
    blobs = {"network": "10.213.0.0/16"}
    stack["plone_blobs"] = blobs
    a.write_stack(stack)
    wait_for(lambda: open(log).read().count("-ra") == 2, what="exportfs after the change")
    text = open(os.path.join(a.root, "etc/exports.d/agentd-blobs.exports")).read()
    assert "/srv/exports 10.213.0.0/16(" in text
    a.wait_idle()
    assert a.stop() == 0, a.stderr_text()[-3000:]
