# agentctl fleet and agentctl stack push / stack --revision (issue 12, items 3
# and 6; design.md §5, §9), against the real daemon and a real etcd on
# loopback (etcd_fixture). The test reads and writes etcd with its own
# client (the fixture's urllib), never through agentd.
import json
import os
import re
import time

import pytest

from conftest import AGENTCTL, simple_stack, wait_for
from etcd_fixture import Etcd, etcd, etcd_source  # noqa: F401 (etcd is a fixture)

PREFIX = "/agentd/ctl"


def two_members():
    """A stack whose web layer lists app1 (this agent) and app2 (static)."""
    members = {"app1": {"private_ip": "10.0.0.1", "status": "online"},
               "app2": {"private_ip": "10.0.0.2", "status": "online"}}
    return simple_stack(members=members)


def write(path, data, mode=0o644):
    with open(path, "w" if isinstance(data, str) else "wb") as f:
        f.write(data)
    os.chmod(path, mode)
    return path


def etcd_agent(make_agent, e, **extra):
    conf = {"lease_ttl": 2, "settle": 0}
    conf.update(extra)
    return make_agent(source=etcd_source(e, PREFIX), conf_extra=conf)


def mod_revision(a):
    return a.status()["source"].get("stack_mod_revision")


# ---- without a daemon: arguments and the file ----

def test_push_usage_and_file_errors(tmpdir_agent):
    sock = os.path.join(tmpdir_agent, "none.sock")
    f = write(os.path.join(tmpdir_agent, "s.json"), "{}")

    def ctl(*args):
        import subprocess
        return subprocess.run([AGENTCTL, "--socket", sock] + list(args), capture_output=True, text=True)

    p = ctl("stack", "push")
    assert p.returncode == 2 and "stack push FILE" in p.stderr
    for bad in ("x", "-1", "-3", "12abc"):
        p = ctl("stack", "push", f, "--base", bad)
        assert p.returncode == 2 and "--base" in p.stderr, (bad, p.stderr)
    p = ctl("stack", "push", f, "extra")
    assert p.returncode == 2
    p = ctl("stack", "--revision", "x")
    assert p.returncode == 2
    p = ctl("fleet", "x")
    assert p.returncode == 2
    # The file is opened by agentctl (the caller's access), before connecting.
    p = ctl("stack", "push", os.path.join(tmpdir_agent, "missing.json"))
    assert p.returncode == 1 and "cannot open" in p.stderr and "missing.json" in p.stderr
    p = ctl("stack", "push", "/dev/null")
    assert p.returncode == 1 and "not a regular file" in p.stderr
    big = os.path.join(tmpdir_agent, "big.json")
    with open(big, "wb") as fh:
        fh.truncate(16 * 1024 * 1024 + 1)  # sparse: costs nothing
    p = ctl("stack", "push", big)
    assert p.returncode == 1 and "16 MiB" in p.stderr
    # A valid file and no daemon: cannot reach it.
    p = ctl("stack", "push", f, "--base", "5")
    assert p.returncode == 3


# ---- file source: static members, push refused ----

def test_fleet_on_a_file_source(make_agent):
    a = make_agent(two_members()).start()
    a.wait_idle()
    r = a.ctl_json("fleet")
    hosts = [i["hostname"] for i in r["instances"]]
    assert hosts == ["app1", "app2"]
    for i in r["instances"]:
        assert i["state"] == "unknown" and i["lease_ttl"] is None
        assert i["layers"] == ["web"] or "web" in i["layers"]
    p = a.ctl("fleet", check=0)
    lines = p.stdout.splitlines()
    assert re.match(r"HOSTNAME +LAYERS +ADDRESS +STATE +APPLIED +LAST RUN +LEASE$", lines[0]), lines[0]
    assert len(lines) == 3
    assert lines[1].split()[0] == "app1" and "unknown" in lines[1].split()
    assert lines[2].split()[-1] == "-"  # no lease
    # Open to every local user.
    assert a.ctl("fleet", user="nobody").returncode == 0
    # stack --revision: no etcd mod revision, so the document's hash.
    rev = a.ctl("stack", "--revision", check=0).stdout.strip()
    assert rev == a.status()["source"]["stack_revision"]
    assert a.ctl_json("stack", "--revision")["stack_revision"] == rev


