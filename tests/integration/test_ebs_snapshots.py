"""The ebs_snapshots job (design.md §8.1) against a local EC2 Query API
endpoint that checks every signature with botocore (ec2_fixture.py).

The agent starts paused, so that the stack's EBS volumes (which exist on no
device here) plan no setup; `agentctl run maintenance --recipe ebs_snapshots`
runs the job against the current stack. The volumes are not mounted: the
stack says this instance mounts them, which is what counts (the freeze alone
needs a mount, test_freeze.py)."""
import datetime
import json
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from conftest import wait_for  # noqa: E402
from ec2_fixture import Ec2Fixture, ImdsFixture  # noqa: E402

KEY, SECRET = "AKIDTEST", "s3cr3t/Key+With=Chars"
VOLS = [("vol-0aaa1111bbbb2222c", "/dev/sdf", "/srv/data"), ("vol-0ddd3333eeee4444f", "/dev/sdg", "/srv/logs")]


def snap_stack(snap=None, vols=VOLS, name="prod"):
    section = {"aws_key": KEY, "aws_secret": SECRET, "region": "eu-west-1", "keep": 3}
    if snap is not None:
        section = snap
    return {
        "opsworks": {"stack": {"name": name},
                     "layers": {"ebs_snapshots": {"name": "Snapshots", "instances": {
                         "app1": {"private_ip": "10.0.0.1", "status": "online"}}}}},
        "deploy": {},
        "agent": {"volumes": {"app1": [{"volume_id": v, "device": d, "mount_point": m} for v, d, m in vols]}},
        "ebs_snapshots": section,
    }


@pytest.fixture
def ec2():
    with Ec2Fixture(keys={KEY: (SECRET, None)}) as fx:
        yield fx


def start(make_agent, ec2, stack, conf=None):
    c = {"ec2_endpoint": ec2.url, "imds_endpoint": "http://127.0.0.1:9"}
    c.update(conf or {})
    a = make_agent(None, conf_extra=c)
    a.start()
    a.ctl("pause", "tests run the job by hand", check=0)
    a.write_stack(stack)
    wait_for(lambda: a.status()["source"]["stack_revision"], 10, "the stack to be read")
    return a


def run_job(a, expect=0):
    p = a.ctl("run", "maintenance", "--recipe", "ebs_snapshots", "--wait", timeout=60)
    assert p.returncode == expect, p.stdout + p.stderr
    return p.stdout + p.stderr


def last_run(a):
    rid = a.runs()[0]["id"]
    return a.ctl_json("show", str(rid))


def test_snapshots_volumes_description_tags(make_agent, ec2):
    a = start(make_agent, ec2, snap_stack())
    out = run_job(a)
    assert SECRET not in out
    for vol, dev, _mp in VOLS:
        snaps = ec2.of(vol)
        assert len(snaps) == 1, snaps
        s = snaps[0]
        assert s["description"] == f"app1: automated snapshot of {dev} ({vol})"
        assert s["tags"] == {"Name": f"app1 ({dev})", "Hostname": "app1", "agentd:stack": "prod",
                             "agentd:job": "ebs_snapshots"}
    assert ec2.auth_failures == 0
    info = last_run(a)
    step = info["steps"][0]
    assert step["kind"] == "ec2_snapshot" and step["status"] == "changed"
    assert SECRET not in json.dumps(info)
    # Every call is a POST to "/" with a form body and no query string.
    assert all(p["Version"] == "2016-11-15" for _a, p, _h in ec2.requests)
    # The plan says what would happen without the secret (agentctl plan
    # has no --recipe yet: the method is asked directly).
    plan = ask(a, "plan", {"event": "maintenance", "recipe": "ebs_snapshots"})
    assert plan["ok"], plan
    assert plan["result"]["steps"][0]["kind"] == "ec2_snapshot"
    assert SECRET not in json.dumps(plan)


def ask(a, method, params):
    import socket
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(a.sock)
        s.sendall((json.dumps({"method": method, "params": params}) + "\n").encode())
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    return json.loads(data)


