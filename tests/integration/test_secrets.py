# Secrets shown to callers that are not privileged (design.md §5, issue 9
# kind 6): live output is redacted per line, never per chunk, and the content
# of a file marked "secret": true is hidden in every method. Also the serving
# side of kind 7: the memory a large stack costs while two unprivileged
# users read it, and what is kept after it is gone.
import json
import os
import pwd
import socket
import subprocess
import threading
import time

import pytest

from conftest import AGENTCTL, Collected, nobody_socket, simple_stack, wait_for

VALUE = "Zq7-hunter2-VALUE"


def nobody_cmd(agent, *args):
    pw = pwd.getpwnam("nobody")
    return ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--clear-groups",
            AGENTCTL, "--socket", agent.sock] + [str(a) for a in args]


def as_nobody(agent, *args):
    return subprocess.run(nobody_cmd(agent, *args), capture_output=True, text=True, timeout=60)


class Follower(Collected):
    """agentctl log RUN -f as nobody, its output collected as it comes."""

    def __init__(self, agent, run_id):
        super().__init__(nobody_cmd(agent, "log", run_id, "-f"))

    def finish(self, timeout=60):
        return super().finish(timeout)[1]

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


# A recipe that does nothing outside the test's configure run (the boot runs
# pass through), and inside it prints as the test's files direct.
PAUSING = r"""
import os, sys, time
d = sys.argv[1]
if os.environ.get("AGENT_EVENT") != "configure" or not os.path.exists(os.path.join(d, "armed")):
    sys.exit(0)
os.unlink(os.path.join(d, "armed"))
def wait(name):
    while not os.path.exists(os.path.join(d, name)):
        time.sleep(0.01)
print("recipe-is-running", flush=True)
wait("go1")
sys.stdout.write("db_password=first-line-" + sys.argv[2] + " api_token")
sys.stdout.flush()
wait("go2")
sys.stdout.write("=" + sys.argv[2] + " more\n")
sys.stdout.write("quoted secret='" + sys.argv[2] + " two words'\n")
sys.stdout.write("last api_key")
sys.stdout.flush()
wait("go3")
sys.stdout.write(": " + sys.argv[2])
sys.stdout.flush()
"""


def pausing_agent(make_agent, script, *args):
    """An agent whose recipe is script (run with python3 from a file, as argv
    may not hold newlines), given its signal directory and args."""
    a = make_agent()
    d = os.path.join(a.tmp, "signals")
    os.makedirs(d)
    path = os.path.join(a.tmp, "recipe.py")
    with open(path, "w") as f:
        f.write(script)
    recipes = {"touch": {"command": ["/usr/bin/python3", path, d] + list(args)}}
    a.write_stack(simple_stack(recipes=recipes))
    a.start()
    a.wait_idle()
    return a, d


def touch(d, name):
    with open(os.path.join(d, name), "w"):
        pass


def test_log_follow_hides_a_value_printed_after_a_pause(make_agent):
    a, d = pausing_agent(make_agent, PAUSING, VALUE)
    touch(d, "armed")
    run_id = a.ctl_json("run", "configure", "--layer", "web")["id"]
    early = late = None
    try:
        early = Follower(a, run_id)
        wait_for(lambda: "recipe-is-running" in early.text(), what="the first follower to see the run's output")
        touch(d, "go1")
        # The second follower joins while "... api_token" is the line being
        # written: the stored log has it, with no newline yet.
        wait_for(lambda: "api_token" in a.ctl("log", run_id).stdout, what="the partial line to be logged")
        late = Follower(a, run_id)
        wait_for(lambda: "recipe-is-running" in late.text(), what="the second follower to start")
        touch(d, "go2")
        wait_for(lambda: "last" in a.ctl("log", run_id).stdout, what="the third line to be logged")
        touch(d, "go3")
        outs = [early.finish(), late.finish()]
    finally:
        for f in (early, late):
            if f:
                f.kill()
        for n in ("go1", "go2", "go3"):
            touch(d, n)
    for out in outs:
        assert VALUE not in out, out
        # The rest of a line after a secret name and separator is hidden.
        assert "db_password=***" in out and "api_token" not in out, out
        assert "two words" not in out, out
        # The run's last line, unterminated, is sent when its step ends.
        assert "api_key: ***" in out, out
    # The stored log keeps everything; root sees it, nobody sees it redacted.
    full = a.ctl("log", run_id, check=0).stdout
    assert "api_token=" + VALUE in full
    red = as_nobody(a, "log", run_id)
    assert VALUE not in red.stdout and "db_password=***" in red.stdout