def test_push_needs_etcd_and_privilege(make_agent):
    a = make_agent(two_members()).start()
    doc = write(os.path.join(a.tmp, "push.json"), json.dumps(two_members()))
    p = a.ctl("stack", "push", doc)
    assert p.returncode == 1 and "etcd" in p.stderr, p.stderr
    p = a.ctl("stack", "push", doc, user="nobody")
    assert p.returncode == 4, p.stderr
    # A file nobody cannot read: refused by nobody's own access, not agentd's.
    secret = write(os.path.join(a.tmp, "root-only.json"), json.dumps(two_members()), mode=0o600)
    p = a.ctl("stack", "push", secret, user="nobody")
    assert p.returncode == 1 and "cannot open" in p.stderr and "Permission denied" in p.stderr


# ---- etcd ----

def test_fleet_lists_registrations_with_lease_seconds(make_agent, etcd):
    etcd.put(PREFIX + "/stack", two_members())
    # Another instance, registered by hand under a lease of its own.
    lease = etcd.grant(30)
    etcd.put(PREFIX + "/instances/app3", {
        "layers": ["web"], "private_ip": "10.0.0.3", "status": "online",
        "agent": {"version": "x", "state": "idle", "applied_revision": "00000000000000aa",
                  "last_run": {"id": 4, "event": "deploy", "status": "success", "finished": 1}}}, lease=lease)
    a = etcd_agent(make_agent, etcd).start()

    def registered():
        r = a.ctl_json("fleet")
        by = {i["hostname"]: i for i in r["instances"]}
        return "app1" in by and by["app1"]["lease_ttl"] is not None and by["app1"]["state"] != "unknown" and by
    by = wait_for(registered, 10, "app1 registered with a lease")
    assert 0 <= by["app1"]["lease_ttl"] <= 2
    assert 20 <= by["app3"]["lease_ttl"] <= 30
    assert by["app3"]["state"] == "idle" and by["app3"]["applied_revision"] == "00000000000000aa"
    assert by["app3"]["last_run"]["id"] == 4
    # app2 is a static member with no registration: still listed, state unknown.
    if "app2" in by:
        assert by["app2"]["lease_ttl"] is None
    text = a.ctl("fleet", check=0).stdout
    row = [line for line in text.splitlines() if line.startswith("app3 ")][0]
    assert "web" in row and "10.0.0.3" in row and "4 deploy success" in row
    assert re.search(r" (2[0-9]|30)$", row), row
    assert a.ctl("fleet", user="nobody").returncode == 0


def test_push_stale_invalid_and_valid(make_agent, etcd):
    rev0 = etcd.put(PREFIX + "/stack", two_members())
    a = etcd_agent(make_agent, etcd).start()
    wait_for(lambda: mod_revision(a) == rev0, 10, "the agent to read the stack")
    assert a.ctl("stack", "--revision", check=0).stdout.strip() == str(rev0)
    assert a.ctl_json("stack", "--revision")["stack_mod_revision"] == rev0

    # Someone else writes meanwhile: a push based on rev0 is stale.
    other = two_members()
    other["opsworks"]["stack"]["name"] = "other"
    rev1 = etcd.put(PREFIX + "/stack", other)
    wait_for(lambda: mod_revision(a) == rev1, 10, "the agent to see the other write")
    mine = two_members()
    mine["opsworks"]["stack"]["name"] = "mine"
    doc = write(os.path.join(a.tmp, "mine.json"), json.dumps(mine, indent=1))
    p = a.ctl("stack", "push", doc, "--base", rev0)
    assert p.returncode == 1, p.stdout + p.stderr
    assert str(rev0) in p.stderr and str(rev1) in p.stderr, p.stderr
    assert json.loads(etcd.get(PREFIX + "/stack")[0])["opsworks"]["stack"]["name"] == "other"

    # Invalid: its JSON path, and nothing written.
    bad = two_members()
    bad["opsworks"]["layers"]["web"]["instances"] = 5
    bad_doc = write(os.path.join(a.tmp, "bad.json"), json.dumps(bad))
    p = a.ctl("stack", "push", bad_doc)
    assert p.returncode == 1
    assert "$.opsworks.layers.web" in p.stderr, p.stderr
    value, rev = etcd.get(PREFIX + "/stack")
    assert rev == rev1 and json.loads(value)["opsworks"]["stack"]["name"] == "other"
    p = a.ctl("stack", "push", write(os.path.join(a.tmp, "nojson.json"), "{\"opsworks\": "))
    assert p.returncode == 1 and "rejected" in p.stderr
    assert etcd.get(PREFIX + "/stack")[1] == rev1

    # Valid, based on what the agent read: put, and applied by the agent.
    p = a.ctl("stack", "push", doc)
    assert p.returncode == 0, p.stderr
    m = re.match(r"pushed: (\S+) at revision (\d+) \(based on (\d+)\)$", p.stdout.strip())
    assert m, p.stdout
    rev2 = int(m.group(2))
    # The key comes from the engine's result ("key": PREFIX/stack).
    assert m.group(1) == PREFIX + "/stack" and int(m.group(3)) == rev1
    value, rev = etcd.get(PREFIX + "/stack")
    assert rev == rev2 and json.loads(value)["opsworks"]["stack"]["name"] == "mine"
    wait_for(lambda: mod_revision(a) == rev2, 10, "the agent to apply the push")
    wait_for(lambda: a.ctl_json("stack")["opsworks"]["stack"]["name"] == "mine", 5, "the pushed stack")
    # The same push again is stale now (its base, rev1, moved on).
    p = a.ctl("--json", "stack", "push", doc, "--base", rev1)
    assert p.returncode == 1 and str(rev2) in p.stderr