def test_pending_skipped(make_agent, ec2):
    ec2.add(VOLS[0][0], state="pending")
    a = start(make_agent, ec2, snap_stack())
    out = run_job(a)
    assert len(ec2.of(VOLS[0][0])) == 1  # only the pending one
    assert len(ec2.of(VOLS[1][0])) == 1
    log = a.ctl("log", "last").stdout
    assert "still pending" in log, log


def test_keep_over_20_days_and_foreign_snapshots(make_agent, ec2):
    vol = VOLS[0][0]
    foreign = ec2.add(vol, start=datetime.datetime.utcnow() - datetime.timedelta(days=400), tags={"Name": "by hand"})
    other_stack = ec2.add(vol, start=datetime.datetime.utcnow() - datetime.timedelta(days=300),
                          tags={"agentd:stack": "staging", "agentd:job": "ebs_snapshots"})
    a = start(make_agent, ec2, snap_stack(vols=VOLS[:1]))
    ec2.reset_counts()
    for day in range(20):
        run_job(a)
        ec2.complete_all()
        ec2.age_all(datetime.timedelta(days=1))
        ours = [s for s in ec2.of(vol) if s["tags"].get("agentd:stack") == "prod"]
        assert len(ours) == min(day + 1, 3), (day, ours)
    ids = {s["id"] for s in ec2.of(vol)}
    assert foreign["id"] in ids and other_stack["id"] in ids
    ours = sorted((s for s in ec2.of(vol) if s["tags"].get("agentd:stack") == "prod"), key=lambda s: s["start"])
    # The newest three days are the ones kept.
    ages = [(datetime.datetime.utcnow() - s["start"]).days for s in ours]
    assert ages == [3, 2, 1], ages
    assert ec2.counts["CreateSnapshot"] == 20
    assert ec2.counts["DeleteSnapshot"] == 17


def test_throttling_survived(make_agent, ec2):
    a = start(make_agent, ec2, snap_stack())
    ec2.throttle = 3
    run_job(a)
    assert ec2.throttle == 0
    assert all(len(ec2.of(v)) == 1 for v, _d, _m in VOLS)


def test_in_use_skipped(make_agent, ec2):
    vol = VOLS[0][0]
    tags = {"agentd:stack": "prod", "agentd:job": "ebs_snapshots"}
    now = datetime.datetime.utcnow()
    old = [ec2.add(vol, start=now - datetime.timedelta(days=d), tags=tags) for d in (5, 4, 3, 2)]
    ec2.in_use.add(old[0]["id"])
    a = start(make_agent, ec2, snap_stack(vols=VOLS[:1]))
    run_job(a)
    ids = {s["id"] for s in ec2.of(vol)}
    # keep 3 with the new one: the two oldest go; the oldest is in use and stays.
    assert old[0]["id"] in ids and old[1]["id"] not in ids
    assert old[2]["id"] in ids and old[3]["id"] in ids
    assert "in use" in a.ctl("log", "last").stdout


def test_wrong_secret_fails_clearly_without_storm(make_agent, ec2):
    bad = snap_stack({"aws_key": KEY, "aws_secret": "not-the-secret", "region": "eu-west-1"})
    a = start(make_agent, ec2, bad)
    ec2.reset_counts()
    out = run_job(a, expect=1)
    assert "AuthFailure" in out and "DescribeSnapshots" in out and VOLS[0][0] in out, out
    assert "not-the-secret" not in out
    assert "Signature" not in out
    # One request: the first volume's listing; nothing retried, no other volume tried.
    assert sum(ec2.counts.values()) == 1, ec2.counts
    info = last_run(a)
    assert info["status"] == "failed"
    assert "not-the-secret" not in json.dumps(info)


