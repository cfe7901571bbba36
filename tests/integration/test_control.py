# The control socket and agentctl against the real daemon (design.md §5):
# privilege by uid, redaction, limits, hostile input, streaming, exit codes.
import json
import os
import pwd
import random
import select
import socket
import subprocess
import time

import pytest

from conftest import AGENTCTL, nobody_socket, simple_stack, wait_for

SECRET = "hunter2-topsecret"


def stack_with_secrets(**kw):
    return simple_stack(extra={"ebs_snapshots": {"aws_key": "AKIAEXAMPLE", "aws_secret": SECRET}}, **kw)


def as_nobody(agent, *args, check=None):
    """agentctl as nobody with nobody's own primary group (which Debian calls
    nogroup, so Agent.ctl(user="nobody"), passing --regid=nobody, fails)."""
    pw = pwd.getpwnam("nobody")
    cmd = ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--clear-groups",
           AGENTCTL, "--socket", agent.sock] + [str(a) for a in args]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    if check is not None and p.returncode != check:
        raise AssertionError(f"{cmd} exited {p.returncode}, expected {check}: {p.stdout}{p.stderr}")
    return p


def connect(agent):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(agent.sock)
    return s


def read_lines(s, n, timeout=10.0):
    """Reads n reply lines (fewer if the server closes), as parsed JSON."""
    buf = b""
    out = []
    deadline = time.monotonic() + timeout
    while len(out) < n:
        while b"\n" in buf and len(out) < n:
            line, buf = buf.split(b"\n", 1)
            out.append(json.loads(line))
        if len(out) >= n:
            break
        left = deadline - time.monotonic()
        assert left > 0, f"timed out reading replies; got {out!r}"
        r, _, _ = select.select([s], [], [], left)
        if not r:
            continue
        chunk = s.recv(65536)
        if not chunk:
            break
        buf += chunk
    return out


def request(agent, obj_or_line):
    line = obj_or_line if isinstance(obj_or_line, (bytes, str)) else json.dumps(obj_or_line)
    if isinstance(line, str):
        line = line.encode()
    with connect(agent) as s:
        s.sendall(line + b"\n")
        return read_lines(s, 1)[0]


@pytest.fixture
def agent(make_agent):
    a = make_agent(stack_with_secrets()).start()
    a.wait_idle()
    return a


# ---- privilege ----

def test_unprivileged_user_can_read_but_not_act(agent):
    for verb in (["run", "configure"], ["reload"], ["pause", "maintenance"], ["resume"], ["clear-failed"],
                 ["rollback", "app"]):
        p = as_nobody(agent, *verb)
        assert p.returncode == 4, (verb, p.returncode, p.stdout, p.stderr)
        assert p.stderr.startswith("agentctl: ")
    for verb in (["status"], ["runs"], ["stack"], ["version"], ["runs", "-n", "5"], ["show", "last"],
                 ["log", "last"]):
        p = as_nobody(agent, *verb)
        assert p.returncode == 0, (verb, p.returncode, p.stdout, p.stderr)
    # Nothing was queued by the refused requests.
    assert agent.status()["queue"] == []
    assert agent.status()["state"] != "paused"


def test_permission_denied_reply_on_the_wire(agent):
    # As root everything is allowed; the wire form of a refusal is checked
    # through agentctl --json as nobody, which prints the error to stderr.
    p = as_nobody(agent, "--json", "run", "configure")
    assert p.returncode == 4
    assert p.stdout == ""


def test_stack_is_redacted_for_unprivileged_callers(agent):
    root = agent.ctl_json("stack")
    assert root["ebs_snapshots"]["aws_secret"] == SECRET
    nobody = json.loads(as_nobody(agent, "--json", "stack", check=0).stdout)
    assert nobody["ebs_snapshots"]["aws_secret"] == "***"
    assert nobody["ebs_snapshots"]["aws_key"] == "***"
    assert nobody["opsworks"]["stack"]["name"] == "test"
    p = as_nobody(agent, "stack", check=0)
    assert SECRET not in p.stdout
    assert '"***"' in p.stdout