def test_push_larger_than_a_request(make_agent, etcd):
    """A stack over the 64 KiB request cap goes as the caller's descriptor."""
    rev0 = etcd.put(PREFIX + "/stack", two_members())
    a = etcd_agent(make_agent, etcd).start()
    wait_for(lambda: mod_revision(a) == rev0, 10, "the agent to read the stack")
    big = two_members()
    big["opsworks"]["stack"]["name"] = "big"
    big["notes"] = "n" * (200 * 1024)
    doc = write(os.path.join(a.tmp, "big.json"), json.dumps(big), mode=0o600)
    p = a.ctl("--json", "stack", "push", doc, "--base", rev0)
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    assert r["base"] == rev0
    value, rev = etcd.get(PREFIX + "/stack")
    assert rev == r["revision"] and len(value) == os.path.getsize(doc)
    wait_for(lambda: mod_revision(a) == r["revision"], 10, "the agent to apply the big push")
    # nobody may not push it, even a copy it can read.
    pub = write(os.path.join(a.tmp, "big-pub.json"), json.dumps(big))
    assert a.ctl("stack", "push", pub, user="nobody").returncode == 4
    # Under the cap as a file but over it once escaped into a request (every
    # quote doubles): it goes as the descriptor too (1000 members broke it).
    quoted = two_members()
    quoted["notes"] = ['"'] * 12000
    doc = write(os.path.join(a.tmp, "quoted.json"), json.dumps(quoted, separators=(",", ":")), mode=0o600)
    assert 48 * 1024 < os.path.getsize(doc) < 64 * 1024
    p = a.ctl("--json", "stack", "push", doc)
    assert p.returncode == 0, p.stderr
    value, rev = etcd.get(PREFIX + "/stack")
    assert rev == json.loads(p.stdout)["revision"] and json.loads(value)["notes"] == quoted["notes"]


# ---- follow-ups of issue 12 (B3, #7, #11b, #9, #10) ----

def test_push_base_zero_only_when_missing(make_agent, etcd):
    """#11b: a first push reports "based on 0"; --base 0 is that: only when
    PREFIX/stack does not exist yet."""
    etcd.put("/elsewhere/x", "moves the revision past 0")
    a = etcd_agent(make_agent, etcd).start()
    wait_for(lambda: "no such key" in (a.status()["source"]["error"] or ""), 10, "the agent to find no stack")
    doc = write(os.path.join(a.tmp, "s.json"), json.dumps(two_members()))
    p = a.ctl("--json", "stack", "push", doc, "--base", "0")
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    assert r["base"] == 0 and etcd.get(PREFIX + "/stack")[1] == r["revision"]
    p = a.ctl("stack", "push", doc, "--base", "0")
    assert p.returncode == 1 and "refused: stale base" in p.stderr and str(r["revision"]) in p.stderr, p.stderr


def test_back_to_back_pushes_from_one_agent(make_agent, etcd):
    """#7: the default base is the newer of what the agent read and what its
    own last push wrote, so its own pushes are never stale to it."""
    rev = etcd.put(PREFIX + "/stack", two_members())
    a = etcd_agent(make_agent, etcd).start()
    wait_for(lambda: mod_revision(a) == rev, 10, "the agent to read the stack")
    for i in range(5):
        for j in range(2):
            d = two_members()
            d["opsworks"]["stack"]["name"] = f"n{i}-{j}"
            doc = write(os.path.join(a.tmp, "s.json"), json.dumps(d))
            p = a.ctl("--json", "stack", "push", doc)
            assert p.returncode == 0, (i, j, p.stderr)
            r = json.loads(p.stdout)
            assert r["base"] == rev, (r, rev)
            rev = r["revision"]
    assert json.loads(etcd.get(PREFIX + "/stack")[0])["opsworks"]["stack"]["name"] == "n4-1"


