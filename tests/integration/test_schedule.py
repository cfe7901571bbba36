"""The maintenance scheduler against the real daemon (design.md §8.1, §5):
catch-up after downtime, `agentctl schedule`, `run maintenance --recipe`.

Time passes through libfaketime (Debian `faketime`), preloaded into agentd
only: a second start "three hours later" sees the due times it missed, as a
machine that was down would. agentd has no test clock of its own."""
import json
import os
import re
import time

import pytest

from conftest import simple_stack, wait_for

LIBFAKETIME = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


def asan_runtime():
    """The ASan runtime the agentd under test links, or None: it must come
    first in LD_PRELOAD, before libfaketime, or the agent refuses to start."""
    import subprocess
    from conftest import AGENTD
    out = subprocess.run(["ldd", AGENTD], capture_output=True, text=True).stdout
    m = re.search(r"^\s*libasan\.so\S*\s+=>\s+(\S+)", out, re.M)
    return m.group(1) if m else None


def fake_env(offset):
    # The offset applies to CLOCK_REALTIME and CLOCK_MONOTONIC alike, so
    # libuv's timers keep their pace; no caching, so the clock moves.
    preload = [p for p in (asan_runtime(), LIBFAKETIME) if p]
    return {"LD_PRELOAD": ":".join(preload), "FAKETIME": offset, "FAKETIME_NO_CACHE": "1",
            "DONT_FAKE_MONOTONIC": "0"}


def sched_stack(tmp, extra_recipes=None):
    out = os.path.join(tmp, "out")
    recipes = {
        "touch": {"command": ["/bin/true"]},
        # Hourly: a start three hours later has missed three due times.
        "hourly": {"command": ["/bin/sh", "-c", 'echo "$AGENT_EVENT $AGENT_RECIPE" >> "$0"', out],
                   "schedule": "0 * * * *"},
        "nightly": {"command": ["/bin/sh", "-c", 'echo "$AGENT_EVENT $AGENT_RECIPE" >> "$0"', out],
                    "schedule": "17 2 * * *", "splay": 900, "layers": ["db"], "singleton": True},
        "elsewhere": {"command": ["/bin/true"], "schedule": "0 8 * * *", "layers": ["nosuch"]},
    }
    recipes.update(extra_recipes or {})
    return simple_stack(recipes=recipes)


def job(sched, name):
    return next(j for j in sched["jobs"] if j["name"] == name)


@pytest.fixture
def need_faketime():
    if not os.path.exists(LIBFAKETIME):
        pytest.skip("libfaketime (Debian faketime) is not installed: tests/deps installs it")


def test_catch_up_after_downtime_runs_once(make_agent, tmpdir_agent, need_faketime):
    a = make_agent(sched_stack(tmpdir_agent))
    a.start()
    a.wait_runs(1)
    a.wait_idle()
    # First start: the jobs are new, nothing is caught up.
    s = a.ctl_json("schedule")
    assert {j["name"] for j in s["jobs"]} == {"hourly", "nightly"}
    assert job(s, "hourly")["last_success"] is None and job(s, "hourly")["last_run"] is None
    assert not [r for r in a.runs() if r["event"] == "maintenance"]
    a.stop()

    # Down for three hours, across three due times of "hourly" (and maybe
    # the nightly one): one run of each job that missed one, no more.
    a.start(env=fake_env("+3h"))
    done = wait_for(lambda: [r for r in a.finished_runs() if r["event"] == "maintenance"
                             and r.get("recipe") == "hourly"], 10, "the catch-up run")
    a.wait_idle()
    maint = [r for r in a.runs() if r["event"] == "maintenance"]
    hourly = [r for r in maint if r["recipe"] == "hourly"]
    assert len(hourly) == 1, maint
    assert hourly[0]["trigger"] == "schedule" and hourly[0]["status"] == "success"
    assert done[0]["id"] == hourly[0]["id"]
    # Never two runs side by side: each maintenance run started after the
    # one before it finished.
    ordered = sorted((r for r in a.runs() if r["started"]), key=lambda r: r["id"])
    for prev, nxt in zip(ordered, ordered[1:]):
        assert nxt["started"] >= prev["finished"], (prev, nxt)
    s = a.ctl_json("schedule")
    h = job(s, "hourly")
    assert h["last_run"]["id"] == hourly[0]["id"] and h["last_run"]["status"] == "success"
    assert RFC3339.match(h["last_success"]), h
    # Still the same agent minutes later: nothing more until the next hour.
    a.stop()
    a.start(env=fake_env("+3h"))
    a.wait_idle()
    assert len([r for r in a.runs() if r.get("recipe") == "hourly"]) == 1
    with open(os.path.join(a.state, "schedule.json")) as f:
        state = json.load(f)
    assert state["jobs"]["hourly"]["last_run"] == hourly[0]["id"]