def test_run_log_is_redacted_for_unprivileged_callers(make_agent):
    recipes = {"touch": {"command": ["/bin/echo", "db_password=" + SECRET]}}
    a = make_agent(simple_stack(recipes=recipes)).start()
    a.wait_idle()
    root = a.ctl("log", "last", check=0).stdout
    assert "db_password=" + SECRET in root
    nobody = as_nobody(a, "log", "last", check=0).stdout
    assert SECRET not in nobody
    assert "db_password=***" in nobody


# ---- exit codes and usage ----

@pytest.mark.parametrize("args", [
    ["bogus"],
    [],
    ["runs", "-n", "abc"],
    ["runs", "-n", "0"],
    ["runs", "extra"],
    ["show"],
    ["show", "x"],
    ["log"],
    ["log", "1", "2"],
    ["run"],
    ["run", "explode"],
    ["run", "configure", "--layer"],
    ["run", "configure", "--layer", "../etc"],
    ["plan", "deploy", "--bogus"],
    ["rollback"],
    ["status", "extra"],
    ["--frobnicate", "status"],
])
def test_usage_errors_exit_2_before_connecting(tmp_path, args):
    # The socket does not exist: a usage error is found before connecting.
    p = subprocess.run([AGENTCTL, "--socket", str(tmp_path / "none.sock")] + args,
                                     capture_output=True, text=True, timeout=30)
    assert p.returncode == 2, (args, p.stdout, p.stderr)
    assert "agentctl: " in p.stderr


def test_missing_socket_exits_3(tmp_path):
    p = subprocess.run([AGENTCTL, "--socket", str(tmp_path / "none.sock"), "status"],
                                     capture_output=True, text=True, timeout=30)
    assert p.returncode == 3
    assert p.stderr.startswith("agentctl: ")


def test_help_exits_0(tmp_path):
    for args in (["help"], ["--help"], ["-h"]):
        p = subprocess.run([AGENTCTL] + args, capture_output=True, text=True, timeout=30)
        assert p.returncode == 0
        assert "run EVENT" in p.stdout


def test_failed_request_exits_1(agent):
    p = agent.ctl("show", "99999")
    assert p.returncode == 1
    assert p.stderr.startswith("agentctl: ")
    p = agent.ctl("rollback", "noapp")
    assert p.returncode == 1


# ---- streaming ----

def test_run_wait_streams_and_returns_the_finished_run(agent):
    before = len(agent.runs())
    p = agent.ctl("run", "configure", "--wait", check=0)
    assert "success" in p.stdout
    lines = agent.ctl("--json", "run", "configure", "--wait", check=0).stdout
    # Event lines, one per line, then the final result (indented JSON).
    decoder = json.JSONDecoder()
    docs, pos = [], 0
    while pos < len(lines):
        while pos < len(lines) and lines[pos].isspace():
            pos += 1
        if pos >= len(lines):
            break
        doc, pos = decoder.raw_decode(lines, pos)
        docs.append(doc)
    events = [d for d in docs if "event" in d and "steps" not in d]
    result = docs[-1]
    names = [e["event"] for e in events]
    assert "run-started" in names and names[-1] == "run-finished", names
    assert result["status"] == "success"
    assert result["id"] == events[-1]["run"]
    assert isinstance(result["steps"], list) and result["steps"]
    assert len(agent.runs()) >= before + 2


