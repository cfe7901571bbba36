# state_dir and its neighbours as hostile input (issue 9, kinds 3, 4, 8, 9):
# numbers in state.json that must not reach kill() or wrap, special files
# where regular files belong, a second agentd on the same state_dir, and a
# state_dir that is full.
import json
import os
import shutil
import signal
import stat
import subprocess
import time

import pytest

from conftest import AGENTD, AGENTCTL, simple_stack, wait_for

INT64_MAX = 2**63 - 1
ID_MAX = 2**53 - 1
GATE = ["/bin/sh", "-c", 'echo $$ > "$AGENT_ROOT/gate.pid"; while [ ! -e "$AGENT_ROOT/go" ]; do sleep 0.02; done']


def state_file(a):
    return os.path.join(a.state, "state.json")


def read_state(a):
    with open(state_file(a)) as f:
        return json.load(f)


def write_state(a, doc):
    os.makedirs(a.state, exist_ok=True)
    with open(state_file(a), "w") as f:
        json.dump(doc, f)


def rec(id, status="success", event="configure", **kw):
    r = {"id": id, "event": event, "layer": None, "app": None, "trigger": "stack-change", "status": status,
         "queued": None, "started": None, "finished": None, "changed": 0}
    r.update(kw)
    return r


def proc_alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def descendants(pid):
    """Outer pids of every live descendant of pid, with their pid in the
    innermost namespace (NSpid) and name."""
    kids = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/status") as f:
                st = dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
        except (FileNotFoundError, ProcessLookupError, ValueError):
            continue
        kids.setdefault(int(st["PPid"]), []).append((int(d), int(st["NSpid"].split()[-1]), st["Name"]))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        for k in kids.get(p, []):
            out.append(k)
            todo.append(k[0])
    return out


# ---------------------------------------------------------------- kind 3

def test_recorded_pgids_out_of_range_or_not_ours_are_never_signalled(make_agent):
    """In a private pid namespace (so a kill(-1) there cannot hurt the host):
    a sentinel group leader and agentd, with running records whose _pgid is
    4294967297 (1 in an int), 1, 0, -5, agentd's own group, the sentinel
    with another start time, and not a number. The sentinel and agentd
    survive, and every record is marked interrupted."""
    a = make_agent()
    os.makedirs(a.state)
    runs = [
        rec(1, "running", _pgid=4294967297, _pgid_start="INIT_START"),
        rec(2, "running", _pgid=1, _pgid_start="INIT_START"),
        rec(3, "running", _pgid=0, _pgid_start="INIT_START"),
        rec(4, "running", _pgid=-5, _pgid_start="INIT_START"),
        rec(5, "running", _pgid="OWN_PGID", _pgid_start="OWN_START"),
        rec(6, "running", _pgid="SENTINEL", _pgid_start="SENTINEL_WRONG"),
        rec(7, "running", _pgid="1", _pgid_start="1"),
        rec(8, "running", _pgid=-(2**63), _pgid_start=INT64_MAX),
    ]
    tmpl = json.dumps({"version": 1, "instance": "app1", "next_run_id": 9, "runs": runs})
    # Placeholders become numbers once the processes exist.
    for k in ("INIT_START", "OWN_PGID", "OWN_START", "SENTINEL", "SENTINEL_WRONG"):
        tmpl = tmpl.replace(f'"{k}"', k)
    with open(os.path.join(a.tmp, "state.tmpl"), "w") as f:
        f.write(tmpl)
    script = r'''
        set -e
        T="$1"; STATE="$2"; AGENTD="$3"; CONF="$4"
        setsid sleep 1000 &
        S=$!
        echo $S > "$T/sentinel.nspid"
        while [ ! -e /proc/$S/stat ]; do :; done
        init_start=$(cut -d' ' -f22 /proc/1/stat)
        s_start=$(cut -d' ' -f22 /proc/$S/stat)
        # setsid in a process that leads no group does not fork: the
        # inner shell's pid becomes agentd's pid and process group.
        setsid sh -c '
            own=$$
            own_start=$(cut -d" " -f22 /proc/$own/stat)
            sed -e "s/INIT_START/$1/g" -e "s/OWN_PGID/$own/g" -e "s/OWN_START/$own_start/g" \
                -e "s/SENTINEL_WRONG/$(($3 + 7))/g" -e "s/SENTINEL/$2/g" "$4/state.tmpl" > "$5/state.json"
            exec "$6" -d --config "$7"
        ' sh "$init_start" "$S" "$s_start" "$T" "$STATE" "$AGENTD" "$CONF" &
        wait
    '''
    log = open(a.stderr_path, "ab")
    ns = subprocess.Popen(["unshare", "-pf", "--mount-proc", "sh", "-c", script, "sh", a.tmp, a.state,
                           AGENTD, a.conf_path], stdout=log, stderr=log)
    try:
        wait_for(lambda: a.ctl_ok("status"), timeout=20, what="agentd to answer")
        procs = wait_for(lambda: [p for p in descendants(ns.pid) if p[2] in ("sleep", "agentd")]
                         if len(descendants(ns.pid)) >= 3 else None, what="the namespace's processes")
        sentinel = [p for p in procs if p[2] == "sleep"][0]
        agentd = [p for p in procs if p[2] == "agentd"][0]
        assert sentinel[1] == int(open(os.path.join(a.tmp, "sentinel.nspid")).read())
        runs = {r["id"]: r for r in a.runs()}
        for i in range(1, 9):
            assert runs[i]["status"] == "interrupted", runs[i]
        assert proc_alive(sentinel[0]), "the sentinel was killed"
        assert proc_alive(agentd[0]), "agentd was killed"
        assert a.ctl_ok("status")
        text = a.stderr_text()
        assert "Killed process group" not in text, text
        assert "out of range" in text and "agentd's own" in text, text
        os.kill(agentd[0], signal.SIGTERM)
        wait_for(lambda: not proc_alive(agentd[0]), what="agentd to stop")
    finally:
        # Killing the namespace's init ends every process in it.
        for p in descendants(ns.pid):
            if p[1] == 1:
                os.kill(p[0], signal.SIGKILL)
        ns.kill()
        ns.wait()
        log.close()