# 1 MiB of assignments in one write: the daemon reads it in chunks of at
# most 64 KiB, and every chunk boundary falls inside some line.
STRADDLE = r"""
import os, sys, time
d = sys.argv[1]
if os.environ.get("AGENT_EVENT") != "configure" or not os.path.exists(os.path.join(d, "armed")):
    sys.exit(0)
os.unlink(os.path.join(d, "armed"))
print("recipe-is-running", flush=True)
while not os.path.exists(os.path.join(d, "go1")):
    time.sleep(0.01)
line = "db_password=" + sys.argv[2] + "\n"
head = "x" * (65536 - 6) + " api_token=" + sys.argv[2] + "\n"
data = head + line * ((1 << 20) // len(line))
sys.stdout.write(data)
sys.stdout.flush()
"""


def test_log_follow_hides_values_straddling_reads(make_agent):
    a, d = pausing_agent(make_agent, STRADDLE, VALUE)
    touch(d, "armed")
    run_id = a.ctl_json("run", "configure", "--layer", "web")["id"]
    f = None
    try:
        f = Follower(a, run_id)
        wait_for(lambda: "recipe-is-running" in f.text(), what="the follower to see the run's output")
        touch(d, "go1")
        out = f.finish()
    finally:
        if f:
            f.kill()
        touch(d, "go1")
    assert VALUE not in out
    lines = out.splitlines()
    secret_lines = [l for l in lines if "db_password" in l]
    assert len(secret_lines) == (1 << 20) // len("db_password=" + VALUE + "\n")
    assert all(l == "db_password=***" for l in secret_lines), {l for l in secret_lines if l != "db_password=***"}
    assert any(l.endswith(" api_token=***") for l in lines)


SECRET_CONTENT = "[db]\npassword_for_the_app = s3cr3t-Content-77\nopaque-blob-Mx8QzR\n"


def secret_files_stack(root="/nonexistent"):
    # "show" prints the secret file, as a careless recipe might.
    stack = simple_stack(recipes={"touch": {"command": ["/bin/true"]},
                                  "show": {"command": ["/bin/cat", root + "/etc/demo/app.ini"]}})
    stack["agent"]["layers"]["web"]["configure"] = ["touch", "files", "show"]
    stack["agent"]["files"] = {"web": [
        {"path": "/etc/demo/app.ini", "content": SECRET_CONTENT, "mode": "0600", "secret": True},
        {"path": "/etc/demo/public.conf", "content": "hello=world\n"},
    ]}
    return stack


def test_a_secret_file_content_is_hidden_from_unprivileged_callers(make_agent):
    a = make_agent()
    a.write_stack(secret_files_stack(a.root))
    a.start()
    a.wait_idle()
    # The recipe printed the file: root sees it in the log.
    conf = [r["id"] for r in a.runs() if r["event"] == "configure"][0]
    assert "opaque-blob-Mx8QzR" in a.ctl("log", conf).stdout
    # Root sees the document as it is.
    root = a.ctl_json("stack")
    assert root["agent"]["files"]["web"][0]["content"] == SECRET_CONTENT
    # nobody: the content is "***", what describes the file is not.
    p = as_nobody(a, "--json", "stack")
    assert p.returncode == 0, p.stderr
    assert "s3cr3t-Content-77" not in p.stdout
    doc = json.loads(p.stdout)
    f0, f1 = doc["agent"]["files"]["web"]
    assert f0["content"] == "***" and f0["path"] == "/etc/demo/app.ini" and f0["secret"] is True
    assert f1["content"] == "hello=world\n"
    p = as_nobody(a, "stack")
    assert p.returncode == 0 and "s3cr3t-Content-77" not in p.stdout
    # Nor anywhere else nobody can look.
    with open(os.path.join(a.root, "etc/demo/app.ini"), "w") as f:
        f.write("old\n")
    for args in (["plan", "configure"], ["--json", "plan", "configure"], ["status"], ["--json", "status"],
                 ["runs"], ["show", conf], ["--json", "show", conf], ["log", conf]):
        p = as_nobody(a, *args)
        assert "s3cr3t-Content-77" not in p.stdout + p.stderr, (args, p.stdout)
        assert "Mx8QzR" not in p.stdout + p.stderr, (args, p.stdout)
    # A second reader gets the same bytes (the cached serialisation).
    assert as_nobody(a, "--json", "stack").stdout == as_nobody(a, "--json", "stack").stdout
    # A new stack is served new: the cache follows the revision.
    stack = secret_files_stack(a.root)
    stack["agent"]["files"]["web"][1]["content"] = "hello=again\n"
    a.write_stack(stack)
    a.ctl("reload", check=0)
    wait_for(lambda: json.loads(as_nobody(a, "--json", "stack").stdout)["agent"]["files"]["web"][1]["content"]
             == "hello=again\n", what="the new stack to be served")