def test_run_wait_of_a_failing_recipe_exits_1(make_agent):
    recipes = {"touch": {"command": ["/bin/true"]}, "fail": {"command": ["/bin/false"]}}
    stack = simple_stack(recipes=recipes)
    stack["agent"]["layers"]["db"]["undeploy"] = ["fail"]
    a = make_agent(stack).start()
    a.wait_idle()
    p = a.ctl("run", "undeploy", "--layer", "db", "--wait")
    assert p.returncode == 1, (p.stdout, p.stderr)
    assert "failed" in p.stdout
    info = a.ctl_json("show", "last")
    assert info["status"] == "failed"
    assert any(s["status"] == "failed" for s in info["steps"])
    # status reports the failed state but still exits 0.
    assert a.ctl("status").returncode == 0


def test_log_follow_returns_the_whole_output(make_agent):
    recipes = {"touch": {"command": ["/bin/sh", "-c", "echo first-line; sleep 0.3; echo last-line"]}}
    a = make_agent(simple_stack(recipes=recipes)).start()
    a.wait_idle()
    run_id = a.ctl_json("run", "configure")["id"]
    p = a.ctl("log", str(run_id), "-f", check=0)
    assert "first-line" in p.stdout and "last-line" in p.stdout
    a.wait_idle()
    p = a.ctl("log", "last", check=0)
    assert "last-line" in p.stdout


def test_run_without_wait_queues(agent):
    r = agent.ctl_json("run", "configure")
    assert r["queued"] is True and isinstance(r["id"], int)
    wait_for(lambda: agent.ctl_json("show", str(r["id"]))["status"] == "success", what="the run to succeed")


# ---- hostile clients ----

def _malformed_requests(rng):
    big = b'{"method":"status","params":{"x":"' + b"a" * 100_000 + b'"}}'
    cases = [
        (b"garbage", "bad-request"),
        (b"{", "bad-request"),
        (b"[]", "bad-request"),
        (b"42", "bad-request"),
        (b'"status"', "bad-request"),
        (b"null", "bad-request"),
        (b"{}", "bad-request"),
        (b'{"method":1}', "bad-request"),
        (b'{"method":"status","params":[1]}', "bad-request"),
        (b'{"method":"status","params":"x"}', "bad-request"),
        (b'{"method":"shutdown-now"}', "unknown-method"),
        (b'{"method":"STATUS"}', "unknown-method"),
        (b'{"method":"runs","params":{"n":"ten"}}', "invalid-params"),
        (b'{"method":"runs","params":{"n":100000}}', "invalid-params"),
        (b'{"method":"run-info","params":{"id":"x"}}', "invalid-params"),
        (b'{"method":"log","params":{"id":1,"follow":"yes"}}', "invalid-params"),
        (b'{"method":"plan","params":{"event":7}}', "invalid-params"),
        (b'{"method":"plan","params":{"event":"configure","app":"a/b"}}', "invalid-params"),
        (b'{"method":"run","params":{"event":"nope"}}', "invalid-params"),
        (b"\xff\xfe\xfd", "bad-request"),
        (big, "bad-request"),
    ]
    out = []
    for i in range(1000):
        if i % 5 == 4:
            # Random bytes without a newline inside: still one bad line.
            junk = bytes(rng.randrange(1, 256) for _ in range(rng.randrange(1, 200))).replace(b"\n", b" ")
            out.append((junk, None))
        else:
            out.append(cases[i % len(cases)])
    return out


def test_a_thousand_malformed_requests_leave_the_daemon_answering(agent):
    rng = random.Random(1234)
    reqs = _malformed_requests(rng)
    # Spread over a few connections, many requests per connection.
    per_conn = 50
    for start in range(0, len(reqs), per_conn):
        chunk = reqs[start:start + per_conn]
        with connect(agent) as s:
            s.sendall(b"".join(line + b"\n" for line, _ in chunk))
            replies = read_lines(s, len(chunk), timeout=30)
        assert len(replies) == len(chunk)
        for (line, code), reply in zip(chunk, replies):
            if code is None:
                # Random junk may parse (e.g. a bare number): whatever it is,
                # it is not a successful call.
                assert reply["ok"] is False or reply.get("result") is not None
                continue
            assert reply["ok"] is False, (line[:80], reply)
            assert reply["error"]["code"] == code, (line[:80], reply)
            if len(line) > 65536:
                assert reply["error"]["message"] == "request longer than 65536 bytes"
    assert agent.ctl("status").returncode == 0
    assert agent.proc.poll() is None


