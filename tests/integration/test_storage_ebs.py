# EBS data volumes (issue 4): loop devices stand in for the volumes, found
# through by-id links the test makes under a temporary root; agentd runs in
# a private mount namespace so its mounts vanish with it.
import json
import os
import signal
import stat
import subprocess

import pytest

import conftest
from conftest import wait_for
from storage_helpers import VOLID, Loop, fstab_lines, mounts_of, namespaced, step_of, volume_stack

BY_ID = "nvme-Amazon_Elastic_Block_Store_vol" + VOLID[4:]


@pytest.fixture
def loops(tmpdir_agent):
    made = []

    def make(name="vol"):
        l = Loop(tmpdir_agent, name + str(len(made)))
        made.append(l)
        return l

    yield make
    for l in made:
        l.detach()


@pytest.fixture
def ns_agent(make_agent, tmpdir_agent, monkeypatch):
    monkeypatch.setattr(conftest, "AGENTD", namespaced(tmpdir_agent))
    return make_agent


def mounted_at(a, mp):
    return mounts_of(a.proc.pid).get(os.path.join(a.root, mp.lstrip("/")))


@pytest.mark.parametrize("fstype", ["ext4", "xfs"])
def test_blank_volume_is_formatted_mounted_and_converges(ns_agent, loops, fstype):
    loop = loops()
    a = ns_agent(volume_stack([{"volume_id": VOLID, "mount_point": "/data", "fstype": fstype, "mkfs": True}]))
    loop.node_in(a.root, BY_ID)
    a.start()
    runs = a.wait_runs(3)
    a.wait_idle()
    assert all(r["status"] == "success" for r in a.runs()), a.runs()
    assert loop.blkid("TYPE") == fstype
    m = mounted_at(a, "/data")
    assert m is not None and m[1] == fstype
    st = os.stat(loop.dev)
    assert m[3] == f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
    uuid = loop.blkid("UUID")
    lines = fstab_lines(a.root)
    assert len(lines) == 1, lines
    f = lines[0].split()
    assert f[0] == "UUID=" + uuid and f[1] == "/data" and f[2] == fstype
    assert "nofail" in f[3].split(",") and "x-agentd" in f[3].split(",")
    setup = [r for r in a.runs() if r["event"] == "setup"][0]
    vol = step_of(a, setup["id"], "volume")[0]
    assert vol["status"] == "changed"
    # The mounted file system is usable (write through the agent's namespace).
    with open(f"/proc/{a.proc.pid}/root{a.root}/data/probe", "w") as fh:
        fh.write("x")
    # Second run: nothing to do; and fstab keeps one line over three runs.
    for _ in range(2):
        p = a.ctl("run", "configure", "--wait")
        assert p.returncode == 0, p.stdout + p.stderr
        last = a.runs()[0]
        assert last["status"] == "success" and last["changed"] == 0, a.ctl_json("show", last["id"])
    assert fstab_lines(a.root) == lines
    assert loop.blkid("UUID") == uuid
    plan = a.ctl_json("plan", "configure")
    assert [s["action"] for s in plan["steps"] if s["kind"] == "volume"] == ["none"]
    assert a.stop() == 0, a.stderr_text()[-3000:]  # a clean exit (no leak under ASan)


def test_volume_with_files_is_mounted_never_formatted(ns_agent, loops, tmpdir_agent):
    loop = loops()
    src = os.path.join(tmpdir_agent, "content")
    os.makedirs(src)
    with open(os.path.join(src, "keep.txt"), "w") as f:
        f.write("precious\n")
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", src, loop.dev], check=True)
    uuid = loop.blkid("UUID")
    # Found by its mapping name in the xvd form, asked for as /dev/sdf; mkfs
    # allowed and another fstype asked for: still never formatted.
    a = ns_agent(volume_stack([{"device": "/dev/sdf", "mount_point": "/srv/data", "fstype": "xfs", "mkfs": True}]))
    os.makedirs(os.path.join(a.root, "dev"))
    os.mknod(os.path.join(a.root, "dev/xvdf"), stat.S_IFBLK | 0o600, os.stat(loop.dev).st_rdev)
    a.start()
    a.wait_runs(3)
    a.wait_idle()
    assert all(r["status"] == "success" for r in a.runs()), a.runs()
    assert loop.blkid("UUID") == uuid and loop.blkid("TYPE") == "ext4"
    m = mounted_at(a, "/srv/data")
    assert m and m[1] == "ext4"
    with open(f"/proc/{a.proc.pid}/root{a.root}/srv/data/keep.txt") as f:
        assert f.read() == "precious\n"
    assert [l.split()[:3] for l in fstab_lines(a.root)] == [["UUID=" + uuid, "/srv/data", "ext4"]]


