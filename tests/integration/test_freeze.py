"""The ebs_snapshots freeze (design.md §8.1) on a real ext4 file system on a
loop device, mounted under the agent's root: frozen while CreateSnapshot is
in flight, thawed once it returns, and thawed at freeze_timeout when the
endpoint hangs. Needs root, losetup, mkfs.ext4 and fsfreeze; skipped
otherwise."""
import os
import shutil
import subprocess
import sys
import threading
import time

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from conftest import AGENTCTL, wait_for  # noqa: E402
from ec2_fixture import Ec2Fixture  # noqa: E402
from test_ebs_snapshots import KEY, SECRET, snap_stack, start  # noqa: E402

VOL = ("vol-0fff5555aaaa6666b", "/dev/sdh", "/srv/data")

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not all(shutil.which(t) for t in ("losetup", "mkfs.ext4", "fsfreeze")),
    reason="needs root, losetup, mkfs.ext4 and fsfreeze")


@pytest.fixture
def ext4(tmp_path):
    img = tmp_path / "vol.img"
    with open(img, "wb") as f:
        f.truncate(32 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(img)], check=True)
    p = subprocess.run(["losetup", "-f", "--show", str(img)], capture_output=True, text=True)
    if p.returncode != 0:
        pytest.skip("no loop device: " + p.stderr)
    dev = p.stdout.strip()
    mounted = []

    def mount(where):
        os.makedirs(where, exist_ok=True)
        subprocess.run(["mount", "-t", "ext4", dev, where], check=True)
        mounted.append(where)
        return where

    yield mount
    for m in mounted:
        subprocess.run(["fsfreeze", "-u", m], capture_output=True)  # never leave it frozen
        if subprocess.run(["umount", m], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", m], capture_output=True)  # a writer still finishing
    subprocess.run(["losetup", "-d", dev], capture_output=True)


def writer(mp):
    """A write from another process: creates and fsyncs a file."""
    return subprocess.Popen([sys.executable, "-c",
                             "import os,sys; fd=os.open(sys.argv[1], os.O_WRONLY|os.O_CREAT, 0o600); "
                             "os.write(fd, b'x'); os.fsync(fd)", os.path.join(mp, f"w{time.monotonic_ns()}")])


def run_bg(a):
    return subprocess.Popen([AGENTCTL, "--socket", a.sock, "run", "maintenance", "--recipe", "ebs_snapshots",
                             "--wait"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def freeze_stack():
    return snap_stack({"aws_key": KEY, "aws_secret": SECRET, "region": "eu-west-1", "freeze": True},
                      vols=[VOL])


def test_frozen_during_create_thawed_after(make_agent, ext4):
    with Ec2Fixture(keys={KEY: (SECRET, None)}) as ec2:
        ec2.create_gate = threading.Event()
        a = start(make_agent, ec2, freeze_stack(), conf={"freeze_timeout": 30})
        mp = ext4(a.root + VOL[2])
        job = run_bg(a)
        wait_for(lambda: ec2.counts.get("CreateSnapshot"), 10, "CreateSnapshot to arrive")
        w = writer(mp)
        # Frozen: the write does not complete while the call is held.
        with pytest.raises(subprocess.TimeoutExpired):
            w.wait(timeout=0.5)
        ec2.create_gate.set()
        assert w.wait(timeout=10) == 0  # thawed once CreateSnapshot returned
        out, _ = job.communicate(timeout=30)
        assert job.returncode == 0, out
        assert "frozen" in out and "thawed once CreateSnapshot returned" in out, out
        assert len(ec2.of(VOL[0])) == 1
        # Thawed for good: another write completes at once.
        assert writer(mp).wait(timeout=10) == 0


def test_thawed_at_deadline_when_endpoint_hangs(make_agent, ext4):
    with Ec2Fixture(keys={KEY: (SECRET, None)}) as ec2:
        ec2.hang_create = True
        a = start(make_agent, ec2, freeze_stack(), conf={"freeze_timeout": 1})
        mp = ext4(a.root + VOL[2])
        t0 = time.monotonic()
        job = run_bg(a)
        wait_for(lambda: ec2.counts.get("CreateSnapshot"), 10, "CreateSnapshot to arrive")
        w = writer(mp)
        # The endpoint never answers: the deadline thaws, the write completes.
        assert w.wait(timeout=10) == 0
        out, _ = job.communicate(timeout=30)
        elapsed = time.monotonic() - t0
        assert job.returncode == 1, out
        assert "freeze_timeout (1 s)" in out and "thawed at the deadline" in out, out
        assert VOL[0] in out
        assert elapsed < 8, elapsed
        ec2.hang_create = False
        assert writer(mp).wait(timeout=10) == 0


def test_kill_9_while_frozen_is_thawed_by_the_next_start(make_agent, ext4):
    """agentd killed (-9) with the file system frozen: nothing of it is left
    to thaw, so the freeze is recorded in state_dir/freeze before FIFREEZE,
    and the next agentd thaws it before anything else."""
    with Ec2Fixture(keys={KEY: (SECRET, None)}) as ec2:
        ec2.create_gate = threading.Event()
        a = start(make_agent, ec2, freeze_stack(), conf={"freeze_timeout": 60})
        mp = ext4(a.root + VOL[2])
        job = run_bg(a)
        wait_for(lambda: ec2.counts.get("CreateSnapshot"), 10, "CreateSnapshot to arrive")
        journal = os.path.join(a.state, "freeze")
        assert len(os.listdir(journal)) == 1
        w = writer(mp)
        with pytest.raises(subprocess.TimeoutExpired):
            w.wait(timeout=0.5)  # frozen
        a.kill9()
        job.communicate(timeout=30)
        with pytest.raises(subprocess.TimeoutExpired):
            w.wait(timeout=0.5)  # still frozen: the dead agentd thaws nothing
        ec2.create_gate.set()
        a.start()
        assert w.wait(timeout=10) == 0  # thawed by the new agentd's start
        assert os.listdir(journal) == []
        assert "left frozen by an agentd stopped during a snapshot" in a.stderr_text()


def test_never_freezes_agentds_own_log_dir(make_agent, ext4, tmp_path):
    """log_dir on the volume: a freeze would block agentd itself in write(2)
    of the run log, before CreateSnapshot and before the deadline's thaw.
    The volume is snapshotted without a freeze, and says why."""
    own = ext4(str(tmp_path / "own"))  # the same file system, mounted twice
    log_dir = os.path.join(own, "log")
    with Ec2Fixture(keys={KEY: (SECRET, None)}) as ec2:
        a = start(make_agent, ec2, freeze_stack(), conf={"freeze_timeout": 30, "log_dir": log_dir})
        mp = ext4(a.root + VOL[2])
        job = run_bg(a)
        out, _ = job.communicate(timeout=20)
        assert job.returncode == 0, out
        assert f"freeze: {VOL[2]} holds agentd's log_dir ({log_dir}): snapshot without a freeze" in out, out
        assert "frozen" not in out.replace("without a freeze", ""), out
        assert ec2.counts.get("CreateSnapshot") == 1 and len(ec2.of(VOL[0])) == 1
        assert writer(mp).wait(timeout=5) == 0  # never frozen
        assert os.listdir(log_dir)  # agentd kept writing there