def test_overlong_line_then_a_good_request_on_the_same_connection(agent):
    with connect(agent) as s:
        s.sendall(b"x" * 200_000 + b"\n" + b'{"method":"version"}\n')
        bad, good = read_lines(s, 2)
    assert bad == {"ok": False, "error": {"code": "bad-request", "message": "request longer than 65536 bytes"}}
    assert good["ok"] is True and good["result"]["protocol"] == 1


def test_pipelined_requests_are_answered_in_order(agent):
    with connect(agent) as s:
        s.sendall(b'{"method":"version"}\n{"method":"nope"}\n{"method":"runs","params":{"n":1}}\n')
        a, b, c = read_lines(s, 3)
    assert a["ok"] and "version" in a["result"]
    assert b["error"]["code"] == "unknown-method"
    assert c["ok"] and len(c["result"]["runs"]) == 1


def test_two_hundred_concurrent_clients(agent):
    socks = []
    try:
        for i in range(200):
            s = connect(agent)
            s.sendall(b'{"method":"status"}\n')
            socks.append(s)
        replies = 0
        for i, s in enumerate(socks):
            if i % 3 == 0:
                s.close()  # leaves without reading
                continue
            got = read_lines(s, 1, timeout=30)
            if got:
                reply = got[0]
                assert reply["ok"] is True or reply["error"]["code"] == "limit", reply
                replies += 1
    finally:
        for s in socks:
            s.close()
    assert replies > 0
    assert agent.ctl("status").returncode == 0


def test_a_silent_client_does_not_block_others(agent):
    with connect(agent) as silent, connect(agent) as half:
        half.sendall(b'{"method":"sta')  # half a request, then nothing
        p = agent.ctl("status")
        assert p.returncode == 0
        assert agent.ctl_json("version")["protocol"] == 1
        # Both connections are still open and usable.
        half.sendall(b'tus"}\n')
        assert read_lines(half, 1)[0]["ok"] is True
        silent.sendall(b'{"method":"version"}\n')
        assert read_lines(silent, 1)[0]["ok"] is True


def test_a_client_that_never_reads_is_not_a_problem(agent):
    s = connect(agent)
    try:
        s.setblocking(False)
        # Pipeline requests without reading replies until the socket stops
        # taking more; the daemon must keep serving others meanwhile.
        req = b'{"method":"stack"}\n' * 200
        sent = 0
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and sent < 20_000_000:
            try:
                sent += s.send(req)
            except BlockingIOError:
                break
            except (BrokenPipeError, ConnectionResetError):
                break
        assert agent.ctl("status").returncode == 0
    finally:
        s.close()
    assert agent.ctl("status").returncode == 0


def test_disconnect_during_run_wait(agent):
    with connect(agent) as s:
        s.sendall(b'{"method":"run","params":{"event":"configure","wait":true}}\n')
        first = read_lines(s, 1)[0]
        assert "event" in first
    agent.wait_idle()
    assert agent.ctl("status").returncode == 0


def test_version(agent):
    v = agent.ctl_json("version")
    assert v["protocol"] == 1 and v["version"]
    p = agent.ctl("version", check=0)
    assert "agentd" in p.stdout


def test_human_output(agent):
    p = agent.ctl("status", check=0)
    for label in ("Instance:", "State:", "Last run:", "Source:", "Version:"):
        assert label in p.stdout
    p = agent.ctl("runs", check=0)
    assert p.stdout.split()[:8] == ["ID", "EVENT", "LAYER", "APP", "TRIGGER", "STATUS", "STARTED", "CHANGED"]
    p = agent.ctl("show", "last", check=0)
    assert "#" in p.stdout and "KIND" in p.stdout and "TARGET" in p.stdout
    p = agent.ctl("plan", "configure", check=0)
    assert p.stdout