def test_recorded_pgid_of_a_live_recipe_is_still_killed(make_agent):
    """The check keeps the real case working: a group we started and that
    still runs with the recorded start time is killed (not only in the
    existing restart test: here with a crafted but correct record)."""
    a = make_agent()
    victim = subprocess.Popen(["sleep", "1000"], start_new_session=True)
    try:
        start = int(open(f"/proc/{victim.pid}/stat").read().rsplit(")", 1)[1].split()[19])
        write_state(a, {"version": 1, "next_run_id": 2, "runs": [rec(1, "running", _pgid=victim.pid,
                                                                        _pgid_start=start)]})
        a.start()
        assert victim.wait(timeout=10) == -signal.SIGKILL
        assert f"Killed process group {victim.pid}" in a.stderr_text()
    finally:
        if victim.poll() is None:
            victim.kill()
            victim.wait()


@pytest.mark.parametrize("next_id", [INT64_MAX, INT64_MAX - 1, ID_MAX + 1, -5, 0, "12", 1.5])
def test_next_run_id_out_of_range_gives_fresh_positive_ids(make_agent, next_id):
    """next_run_id near INT64_MAX wrapped negative (UBSan abort). It is now
    replaced by the highest id on disk plus one: ids stay positive, below
    2^53, and never repeat one in state.json or in log_dir/runs."""
    a = make_agent(simple_stack())
    write_state(a, {"version": 1, "next_run_id": next_id,
                    "runs": [rec(7), rec(2**60), rec(-3), rec(7, "failed")]})
    os.makedirs(os.path.join(a.logs, "runs"))
    open(os.path.join(a.logs, "runs", "12.log"), "w").close()
    a.start()
    a.wait_runs(4)
    a.wait_idle()
    ids = [r["id"] for r in a.runs()]
    assert 7 in ids and 2**60 not in ids and -3 not in ids
    new = [i for i in ids if i != 7]
    assert len(new) == 3 and all(12 < i < ID_MAX for i in new), ids
    assert len(set(ids)) == len(ids)
    assert a.ctl("run", "configure").returncode == 0
    a.wait_runs(5)
    assert a.stop() == 0


def test_next_run_id_at_the_last_id_refuses_new_runs_without_wrapping(make_agent):
    a = make_agent(simple_stack())
    write_state(a, {"version": 1, "next_run_id": ID_MAX, "runs": [rec(ID_MAX - 1)]})
    a.start()
    wait_for(lambda: any(r["id"] == ID_MAX for r in a.runs()), what="the last id to be used")
    wait_for(lambda: "No run id left" in a.stderr_text(), what="the refusal")
    assert all(0 < r["id"] <= ID_MAX for r in a.runs())
    p = a.ctl("run", "configure")
    assert p.returncode != 0 and "no run id left" in p.stdout + p.stderr
    assert a.ctl_ok("status")


