# Metrics (issue 14, item 4; design.md §4 metrics_file) and `agentctl
# version` (item 5), against the real daemon. The file is read by the
# Prometheus client library's own text parser (Debian
# python3-prometheus-client), the figures checked against what `agentctl
# runs`, `show`, `status` and `schedule` say about the same runs.
import collections
import datetime
import json
import os
import re
import shutil
import subprocess
import threading

import pytest

from conftest import AGENTCTL, AGENTD, wait_for

parser = pytest.importorskip("prometheus_client.parser", reason="tests/deps installs python3-prometheus-client")

# A job name as odd as a valid name gets: dots, dashes, underscores.
JOB = "pack.db-1_x"
FAMILIES = {"agentd_runs", "agentd_last_run_timestamp_seconds", "agentd_last_success_timestamp_seconds",
            "agentd_state", "agentd_stack_info", "agentd_source_errors", "agentd_source_error",
            "agentd_step_duration_seconds", "agentd_maintenance_last_success_timestamp_seconds"}
EVENTS = ("setup", "configure", "deploy", "undeploy", "shutdown", "maintenance")


def stack():
    return {
        "opsworks": {"stack": {"name": "metrics"}, "layers": {
            "web": {"name": "Web", "instances": {"app1": {"private_ip": "10.0.0.1", "status": "online"}}}}},
        "deploy": {},
        "agent": {
            "recipes": {"touch": {"command": ["/bin/true"]}, "boom": {"command": ["/bin/false"]},
                        JOB: {"command": ["/bin/true"], "schedule": "0 3 * * *"}},
            "layers": {"web": {"setup": ["touch"], "configure": ["touch"], "deploy": ["touch"],
                               "undeploy": ["boom"], "shutdown": ["touch"]}},
        },
    }


def families(text):
    return {f.name: f for f in parser.text_string_to_metric_families(text)}


def samples(fams, name):
    """{frozenset(labels): value} of the samples called name."""
    return {frozenset(s.labels.items()): s.value for f in fams.values() for s in f.samples if s.name == name}


def read(path):
    with open(path) as f:
        return f.read()


def unix(rfc3339):
    fmt = "%Y-%m-%dT%H:%M:%S.%fZ" if "." in rfc3339 else "%Y-%m-%dT%H:%M:%SZ"
    return datetime.datetime.strptime(rfc3339, fmt).replace(tzinfo=datetime.timezone.utc).timestamp()