def test_volume_found_by_nvme_serial_in_sysfs(ns_agent, loops):
    # No by-id link: the NVMe serial (volume id without its dash, space-padded)
    # under root/sys/block names the device.
    loop = loops()
    subprocess.run(["mkfs.xfs", "-q", "-f", loop.dev], check=True)
    a = ns_agent(volume_stack([{"volume_id": VOLID, "mount_point": "/data"}]))
    os.makedirs(os.path.join(a.root, "dev"))
    os.mknod(os.path.join(a.root, "dev/nvme3n1"), stat.S_IFBLK | 0o600, os.stat(loop.dev).st_rdev)
    os.makedirs(os.path.join(a.root, "sys/block/nvme3n1/device"))
    with open(os.path.join(a.root, "sys/block/nvme3n1/device/serial"), "w") as f:
        f.write("vol" + VOLID[4:] + "     \n")
    a.start()
    a.wait_runs(3)
    a.wait_idle()
    assert all(r["status"] == "success" for r in a.runs()), a.runs()
    assert mounted_at(a, "/data")[1] == "xfs"
    assert a.stop() == 0, a.stderr_text()[-3000:]


def test_blank_volume_without_mkfs_fails_clearly(ns_agent, loops):
    loop = loops()
    a = ns_agent(volume_stack([{"volume_id": VOLID, "mount_point": "/data", "fstype": "ext4"}]))
    loop.node_in(a.root, BY_ID + "-ns-1")
    a.start()
    failed = wait_for(lambda: [r for r in a.finished_runs() if r["status"] == "failed"], what="a failed run")
    vol = step_of(a, failed[0]["id"], "volume")[0]
    assert vol["status"] == "failed" and "no filesystem" in vol["error"] and "mkfs" in vol["error"]
    assert loop.blkid("TYPE") == ""
    assert mounted_at(a, "/data") is None


def test_refuses_non_empty_mount_point_unless_forced(ns_agent, loops):
    loop = loops()
    subprocess.run(["mkfs.ext4", "-q", "-F", loop.dev], check=True)
    vol = {"volume_id": VOLID, "mount_point": "/data", "fstype": "ext4"}
    a = ns_agent(volume_stack([vol]))
    loop.node_in(a.root, BY_ID)
    os.makedirs(os.path.join(a.root, "data"))
    with open(os.path.join(a.root, "data/old"), "w") as f:
        f.write("x")
    a.start()
    failed = wait_for(lambda: [r for r in a.finished_runs() if r["status"] == "failed"], what="a failed run")
    step = step_of(a, failed[0]["id"], "volume")[0]
    assert "non-empty" in step["error"] and "force" in step["error"], step
    assert mounted_at(a, "/data") is None
    a.write_stack(volume_stack([dict(vol, force=True)]))
    wait_for(lambda: mounted_at(a, "/data"), what="the forced mount")
    a.wait_idle()
    assert a.stop() == 0, a.stderr_text()[-3000:]


def test_device_that_never_appears_times_out(ns_agent):
    a = ns_agent(volume_stack([{"volume_id": VOLID, "mount_point": "/data", "mkfs": True}]),
                 conf_extra={"device_timeout": 1})
    a.start()
    failed = wait_for(lambda: [r for r in a.finished_runs() if r["status"] == "failed"], what="a failed run")
    step = step_of(a, failed[0]["id"], "volume")[0]
    assert VOLID in step["error"] and "after 1 s" in step["error"], step


def test_killed_between_mkfs_and_mount_recovers(ns_agent, loops, tmpdir_agent):
    loop = loops()
    mark = os.path.join(tmpdir_agent, "mkfs-done")
    slow = os.path.join(tmpdir_agent, "slow-mkfs")
    with open(slow, "w") as f:
        # Formats, says so, then hangs as if the agent died before mounting.
        f.write(f"#!/bin/sh\nmkfs \"$@\" || exit 1\necho $$ > {mark}.tmp && mv {mark}.tmp {mark}\nexec sleep 600\n")
    os.chmod(slow, 0o755)
    a = ns_agent(volume_stack([{"volume_id": VOLID, "mount_point": "/data", "fstype": "ext4", "mkfs": True}]),
                 conf_extra={"mkfs_command": [slow]})
    loop.node_in(a.root, BY_ID)
    a.start()
    wait_for(lambda: os.path.exists(mark), timeout=60, what="mkfs to finish")
    pid = int(open(mark).read())
    try:
        a.kill9()
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    uuid = loop.blkid("UUID")
    assert uuid and fstab_lines(a.root) == []
    conf = json.load(open(a.conf_path))
    del conf["mkfs_command"]  # the next start has a working mkfs, which must not be used anyway
    json.dump(conf, open(a.conf_path, "w"))
    a.start()
    wait_for(lambda: mounted_at(a, "/data"), timeout=30, what="the mount after the restart")
    a.wait_idle()
    assert loop.blkid("UUID") == uuid  # not formatted again
    assert [l.split()[0] for l in fstab_lines(a.root)] == ["UUID=" + uuid]
    assert any(r["status"] == "interrupted" for r in a.runs()), a.runs()
    assert a.stop() == 0, a.stderr_text()[-3000:]