def test_push_timeout_is_no_refusal(make_agent, etcd):
    """B3: a txn that times out on a frozen etcd may still be applied: the
    error and the log say so, not "refused"."""
    rev = etcd.put(PREFIX + "/stack", two_members())
    a = etcd_agent(make_agent, etcd).start()
    wait_for(lambda: mod_revision(a) == rev, 10, "the agent to read the stack")
    d = two_members()
    d["opsworks"]["stack"]["name"] = "late"
    doc = write(os.path.join(a.tmp, "late.json"), json.dumps(d))
    etcd.sigstop()
    try:
        p = a.ctl("stack", "push", doc)
    finally:
        etcd.sigcont()
    assert p.returncode == 1
    assert "may have been applied" in p.stderr and "agentctl stack --revision" in p.stderr, p.stderr
    assert "refused" not in p.stderr, p.stderr
    log = [line for line in a.stderr_text().splitlines() if "push" in line and "late" not in line]
    assert any("may have been applied" in line for line in log), log
    assert not any("refused" in line for line in log), log
    # Whether etcd applies it once it runs again depends on when it read the
    # request (it did in the tester's run): either way the agent ends at what
    # etcd holds, and `stack --revision` says which.
    name = json.loads(etcd.get(PREFIX + "/stack")[0])["opsworks"]["stack"]["name"]
    assert name in ("late", "test"), name
    want = etcd.get(PREFIX + "/stack")[1]
    wait_for(lambda: a.ctl("stack", "--revision").stdout.strip() == str(want), 5, "the agent at etcd's revision")


def test_fleet_marks_left_out_registrations(make_agent, etcd):
    """#9, #10: registrations the effective stack leaves out are marked in
    fleet and named by key in status.source.warnings; keys are escaped in
    the log and the output."""
    etcd.put(PREFIX + "/stack", two_members())
    a = etcd_agent(make_agent, etcd).start()
    wait_for(lambda: a.status()["source"]["registration"]["lease"], 10, "app1 registered")
    good = {"layers": ["web"], "private_ip": "10.0.0.9", "status": "online"}
    bad = {
        "badip": dict(good, private_ip="1.2.3.4;rm -rf /"),
        "badbackends": dict(good, backends="many"),
        "a#b": good,
        "../../etc": good,
        "evil\nagentd[1]: forged": good,
        "nolayer": dict(good, layers=["nosuch"]),
        "big": dict(good, pad="x" * (70 * 1024)),
    }
    for host, v in bad.items():
        etcd.put(f"{PREFIX}/instances/{host}", v)

    def warned():
        w = a.status()["source"].get("warnings") or []
        return len(w) == len(bad) and w
    warnings = wait_for(warned, 5, "a warning per left-out registration")
    assert a.status()["source"]["error"] is None
    joined = "\n".join(warnings)
    for key in ("badip", "badbackends", "a#b", "../../etc", "nolayer", "big"):
        assert f"{PREFIX}/instances/{key}: " in joined, (key, warnings)
    assert f"{PREFIX}/instances/evil\\nagentd[1]: forged: " in joined, warnings
    assert "no layer \"nosuch\"" in joined and "over 65536" in joined
    # None of them made it into the stack.
    members = a.ctl_json("stack")["opsworks"]["layers"]["web"]["instances"]
    assert set(members) == {"app1", "app2"}, members

    by = {i["hostname"]: i for i in a.ctl_json("fleet")["instances"]}
    for host in ("badip", "badbackends", "a#b", "../../etc", "nolayer", "big"):
        assert by[host]["state"] == "invalid" and by[host]["error"], by[host]
    assert "private_ip" in by["badip"]["error"] and "backends" in by["badbackends"]["error"]
    assert "not a name" in by["a#b"]["error"] and "nosuch" in by["nolayer"]["error"]
    assert by["evil\\nagentd[1]: forged"]["state"] == "invalid"
    assert by["app1"]["state"] != "invalid" and "error" not in by["app1"]
    text = a.ctl("fleet", check=0).stdout
    assert "nolayer: the stack has no layer" in text, text
    assert "\nagentd[1]: forged" not in text
    # The log: one warning per key, none with a raw newline from a key.
    log = a.stderr_text()
    assert "evil\\nagentd[1]: forged" in log
    assert not any(line.startswith("agentd[1]: forged") for line in log.splitlines())
    # Removed: the warnings go.
    for host in bad:
        etcd.delete(f"{PREFIX}/instances/{host}")
    wait_for(lambda: a.status()["source"]["warnings"] == [], 5, "the warnings to clear")