def test_numbers_and_names_in_state_records_are_checked(make_agent):
    """Retry counts and times, revisions that name files, hashes: out of
    range or of the wrong shape, they are dropped or clamped, not used."""
    a = make_agent(simple_stack())
    write_state(a, {
        "version": 1, "next_run_id": 3,
        "runs": [rec(1, "queued", _stack="../../../../etc/passwd"), rec(2, "success", changed=-4,
                                                                         duration_ms="x")],
        "failed": {"x": {"event": "configure", "layer": None, "app": None, "run": 2**62, "count": INT64_MAX,
                         "next_retry": INT64_MAX},
                   "y": {"event": "deploy", "layer": "../x", "app": None, "count": 1}},
        "input_hashes": {"a": "zz", "b": 5},
        "last_success": {"configure/": {"revision": "/etc/passwd", "run": -1}},
        "stack_revision": "../../etc/shadow", "applied_revision": 12,
    })
    a.start()
    a.wait_idle(timeout=60)
    runs = {r["id"]: r for r in a.runs()}
    assert 1 not in runs
    assert runs[2]["changed"] == 0
    st = read_state(a)
    assert "../x" not in json.dumps(st["failed"])
    for f in st["failed"].values():
        assert f["count"] <= 1000000 and f["next_retry"] < 2**62
    assert "zz" not in json.dumps(st["input_hashes"])
    assert "/etc/passwd" not in json.dumps(st)


# ---------------------------------------------------------------- kind 4

def test_fifo_as_the_stack_file_is_an_error_not_a_hang(make_agent):
    a = make_agent()
    os.mkfifo(a.stack_path)
    a.start()  # the socket answers: nothing blocked in open()
    s = wait_for(lambda: a.status()["source"]["error"] and a.status(), what="the source error")
    assert "not a regular file" in s["source"]["error"], s["source"]
    # Once a regular file takes its place, the stack is read.
    a.write_stack(simple_stack())
    wait_for(lambda: a.status()["source"]["stack_revision"] and not a.status()["source"]["error"],
             what="the stack to be read")
    a.wait_runs(3)
    # And a FIFO swapped in later is reported too, with status answering.
    os.unlink(a.stack_path)
    os.mkfifo(a.stack_path)
    a.ctl("reload")
    wait_for(lambda: "not a regular file" in (a.status()["source"]["error"] or ""), what="the new error")
    os.unlink(a.stack_path)
    a.write_stack(simple_stack(extra={"x": 1}))
    wait_for(lambda: not a.status()["source"]["error"], what="the error to clear")


def test_device_as_the_stack_file_is_refused_not_read(make_agent):
    """A symlink to /dev/zero: followed (links are allowed there), but a
    device is not a stack and is not read up to the cap."""
    a = make_agent()
    os.symlink("/dev/zero", a.stack_path)
    a.start()
    s = wait_for(lambda: a.status()["source"]["error"] and a.status(), what="the source error")
    assert "not a regular file" in s["source"]["error"], s["source"]


@pytest.mark.parametrize("kind", ["fifo", "dir", "zero", "dangling"])
def test_special_state_json_is_reported_and_treated_as_a_first_start(make_agent, kind):
    a = make_agent(simple_stack())
    os.makedirs(a.state)
    p = state_file(a)
    if kind == "fifo":
        os.mkfifo(p)
    elif kind == "dir":
        os.mkdir(p)
    elif kind == "zero":
        os.symlink("/dev/zero", p)
    else:
        os.symlink("/nonexistent/state.json", p)
    a.start()  # never hangs before the socket exists
    a.wait_runs(3)
    assert sorted(r["event"] for r in a.runs()) == ["configure", "deploy", "setup"]
    assert "treating this as a first start" in a.stderr_text()
    # The odd file was moved aside and state.json is ours again.
    wait_for(lambda: stat.S_ISREG(os.lstat(p).st_mode), what="a regular state.json")
    assert read_state(a)["runs"]
    assert a.status()["state_error"] is None