def test_half_closed_follower_is_closed_without_waiting_for_the_run(make_agent):
    script = r"""
import os, sys, time
d = sys.argv[1]
if os.environ.get("AGENT_EVENT") != "configure" or not os.path.exists(os.path.join(d, "armed")):
    sys.exit(0)
print("recipe-is-running", flush=True)
while not os.path.exists(os.path.join(d, "go1")):
    time.sleep(0.05)
"""
    a, d = pausing_agent(make_agent, script)
    touch(d, "armed")
    run_id = a.ctl_json("run", "configure", "--layer", "web")["id"]
    socks = []
    try:
        wait_for(lambda: "recipe-is-running" in a.ctl("log", run_id).stdout, what="the run to start")
        for req in ({"method": "log", "params": {"id": run_id, "follow": True}},
                    {"method": "run", "params": {"event": "configure", "wait": True}}):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(a.sock)
            s.sendall(json.dumps(req).encode() + b"\n")
            s.shutdown(socket.SHUT_WR)
            socks.append(s)
        # The daemon closes each within PROTO_FINISH_TIMEOUT_MS (5 s) of no
        # progress; before, they were kept until the run ended (never, here).
        for s in socks:
            s.settimeout(30)
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        assert a.ctl_json("show", run_id)["status"] == "running"
    finally:
        for s in socks:
            s.close()
        touch(d, "go1")
    a.wait_idle()


def test_planted_log_symlink_and_fifo_are_not_read(make_agent):
    a = make_agent(simple_stack()).start()
    a.wait_idle()
    target = os.path.join(a.tmp, "not-a-log")
    with open(target, "w") as f:
        f.write("db_password=" + VALUE + "\nprivate-content-42\n")
    runs = os.path.join(a.logs, "runs")
    os.symlink(target, os.path.join(runs, "900.log"))
    os.mkfifo(os.path.join(runs, "901.log"))
    for run_id in (900, 901):
        for p in (a.ctl("log", run_id), as_nobody(a, "log", run_id)):
            assert p.returncode != 0
            assert "private-content-42" not in p.stdout
    assert a.ctl("status").returncode == 0


def rss_kib(pid, field="VmRSS"):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(field)


def big_stack(total):
    """A stack with a Custom JSON key of 1 KiB strings, total bytes in all."""
    stack = simple_stack()
    base = len(json.dumps(stack, indent=1))
    n = (total - base) // 1030
    stack["blob"] = ["s%05d" % i + "v" * 1017 for i in range(n)]
    while len(json.dumps(stack, indent=1)) > total:
        stack["blob"].pop()
    return stack


