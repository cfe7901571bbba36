# What the operator sees through agentctl (design.md §5): `log RUN -f`
# prints exactly what `log RUN` prints once the run is over and exits like
# `run --wait`; every step of a run log has its header, a skipped one too;
# `plan` says why a step would fail in its text output; `status` is aligned
# text (failures with a readable retry time, a pause without a reason, a
# change waiting to be applied); the privileged verbs that change state say
# so in one line.
import json
import os
import re
import subprocess

from conftest import AGENTCTL, Collected, simple_stack, wait_for

NOSUCHUSER = "agentd-test-nosuchuser"

# A recipe that, once armed (GATE.armed exists: not in the boot runs),
# waits for its gate file, so that a follower is attached while the run
# goes on; it prints around the wait.
GATED = ["/bin/sh", "-c", '[ -e "$0.armed" ] || exit 0; echo "before-gate"; '
         'while [ ! -e "$0" ]; do sleep 0.02; done; echo "after-gate"']


class Follower(Collected):
    """agentctl [--json] log RUN -f, run in the background."""

    def __init__(self, agent, run_id, *extra, user=None):
        cmd = [AGENTCTL, "--socket", agent.sock, *extra, "log", str(run_id), "-f"]
        if user:
            import pwd
            pw = pwd.getpwnam(user)
            cmd = ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--clear-groups"] + cmd
        super().__init__(cmd)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def gated_stack(gate, configure):
    recipes = {"touch": {"command": ["/bin/true"]}, "gated": {"command": GATED + [gate]},
               "fail": {"command": ["/bin/sh", "-c", "echo failing-now; exit 3"]}}
    stack = simple_stack(recipes=recipes)
    stack["agent"]["layers"]["web"]["configure"] = configure
    return stack


def started_agent(make_agent, stack):
    a = make_agent(stack).start()
    wait_for(lambda: len(a.finished_runs()) >= 3, what="the boot runs")
    a.wait_idle()
    return a


def gated_agent(make_agent, configure):
    """An agent through its boot runs whose gated recipe is armed now."""
    a = make_agent()
    gate = os.path.join(a.tmp, "gate")
    a.write_stack(gated_stack(gate, configure))
    a.start()
    wait_for(lambda: len(a.finished_runs()) >= 3, what="the boot runs")
    a.wait_idle()
    open(gate + ".armed", "w").close()
    return a, gate


def step_headers(text):
    return re.findall(r"^==> \[(\d+)/(\d+)\] (\S+) (.*)$", text, re.M)


def test_log_follow_prints_what_log_prints_and_exits_1_when_the_run_failed(make_agent):
    a, gate = gated_agent(make_agent, ["gated", "fail", "touch"])
    run_id = a.ctl_json("run", "configure", "--layer", "web")["id"]
    wait_for(lambda: "before-gate" in a.ctl("log", run_id).stdout, what="the gated step to start")
    followers = [Follower(a, run_id), Follower(a, run_id, user="nobody"), Follower(a, run_id, "--json")]
    try:
        # Attached (they have the output so far) before the run goes on.
        for f in followers[:2]:
            wait_for(lambda: "before-gate" in f.text(), what="the follower to print the output so far")
        wait_for(lambda: "before-gate" in followers[2].text(), what="the JSON follower")
        open(gate, "w").close()
        results = [f.finish() for f in followers]
    finally:
        for f in followers:
            f.kill()
    info = a.ctl_json("show", run_id)
    assert info["status"] == "failed"
    after = a.ctl("log", run_id, check=0)
    assert after.returncode == 0
    # Exactly what log prints: the step lines, the output, the result line.
    assert results[0] == (1, after.stdout), (results[0], after.stdout)
    assert results[1] == (1, a.ctl("log", run_id, user="nobody").stdout)
    assert results[2][0] == 1
    assert "after-gate" in results[2][1]
    text = after.stdout
    # Steps 1 and 2: the removals of agentd's apt files (no apt key: none).
    assert [h[0] for h in step_headers(text)] == ["1", "2", "3", "4", "5"], text
    assert "<== failed" in text
    assert re.search(rf"^=== run {run_id} finished: .*status=failed", text, re.M), text


def test_log_follow_of_a_queued_run_waits_for_it(make_agent):
    a, gate = gated_agent(make_agent, ["gated"])
    first = a.ctl_json("run", "configure", "--layer", "web")["id"]
    wait_for(lambda: "before-gate" in a.ctl("log", first).stdout, what="the first run to start")
    second = a.ctl_json("run", "configure", "--layer", "db")["id"]
    assert a.ctl_json("show", second)["status"] == "queued"
    f = Follower(a, second)
    try:
        open(gate, "w").close()
        rc, out = f.finish()
    finally:
        f.kill()
    assert rc == 0
    assert out == a.ctl("log", second).stdout
    assert re.search(rf"^=== run {second} finished: .*status=success", out, re.M), out