BAD = [
    ("mount point", {"volume_id": VOLID, "mount_point": "/data/../../etc"}, "$.agent.volumes.app1[0].mount_point"),
    ("device", {"device": "/dev/../../etc/passwd", "mount_point": "/data"}, "$.agent.volumes.app1[0].device"),
    ("relative", {"device": "dev/sdf", "mount_point": "/data"}, "$.agent.volumes.app1[0].device"),
    ("system dir", {"volume_id": VOLID, "mount_point": "/etc"}, "$.agent.volumes.app1[0].mount_point"),
    ("var", {"volume_id": VOLID, "mount_point": "/var/"}, "$.agent.volumes.app1[0].mount_point"),
    ("root", {"volume_id": VOLID, "mount_point": "/"}, "$.agent.volumes.app1[0].mount_point"),
    ("under usr", {"volume_id": VOLID, "mount_point": "/usr/local/data"}, "$.agent.volumes.app1[0].mount_point"),
]


@pytest.mark.parametrize("what,vol,path", BAD, ids=[b[0] for b in BAD])
def test_paths_escaping_root_are_rejected(ns_agent, what, vol, path):
    a = ns_agent(volume_stack([vol]))
    a.start()
    st = wait_for(lambda: a.status()["source"]["error"] and a.status(), what="the error in status")
    assert st["source"]["error_path"] == path, st["source"]
    assert a.runs() == []


def test_ebs_devices_path_escaping_root_is_rejected(ns_agent):
    a = ns_agent(conftest.simple_stack(extra={"ebs": {"devices": {"/dev/../x": {"mount_point": "/data"}}}}))
    a.start()
    st = wait_for(lambda: a.status()["source"]["error"] and a.status(), what="the error in status")
    assert st["source"]["error_path"].startswith("$.ebs.devices"), st["source"]


EBS_BAD = [
    ("system dir", {"mount_point": "/usr"}, "mount_point"),
    ("opt", {"mount_point": "/opt"}, "mount_point"),
    ("fstype", {"mount_point": "/data", "fstype": "btrfs"}, "fstype"),
]


@pytest.mark.parametrize("what,dev,key", EBS_BAD, ids=[b[0] for b in EBS_BAD])
def test_ebs_devices_system_dir_or_other_fstype_is_rejected(ns_agent, what, dev, key):
    a = ns_agent(conftest.simple_stack(extra={"ebs": {"devices": {"/dev/sdf": dev}}}))
    a.start()
    st = wait_for(lambda: a.status()["source"]["error"] and a.status(), what="the error in status")
    path = st["source"]["error_path"]
    assert path.startswith("$.ebs.devices") and "sdf" in path and path.endswith("." + key), st["source"]
    assert a.runs() == []


def test_symlinks_cannot_lead_a_mount_out_of_root(ns_agent, loops, tmpdir_agent):
    loop = loops()
    subprocess.run(["mkfs.ext4", "-q", "-F", loop.dev], check=True)
    outside = os.path.join(tmpdir_agent, "outside")
    os.makedirs(outside)
    a = ns_agent(volume_stack([{"device": "/dev/sdf", "mount_point": "/data"}]))
    # The mount point and the device are symlinks to absolute host paths:
    # inside root they mean root/<that path>, which does not exist.
    os.makedirs(os.path.join(a.root, "dev"))
    os.symlink(loop.dev, os.path.join(a.root, "dev/sdf"))
    os.symlink(outside, os.path.join(a.root, "data"))
    a.start()
    failed = wait_for(lambda: [r for r in a.finished_runs() if r["status"] == "failed"], what="a failed run")
    info = a.ctl_json("show", failed[0]["id"])
    bad = [s for s in info["steps"] if s["status"] == "failed"][0]
    assert bad["kind"] in ("dir", "volume"), bad
    m = mounts_of(a.proc.pid)
    assert outside not in m and not any(v[3] == "%d:%d" % (os.major(os.stat(loop.dev).st_rdev),
                                                          os.minor(os.stat(loop.dev).st_rdev)) for v in m.values())