def test_stack_memory_with_two_unprivileged_readers(make_agent):
    small = simple_stack()
    a = make_agent(small).start()
    a.wait_idle()
    pid = a.proc.pid
    floor = rss_kib(pid)
    small_rev = a.status()["source"]["stack_revision"]
    big = big_stack(16 * 1024 * 1024)
    a.write_stack(big)
    a.ctl("reload", check=0)
    wait_for(lambda: a.status()["source"]["stack_revision"] != small_rev, timeout=60,
             what="the large stack to be current")
    a.wait_idle(timeout=60)
    load_peak = rss_kib(pid, "VmHWM")
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM: what follows is the serving peak
    before = rss_kib(pid)
    readers = [subprocess.Popen(nobody_cmd(a, "--json", "stack"), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE) for _ in range(2)]
    outs = [r.communicate(timeout=120) for r in readers]
    for (out, err), r in zip(outs, readers):
        assert r.returncode == 0, err
        assert len(json.loads(out)["blob"]) == len(big["blob"])
    serve_peak = rss_kib(pid, "VmHWM")
    a.write_stack(small)
    a.ctl("reload", check=0)
    wait_for(lambda: a.status()["source"]["stack_revision"] == small_rev, timeout=60,
             what="the small stack to be current")
    a.wait_idle(timeout=60)
    # Returned within a generous bound (the goal is floor + 4 MiB): housekeeping
    # runs every 2 s, so this is a wait for a condition, not for a time.
    deadline = time.monotonic() + 30
    kept = rss_kib(pid)
    while kept > floor + 16 * 1024 and time.monotonic() < deadline:
        time.sleep(0.1)
        kept = rss_kib(pid)
    print(f"\nstack memory (KiB): floor {floor}, load peak {load_peak}, before reading {before}, "
          f"peak with two unprivileged readers {serve_peak}, kept after a small stack {kept} "
          f"(floor + {kept - floor})")
    with open(f"/proc/{pid}/maps") as f:
        sanitized = "libasan" in f.read()
    if not sanitized:  # ASan's allocator keeps freed memory in quarantine
        assert kept <= floor + 16 * 1024


def test_log_tail_never_starts_inside_a_line(make_agent):
    # The line being written is longer than the 2 MiB tail that log sends:
    # cut at its start, its value would be shown without its name.
    script = r"""
import os, sys, time
d = sys.argv[1]
if os.environ.get("AGENT_EVENT") != "configure" or not os.path.exists(os.path.join(d, "armed")):
    sys.exit(0)
sys.stdout.write("api_token=" + "Zq7" * (1 << 20))
sys.stdout.flush()
while not os.path.exists(os.path.join(d, "go1")):
    time.sleep(0.05)
"""
    a, d = pausing_agent(make_agent, script)
    touch(d, "armed")
    run_id = a.ctl_json("run", "configure", "--layer", "web")["id"]
    try:
        log = os.path.join(a.logs, "runs", f"{run_id}.log")
        wait_for(lambda: os.path.getsize(log) > 3 * (1 << 20), timeout=30, what="the long line to be logged")
        for p in (as_nobody(a, "log", run_id), a.ctl("log", run_id)):
            assert p.returncode == 0, p.stderr
            assert "Zq7Zq7" not in p.stdout
    finally:
        touch(d, "go1")
    a.wait_idle()


def rotating_stack(root, content, extra=None):
    stack = simple_stack(recipes={"touch": {"command": ["/bin/true"]},
                                  "show": {"command": ["/bin/cat", root + "/etc/app.secret"]}})
    stack["agent"]["layers"]["web"]["configure"] = ["files", "show"]
    stack["agent"]["files"] = {"web": [{"path": "/etc/app.secret", "content": content, "mode": "0600",
                                        "secret": True}] + (extra or [])}
    return stack