def test_special_saved_stack_and_run_file_are_not_read(make_agent):
    a = make_agent(simple_stack())
    a.start()
    a.wait_runs(3)
    a.wait_idle()
    rev = a.status()["source"]["stack_revision"]
    run = a.runs()[0]["id"]
    assert a.stop() == 0
    saved = os.path.join(a.state, "stacks", rev + ".json")
    os.unlink(saved)
    os.mkfifo(saved)
    steps = os.path.join(a.state, "runs", f"{run}.json")
    os.unlink(steps)
    os.mkfifo(steps)
    os.unlink(a.stack_path)  # the saved stack is all there is
    a.start()
    info = a.ctl_json("show", run)
    assert info["steps"] == []
    assert a.ctl_ok("status")
    assert "not a regular file" in a.stderr_text()


def test_files_in_log_dir_take_their_ids(make_agent):
    a = make_agent(simple_stack())
    os.makedirs(os.path.join(a.logs, "runs"))
    for i in range(1, 4):
        os.mkfifo(os.path.join(a.logs, "runs", f"{i}.log"))
    a.start()
    a.wait_runs(3, timeout=20)
    assert all(r["status"] == "success" for r in a.finished_runs())
    assert all(r["id"] > 3 for r in a.runs())


def test_fifo_planted_as_a_run_log_does_not_block_the_run(make_agent):
    stack = simple_stack()
    stack["agent"]["recipes"]["gate"] = {"command": GATE}
    stack["agent"]["layers"]["web"]["setup"] = ["gate"]
    a = make_agent(stack).start()
    wait_for(lambda: len(a.status()["queue"]) == 2, what="two queued boot runs")
    for r in a.status()["queue"]:
        os.mkfifo(os.path.join(a.logs, "runs", f"{r['id']}.log"))
    open(os.path.join(a.root, "go"), "w").close()
    a.wait_runs(3, timeout=20)
    assert all(r["status"] == "success" for r in a.finished_runs())
    assert a.ctl_ok("status")


def test_config_that_is_a_fifo_or_device_is_an_error(tmpdir_agent):
    fifo = os.path.join(tmpdir_agent, "agentd.conf")
    os.mkfifo(fifo)
    for path in (fifo, "/dev/zero"):
        for args in (["--check-config"], []):
            p = subprocess.run([AGENTD, "--config", path] + args, capture_output=True, text=True, timeout=10)
            assert p.returncode == 1, p
            assert "not a regular file" in p.stderr, p.stderr


def test_config_through_a_symlink_is_read(make_agent):
    a = make_agent()
    link = os.path.join(a.tmp, "link.conf")
    os.symlink(a.conf_path, link)
    p = subprocess.run([AGENTD, "--config", link, "--check-config"], capture_output=True, text=True, timeout=10)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["state_dir"] == a.state


# ---------------------------------------------------------------- kind 8

def test_second_agentd_on_the_same_state_dir_exits_and_touches_nothing(make_agent):
    stack = simple_stack()
    stack["agent"]["recipes"]["gate"] = {"command": GATE}
    stack["agent"]["layers"]["web"]["setup"] = ["gate"]
    a = make_agent(stack).start()
    gate_pid = int(wait_for(lambda: open(os.path.join(a.root, "gate.pid")).read().strip(),
                            what="the slow setup"))
    wait_for(lambda: '"_pgid"' in open(state_file(a)).read(), what="the recorded process group")
    before = open(state_file(a), "rb").read()
    before_mtime = os.stat(state_file(a)).st_mtime_ns

    conf = dict(a.conf, socket=os.path.join(a.tmp, "other.sock"))
    conf_b = os.path.join(a.tmp, "b.conf")
    with open(conf_b, "w") as f:
        json.dump(conf, f)
    # --check-config takes no lock.
    p = subprocess.run([AGENTD, "--config", conf_b, "--check-config"], capture_output=True, text=True, timeout=10)
    assert p.returncode == 0, p.stderr
    p = subprocess.run([AGENTD, "-d", "--config", conf_b], capture_output=True, text=True, timeout=20)
    assert p.returncode != 0
    assert f"pid {a.proc.pid}" in p.stderr, p.stderr
    assert not os.path.exists(conf["socket"])
    assert open(state_file(a), "rb").read() == before
    assert os.stat(state_file(a)).st_mtime_ns == before_mtime
    assert proc_alive(gate_pid), "B killed A's recipe"
    assert a.status()["current_run"]["event"] == "setup"

    open(os.path.join(a.root, "go"), "w").close()
    a.wait_runs(3)
    assert [r["status"] for r in a.finished_runs()] == ["success"] * 3
    assert a.stop() == 0
    # The lock goes with the process: the next agentd starts.
    a.start()
    assert a.stop() == 0


# ---------------------------------------------------------------- kind 9