def test_role_credentials_with_token(make_agent, ec2):
    token = "FQoGZXIvYXdzEXAMPLE+session/token=="
    ec2.keys["ASIAROLE"] = ("role/secret+key", token)
    imds = ImdsFixture(creds=("ASIAROLE", "role/secret+key", token), region="eu-west-1")
    try:
        a = start(make_agent, ec2, snap_stack({"keep": 2}, vols=VOLS[:1]), conf={"imds_endpoint": imds.url})
        ec2.reset_counts()
        run_job(a)
        assert len(ec2.of(VOLS[0][0])) == 1
        assert ec2.auth_failures == 0
        hdrs = [h for _a, _p, h in ec2.requests]
        assert all(h.get("X-Amz-Security-Token") == token for h in hdrs)
        assert all("x-amz-security-token" in h["Authorization"] for h in hdrs)
        assert imds.counts.get("/latest/meta-data/placement/region") == 1
        # Cached: a second run asks IMDS for nothing.
        run_job(a)
        assert imds.counts.get("/latest/meta-data/iam/security-credentials/ASIAROLE".replace(
            "ASIAROLE", imds.role)) == 1
        assert token not in a.ctl("log", "last").stdout
    finally:
        imds.close()


def test_validation(make_agent, ec2):
    a = start(make_agent, ec2, snap_stack())
    a.write_stack(snap_stack({"aws_key": KEY, "keep": 0}))
    err = wait_for(lambda: a.status()["source"]["error"], 10, "the error")
    assert "$.ebs_snapshots" in err
    assert SECRET not in err


def test_throttling_bounded(make_agent, ec2):
    a = start(make_agent, ec2, snap_stack(vols=VOLS[:1]))
    ec2.throttle = 1000
    ec2.reset_counts()
    out = run_job(a, expect=1)
    assert "RequestLimitExceeded" in out and "gave up after 5 attempts" in out, out
    assert ec2.counts == {"DescribeSnapshots": 5}, ec2.counts


def test_device_mapping_name_through_nvme_serial(make_agent, ec2):
    """ebs.devices names a volume by mapping name only: its id comes from the
    NVMe serial of the device the name links to (udev's /dev/sdf ->
    nvme1n1), read under root at run time."""
    stack = snap_stack(vols=[])
    del stack["agent"]["volumes"]
    stack["ebs"] = {"devices": {"/dev/sdf": {"mount_point": "/srv/data", "fstype": "xfs"}}}
    a = start(make_agent, ec2, stack)
    os.makedirs(os.path.join(a.root, "dev"), exist_ok=True)
    open(os.path.join(a.root, "dev", "nvme1n1"), "w").close()
    os.symlink("nvme1n1", os.path.join(a.root, "dev", "sdf"))
    sysdev = os.path.join(a.root, "sys", "block", "nvme1n1", "device")
    os.makedirs(sysdev)
    with open(os.path.join(sysdev, "serial"), "w") as f:
        f.write("vol0123456789abcdef0    \n")
    run_job(a)
    snaps = ec2.of("vol-0123456789abcdef0")
    assert len(snaps) == 1
    assert snaps[0]["description"] == "app1: automated snapshot of /dev/sdf (vol-0123456789abcdef0)"


def test_job_only_where_the_recipe_runs(make_agent, ec2):
    stack = snap_stack()
    stack["opsworks"]["layers"] = {"web": {"name": "Web", "instances": {
        "app1": {"private_ip": "10.0.0.1", "status": "online"}}}}
    stack["agent"]["layers"] = {"web": {"setup": []}}
    a = start(make_agent, ec2, stack)
    out = run_job(a, expect=1)
    assert "no maintenance job \"ebs_snapshots\"" in out, out
    assert not ec2.counts


def test_role_credentials_refreshed_before_expiration(make_agent, ec2):
    token = "short-lived-token"
    ec2.keys["ASIASHORT"] = ("short/secret", token)
    # Expiring in 4 minutes: inside the 5-minute margin, so every run asks again.
    imds = ImdsFixture(creds=("ASIASHORT", "short/secret", token), expires_in=240)
    try:
        a = start(make_agent, ec2, snap_stack({"region": "eu-west-1"}, vols=VOLS[:1]),
                  conf={"imds_endpoint": imds.url})
        run_job(a)
        run_job(a)
        assert imds.counts.get("/latest/meta-data/iam/security-credentials/" + imds.role) == 2
        assert "/latest/meta-data/placement/region" not in imds.counts  # the stack names it
        assert ec2.auth_failures == 0
    finally:
        imds.close()