def test_rotated_secret_stays_hidden_in_old_run_logs(make_agent):
    """break3 finding 1: the old content of a secret file, printed by a run of
    the old stack, stays hidden after the stack changes, and after a restart
    (where the old stack's secrets are no longer known, the old run's output
    is hidden whole rather than shown)."""
    a = make_agent()
    a.write_stack(rotating_stack(a.root, "OLD-SECRET-1111\n"))
    a.start()
    a.wait_idle()
    old = [r["id"] for r in a.runs() if r["event"] == "configure"][0]
    assert "OLD-SECRET-1111" in a.ctl("log", old).stdout
    assert "OLD-SECRET-1111" not in as_nobody(a, "log", old).stdout
    rev = a.status()["source"]["stack_revision"]
    a.write_stack(rotating_stack(a.root, "NEW-SECRET-2222\n"))
    a.ctl("reload", check=0)
    wait_for(lambda: a.status()["source"]["stack_revision"] != rev, what="the new stack")
    a.wait_idle()
    new = [r["id"] for r in a.runs() if r["event"] == "configure"][0]
    assert new != old
    for run in (old, new, "last"):
        p = as_nobody(a, "log", run)
        assert p.returncode == 0, p.stderr
        assert "OLD-SECRET-1111" not in p.stdout and "NEW-SECRET-2222" not in p.stdout, (run, p.stdout)
        for args in (["show", run], ["--json", "show", run]):
            p = as_nobody(a, *args)
            assert "SECRET-1111" not in p.stdout and "SECRET-2222" not in p.stdout
    # Root still sees everything.
    assert "OLD-SECRET-1111" in a.ctl("log", old).stdout
    # After a restart the old stack's saved copy may be gone: fail closed.
    a.stop()
    a.start()
    for run in (old, new):
        p = as_nobody(a, "log", run)
        assert p.returncode == 0, p.stderr
        assert "OLD-SECRET-1111" not in p.stdout and "NEW-SECRET-2222" not in p.stdout, (run, p.stdout)
    assert "OLD-SECRET-1111" in a.ctl("log", old).stdout


def test_many_and_long_secret_lines_and_numbers_are_hidden(make_agent):
    """break3 finding 2: a long secret file listed first does not use up the
    needles of a later one; a one-line token over 4 KiB and a number in a
    secret object are hidden too."""
    a = make_agent()
    big = "".join("cert-line-%03d-abcdefgh\n" % i for i in range(300))
    token = "TOK" + "x" * 6000 + "-END-OF-TOKEN"
    stack = rotating_stack(a.root, "FIRST-SECRET-3333\n", extra=[
        {"path": "/etc/chain.pem", "content": big, "mode": "0600", "secret": True},
        {"path": "/etc/db.pass", "content": "DBPASS-FILE-LEAK8\n", "mode": "0600", "secret": True},
        {"path": "/etc/tok", "content": token + "\n", "mode": "0600", "secret": True},
    ])
    stack["pin_holder"] = {"secret": True, "pin": 98765432}
    script = os.path.join(a.tmp, "show.py")
    with open(script, "w") as f:
        f.write("import sys\nfor p in sys.argv[1:]:\n    print(open(p).read())\nprint('pin is 98765432')\n")
    stack["agent"]["recipes"]["show"] = {"command": ["/usr/bin/python3", script] +
                                         [a.root + p for p in ("/etc/chain.pem", "/etc/db.pass", "/etc/tok")]}
    a.write_stack(stack)
    a.start()
    a.wait_idle()
    conf = [r["id"] for r in a.runs() if r["event"] == "configure"][0]
    full = a.ctl("log", conf).stdout
    assert "DBPASS-FILE-LEAK8" in full and "-END-OF-TOKEN" in full and "98765432" in full
    p = as_nobody(a, "log", conf)
    assert p.returncode == 0, p.stderr
    for leak in ("DBPASS-FILE-LEAK8", "-END-OF-TOKEN", "98765432", "cert-line-299"):
        assert leak not in p.stdout, (leak, p.stdout[-2000:])


def test_too_many_secret_lines_hide_run_output_whole(make_agent):
    """Past the needle caps, redaction fails closed: nobody gets one marker
    line instead of the run's output; root still sees it all."""
    a = make_agent()
    lines = "".join("line-%05d-of-a-huge-secret\n" % i for i in range(5000))
    stack = rotating_stack(a.root, lines + "LAST-SECRET-4444\n")
    a.write_stack(stack)
    a.start()
    a.wait_idle()
    conf = [r["id"] for r in a.runs() if r["event"] == "configure"][0]
    assert "LAST-SECRET-4444" in a.ctl("log", conf).stdout
    p = as_nobody(a, "log", conf)
    assert p.returncode == 0, p.stderr
    assert "LAST-SECRET-4444" not in p.stdout and "line-04999" not in p.stdout
    assert "output hidden" in p.stdout



