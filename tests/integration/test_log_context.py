# A run's log context (RUN_ID, EVENT, STEP; "[run N ...]" on stderr) is on
# the run's own lines only: a line logged for something else while the run
# goes on (a control client's denial, a stack the source rejects) carries
# none of it (issue 10 item 7).
import os

from conftest import simple_stack, wait_for

GATE = ["/bin/sh", "-c", 'touch "$AGENT_ROOT/began"; while [ ! -e "$AGENT_ROOT/go" ]; do sleep 0.02; done']


def lines_with(text, needle):
    return [l for l in text.splitlines() if needle in l]


def test_lines_logged_during_a_run_for_other_things_have_no_run_context(make_agent):
    stack = simple_stack()
    stack["agent"]["recipes"]["gate"] = {"command": GATE}
    a = make_agent(stack).start()
    a.wait_runs(3)
    a.wait_idle()
    stack["agent"]["layers"]["web"]["configure"] = ["gate"]
    a.write_stack(stack)
    wait_for(lambda: os.path.exists(os.path.join(a.root, "began")), what="the gated run")
    run = a.status()["current_run"]["id"]
    # A control client's denial, during the run.
    assert a.ctl("run", "deploy", user="nobody").returncode == 4
    # A stack the source rejects, during the run.
    a.write_stack("{not json")
    wait_for(lambda: a.status()["source"]["error"], what="the rejected stack")
    assert a.status()["current_run"]["id"] == run
    open(os.path.join(a.root, "go"), "w").close()
    a.wait_idle()
    text = a.stderr_text()
    denied = lines_with(text, "denied to uid")
    rejected = lines_with(text, "stack rejected")
    assert denied and rejected, text
    for line in denied + rejected:
        assert "[run " not in line, line
    # The run's own lines still carry it.
    started = lines_with(text, f"Run {run} started")
    assert started and f"[run {run} configure" in started[0], started
    done = lines_with(text, f"Run {run} (configure) succeeded")
    assert done and f"[run {run} configure" in done[0], done