def test_no_role_and_no_key_fails_clearly(make_agent, ec2):
    imds = ImdsFixture(role=None, creds=None)
    try:
        a = start(make_agent, ec2, snap_stack({"region": "eu-west-1"}), conf={"imds_endpoint": imds.url})
        out = run_job(a, expect=1)
        assert "no IAM role on this instance" in out, out
        assert not ec2.counts
    finally:
        imds.close()


def test_repeated_next_token_fails_the_volume(make_agent, ec2):
    """An endpoint answering the same nextToken again would page forever
    (only run_timeout stopped it): the volume fails at the repeat."""
    ec2.add(VOLS[0][0])
    a = start(make_agent, ec2, snap_stack(vols=VOLS[:1]))
    ec2.stuck_token = "same"
    ec2.reset_counts()
    out = run_job(a, expect=1)
    assert "the same nextToken again" in out and VOLS[0][0] in out, out
    # The first page, then the one asked with the token, which repeats it.
    assert ec2.counts == {"DescribeSnapshots": 2}, ec2.counts


def test_unknown_key_refused(make_agent, ec2):
    a = start(make_agent, ec2, snap_stack())
    a.write_stack(snap_stack({"aws_key": KEY, "aws_secret": SECRET, "kep": 3}))
    err = wait_for(lambda: a.status()["source"]["error"], 10, "the error")
    assert '$.ebs_snapshots: unknown key "kep"' in err, err


def test_wrong_secret_scheduled_run_is_not_retried(make_agent, ec2):
    """A scheduled run refused with AuthFailure is recorded failed without a
    retry (retry_min 1 s would otherwise bring one AuthFailure per retry):
    the next due time runs the job again. The job is due at start (a
    schedule state whose baseline is two minutes old), held while paused,
    and runs at resume."""
    import time
    bad = snap_stack({"aws_key": KEY, "aws_secret": "not-the-secret", "region": "eu-west-1",
                      "schedule": "* * * * *", "splay": 0}, vols=VOLS[:1])
    a = make_agent(None, conf_extra={"ec2_endpoint": ec2.url, "imds_endpoint": "http://127.0.0.1:9",
                                     "retry_min": 1, "retry_max": 2, "device_timeout": 0})
    os.makedirs(a.state, exist_ok=True)
    with open(os.path.join(a.state, "schedule.json"), "w") as f:
        json.dump({"version": 1, "jobs": {"ebs_snapshots": {"schedule": "* * * * *", "splay": 0,
                                              "baseline": int(time.time()) - 120}}}, f)
    a.start()
    a.ctl("pause", "until the stack is read", check=0)
    a.write_stack(bad)
    wait_for(lambda: a.status()["source"]["stack_revision"], 10, "the stack to be read")
    a.ctl("resume", check=0)
    run = wait_for(lambda: [r for r in a.finished_runs() if r.get("recipe") == "ebs_snapshots"], 10,
                   "the scheduled run")[0]
    assert run["trigger"] == "schedule" and run["status"] == "failed", run
    failed = [f for f in a.status()["failed"] if f.get("recipe") == "ebs_snapshots"]
    assert failed and not failed[0].get("next_retry"), failed
    # Past retry_max: still the one AuthFailure, while the failed setup (no
    # device here) is retried, as automatic runs are.
    deadline = time.monotonic() + 2.5
    while time.monotonic() < deadline:
        assert ec2.counts.get("DescribeSnapshots") == 1, ec2.counts
        time.sleep(0.2)
    runs = a.runs()
    assert not [r for r in runs if r.get("recipe") == "ebs_snapshots" and r["trigger"] == "retry"], runs
    assert [r for r in runs if r["event"] == "setup" and r["trigger"] == "retry"], runs
    assert "not retried: retrying cannot help" in a.stderr_text()
