# Bash completion of agentctl (conf/bash-completion/agentctl): the file is
# sourced in a real bash, its function called with COMP_WORDS/COMP_CWORD as
# bash's programmable completion sets them, and COMPREPLY compared with what
# the code and a real agentd (started under a temporary root) hold: the
# verbs of agentctl's verb table, the events of lib/event.c, the layers of
# `status`, the apps of `stack`, the run ids of `runs`. Without a daemon
# (no socket, or a socket nobody answers) it must print nothing and return
# within its 1 s deadline.
import os
import re
import socket
import subprocess
import time

from conftest import AGENTCTL, BUILD, simple_stack, wait_for

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.abspath(os.path.join(HERE, "..", ".."))
COMPLETION = os.path.join(SRC, "conf", "bash-completion", "agentctl")


def code_verbs():
    """The verbs of agent/agentctl/main.c's verbs table, plus "help"."""
    with open(os.path.join(SRC, "agent", "agentctl", "main.c")) as f:
        text = f.read()
    table = re.search(r"static const struct verb verbs\[\] = \{(.*?)\n\};", text, re.S)
    assert table, "the verbs table of agent/agentctl/main.c"
    verbs = set(re.findall(r'^\t\{ "([a-z-]+)", "', table.group(1), re.M))
    assert {"status", "run", "log"} <= verbs
    if 'strcmp(rest[0], "help")' in text:
        verbs.add("help")
    return verbs


def code_events():
    with open(os.path.join(SRC, "lib", "event.c")) as f:
        text = f.read()
    names = re.search(r"event_names\[_EVENT_MAX\] = \{(.*?)\};", text, re.S)
    assert names
    events = set(re.findall(r'\[EVENT_[A-Z]+\] = "([a-z]+)"', names.group(1)))
    assert "deploy" in events
    return events


def complete(words, env=None, timeout=10):
    """COMPREPLY for the command line `words` (the last one being completed)
    and bash's stderr, as completion would run it: `_agentctl agentctl CUR PREV`."""
    script = (
        'source "$1"; shift\n'
        'COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1))\n'
        'COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}\n'
        '_agentctl "$1" "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"\n'
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    e = dict(os.environ)
    e["PATH"] = os.path.abspath(BUILD) + ":" + e.get("PATH", "/usr/bin:/bin")
    e.pop("AGENTD_SOCKET", None)
    if env:
        e.update(env)
    p = subprocess.run(["bash", "--norc", "--noprofile", "-c", script, "complete", COMPLETION, *words],
                       capture_output=True, text=True, env=e, timeout=timeout)
    assert p.returncode == 0, p.stderr
    return sorted(x for x in p.stdout.split("\n") if x), p.stderr


def test_completion_against_a_live_daemon(make_agent):
    stack = simple_stack()
    stack["deploy"] = {"shop": {}, "blog": {}}
    a = make_agent(stack).start()
    # First start: setup, configure, one deploy per app.
    runs = a.wait_runs(4)
    ids = sorted(str(r["id"]) for r in a.runs())
    s = ["--socket", a.sock]

    verbs = code_verbs()
    got, err = complete(["agentctl", ""])
    assert set(got) == verbs and err == ""
    assert complete(["agentctl", "r"])[0] == sorted(v for v in verbs if v.startswith("r"))
    assert complete(["agentctl", "--"])[0] == ["--help", "--json", "--socket"]

    events = code_events()
    assert set(complete(["agentctl", *s, "run", ""])[0]) == events
    assert set(complete(["agentctl", *s, "plan", ""])[0]) == events | {"rollback"}
    assert complete(["agentctl", *s, "run", "de"])[0] == ["deploy"]
    # Once the event is given, only options are left.
    assert complete(["agentctl", *s, "run", "deploy", ""])[0] == []
    assert complete(["agentctl", *s, "run", "deploy", "--"])[0] == sorted(
        ["--layer", "--app", "--recipe", "--wait", "--socket", "--json", "--help"])

    # Layers from `status`, apps (the keys of deploy) from `stack`.
    assert complete(["agentctl", *s, "run", "configure", "--layer", ""])[0] == sorted(a.status()["layers"]) \
        == ["db", "web"]
    assert complete(["agentctl", "--json", "plan", "deploy", "--app", "", *[]], env={"AGENTD_SOCKET": a.sock})[0] \
        == ["blog", "shop"]
    assert complete(["agentctl", *s, "rollback", ""])[0] == ["blog", "shop"]
    assert complete(["agentctl", *s, "plan", "rollback", "s"])[0] == ["shop"]
    # The socket given after the verb counts too.
    assert complete(["agentctl", "run", "deploy", "--socket", a.sock, "--app", "b"])[0] == ["blog"]

    # Run ids from `runs`; log also takes "last".
    assert len(runs) >= 4
    assert complete(["agentctl", *s, "show", ""])[0] == ids
    assert complete(["agentctl", *s, "log", "-f", ""])[0] == sorted(ids + ["last"])
    assert complete(["agentctl", *s, "log", "-"])[0] == sorted(["-f", "--follow", "--socket", "--json", "--help"])
    assert complete(["agentctl", *s, "show", ids[0], ""])[0] == []

    assert complete(["agentctl", *s, "stack", ""])[0] == ["push"]
    assert complete(["agentctl", *s, "stack", "--r"])[0] == ["--revision"]

    # "--socket=PATH" and "--layer=VAL" as bash splits them (COMP_WORDBREAKS
    # holds "="): the socket is found, and the value after "=" completes.
    eq = ["--socket", "=", a.sock]
    assert set(complete(["agentctl", *eq, ""])[0]) == verbs
    assert complete(["agentctl", *eq, "show", ""])[0] == ids
    assert complete(["agentctl", *eq, "run", "configure", "--layer", "="])[0] == ["db", "web"]
    assert complete(["agentctl", *eq, "run", "configure", "--layer", "=", "w"])[0] == ["web"]
    assert complete(["agentctl", *eq, "plan", "deploy", "--app", "=", "s"])[0] == ["shop"]


def test_completion_is_quiet_and_fast_without_a_daemon(tmp_path):
    gone = str(tmp_path / "nothing.sock")
    for words in (["show", ""], ["run", "deploy", "--layer", ""], ["rollback", ""]):
        t = time.monotonic()
        got, err = complete(["agentctl", "--socket", gone, *words])
        assert got == [] and err == "", (words, got, err)
        assert time.monotonic() - t < 0.9
    # Verbs and events need no daemon.
    assert "status" in complete(["agentctl", "--socket", gone, ""])[0]
    assert "deploy" in complete(["agentctl", "--socket", gone, "run", ""])[0]

    # A socket that accepts but never answers (a stopped daemon): the
    # completion gives up after its 1 s deadline, silently.
    hung = str(tmp_path / "hung.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(hung)
    srv.listen(8)
    try:
        t = time.monotonic()
        got, err = complete(["agentctl", "--socket", hung, "log", ""])
        took = time.monotonic() - t
    finally:
        srv.close()
    assert got == ["last"] and err == ""
    assert took < 2.5, took