def test_device_with_unknown_data_is_never_formatted(ns_agent, loops):
    # No signature libblkid knows, but data: mkfs allowed, still refused.
    loop = loops()
    data = os.urandom(1 << 20)
    with open(loop.file, "r+b") as f:
        f.write(data)
    a = ns_agent(volume_stack([{"volume_id": VOLID, "mount_point": "/data", "fstype": "ext4", "mkfs": True}]))
    loop.node_in(a.root, BY_ID)
    a.start()
    failed = wait_for(lambda: [r for r in a.finished_runs() if r["status"] == "failed"], what="a failed run")
    vol = step_of(a, failed[0]["id"], "volume")[0]
    assert vol["status"] == "failed" and "not blank but no filesystem found: refusing mkfs" in vol["error"], vol
    with open(loop.dev, "rb") as f:
        assert f.read(1 << 20) == data
    assert loop.blkid("TYPE") == "" and mounted_at(a, "/data") is None



def test_fstab_line_of_someone_else_is_kept_unless_forced(ns_agent, loops):
    loop = loops()
    subprocess.run(["mkfs.ext4", "-q", "-F", loop.dev], check=True)
    uuid = loop.blkid("UUID")
    vol = {"volume_id": VOLID, "mount_point": "/data", "fstype": "ext4"}
    a = ns_agent(volume_stack([vol]))
    loop.node_in(a.root, BY_ID)
    os.makedirs(os.path.join(a.root, "etc"))
    theirs = ["LABEL=theirs /data ext4 defaults 0 2", "proc /proc proc defaults 0 0"]
    with open(os.path.join(a.root, "etc/fstab"), "w") as f:
        f.write("\n".join(theirs) + "\n")
    a.start()
    failed = wait_for(lambda: [r for r in a.finished_runs() if r["status"] == "failed"], what="a failed run")
    step = step_of(a, failed[0]["id"], "volume")[0]
    assert "fstab line for /data is not agentd's" in step["error"] and "force" in step["error"], step
    assert fstab_lines(a.root) == theirs and mounted_at(a, "/data") is None
    a.write_stack(volume_stack([dict(vol, force=True)]))
    wait_for(lambda: mounted_at(a, "/data"), what="the forced mount")
    a.wait_idle()
    lines = fstab_lines(a.root)
    assert [l.split()[:2] for l in lines] == [["UUID=" + uuid, "/data"], ["proc", "/proc"]], lines
    assert a.stop() == 0, a.stderr_text()[-3000:]


def test_volume_id_wins_over_a_mapping_name_that_is_another_volume(ns_agent, loops):
    # /dev/sdf is there and has a file system, but its serial says it is
    # another volume; the volume asked for is found by its serial.
    other, ours = loops(), loops()
    subprocess.run(["mkfs.ext4", "-q", "-F", other.dev], check=True)
    subprocess.run(["mkfs.xfs", "-q", "-f", ours.dev], check=True)
    a = ns_agent(volume_stack([{"volume_id": VOLID, "device": "/dev/sdf", "mount_point": "/data"}]))
    os.makedirs(os.path.join(a.root, "dev"))
    for name, loop, serial in (("sdf", other, "vol0aaaaaaaaaaaaaaaa"), ("nvme2n1", ours, "vol" + VOLID[4:])):
        os.mknod(os.path.join(a.root, "dev", name), stat.S_IFBLK | 0o600, os.stat(loop.dev).st_rdev)
        os.makedirs(os.path.join(a.root, "sys/block", name, "device"))
        with open(os.path.join(a.root, "sys/block", name, "device/serial"), "w") as f:
            f.write(serial + "  \n")
    a.start()
    a.wait_runs(3)
    a.wait_idle()
    assert all(r["status"] == "success" for r in a.runs()), a.runs()
    m = mounted_at(a, "/data")
    st = os.stat(ours.dev)
    assert m[1] == "xfs" and m[3] == f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}", m
    assert a.stop() == 0, a.stderr_text()[-3000:]


def test_blank_device_found_only_by_name_is_never_formatted_when_a_volume_id_is_given(ns_agent, loops):
    loop = loops()
    a = ns_agent(volume_stack([{"volume_id": VOLID, "device": "/dev/sdf", "mount_point": "/data", "mkfs": True}]))
    os.makedirs(os.path.join(a.root, "dev"))
    os.mknod(os.path.join(a.root, "dev/sdf"), stat.S_IFBLK | 0o600, os.stat(loop.dev).st_rdev)
    a.start()
    failed = wait_for(lambda: [r for r in a.finished_runs() if r["status"] == "failed"], what="a failed run")
    vol = step_of(a, failed[0]["id"], "volume")[0]
    assert "found only by its name" in vol["error"] and "refusing mkfs" in vol["error"], vol
    assert loop.blkid("TYPE") == "" and mounted_at(a, "/data") is None