class SmallStateDir:
    """A 256 KiB tmpfs mounted on state_dir in a private mount namespace,
    held open by a process; agentd runs in that namespace. Gone with it."""

    def __init__(self, a):
        self.a = a
        os.makedirs(a.state, exist_ok=True)
        ready = os.path.join(a.tmp, "mounted")
        self.holder = subprocess.Popen(
            ["unshare", "-m", "--propagation", "private", "sh", "-c",
             'mount -t tmpfs -o size=256k,mode=0700 tmpfs "$1" && touch "$2" && exec sleep 100000', "sh",
             a.state, ready])
        wait_for(lambda: os.path.exists(ready), what="the tmpfs")

    def run(self, *cmd, **kw):
        return subprocess.run(["nsenter", "-t", str(self.holder.pid), "-m", "--"] + list(cmd), **kw)

    def fill(self):
        self.run("dd", "if=/dev/zero", f"of={self.a.state}/fill", "bs=1k", capture_output=True)
        self.run("dd", "if=/dev/zero", f"of={self.a.state}/fill2", "bs=1", capture_output=True)

    def free(self):
        self.run("rm", "-f", f"{self.a.state}/fill", f"{self.a.state}/fill2", check=True)

    def state(self):
        return json.loads(self.run("cat", f"{self.a.state}/state.json", capture_output=True, check=True).stdout)

    def start(self):
        a = self.a
        a.stderr = open(a.stderr_path, "ab")
        env = dict(os.environ)
        env.pop("NOTIFY_SOCKET", None)
        a.proc = subprocess.Popen(["nsenter", "-t", str(self.holder.pid), "-m", "--", AGENTD, "-d", "--config",
                                   a.conf_path], stdout=a.stderr, stderr=a.stderr, env=env)
        wait_for(lambda: a.ctl_ok("status"), what="agentd to answer")

    def close(self):
        self.a.stop()
        self.holder.kill()
        self.holder.wait()


def test_run_finished_while_state_dir_is_full_is_kept_and_its_id_not_reused(make_agent):
    stack = simple_stack()
    stack["agent"]["recipes"]["gate"] = {"command": GATE}
    a = make_agent(stack)
    small = SmallStateDir(a)
    try:
        small.start()
        a.wait_runs(3)
        a.wait_idle()
        stack["agent"]["layers"]["web"]["configure"] = ["gate"]
        a.write_stack(stack)
        wait_for(lambda: os.path.exists(os.path.join(a.root, "gate.pid")), what="the gated configure")
        run = a.status()["current_run"]["id"]
        small.fill()
        open(os.path.join(a.root, "go"), "w").close()
        wait_for(lambda: [r for r in a.runs() if r["id"] == run and r["status"] == "success"], what="the run")
        s = wait_for(lambda: a.status()["state_error"] and a.status(), what="the write error in status")
        assert "No space left" in s["state_error"], s
        # Asked for while full: refused at once, not lost later.
        p = a.ctl("--json", "run", "deploy")
        assert p.returncode != 0 and "cannot be recorded" in p.stdout + p.stderr, p
        small.free()
        wait_for(lambda: a.status()["state_error"] is None, timeout=30, what="the write to be retried")
        assert [r for r in small.state()["runs"] if r["id"] == run][0]["status"] == "success"
        assert a.stop() == 0
        small.start()
        assert [r for r in a.runs() if r["id"] == run][0]["status"] == "success"
        new = a.ctl_json("run", "deploy")["id"]
        assert new > run
    finally:
        small.close()


def test_restart_while_state_dir_is_full_keeps_ids(make_agent):
    stack = simple_stack()
    stack["agent"]["recipes"]["gate"] = {"command": GATE}
    a = make_agent(stack)
    small = SmallStateDir(a)
    try:
        small.start()
        a.wait_runs(3)
        a.wait_idle()
        stack["agent"]["layers"]["web"]["configure"] = ["gate"]
        a.write_stack(stack)
        wait_for(lambda: os.path.exists(os.path.join(a.root, "gate.pid")), what="the gated configure")
        run = a.status()["current_run"]["id"]
        small.fill()
        open(os.path.join(a.root, "go"), "w").close()
        wait_for(lambda: a.status()["state_error"], what="the write error")
        assert a.stop() == 0
        small.start()  # still full: it starts, and says why nothing runs
        s = wait_for(lambda: a.status()["state_error"] and a.status(), what="the write error after restart")
        assert s["current_run"] is None
        small.free()
        wait_for(lambda: a.status()["state_error"] is None and a.status()["current_run"] is None
                 and not a.status()["queue"], timeout=30, what="the requeued run")
        runs = a.runs()
        ids = [r["id"] for r in runs]
        assert len(ids) == len(set(ids)), ids
        # The run finished before the stop: its result is taken from its
        # log, and it is not run again.
        assert [r for r in runs if r["id"] == run][0]["status"] == "success"
        assert max(ids) == run
    finally:
        small.close()