def test_log_follow_of_a_finished_run_exits_like_run_wait(make_agent):
    recipes = {"touch": {"command": ["/bin/true"]}, "fail": {"command": ["/bin/false"]}}
    stack = simple_stack(recipes=recipes)
    stack["agent"]["layers"]["db"]["undeploy"] = ["fail"]
    a = started_agent(make_agent, stack)
    assert a.ctl("run", "undeploy", "--layer", "db", "--wait").returncode == 1
    p = a.ctl("log", "last", "-f")
    assert p.returncode == 1
    assert p.stdout == a.ctl("log", "last").stdout
    assert a.ctl("--json", "log", "last", "-f").returncode == 1
    assert a.ctl("log", "last").returncode == 0
    assert a.ctl("run", "configure", "--wait").returncode == 0
    assert a.ctl("log", "last", "-f").returncode == 0


def test_skipped_steps_have_their_header_in_the_log(make_agent):
    recipes = {"touch": {"command": ["/bin/true"]}, "fail": {"command": ["/bin/false"]},
               "other": {"command": ["/bin/echo", "never-printed"]}}
    stack = simple_stack(recipes=recipes)
    stack["agent"]["layers"]["web"]["configure"] = ["touch", "fail", "other", "touch"]
    a = started_agent(make_agent, stack)
    p = a.ctl("--json", "run", "configure", "--layer", "web", "--wait")
    assert p.returncode == 1
    info = a.ctl_json("show", "last")
    run_id = info["id"]
    statuses = [s["status"] for s in info["steps"]]
    # The first two: the removals of agentd's apt files (no apt key: none).
    assert statuses[3:] == ["failed", "skipped", "skipped"], statuses
    text = a.ctl("log", run_id).stdout
    headers = step_headers(text)
    assert [h[0] for h in headers] == ["1", "2", "3", "4", "5", "6"], text
    assert all(h[1] == "6" for h in headers)
    # Each header is followed (after the step's output) by its result line.
    blocks = re.split(r"^==> ", text, flags=re.M)[1:]
    assert [re.search(r"^<== (\w+)", b, re.M).group(1) for b in blocks] == statuses, text
    assert "never-printed" not in text


def test_plan_text_says_why_a_step_would_fail_and_shows_its_diff(make_agent):
    stack = simple_stack()
    stack["agent"]["files"] = {"web": [{"path": "/etc/motd", "content": "hello-from-plan\n", "owner": NOSUCHUSER},
                                       {"path": "/etc/issue", "content": "fine\n"}]}
    stack["agent"]["layers"]["web"]["configure"] = ["files"]
    a = make_agent().start()
    a.ctl("pause", check=0)
    a.write_stack(stack)
    wait_for(lambda: a.status()["source"]["stack_revision"], what="the stack to be loaded")
    steps = a.ctl_json("plan", "configure", "--layer", "web")["steps"]
    motd = [s for s in steps if s["target"] == "/etc/motd"]
    assert motd and motd[0]["action"] == "fail" and motd[0]["error"], steps
    p = a.ctl("plan", "configure", "--layer", "web")
    assert p.returncode == 0
    line = [l for l in p.stdout.splitlines() if "/etc/motd" in l and l.startswith("fail")]
    assert line and motd[0]["error"] in line[0], p.stdout
    assert f"unknown user {NOSUCHUSER}" in line[0], p.stdout
    assert "+hello-from-plan" in p.stdout
    # The header names the column; the other rows have no note.
    assert p.stdout.splitlines()[0].split() == ["ACTION", "KIND", "TARGET", "RECIPE", "NOTE"]


def field(text, label):
    m = re.search(rf"^ *{label}: (.*)$", text, re.M)
    return m and m.group(1)


def test_status_failed_is_text_with_a_readable_retry_time(make_agent):
    recipes = {"touch": {"command": ["/bin/true"]}, "fail": {"command": ["/bin/false"]}}
    stack = simple_stack(recipes=recipes)
    stack["agent"]["layers"]["web"]["configure"] = ["fail"]
    a = make_agent(stack, conf_extra={"retry_min": 3600, "retry_max": 7200}).start()
    wait_for(lambda: a.status()["failed"], what="a failure to be recorded")
    a.wait_idle()
    st = a.status()
    p = a.ctl("status")
    failed = field(p.stdout, "Failed")
    assert failed and "{" not in failed and "next_retry" not in failed, p.stdout
    assert "configure" in failed and f"run {st['failed'][0]['run']}" in failed, failed
    assert re.search(r"retry at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC \(in (\d+min|\d+h)", failed), failed
    # No microsecond epoch anywhere.
    assert str(st["failed"][0]["next_retry"]) not in p.stdout