# ---- clients that hold on ----

def daemon_fds(agent):
    return len(os.listdir(f"/proc/{agent.proc.pid}/fd"))


def test_clients_that_never_read_after_eof_are_closed(make_agent):
    # A stack reply far bigger than the socket buffers: the daemon's
    # shutdown after the reply can never complete while nobody reads it.
    blob = {f"k{i}": "v" * 1000 for i in range(2000)}
    a = make_agent(simple_stack(extra={"blob": blob})).start()
    a.wait_idle()
    baseline = daemon_fds(a)
    socks = []
    try:
        for _ in range(10):
            s = connect(a)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.sendall(b'{"method":"stack"}\n')
            s.shutdown(socket.SHUT_WR)
            socks.append(s)
        # At least one held: on a loaded machine the first ones may already
        # have reached their 5 s limit before the last is accepted.
        wait_for(lambda: daemon_fds(a) > baseline, what="the connections to be accepted")
        assert a.ctl("status").returncode == 0
        # Closed after PROTO_FINISH_TIMEOUT_MS (5 s) without progress, well
        # before the 30 s idle timeout.
        wait_for(lambda: daemon_fds(a) <= baseline, timeout=20, what="the daemon to drop the non-readers")
    finally:
        for s in socks:
            s.close()
    assert a.ctl("status").returncode == 0


HOLDER = r"""
import json, socket, sys
path, n = sys.argv[1], int(sys.argv[2])
held, ok, limit = [], 0, 0
for _ in range(n):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    try:
        # A refused connection gets its "limit" line and is closed at once.
        s.sendall(b'{"method":"version"}\n')
    except OSError:
        pass
    f = s.makefile("rb")
    try:
        line = f.readline()
    except OSError:
        line = b""
    r = json.loads(line) if line else {}
    if r.get("ok"):
        ok += 1
        held.append((s, f))
    else:
        assert not r or r["error"]["code"] == "limit", r
        limit += 1
        s.close()
print(json.dumps({"ok": ok, "limit": limit}), flush=True)
sys.stdin.read()
"""