def test_stack_change_while_state_dir_is_full_is_applied_once_it_has_room(make_agent):
    stack = simple_stack()
    a = make_agent(stack)
    small = SmallStateDir(a)
    try:
        small.start()
        a.wait_runs(3)
        a.wait_idle()
        rev = a.status()["source"]["stack_revision"]
        small.fill()
        stack["opsworks"]["stack"]["name"] = "changed"
        a.write_stack(stack)
        s = wait_for(lambda: a.status()["source"]["error"] and a.status(), what="the save error")
        assert "cannot save the stack" in s["source"]["error"] and s["state_error"], s
        assert s["source"]["stack_revision"] == rev
        small.free()
        # Nothing touches the stack file again: agentd fetches it once
        # state_dir takes writes, and the change runs.
        wait_for(lambda: a.status()["source"]["stack_revision"] != rev, timeout=30, what="the new stack")
        a.wait_runs(4)
        a.wait_idle()
        s = a.status()
        assert s["source"]["error"] is None and s["state_error"] is None, s
    finally:
        small.close()


# ------------------------------------------------- break1: lock, saved stacks

@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_lock_file_deleted_or_replaced_does_not_let_a_second_agentd_in(make_agent, how):
    a = make_agent(simple_stack()).start()
    a.wait_runs(3)
    a.wait_idle()
    lock = os.path.join(a.state, "lock")
    os.unlink(lock)
    if how == "replaced":
        with open(lock, "w") as f:
            f.write("garbage\n")
    before = {n: os.stat(os.path.join(a.state, n)).st_mtime_ns for n in ("state.json",)}
    conf = dict(a.conf, socket=os.path.join(a.tmp, "other.sock"))
    conf_b = os.path.join(a.tmp, "b.conf")
    with open(conf_b, "w") as f:
        json.dump(conf, f)
    p = subprocess.run([AGENTD, "-d", "--config", conf_b], capture_output=True, text=True, timeout=20)
    assert p.returncode == 1, p.stderr
    assert f"pid {a.proc.pid}" in p.stderr, p.stderr
    assert not os.path.exists(conf["socket"])
    assert os.stat(state_file(a)).st_mtime_ns == before["state.json"]
    # A symlink to state_dir names the same directory: also refused.
    link = os.path.join(a.tmp, "statelink")
    os.symlink(a.state, link)
    with open(conf_b, "w") as f:
        json.dump(dict(conf, state_dir=link), f)
    p = subprocess.run([AGENTD, "-d", "--config", conf_b], capture_output=True, text=True, timeout=20)
    assert p.returncode == 1 and f"pid {a.proc.pid}" in p.stderr, p.stderr
    assert a.ctl_ok("status")
    assert a.stop() == 0
    a.start()
    assert a.stop() == 0


@pytest.mark.parametrize("kind", ["dir", "fifo", "symlink"])
def test_special_entry_where_a_saved_stack_belongs_is_moved_aside(make_agent, kind):
    stack = simple_stack()
    a = make_agent(stack).start()
    a.wait_runs(3)
    a.wait_idle()
    old = a.status()["source"]["stack_revision"]
    assert a.stop() == 0
    # The next stack's revision: start on it once, note it, then plant.
    stack["opsworks"]["stack"]["name"] = "changed"
    a.write_stack(stack)
    a.start()
    wait_for(lambda: a.status()["source"]["stack_revision"] != old, what="the changed stack")
    a.wait_idle()
    rev = a.status()["source"]["stack_revision"]
    assert a.stop() == 0
    saved = os.path.join(a.state, "stacks", rev + ".json")
    # Back to the old stack, then plant the entry where the new one goes.
    stack["opsworks"]["stack"]["name"] = "orig"
    a.write_stack(stack)
    a.start()
    wait_for(lambda: a.status()["source"]["stack_revision"] != rev, what="the first stack again")
    a.wait_idle()
    assert a.stop() == 0
    state = read_state(a)
    if os.path.exists(saved):
        os.unlink(saved)
    if kind == "dir":
        os.mkdir(saved)
        open(os.path.join(saved, "x"), "w").close()
    elif kind == "fifo":
        os.mkfifo(saved)
    else:
        os.symlink("/nonexistent", saved)
    assert state["stack_revision"] != rev
    stack["opsworks"]["stack"]["name"] = "changed"
    a.write_stack(stack)
    a.start()
    wait_for(lambda: a.status()["source"]["stack_revision"] == rev, what="the new stack")
    a.wait_idle()
    s = a.status()
    assert s["source"]["error"] is None and s["state_error"] is None, s
    st = os.lstat(saved)
    assert stat.S_ISREG(st.st_mode)
    aside = [n for n in os.listdir(os.path.join(a.state, "stacks")) if n.startswith(rev + ".json.corrupt")]
    assert aside, os.listdir(os.path.join(a.state, "stacks"))
    assert a.stderr_text().count("Moved " + saved) == 1