def test_schedule_text_json_and_run_recipe(make_agent, tmpdir_agent):
    a = make_agent(sched_stack(tmpdir_agent))
    a.start()
    a.wait_idle()
    s = a.ctl_json("schedule")
    n = job(s, "nightly")
    assert set(n) >= {"name", "schedule", "splay", "offset", "source", "lock", "holds_lock", "last_run",
                      "last_success", "next_run"}
    assert n["schedule"] == "17 2 * * *" and n["splay"] == 900 and 0 <= n["offset"] <= 900
    assert n["lock"] == "nightly" and n["holds_lock"] is False  # a file source: no etcd lock
    assert n["source"] == "agent.recipes.nightly"
    assert RFC3339.match(n["next_run"])
    # next_run = the next 02:17 UTC plus this host's offset.
    nxt = time.strptime(n["next_run"][:19], "%Y-%m-%dT%H:%M:%S")
    secs = (nxt.tm_hour * 3600 + nxt.tm_min * 60 + nxt.tm_sec) - (2 * 3600 + 17 * 60)
    assert secs == n["offset"], n
    h = job(s, "hourly")
    assert h["lock"] is None and h["offset"] == 0 and h["splay"] == 0
    # The same offset at every start (a hash of the instance and job).
    a.stop()
    a.start()
    assert job(a.ctl_json("schedule"), "nightly")["offset"] == n["offset"]

    text = a.ctl("schedule", check=0).stdout
    lines = text.splitlines()
    assert lines[0].split() == ["JOB", "SCHEDULE", "SPLAY", "LAST", "RUN", "LAST", "SUCCESS", "NEXT", "RUN", "LOCK"]
    row = next(l for l in lines if l.startswith("nightly"))
    assert "17 2 * * *" in row and f"+{n['offset']}/900" in row and row.rstrip().endswith("nightly")
    # Aligned: every column starts where its header does.
    col = lines[0].index("NEXT RUN")
    assert all(len(l) > col and l[col - 1] == " " for l in lines[1:3])

    # An operator's run of the job: trigger ctl, recipe set, and it counts
    # as the job's last success.
    p = a.ctl("run", "maintenance", "--recipe", "nightly", "--wait", check=0)
    runs = [r for r in a.runs() if r.get("recipe") == "nightly"]
    assert len(runs) == 1 and runs[0]["trigger"] == "ctl" and runs[0]["status"] == "success", p.stdout
    n = job(a.ctl_json("schedule"), "nightly")
    assert n["last_run"]["id"] == runs[0]["id"] and RFC3339.match(n["last_success"])
    with open(os.path.join(tmpdir_agent, "out")) as f:
        assert f.read().split("\n")[0] == "maintenance nightly"
    # A job of another layer is not scheduled here (an operator may still
    # run any custom recipe by name).
    assert "elsewhere" not in [j["name"] for j in a.ctl_json("schedule")["jobs"]]
    # plan maintenance --recipe: what the job's run would do; without a job
    # it is a usage error (2), an unknown job fails (1) naming the jobs.
    p = a.ctl("--json", "plan", "maintenance", "--recipe", "nightly", check=0)
    assert p.returncode == 0 and [s["target"] for s in json.loads(p.stdout)["steps"]] == ["nightly"], p.stdout
    assert a.ctl("plan", "maintenance", check=2).returncode == 2
    p = a.ctl("plan", "maintenance", "--recipe", "nope", check=1)
    assert p.returncode == 1 and "nightly" in p.stderr, p.stderr


def test_schedule_validation_errors(make_agent, tmpdir_agent):
    bad = sched_stack(tmpdir_agent, {"broken": {"command": ["/bin/true"], "schedule": "0 25 * * *"}})
    a = make_agent(bad)
    a.start()
    err = wait_for(lambda: a.status()["source"]["error"], 5, "the validation error")
    assert "$.agent.recipes.broken.schedule" in (a.status()["source"].get("error_path") or err) or \
        "$.agent.recipes.broken.schedule" in err, err
    assert "hour field" in err, err


def test_schedule_error_control_characters_escaped(make_agent, tmpdir_agent):
    # A custom recipe's schedule with a terminal escape (title, clear) and a
    # newline: the validation error names it quoted (\u001b), and `agentctl
    # status` prints no raw control character, for any user.
    evil = "0 0 * * \u001b]0;PWNED\u0007\u001b[2J\nFAKE: line"
    a = make_agent(sched_stack(tmpdir_agent, {"evil": {"command": ["/bin/true"], "schedule": evil}}))
    a.start()
    err = wait_for(lambda: a.status()["source"]["error"], 5, "the validation error")
    assert "\\u001b]0;PWNED\\u0007" in err and not any(ord(c) < 0x20 or ord(c) == 0x7f for c in err), repr(err)
    out = a.ctl("status", check=0).stdout
    assert "Source error" in out and "\x1b" not in out and "\x07" not in out, repr(out)
    assert not any(l.startswith("FAKE") for l in out.splitlines()), out
    # agentctl's own defence, whatever the daemon's message: a field with
    # control characters (here a pause reason) is printed escaped.
    a.ctl("pause", "x\x1b[2J\ny", check=0)
    out = a.ctl("status", check=0).stdout
    assert "Paused: x\\e[2J\\ny" in out and "\x1b" not in out, repr(out)


def test_run_maintenance_usage_errors(make_agent, tmpdir_agent):
    # Usage errors are the client's (exit 2): one --recipe per run, and a
    # job runs for the instance, not for a layer or an app.
    a = make_agent(sched_stack(tmpdir_agent))
    a.start()
    a.wait_idle()
    for verb in ("run", "plan"):
        p = a.ctl(verb, "maintenance", "--recipe", "hourly", "--recipe", "nightly", check=2)
        assert "--recipe" in p.stderr, p.stderr
        p = a.ctl(verb, "maintenance", "--recipe=hourly", "--recipe=nightly", check=2)
        for opt in (["--layer", "db"], ["--app", "shop"]):
            p = a.ctl(verb, "maintenance", "--recipe", "hourly", *opt, check=2)
            assert "no --layer or --app" in p.stderr, p.stderr
    assert not [r for r in a.runs() if r["event"] == "maintenance"]