def test_status_failed_lines_align_and_a_ctl_failure_has_no_retry(make_agent):
    recipes = {"touch": {"command": ["/bin/true"]}, "fail": {"command": ["/bin/false"]}}
    stack = simple_stack(recipes=recipes)
    stack["agent"]["layers"]["web"]["configure"] = ["fail"]
    stack["agent"]["layers"]["db"]["undeploy"] = ["fail"]
    a = make_agent(stack, conf_extra={"retry_min": 3600, "retry_max": 7200}).start()
    wait_for(lambda: a.status()["failed"], what="a failure to be recorded")
    a.wait_idle()
    a.ctl("run", "undeploy", "--layer", "db", "--wait", check=1)
    p = a.ctl("status")
    lines = p.stdout.splitlines()
    i = next(i for i, l in enumerate(lines) if l.lstrip().startswith("Failed:"))
    col = lines[i].index("Failed:") + len("Failed: ")
    assert lines[i + 1][:col].strip() == "" and lines[i + 1][col] != " ", p.stdout
    both = lines[i][col:] + "\n" + lines[i + 1][col:]
    assert "undeploy layer db" in both and "no retry" in both, both
    assert all(l.index(":") == lines[0].index(":") for l in lines if re.match(r"^ *[A-Z][a-z ]+: ", l)), p.stdout


def test_status_paused_without_a_reason_and_a_pending_change(make_agent):
    a = started_agent(make_agent, simple_stack())
    applied = a.status()["source"]["stack_revision"]
    p = a.ctl("pause")
    assert p.returncode == 0 and p.stdout.startswith("Paused"), p.stdout
    assert len(p.stdout.splitlines()) == 1
    st = a.ctl("status").stdout
    assert field(st, "State") == "paused"
    assert field(st, "Paused") not in (None, "-", ""), st
    assert field(st, "Applied") == applied, st
    stack = simple_stack()
    stack["opsworks"]["stack"]["name"] = "changed"
    a.write_stack(stack)
    wait_for(lambda: a.status()["source"]["stack_revision"] != applied, what="the change to be fetched")
    st = a.ctl("status").stdout
    assert field(st, "Applied") == f"{applied}, 1 change pending (resume to apply)", st
    p = a.ctl("resume")
    assert p.returncode == 0 and len(p.stdout.splitlines()) == 1 and "Resumed" in p.stdout, p.stdout
    a.wait_idle()
    st = a.ctl("status")
    assert field(st.stdout, "Applied") == a.status()["source"]["stack_revision"], st.stdout
    assert field(st.stdout, "Paused") == "no"
    p = a.ctl("pause", "maintenance", "window")
    assert p.stdout.startswith("Paused: maintenance window"), p.stdout
    assert field(a.ctl("status").stdout, "Paused") == "maintenance window"


def test_state_changing_verbs_say_what_they_did(make_agent):
    a = started_agent(make_agent, simple_stack())
    for verb in (["pause"], ["pause", "why"], ["resume"], ["clear-failed"], ["reload"]):
        p = a.ctl(*verb)
        assert p.returncode == 0, (verb, p.stderr)
        assert len(p.stdout.splitlines()) == 1 and p.stdout.strip(), (verb, p.stdout)
    # --json keeps printing the result only.
    assert json.loads(a.ctl("--json", "clear-failed").stdout) == {}


def check_config(tmp_path, conf):
    from conftest import AGENTD
    p = tmp_path / "agentd.conf"
    p.write_text(json.dumps(conf))
    return subprocess.run([AGENTD, "--check-config", "--config", str(p)], capture_output=True, text=True)


def test_check_config_warns_of_an_admin_group_that_does_not_exist(tmp_path):
    r = check_config(tmp_path, {"admin_group": "agentd-test-nosuchgroup"})
    # A warning, not an error: the configuration is valid (design.md §4).
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["admin_group"] == "agentd-test-nosuchgroup"
    assert "warning" in r.stderr and "agentd-test-nosuchgroup" in r.stderr and "does not exist" in r.stderr
    r = check_config(tmp_path, {"admin_group": "root"})
    assert r.returncode == 0 and r.stderr == "", r.stderr


def test_check_config_warns_of_a_command_that_is_not_there(tmp_path):
    r = check_config(tmp_path, {"admin_group": "root", "buildout_command": ["/nonexistent/bin/buildout"],
                                "haproxy_command": ["agentd-test-no-such-haproxy", "-q"],
                                "package_install_command": ["/bin/true"], "mkfs_command": ["true"]})
    assert r.returncode == 0, r.stderr
    warnings = r.stderr.splitlines()
    assert len(warnings) == 2, r.stderr
    assert any("buildout_command" in w and "/nonexistent/bin/buildout" in w for w in warnings), r.stderr
    assert any("haproxy_command" in w and "agentd-test-no-such-haproxy" in w for w in warnings), r.stderr
    assert all(w.startswith("agentd: warning: ") for w in warnings)