# ------------------------------------------- break1: bounds of agentd's files

def vm_hwm_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM")


@pytest.mark.parametrize("mib", [3, 30])
def test_run_file_of_small_integers_is_refused_before_parsing(make_agent, mib):
    a = make_agent(simple_stack()).start()
    a.wait_runs(3)
    a.wait_idle()
    run = a.runs()[0]["id"]
    normal = a.ctl_json("show", run)
    assert normal["steps"] and "steps_error" not in normal
    path = os.path.join(a.state, "runs", f"{run}.json")
    n = mib * 2**20 // 2
    with open(path, "w") as f:
        f.write('{"steps":[' + ",".join(["1"] * n) + "]}")
    hwm = vm_hwm_kib(a.proc.pid)
    p = a.ctl("--json", "show", run, user="nobody")
    assert p.returncode == 0, p.stderr
    info = json.loads(p.stdout)
    assert info["steps"] == []
    assert path in info["steps_error"], info
    assert ("larger than" if mib == 30 else "JSON elements") in info["steps_error"]
    p = a.ctl("show", run)
    assert "Steps" in p.stdout and path in p.stdout, p.stdout
    # Refused before parsing: the daemon's peak memory barely moves.
    # (Parsed, 3 MiB of small integers took ~80 MB; ASan adds its own.)
    assert vm_hwm_kib(a.proc.pid) - hwm < 32 * 1024
    assert a.ctl_ok("status")


@pytest.mark.parametrize("shape", ["elements", "bytes", "depth"])
def test_state_json_beyond_what_agentd_writes_is_moved_aside(make_agent, shape):
    a = make_agent(simple_stack())
    a.conf["history"] = 20
    with open(a.conf_path, "w") as f:
        json.dump(a.conf, f)
    os.makedirs(a.state, exist_ok=True)
    if shape == "elements":
        # 4 MiB, far below the old 64 MiB cap, of 2 million elements.
        body = '{"version":1,"next_run_id":7,"runs":[' + ",".join(["1"] * (2 * 2**20)) + "]}"
    elif shape == "bytes":
        # 40 MiB of few elements: one long string.
        body = '{"version":1,"next_run_id":7,"runs":[],"paused":"' + "x" * (40 * 2**20) + '"}'
    else:
        body = '{"version":1,"next_run_id":7,"runs":[],"paused":"p","x":' + "[" * 100 + "]" * 100 + "}"
    with open(state_file(a), "w") as f:
        f.write(body)
    a.start()
    a.wait_runs(3)
    assert os.path.exists(state_file(a) + ".corrupt")
    assert "corrupt" in a.stderr_text() or "too large" in a.stderr_text()
    # A first start: setup runs, nothing of the bad file is kept.
    assert read_state(a)["runs"]


def test_state_json_written_with_a_long_history_is_read_back(make_agent):
    a = make_agent(simple_stack())
    a.conf["history"] = 10000
    with open(a.conf_path, "w") as f:
        json.dump(a.conf, f)
    runs = [rec(i, error="e" * 1024, stack_revision="0123456789abcdef") for i in range(10000, 0, -1)]
    write_state(a, {"version": 1, "next_run_id": 10001, "runs": runs,
                    "input_hashes": {f"k{i}": "0123456789abcdef" for i in range(2000)}})
    a.start()
    assert a.runs()[0]["id"] >= 10000
    assert not os.path.exists(state_file(a) + ".corrupt")


# --------------------------------------- break1: a result lost to a full disk