def test_slow_readers_cannot_pin_old_stacks_beyond_the_output_cap(make_agent):
    """break3 finding 8: three readers, one per 16 MiB revision, each reading
    a little now and then (so never idle): after the stack changes, the old
    documents they hold count toward the 32 MiB output cap, and the daemon
    drops readers until they fit (before, all three were kept)."""
    a = make_agent(simple_stack()).start()
    a.wait_idle()
    stop = threading.Event()
    closed = []
    readers = []

    def slow_read(s, tag):
        s.settimeout(0.5)
        while not stop.is_set():
            try:
                if not s.recv(32768):
                    closed.append(tag)
                    return
            except socket.timeout:
                pass
            except OSError:
                closed.append(tag)
                return
            stop.wait(1)

    try:
        for tag in "ABC":
            rev = a.status()["source"]["stack_revision"]
            stack = big_stack(16 * 1024 * 1024)
            stack["blob"][0] = tag + stack["blob"][0][1:]
            a.write_stack(stack)
            a.ctl("reload", check=0)
            wait_for(lambda: a.status()["source"]["stack_revision"] != rev, timeout=60, what="a new stack")
            a.wait_idle(timeout=60)
            s = nobody_socket(a)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.sendall(b'{"method":"stack"}\n')
            t = threading.Thread(target=slow_read, args=(s, tag), daemon=True)
            t.start()
            readers.append((s, t))
        rev = a.status()["source"]["stack_revision"]
        a.write_stack(simple_stack())
        a.ctl("reload", check=0)
        wait_for(lambda: a.status()["source"]["stack_revision"] != rev, timeout=60, what="the small stack")
        wait_for(lambda: len(closed) >= 1, timeout=25, what="a reader of an old document to be dropped")
        assert len(closed) < 3, closed  # only as many as the cap needs
        assert a.ctl("status").returncode == 0
    finally:
        stop.set()
        for s, t in readers:
            t.join(5)
            s.close()


def test_secret_objects_outside_agent_files_hide_every_member(make_agent):
    """break3 finding 10: only agent.files entries keep path, mode, owner and
    group visible; any other object marked "secret": true hides all."""
    stack = secret_files_stack()
    stack["vault"] = {"secret": True, "path": "/srv/PATH-LEAK", "name": "NAME-LEAK", "layer": "LAYER-LEAK",
                      "mode": "MODE-LEAK", "owner": "OWNER-LEAK", "group": "GROUP-LEAK"}
    a = make_agent(stack).start()
    a.wait_idle()
    p = as_nobody(a, "--json", "stack")
    assert p.returncode == 0, p.stderr
    assert "LEAK" not in p.stdout, p.stdout
    doc = json.loads(p.stdout)
    assert doc["vault"]["secret"] is True and doc["vault"]["path"] == "***"
    f0 = doc["agent"]["files"]["web"][0]
    assert f0["path"] == "/etc/demo/app.ini" and f0["mode"] == "0600" and f0["content"] == "***"
    assert a.ctl_json("stack")["vault"]["path"] == "/srv/PATH-LEAK"


def test_output_stays_visible_across_many_stack_revisions(make_agent):
    """Redaction keeps the secrets of every revision a run in history names:
    more revisions than a fixed table once held (32) must not tip it into
    hiding every run's output from unprivileged callers for good."""
    a = make_agent()
    stack = rotating_stack(a.root, "ROTATING-SECRET-0000\n")
    stack["agent"]["recipes"]["hello"] = {"command": ["/bin/echo", "visible-output-line"]}
    stack["agent"]["layers"]["web"]["configure"] = ["files", "hello"]
    a.write_stack(stack)
    a.start()
    a.wait_idle()
    for i in range(40):
        rev = a.status()["source"]["stack_revision"]
        stack["agent"]["files"]["web"][0]["content"] = "ROTATING-SECRET-%04d\n" % (i + 1)
        a.write_stack(stack)
        wait_for(lambda: a.status()["source"]["stack_revision"] != rev, what="revision %d" % i)
        a.wait_idle()
    confs = [r["id"] for r in a.runs() if r["event"] == "configure"]
    assert len(confs) >= 35, confs
    for run in (confs[0], confs[-1]):
        p = as_nobody(a, "log", run)
        assert p.returncode == 0, p.stderr
        assert "visible-output-line" in p.stdout, (run, p.stdout[-1000:])
        assert "output hidden" not in p.stdout