def test_file_after_known_runs_parsed_by_the_client_library(make_agent):
    a = make_agent(stack())
    path = a.conf["metrics_file"]
    a.start()
    a.wait_runs(1)
    a.wait_idle()
    assert a.ctl("run", "undeploy", "--wait").returncode == 1
    assert a.ctl("run", "maintenance", "--recipe", JOB, "--wait").returncode == 0
    st = a.wait_idle()
    text = read(path)
    assert os.stat(path).st_mode & 0o777 == 0o644
    fams = families(text)
    assert set(fams) == FAMILIES
    assert {f.type for f in fams.values()} == {"counter", "gauge", "histogram"}

    # Runs by event and final status, every combination, zeros included.
    runs = a.runs()
    count = collections.Counter((r["event"], r["status"]) for r in runs)
    assert count[("setup", "success")] == 1 and count[("undeploy", "failed")] == 1
    assert count[("maintenance", "success")] == 1
    total = samples(fams, "agentd_runs_total")
    assert len(total) == len(EVENTS) * 3
    for ev in EVENTS:
        for status in ("success", "failed", "interrupted"):
            assert total[frozenset({"event": ev, "status": status}.items())] == count[(ev, status)], (ev, status)

    # The last run and last success of each event: the runs' finish times.
    last = samples(fams, "agentd_last_run_timestamp_seconds")
    ok = samples(fams, "agentd_last_success_timestamp_seconds")
    for ev in EVENTS:
        done = [unix(r["finished"]) for r in runs if r["event"] == ev]
        good = [unix(r["finished"]) for r in runs if r["event"] == ev and r["status"] == "success"]
        key = frozenset({"event": ev}.items())
        assert (key in last) == bool(done) and (key in ok) == bool(good), ev
        if done:
            assert abs(last[key] - max(done)) < 1e-6, ev
        if good:
            assert abs(ok[key] - max(good)) < 1e-6, ev
    assert frozenset({"event": "undeploy"}.items()) not in ok

    # One-hot state: the failed undeploy left the agent failed.
    assert st["state"] == "failed"
    state = samples(fams, "agentd_state")
    assert state == {frozenset({"state": s}.items()): float(s == "failed")
                     for s in ("idle", "running", "failed", "paused", "unassigned")}
    assert samples(fams, "agentd_stack_info") == {
        frozenset({"revision": st["source"]["stack_revision"], "applied": st["applied_revision"]}.items()): 1.0}
    assert samples(fams, "agentd_source_errors_total") == {frozenset(): 0.0}

    # Steps' durations by kind: as many as the runs' steps that ran.
    kinds = collections.Counter()
    for r in runs:
        for s in a.ctl_json("show", str(r["id"]))["steps"]:
            if s["status"] != "skipped":
                kinds[s["kind"]] += 1
    assert kinds["exec"] >= 5
    counts = samples(fams, "agentd_step_duration_seconds_count")
    assert counts == {frozenset({"kind": k}.items()): float(n) for k, n in kinds.items()}
    sums = samples(fams, "agentd_step_duration_seconds_sum")
    assert sums[frozenset({"kind": "exec"}.items())] > 0
    for k, n in kinds.items():
        buckets = sorted(((float(lb["le"]), v) for lb, v in
                          ((dict(lb), v) for lb, v in samples(fams, "agentd_step_duration_seconds_bucket").items())
                          if lb["kind"] == k))
        assert [le for le, _ in buckets] == [0.001, 0.01, 0.1, 1, 10, 60, 600, 3600, float("inf")]
        assert [v for _, v in buckets] == sorted(v for _, v in buckets) and buckets[-1][1] == n

    # The job's last success: the scheduler's, to the second.
    job = next(j for j in a.ctl_json("schedule")["jobs"] if j["name"] == JOB)
    assert samples(fams, "agentd_maintenance_last_success_timestamp_seconds") == {
        frozenset({"job": JOB}.items()): unix(job["last_success"])}

    # `agentctl metrics` prints the file; --json the same figures.
    p = a.ctl("metrics", check=0)
    assert p.stdout == text and p.stderr == ""
    j = a.ctl_json("metrics")
    assert j["file"] == path and j["file_error"] is None
    from_json = {(s["name"], frozenset(s["labels"].items()), float(s["value"]))
                 for f in j["metrics"] for s in f["samples"]}
    from_file = {(s.name, frozenset(s.labels.items()), s.value) for f in fams.values() for s in f.samples}
    assert from_json == from_file
    assert {f["name"]: f["type"] for f in j["metrics"]}["agentd_step_duration_seconds"] == "histogram"

    # A refused document counts as a source error, and is one while it lasts.
    a.write_stack("{not json")
    fams = wait_for(lambda: (lambda f: samples(f, "agentd_source_error") == {frozenset(): 1.0} and f)(
        families(read(path))), 10, "the refused document in the metrics")
    assert samples(fams, "agentd_source_errors_total") == {frozenset(): 1.0}
    a.write_stack(stack())
    fams = wait_for(lambda: (lambda f: samples(f, "agentd_source_error") == {frozenset(): 0.0} and f)(
        families(read(path))), 10, "the source error to clear in the metrics")
    assert samples(fams, "agentd_source_errors_total") == {frozenset(): 1.0}

    # A stopped agentd leaves no figures that look current (an alert on
    # their absence fires); a second agentd refused at the state_dir lock
    # removes nothing of the running one's.
    second = subprocess.run([AGENTD, "--config", a.conf_path], capture_output=True, text=True, timeout=20)
    assert second.returncode != 0 and os.path.exists(path), second.stderr
    a.stop()
    assert not os.path.exists(path)


def test_null_writes_nothing(make_agent):
    a = make_agent(stack(), conf_extra={"metrics_file": None})
    a.start()
    a.wait_runs(1)
    a.wait_idle()
    assert a.ctl("run", "configure", "--wait").returncode == 0
    assert not [n for n in os.listdir(a.tmp) if n.endswith(".prom") or n.startswith(".#")], os.listdir(a.tmp)
    j = a.ctl_json("metrics")
    assert j["file"] is None and j["file_error"] is None
    total = {(s["labels"]["event"], s["labels"]["status"]): s["value"]
             for f in j["metrics"] if f["name"] == "agentd_runs_total" for s in f["samples"]}
    assert total[("configure", "success")] == 2 and total[("setup", "success")] == 1
    assert "Metrics file" not in a.stderr_text()