def test_success_while_full_survives_a_restart_while_still_full(make_agent):
    stack = simple_stack()
    stack["agent"]["recipes"]["gate"] = {"command": GATE}
    a = make_agent(stack)
    small = SmallStateDir(a)
    try:
        small.start()
        a.wait_runs(3)
        a.wait_idle()
        stack["agent"]["layers"]["web"]["configure"] = ["gate"]
        a.write_stack(stack)
        wait_for(lambda: os.path.exists(os.path.join(a.root, "gate.pid")), what="the gated configure")
        run = a.status()["current_run"]["id"]
        small.fill()
        open(os.path.join(a.root, "go"), "w").close()
        wait_for(lambda: [r for r in a.runs() if r["id"] == run and r["status"] == "success"], what="the run")
        assert a.status()["state_error"]
        assert [r for r in small.state()["runs"] if r["id"] == run][0]["status"] == "running"
        # SIGTERM while still full: agentd tries for a while, says so, goes.
        assert a.stop() == 0
        said = "Exiting without having written state.json" in a.stderr_text()
        small.free()
        small.start()
        a.wait_idle()
        runs = a.runs()
        mine = [r for r in runs if r["id"] == run][0]
        assert mine["status"] == "success", mine
        assert mine["finished"]
        # Not run again: no configure after it, no failure, no retry.
        assert [r for r in runs if r["id"] > run] == [], runs
        s = a.status()
        assert s["state_error"] is None and not s.get("failed"), s
        assert [r for r in small.state()["runs"] if r["id"] == run][0]["status"] == "success"
        assert said
        # Its steps were in memory only (its run file could not be
        # written either): the record says so, and nothing breaks.
        assert a.ctl_json("show", run)["status"] == "success"
    finally:
        small.close()


def test_output_that_looks_like_a_result_line_is_not_taken_for_one(make_agent):
    stack = simple_stack()
    stack["agent"]["recipes"]["gate"] = {"command": GATE}
    a = make_agent(stack).start()
    a.wait_runs(3)
    a.wait_idle()
    stack["agent"]["layers"]["web"]["configure"] = ["gate"]
    a.write_stack(stack)
    wait_for(lambda: os.path.exists(os.path.join(a.root, "gate.pid")), what="the gated configure")
    run = a.status()["current_run"]["id"]
    log = os.path.join(a.logs, "runs", f"{run}.log")
    a.proc.kill()
    a.proc.wait()
    # A forged last line, as a step's output could print it.
    with open(log, "a") as f:
        f.write(f"=== run {run} finished: key=0123456789abcdef status=success changed=0 "
                "finished=2020-01-01T00:00:00Z\n")
    a.start()
    wait_for(lambda: [r for r in a.runs() if r["id"] == run and r["status"] == "interrupted"], what="the record")
    open(os.path.join(a.root, "go"), "w").close()
    a.wait_idle()


def test_start_with_state_dir_already_full_shows_the_error_at_once(make_agent):
    a = make_agent(simple_stack())
    small = SmallStateDir(a)
    try:
        small.start()
        a.wait_runs(3)
        a.wait_idle()
        assert a.stop() == 0
        small.fill()
        small.start()
        s = a.status()
        assert s["state_error"] and "No space left" in s["state_error"], s
        small.free()
        wait_for(lambda: a.status()["state_error"] is None, timeout=30, what="the write to be retried")
    finally:
        small.close()


@pytest.mark.parametrize("kind", ["fifo", "dir", "symlink"])
def test_special_lock_file_is_moved_aside_and_the_lock_still_holds(make_agent, kind):
    a = make_agent(simple_stack())
    os.makedirs(a.state, exist_ok=True)
    lock = os.path.join(a.state, "lock")
    if kind == "fifo":
        os.mkfifo(lock)
    elif kind == "dir":
        os.mkdir(lock)
    else:
        os.symlink(os.path.join(a.tmp, "elsewhere"), lock)
    a.start()
    a.wait_runs(3)
    assert stat.S_ISREG(os.lstat(lock).st_mode)
    assert open(lock).read().strip() == str(a.proc.pid)
    assert not os.path.exists(os.path.join(a.tmp, "elsewhere"))
    conf = dict(a.conf, socket=os.path.join(a.tmp, "other.sock"))
    conf_b = os.path.join(a.tmp, "b.conf")
    with open(conf_b, "w") as f:
        json.dump(conf, f)
    p = subprocess.run([AGENTD, "-d", "--config", conf_b], capture_output=True, text=True, timeout=20)
    assert p.returncode == 1 and f"pid {a.proc.pid}" in p.stderr, p.stderr