class Holder:
    """A process as uid that opens n connections and holds the accepted ones
    until it is closed."""

    def __init__(self, agent, uid, n):
        gid = pwd.getpwnam("nobody").pw_gid if uid == pwd.getpwnam("nobody").pw_uid else uid
        self.proc = subprocess.Popen(
            ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "/usr/bin/python3", "-c", HOLDER,
             agent.sock, str(n)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        r, _, _ = select.select([self.proc.stdout], [], [], 30)
        assert r, "the holder did not report"
        self.result = json.loads(self.proc.stdout.readline())

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(30)


def test_unprivileged_users_cannot_lock_root_out(agent):
    nobody = pwd.getpwnam("nobody").pw_uid
    holders = []
    try:
        # nobody at its per-uid maximum: one more is refused.
        h = Holder(agent, nobody, 33)
        holders.append(h)
        assert h.result == {"ok": 32, "limit": 1}
        p = agent.ctl("status")
        assert p.returncode == 0, p.stderr
        # Root is not limited per uid.
        socks = [connect(agent) for _ in range(40)]
        try:
            for s in socks:
                s.sendall(b'{"method":"version"}\n')
            for s in socks:
                assert read_lines(s, 1)[0]["ok"] is True
        finally:
            for s in socks:
                s.close()
        # Seven more uids at their maximum: the last 16 of the 256
        # connections stay for privileged callers.
        for uid in range(61001, 61008):
            holders.append(Holder(agent, uid, 32))
        total = sum(h.result["ok"] for h in holders)
        assert 200 <= total <= 240, [h.result for h in holders]
        assert sum(h.result["limit"] for h in holders) >= 256 - 240 + 1
        p = agent.ctl("status")
        assert p.returncode == 0, p.stderr
        assert agent.ctl_json("version")["protocol"] == 1
    finally:
        for h in holders:
            h.close()
    wait_for(lambda: as_nobody(agent, "status").returncode == 0, what="nobody to connect again")


# ---- numbers on the wire (issue 9, kind 3) ----

@pytest.mark.parametrize("line", [
    b'{"method":"runs","params":{"n":-1}}',
    b'{"method":"runs","params":{"n":0}}',
    b'{"method":"runs","params":{"n":1001}}',
    b'{"method":"runs","params":{"n":9223372036854775807}}',
    b'{"method":"runs","params":{"n":-9223372036854775808}}',
    b'{"method":"runs","params":{"n":99999999999999999999999}}',
    b'{"method":"runs","params":{"n":1e400}}',
    b'{"method":"runs","params":{"n":5.0}}',
    b'{"method":"runs","params":{"n":"5"}}',
    b'{"method":"runs","params":{"n":true}}',
    b'{"method":"run-info","params":{"id":-1}}',
    b'{"method":"run-info","params":{"id":0}}',
    b'{"method":"run-info","params":{"id":-9223372036854775808}}',
    b'{"method":"run-info","params":{"id":18446744073709551616}}',
    b'{"method":"run-info","params":{"id":1e2}}',
    b'{"method":"run-info","params":{"id":-1e400}}',
    b'{"method":"log","params":{"id":1.5}}',
    b'{"method":"log","params":{"id":[1]}}',
    b'{"method":"log","params":{"id":{"id":1}}}',
    b'{"method":"log","params":{"id":"1"}}',
    b'{"method":"log","params":{"id":-4294967295,"follow":true}}',
    b'{"method":"log","params":{"id":99999999999999999999,"follow":true}}',
    b'{"method":"log","params":{"id":1,"follow":1}}',
])
def test_numbers_out_of_range_are_invalid_params(agent, line):
    r = request(agent, line)
    assert r["ok"] is False
    assert r["error"]["code"] == "invalid-params", r
    # The daemon goes on answering.
    assert request(agent, {"method": "version"})["ok"] is True


def test_run_ids_beyond_any_run_are_not_found(agent):
    for rid in (2 ** 31, 2 ** 32 + 1, 2 ** 63 - 1):
        for method in ("run-info", "log"):
            r = request(agent, {"method": method, "params": {"id": rid}})
            assert r["ok"] is False and r["error"]["code"] == "not-found", (method, rid, r)


CHATTY = r"""
import os, sys, time
d = sys.argv[1]
if os.environ.get("AGENT_EVENT") != "configure" or not os.path.exists(os.path.join(d, "armed")):
    sys.exit(0)
os.unlink(os.path.join(d, "armed"))
i = 0
while not os.path.exists(os.path.join(d, "stop")):
    print("tick %d" % i, flush=True)
    i += 1
    time.sleep(float(sys.argv[2]))
"""


def test_half_closed_follower_of_a_chatty_run_that_does_not_read_is_closed(make_agent):
    """break3 finding 7: a follower that half-closes and never reads is
    closed although the run keeps writing (a line every 0.5 s) and each line
    fits in the socket buffer; one that half-closes and reads stays to the
    end of the run."""
    a = make_agent()
    d = os.path.join(a.tmp, "signals")
    os.makedirs(d)
    path = os.path.join(a.tmp, "chatty.py")
    with open(path, "w") as f:
        f.write(CHATTY)
    a.write_stack(simple_stack(recipes={"touch": {"command": ["/usr/bin/python3", path, d, "0.5"]}}))
    a.start()
    a.wait_idle()
    open(os.path.join(d, "armed"), "w").close()
    run_id = a.ctl_json("run", "configure", "--layer", "web")["id"]
    wait_for(lambda: "tick 0" in a.ctl("log", run_id).stdout, what="the run to print")
    silent = connect(a)
    reader = connect(a)
    try:
        for s in (silent, reader):
            s.sendall(json.dumps({"method": "log", "params": {"id": run_id, "follow": True}}).encode() + b"\n")
            s.shutdown(socket.SHUT_WR)
        reader.setblocking(False)
        got = b""
        hup = select.poll()
        hup.register(silent, select.POLLRDHUP | select.POLLHUP)
        deadline = time.monotonic() + 60
        silent_closed = False
        # The reader keeps reading; the silent one must be closed while the
        # run still goes on (before, it was kept as long as the run wrote).
        while time.monotonic() < deadline and not silent_closed:
            for _fd, ev in hup.poll(200):
                if ev & (select.POLLRDHUP | select.POLLHUP):
                    silent_closed = True
            try:
                chunk = reader.recv(65536)
                assert chunk, "the reading follower was closed: %r" % got[-300:]
                got += chunk
            except BlockingIOError:
                pass
        assert silent_closed, "the silent half-closed follower was not closed"
        assert a.ctl_json("show", run_id)["status"] == "running"
        # The reader got the run's lines past the silent one's end and gets
        # its end too.
        open(os.path.join(d, "stop"), "w").close()
        reader.setblocking(True)
        reader.settimeout(30)
        while b'"ok":' not in got:
            chunk = reader.recv(65536)
            assert chunk, "the reading follower was closed before the end: %r" % got[-300:]
            got += chunk
        assert b'"ok":true' in got and b"tick" in got
    finally:
        open(os.path.join(d, "stop"), "w").close()
        silent.close()
        reader.close()
    a.wait_idle()



def read_reply(s, timeout=60):
    s.settimeout(timeout)
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = s.recv(1 << 20)
        if not chunk:
            break
        buf += chunk
    return buf


BIG_LOG = r"""
import os, sys
if os.environ.get("AGENT_EVENT") != "configure":
    sys.exit(0)
sys.stdout.buffer.write((b"\x01" * 1000 + b"\n") * 2200)
sys.stdout.flush()
"""


def test_a_burst_of_log_requests_is_encoded_once(make_agent):
    """break3 finding 6: 30 unprivileged requests for a 2.2 MB log of
    control characters, never read, do not build 30 redacted copies: the
    encoded reply is shared, and a uid gets one log reply being sent at a
    time. Root's status latency is printed (not asserted)."""
    a = make_agent()
    path = os.path.join(a.tmp, "big.py")
    with open(path, "w") as f:
        f.write(BIG_LOG)
    a.write_stack(simple_stack(recipes={"touch": {"command": ["/usr/bin/python3", path]}}))
    a.start()
    a.wait_idle()
    runs = a.runs()
    conf = [r["id"] for r in runs if r["event"] == "configure"][0]
    other = [r["id"] for r in runs if r["event"] != "configure"][0]
    socks = [nobody_socket(a) for _ in range(30)]
    try:
        for s in socks:
            s.sendall(json.dumps({"method": "log", "params": {"id": conf}}).encode() + b"\n")
        t0 = time.monotonic()
        assert a.ctl("status").returncode == 0
        print("root status during a burst of 30 log requests: %.2f s" % (time.monotonic() - t0))
        # While those replies are unread, the same uid asking for another
        # run's log is refused rather than given another copy.
        late = nobody_socket(a)
        late.sendall(json.dumps({"method": "log", "params": {"id": other}}).encode() + b"\n")
        reply = json.loads(read_reply(late))
        late.close()
        assert reply["ok"] is False and reply["error"]["code"] == "limit", reply
        replies = [read_reply(s) for s in socks]
        assert all(r == replies[0] for r in replies)
        doc = json.loads(replies[0])
        assert doc["ok"] is True and doc["result"]["id"] == conf and len(doc["result"]["output"]) > 1000000
    finally:
        for s in socks:
            s.close()
    # Once they are read, other logs are served again.
    assert as_nobody(a, "log", other).returncode == 0