def test_missing_directory_is_a_warning_not_a_failure(make_agent):
    a = make_agent(stack())
    d = os.path.join(a.tmp, "node-exporter")
    a.conf["metrics_file"] = os.path.join(d, "agentd.prom")
    with open(a.conf_path, "w") as f:
        json.dump(a.conf, f)
    a.start()
    a.wait_runs(1)
    assert a.ctl("run", "configure", "--wait").returncode == 0
    st = a.wait_idle()
    assert st["state"] == "idle" and all(r["status"] == "success" for r in a.runs())
    # Said once, however many writes were tried.
    assert len(re.findall(r"Metrics file \S+ cannot be written", a.stderr_text())) == 1, a.stderr_text()
    assert "No such file or directory" in a.ctl_json("metrics")["file_error"]
    p = a.ctl("metrics", check=0)
    assert "agentd_runs_total" in p.stdout and "cannot be written" in p.stderr
    # Once the directory is there, the next run writes the file.
    os.mkdir(d)
    assert a.ctl("run", "configure", "--wait").returncode == 0
    fams = families(read(a.conf["metrics_file"]))
    # The first start's configure and the two asked for.
    assert samples(fams, "agentd_runs_total")[frozenset({"event": "configure", "status": "success"}.items())] == 3
    assert a.ctl_json("metrics")["file_error"] is None
    assert "written again" in a.stderr_text()


def test_file_is_replaced_whole_never_written_in_place(make_agent):
    a = make_agent(stack())
    path = a.conf["metrics_file"]
    a.start()
    a.wait_runs(1)
    a.wait_idle()
    old = open(path)
    before = old.read()
    seen, bad, stop = [], [], threading.Event()

    def reader():
        while not stop.is_set():
            text = read(path)
            try:
                if set(families(text)) != FAMILIES or not text.endswith("\n"):
                    bad.append(text)
            except Exception as e:  # noqa: BLE001 -- a torn file fails to parse
                bad.append(f"{e}: {text}")
            seen.append(text)

    t = threading.Thread(target=reader)
    t.start()
    try:
        for _ in range(4):
            assert a.ctl("run", "configure", "--wait").returncode == 0
    finally:
        stop.set()
        t.join()
    assert not bad, bad[:1]
    assert len(set(seen)) >= 3, "the reader saw the file change"
    # The descriptor opened before still reads the old version, unlinked:
    # each version is a new file renamed over the last (temp + rename).
    old.seek(0)
    assert old.read() == before and os.fstat(old.fileno()).st_nlink == 0
    old.close()
    assert not [n for n in os.listdir(a.tmp) if n.startswith(".#")], "no temporary file left"


def test_version_shows_both_and_warns_when_they_differ(make_agent, tmp_path):
    a = make_agent(stack())
    a.start()
    v = a.ctl_json("version")
    assert v["version"] == v["agentctl_version"] and v["protocol"] == v["agentctl_protocol"] == 1
    p = a.ctl("version", check=0)
    assert p.stdout.splitlines() == [f"agentctl {v['version']} (protocol 1)", f"agentd {v['version']} (protocol 1)"]
    assert p.stderr == ""

    # An agentctl of another version (an upgrade whose restart has not
    # happened): the binary's version string patched, same length.
    data = open(AGENTCTL, "rb").read()
    needle = b"\0" + v["version"].encode() + b"\0"
    other = re.sub(rb"[0-9]", b"9", v["version"].encode())
    assert needle in data and other != v["version"].encode()
    ctl = tmp_path / "agentctl"
    ctl.write_bytes(data.replace(needle, b"\0" + other + b"\0"))
    os.chmod(ctl, 0o755)
    p = subprocess.run([str(ctl), "--socket", a.sock, "version"], capture_output=True, text=True, timeout=10)
    assert p.returncode == 0
    assert p.stdout.splitlines()[:2] == [f"agentctl {other.decode()} (protocol 1)",
                                         f"agentd {v['version']} (protocol 1)"]
    assert "warning" in p.stderr and v["version"] in p.stderr and other.decode() in p.stderr
    p = subprocess.run([str(ctl), "--socket", a.sock, "--json", "version"], capture_output=True, text=True,
                       timeout=10)
    assert p.returncode == 0 and "warning" in p.stderr
    j = json.loads(p.stdout)
    assert j["version"] == v["version"] and j["agentctl_version"] == other.decode()
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_version_without_a_daemon_still_names_agentctl(tmp_path):
    """Right after an install that enabled agentd without starting it."""
    sock = str(tmp_path / "none.sock")
    p = subprocess.run([AGENTCTL, "--socket", sock, "version"], capture_output=True, text=True, timeout=10)
    assert p.returncode == 3 and re.fullmatch(r"agentctl \S+ \(protocol 1\)\n", p.stdout), p
    assert "cannot connect" in p.stderr
    p = subprocess.run([AGENTCTL, "--socket", sock, "--json", "version"], capture_output=True, text=True, timeout=10)
    assert p.returncode == 3 and json.loads(p.stdout)["agentctl_protocol"] == 1, p
