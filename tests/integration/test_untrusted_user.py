# The app user is not trusted (issue 9, kind 1): it owns deploy_to and
# shared/, and whatever symlink it plants there, or swaps in while agentd
# works, must not steer root's creates, writes, chowns and chmods anywhere
# else. A real throwaway user deploys a real app (git, buildout, a private
# supervisord); the user then plants links; nothing outside deploy_to may
# change owner, mode or content.
import ctypes
import hashlib
import json
import os
import pwd
import secrets
import signal
import subprocess

import pytest

from apps_fixtures import CONF_DIR, BUILDOUT, Supervisord, apps_stack, last_run, make_repo, run_steps
from conftest import wait_for

DEPLOY_TO = "srv/www/plone_instances"
RENAME_EXCHANGE = 2


@pytest.fixture
def app_user():
    """A throwaway user and group of the same name, removed at the end."""
    name = "agtest-" + secrets.token_hex(4)
    subprocess.run(["useradd", "--no-create-home", "--user-group", "--home-dir", "/nonexistent", "--shell",
                    "/usr/sbin/nologin", name], check=True)
    pw = pwd.getpwnam(name)
    yield pw
    # The swappers are killed by their tests, the programs with supervisord
    # (the env fixture, torn down before this one).
    subprocess.run(["userdel", name], check=False)
    subprocess.run(["groupdel", name], check=False, stderr=subprocess.DEVNULL)


@pytest.fixture
def env(app_user, make_agent, tmpdir_agent):
    """An agent whose plone_instances app belongs to app_user, deployed."""
    made = {}
    repo = make_repo(tmpdir_agent)
    # git refuses a repository another user owns ("dubious ownership").
    subprocess.run(["chown", "-R", f"{app_user.pw_uid}:{app_user.pw_gid}", repo], check=True)
    recorder = os.path.join(tmpdir_agent, "install-packages")
    with open(recorder, "w") as f:
        f.write("#!/bin/sh\nexit 0\n")
    os.chmod(recorder, 0o755)
    stack = apps_stack(repo, pi={"instance_count": 1})
    stack["deploy"]["plone_instances"].update(user=app_user.pw_name, group=app_user.pw_name)
    a = make_agent(None, conf_extra={
        "supervisor_socket": os.path.join(tmpdir_agent, "supervisor.sock"),
        "supervisor_conf_dir": CONF_DIR,
        "buildout_command": [BUILDOUT],
        "package_install_command": [recorder],
    })
    made["sup"] = Supervisord(tmpdir_agent, a.root)
    # What stands for the host's own files: inside root, as production
    # sees "/", and outside root altogether.
    for d in ("etc/sudoers.d", "var/lib/sentinel", "srv/www/other/releases/20200101000000"):
        os.makedirs(os.path.join(a.root, d), exist_ok=True)
    os.chmod(os.path.join(a.root, "etc/sudoers.d"), 0o750)
    with open(os.path.join(a.root, "etc/sudoers.d/README"), "w") as f:
        f.write("root only\n")
    with open(os.path.join(a.root, "var/lib/sentinel/data"), "w") as f:
        f.write("sentinel\n")
    outside = os.path.join(tmpdir_agent, "outside")
    os.makedirs(os.path.join(outside, "etc/sudoers.d"))
    os.makedirs(os.path.join(outside, "var"))
    with open(os.path.join(outside, "etc/passwd"), "w") as f:
        f.write("root:x:0:0::/root:/bin/sh\n")
    a.write_stack(stack)
    a.start()
    a.wait_runs(3, timeout=180)
    a.wait_idle(timeout=180)
    runs = a.runs()
    assert all(r["status"] == "success" for r in runs), [(r["event"], r.get("error")) for r in runs]
    yield a, app_user, outside
    made["sup"].stop()


def as_user(pw, fn, *args):
    """Runs fn(*args) in a child process with the user's uid and gid; returns its pid."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.setgroups([])
            os.setgid(pw.pw_gid)
            os.setuid(pw.pw_uid)
            fn(*args)
            code = 0
        except BaseException:
            import traceback
            traceback.print_exc()
        finally:
            os._exit(code)
    return pid


def run_as_user(pw, fn, *args):
    pid = as_user(pw, fn, *args)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def replace_with_link(path, target):
    """What the app user does: whatever is at path becomes a symlink to target."""
    if os.path.islink(path) or not os.path.isdir(path):
        if os.path.lexists(path):
            os.unlink(path)
    else:
        os.rename(path, path + ".moved")
    os.symlink(target, path)


def snapshot(top, skip=()):
    """lstat of everything under top (owner, mode, content, link text), not below skip."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames[:] = [d for d in dirnames if os.path.join(dirpath, d) not in skip]
        for n in [""] + dirnames + filenames:
            p = os.path.join(dirpath, n) if n else dirpath
            st = os.lstat(p)
            extra = None
            if os.path.islink(p):
                extra = os.readlink(p)
            elif os.path.isfile(p):
                with open(p, "rb") as f:
                    extra = hashlib.sha256(f.read()).hexdigest()
            out[p] = (st.st_mode, st.st_uid, st.st_gid, extra)
    return out


def host_snapshot(a, outside):
    """Everything but deploy_to and the logs supervisord writes."""
    skip = {os.path.join(a.root, DEPLOY_TO), os.path.join(a.root, "var/log/supervisor")}
    return snapshot(a.root, skip), snapshot(outside)


def assert_unchanged(before, after):
    for b, c in zip(before, after):
        changed = {p: (b.get(p), c.get(p)) for p in set(b) | set(c) if b.get(p) != c.get(p)}
        assert not changed, changed


def run_event(a, event):
    """Runs event for the app's layer and waits: (the agentctl process, the run record)."""
    p = a.ctl("--json", "run", event, "--layer", "plone_instances", "--wait", timeout=300)
    # Progress events, one a line, then the finished run.
    dec, text, i, r = json.JSONDecoder(), p.stdout, 0, None
    while text[i:].strip():
        r, i = dec.raw_decode(text, len(text) - len(text[i:].lstrip()))
    assert r and r.get("id") is not None and r.get("status") in ("success", "failed"), (p.stdout, p.stderr)
    return p, r


def run_error(a, r):
    return " ".join([r.get("error") or ""] + [s.get("error") or "" for s in run_steps(a, r["id"])])


def test_planted_current_is_not_followed(env):
    a, pw, outside = env
    dt = os.path.join(a.root, DEPLOY_TO)
    cur = os.readlink(os.path.join(dt, "current"))
    before = host_snapshot(a, outside)
    # As production would see them ("/etc/sudoers.d" is root/etc/sudoers.d
    # here), by a relative path, another app's real release, and a place
    # outside root.
    for target in ("/etc/sudoers.d", "../../../etc/sudoers.d", "/srv/www/other/releases/20200101000000",
                   "../other/releases/20200101000000", os.path.join(outside, "etc/sudoers.d"),
                   "releases/../../../../etc/sudoers.d"):
        run_as_user(pw, replace_with_link, os.path.join(dt, "current"), target)
        p, r = run_event(a, "configure")
        assert r["status"] == "failed", (target, r)
        err = run_error(a, r)
        assert "current" in err and "refusing to follow the symlink" in err, (target, err)
        assert_unchanged(before, host_snapshot(a, outside))
        assert not os.path.exists(os.path.join(a.root, "etc/sudoers.d/deploy.cfg"))
    # agentd's own link again: configure works as before.
    run_as_user(pw, replace_with_link, os.path.join(dt, "current"), cur)
    p, r = run_event(a, "configure")
    assert r["status"] == "success", (r, run_steps(a, r["id"]))
    st = os.stat(os.path.join(dt, cur, "deploy.cfg"))
    assert (st.st_uid, st.st_mode & 0o777) == (pw.pw_uid, 0o600)


def test_planted_links_inside_deploy_to(env):
    a, pw, outside = env
    dt = os.path.join(a.root, DEPLOY_TO)
    cur = os.readlink(os.path.join(dt, "current"))
    rel = os.path.join(dt, cur)
    before = host_snapshot(a, outside)

    # deploy.cfg itself a link: replaced by a file, never written through.
    run_as_user(pw, replace_with_link, os.path.join(rel, "deploy.cfg"), "/etc/sudoers.d/deploy")
    p, r = run_event(a, "configure")
    assert r["status"] == "success", (r, run_steps(a, r["id"]))
    assert not os.path.islink(os.path.join(rel, "deploy.cfg"))
    assert_unchanged(before, host_snapshot(a, outside))

    # An intermediate directory: shared/var -> / (and to the outside).
    for target in ("/", os.path.join(outside, "var"), "/var/lib/sentinel"):
        run_as_user(pw, replace_with_link, os.path.join(dt, "shared/var"), target)
        p, r = run_event(a, "setup")
        assert r["status"] == "failed", (target, r)
        assert "refusing to follow the symlink" in run_error(a, r) or "is a symlink" in run_error(a, r)
        assert_unchanged(before, host_snapshot(a, outside))
        run_as_user(pw, os.unlink, os.path.join(dt, "shared/var"))
        run_as_user(pw, os.rename, os.path.join(dt, "shared/var.moved"), os.path.join(dt, "shared/var"))

    # The target of a shared link (shared/log -> var/log) made a link.
    run_as_user(pw, replace_with_link, os.path.join(dt, "shared/var/log"), "/etc/sudoers.d")
    p, r = run_event(a, "setup")
    assert r["status"] == "failed", r
    assert_unchanged(before, host_snapshot(a, outside))
    run_as_user(pw, os.unlink, os.path.join(dt, "shared/var/log"))
    run_as_user(pw, os.rename, os.path.join(dt, "shared/var/log.moved"), os.path.join(dt, "shared/var/log"))

    # Under releases: current names releases/<name>, but that is a link.
    name = cur.split("/")[-1]
    run_as_user(pw, replace_with_link, rel, "/etc/sudoers.d")
    p, r = run_event(a, "configure")
    assert r["status"] == "failed", r
    assert "refusing to follow the symlink" in run_error(a, r)
    assert_unchanged(before, host_snapshot(a, outside))
    # And releases itself a link to a tree of the same shape elsewhere.
    run_as_user(pw, os.unlink, rel)
    run_as_user(pw, os.rename, rel + ".moved", rel)
    fake = os.path.join(a.root, "var/lib/fake-releases", name)
    os.makedirs(fake)
    before = host_snapshot(a, outside)
    run_as_user(pw, replace_with_link, os.path.join(dt, "releases"), "/var/lib/fake-releases")
    p, r = run_event(a, "configure")
    assert r["status"] == "failed", r
    assert "releases is a symlink" in run_error(a, r)
    assert_unchanged(before, host_snapshot(a, outside))
    assert os.listdir(fake) == []
    run_as_user(pw, os.unlink, os.path.join(dt, "releases"))
    run_as_user(pw, os.rename, os.path.join(dt, "releases.moved"), os.path.join(dt, "releases"))
    p, r = run_event(a, "setup")
    assert r["status"] == "success", (r, run_steps(a, r["id"]))
    p, r = run_event(a, "configure")
    assert r["status"] == "success", (r, run_steps(a, r["id"]))


def test_program_files_in_a_conf_dir_the_user_can_write(env):
    a, pw, outside = env
    confd = os.path.join(a.root, CONF_DIR.lstrip("/"))
    conf = os.path.join(confd, "plone_instances-client1.conf")
    content = open(conf, "rb").read()
    os.chown(confd, pw.pw_uid, pw.pw_gid)
    before = host_snapshot(a, outside)

    # A link where the program file goes: replaced, the target untouched.
    sentinel = os.path.join(outside, "etc/passwd")
    run_as_user(pw, replace_with_link, conf, sentinel)
    p, r = run_event(a, "configure")
    assert r["status"] == "success", (r, run_steps(a, r["id"]))
    st = os.lstat(conf)
    assert (st.st_uid, st.st_mode & 0o7777) == (0, 0o600) and not os.path.islink(conf)

    # The user's own file with agentd's very content (they may keep it open
    # for writing): written anew by root, never adopted by a chown.
    def plant_copy():
        os.unlink(conf)
        with open(conf, "wb") as f:
            f.write(content)
    run_as_user(pw, plant_copy)
    planted = os.lstat(conf).st_ino
    assert os.lstat(conf).st_uid == pw.pw_uid
    p, r = run_event(a, "configure")
    assert r["status"] == "success", (r, run_steps(a, r["id"]))
    st = os.lstat(conf)
    assert (st.st_uid, st.st_mode & 0o7777) == (0, 0o600) and st.st_ino != planted
    after = host_snapshot(a, outside)
    # Only the program file's inode changed; it is still root's.
    assert_unchanged(({k: v for k, v in before[0].items() if not k.startswith(confd)}, before[1]),
                     ({k: v for k, v in after[0].items() if not k.startswith(confd)}, after[1]))
    os.chown(confd, 0, 0)


def _swap_forever(a_path, b_path):
    libc = ctypes.CDLL(None, use_errno=True)
    libc.renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    a_b, b_b = a_path.encode(), b_path.encode()
    while True:
        libc.renameat2(-100, a_b, -100, b_b, RENAME_EXCHANGE)


def test_shared_swapped_for_a_link_during_setups(env):
    a, pw, outside = env
    dt = os.path.join(a.root, DEPLOY_TO)
    shared = os.path.join(dt, "shared")
    before = host_snapshot(a, outside)
    results = {}
    for target in ("/", outside):
        evil = os.path.join(dt, ".evil")
        run_as_user(pw, os.symlink, target, evil)
        swapper = as_user(pw, _swap_forever, shared, evil)
        try:
            for _ in range(25):
                p, r = run_event(a, "setup")
                results.setdefault(r["status"], []).append(run_error(a, r))
        finally:
            os.kill(swapper, signal.SIGKILL)
            os.waitpid(swapper, 0)
        if os.path.islink(shared):
            os.rename(shared, shared + ".tmp")
            os.rename(evil, shared)
            os.rename(shared + ".tmp", evil)
        os.unlink(evil)
        assert os.path.isdir(shared) and not os.path.islink(shared)
        # Nothing outside deploy_to changed owner, mode or content.
        assert_unchanged(before, host_snapshot(a, outside))
    # Every failure says why.
    for err in results.get("failed", []):
        assert "symlink" in err or "not a directory" in err, err
    print({k: len(v) for k, v in results.items()})
    p, r = run_event(a, "setup")
    assert r["status"] == "success", (r, run_steps(a, r["id"]))
    assert os.stat(shared).st_uid == pw.pw_uid


def test_planted_archive_name_in_a_cache_dir(env, tmpdir_agent):
    # agentd downloads a cache archive, as root, into a directory of the
    # app user's: a link planted under the download's name is not written
    # through (it was opened O_TRUNC, following it).
    import http.server
    import io
    import tarfile
    import threading
    a, pw, outside = env
    dt = os.path.join(a.root, DEPLOY_TO)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        info = tarfile.TarInfo("cached/base.cfg")
        info.size = 4
        t.addfile(info, io.BytesIO(b"x=1\n"))
    data = buf.getvalue()

    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        dist = os.path.join(dt, "shared/downloads/agtest-cache")

        def plant():
            os.mkdir(dist, 0o750)
            os.symlink(os.path.join(outside, "etc/passwd"), os.path.join(dist, ".agentd-fetch.tar.gz"))
        run_as_user(pw, plant)
        before = host_snapshot(a, outside)
        stack = json.load(open(a.stack_path))
        stack["deploy"]["plone_instances"]["buildout_cache_archives"] = [
            {"url": f"http://127.0.0.1:{srv.server_address[1]}/cache.tar.gz", "path": "shared/downloads/agtest-cache"}]
        a.write_stack(stack)
        wait_for(lambda: len(a.finished_runs()) > 3 and a.wait_idle(timeout=120), timeout=180,
                 what="the run after the stack change")
        p, r = run_event(a, "setup")
        assert r["status"] == "success", (r, run_steps(a, r["id"]))
        assert_unchanged(before, host_snapshot(a, outside))
        st = os.stat(os.path.join(dist, "cached/base.cfg"))
        assert st.st_uid == pw.pw_uid
        assert not os.path.lexists(os.path.join(dist, ".agentd-fetch.tar.gz"))
    finally:
        srv.shutdown()
        srv.server_close()


# --- issue 9, second round (a security tester's findings F1-F8) ---

def _deploy(a):
    """A deploy of the app, waited for: the run record."""
    return run_event(a, "deploy")[1]


def _new_runs_done(a, n_before, timeout=240):
    """Waits until a run beyond the first n_before has finished and nothing is queued."""
    wait_for(lambda: len(a.finished_runs()) > n_before and a.wait_idle(timeout=timeout), timeout=timeout,
             what="the run after the stack change")


def _read_as_user(pw, path):
    """The content of path as the user reads it, or None when they cannot."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        code = 1
        try:
            os.setgroups([])
            os.setgid(pw.pw_gid)
            os.setuid(pw.pw_uid)
            with open(path, "rb") as f:
                os.write(w, f.read())
            code = 0
        except BaseException:
            pass
        os._exit(code)
    os.close(w)
    data = b""
    while True:
        c = os.read(r, 65536)
        if not c:
            break
        data += c
    os.close(r)
    _, status = os.waitpid(pid, 0)
    return data if os.waitstatus_to_exitcode(status) == 0 else None


def test_local_scm_copies_as_the_app_user(env):
    # F1: a local source the app user owns, with a directory they swap for
    # a link to a root-only directory while deploys copy it. The copy runs
    # as the user: it reads only what they could read, and every file of
    # the release is theirs.
    import shutil
    from apps_fixtures import DEMO_APP
    a, pw, outside = env
    dt = os.path.join(a.root, DEPLOY_TO)
    src = os.path.join(dt, "shared", "src")
    secretdir = os.path.join(a.root, "var/lib/secretdir")
    os.makedirs(secretdir)
    os.chmod(secretdir, 0o700)
    with open(os.path.join(secretdir, "secret.txt"), "w") as f:
        f.write("TOPSECRET\n")
    os.chmod(os.path.join(secretdir, "secret.txt"), 0o644)
    assert _read_as_user(pw, os.path.join(secretdir, "secret.txt")) is None
    shutil.copytree(DEMO_APP, src, ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    os.makedirs(os.path.join(src, "sub"))
    with open(os.path.join(src, "sub", "secret.txt"), "w") as f:
        f.write("dummy\n")
    subprocess.run(["chown", "-R", f"{pw.pw_uid}:{pw.pw_gid}", src], check=True)
    # A file of root's in the user's tree (as a hard link would put it
    # there), readable by all: root's cp -a kept it root's.
    with open(os.path.join(src, "rootfile"), "w") as f:
        f.write("root's\n")
    run_as_user(pw, os.symlink, secretdir, os.path.join(src, "subl"))
    n = len(a.finished_runs())
    stack = json.load(open(a.stack_path))
    stack["deploy"]["plone_instances"]["scm"] = {"scm_type": "local",
                                                  "repository": "/srv/www/plone_instances/shared/src"}
    stack["deploy"]["plone_instances"]["keep_releases"] = 50
    a.write_stack(stack)
    _new_runs_done(a, n)
    # The release step's work, whatever supervisord then makes of the
    # programs (a slow start is its SPAWN_ERROR on a loaded machine).
    rel = os.path.join(dt, os.readlink(os.path.join(dt, "current")))
    with open(os.path.join(rel, ".agentd-source")) as f:
        assert "/srv/www/plone_instances/shared/src" in f.read()
    for dirpath, dirnames, filenames in os.walk(rel):
        for nm in dirnames + filenames:
            p = os.path.join(dirpath, nm)
            if os.path.relpath(p, rel).split("/")[0] in ("deploy.cfg", ".agentd-source"):
                continue
            assert os.lstat(p).st_uid == pw.pw_uid, p
    swapper = as_user(pw, _swap_forever, os.path.join(src, "sub"), os.path.join(src, "subl"))
    statuses = []
    try:
        for i in range(8):
            cur = os.path.join(dt, os.readlink(os.path.join(dt, "current")))
            run_as_user(pw, lambda: open(os.path.join(cur, ".agentd-source"), "w").write("x"))
            statuses.append(_deploy(a)["status"])
    finally:
        os.kill(swapper, signal.SIGKILL)
        os.waitpid(swapper, 0)
    print("deploys while swapping:", statuses)
    leaked = []
    for dirpath, dirnames, filenames in os.walk(os.path.join(dt, "releases")):
        for nm in filenames:
            p = os.path.join(dirpath, nm)
            if not os.path.islink(p) and _read_as_user(pw, p) == b"TOPSECRET\n":
                leaked.append(p)
    assert not leaked, leaked


def test_undeploy_of_a_deep_tree_under_a_low_fd_limit(env):
    # F2: a 5000-deep chain of directories under shared/ (and links to
    # root's files along it): the undeploy removes it although agentd may
    # open 4096 descriptors only, and follows none of the links.
    a, pw, outside = env
    dt = os.path.join(a.root, DEPLOY_TO)
    sent = os.path.join(a.root, "var/lib/sentinel")

    def plant():
        os.symlink(sent, os.path.join(dt, "shared", "var", "evil"))
        os.symlink(os.path.join(outside, "etc"), os.path.join(dt, "evil_out"))
        os.chdir(os.path.join(dt, "shared"))
        for _ in range(5000):
            os.mkdir("d")
            os.chdir("d")
        os.symlink(sent, "deep_link")
    try:
        run_as_user(pw, plant)
        # The undeploy removes the app's program files and its logrotate
        # files (the instance serves no app any more), nothing else.
        confd = os.path.join(a.root, CONF_DIR.lstrip("/"))
        rotd = os.path.join(a.root, "etc/logrotate.d") + "/"

        def host():
            h, o = host_snapshot(a, outside)
            return {k: v for k, v in h.items() if not k.startswith(confd) and not k.startswith(rotd)}, o
        before = host()
        subprocess.run(["prlimit", "--pid", str(a.proc.pid), "--nofile=4096:4096"], check=True)
        n = len(a.finished_runs())
        stack = json.load(open(a.stack_path))
        del stack["deploy"]["plone_instances"]
        a.write_stack(stack)
        _new_runs_done(a, n)
        und = [r for r in a.runs() if r["event"] == "undeploy"]
        assert und and und[0]["status"] == "success", (und[:1], und and run_error(a, und[0]))
        assert not os.path.lexists(dt)
        assert_unchanged(before, host())
        assert a.ctl_ok("status")
    finally:
        # Python's tree walks recurse: too deep for them.
        subprocess.run(["rm", "-rf", "--one-file-system", os.path.join(dt, "shared", "d")], check=False)


def test_undeploy_of_many_files_keeps_answering(env):
    # F3: the removal runs beside the loop; status answers throughout.
    # Timings are printed, not asserted (AGENTD_TEST_UNDEPLOY_DIRS x 1000
    # files; 300 for the tester's 300k).
    import time
    a, pw, outside = env
    dt = os.path.join(a.root, DEPLOY_TO)
    ndirs = int(os.environ.get("AGENTD_TEST_UNDEPLOY_DIRS", "20"))

    def plant():
        base = os.path.join(dt, "shared", "many")
        os.mkdir(base)
        for i in range(ndirs):
            d = os.path.join(base, str(i))
            os.mkdir(d)
            for j in range(1000):
                os.close(os.open(os.path.join(d, str(j)), os.O_CREAT | os.O_WRONLY, 0o600))
    run_as_user(pw, plant)
    n = len(a.finished_runs())
    stack = json.load(open(a.stack_path))
    del stack["deploy"]["plone_instances"]
    a.write_stack(stack)
    lat = []

    def done():
        t = time.monotonic()
        ok = a.ctl_ok("status")
        lat.append(round(time.monotonic() - t, 3))
        return ok and len(a.finished_runs()) > n and a.status()["current_run"] is None and not a.status()["queue"]
    wait_for(done, timeout=600, what="the undeploy")
    print(f"status latency during the undeploy of {ndirs * 1000} files: max {max(lat)} s over {len(lat)} calls")
    und = [r for r in a.runs() if r["event"] == "undeploy"]
    assert und and und[0]["status"] == "success", (und[:1], und and run_error(a, und[0]))
    assert not os.path.lexists(dt)


def test_rollback_goes_only_to_a_real_release(env):
    # F4: rollback's target is releases/<name>, a real directory; a link
    # planted under the previous release's name, a planted current and a
    # planted temporary name neither steer nor block it.
    a, pw, outside = env
    dt = os.path.join(a.root, DEPLOY_TO)
    rels = os.path.join(dt, "releases")
    cur = os.readlink(os.path.join(dt, "current"))
    name = cur.split("/")[-1]
    prev = str(int(name) - 1)
    before = host_snapshot(a, outside)

    run_as_user(pw, os.symlink, "/etc/sudoers.d", os.path.join(rels, prev))
    p = a.ctl("rollback", "plone_instances", timeout=60)
    assert p.returncode != 0, (p.stdout, p.stderr)
    assert "refusing" in p.stderr and "symlink" in p.stderr, p.stderr
    assert os.readlink(os.path.join(dt, "current")) == cur
    run_as_user(pw, os.unlink, os.path.join(rels, prev))

    # current itself planted: a link elsewhere, or a directory.
    for target in ("/etc/sudoers.d", "releases/../../../etc/sudoers.d"):
        run_as_user(pw, replace_with_link, os.path.join(dt, "current"), target)
        run_as_user(pw, os.mkdir, os.path.join(rels, prev))
        p = a.ctl("rollback", "plone_instances", timeout=60)
        assert p.returncode != 0 and "refusing" in p.stderr, (target, p.stdout, p.stderr)
        assert os.readlink(os.path.join(dt, "current")) == target
        run_as_user(pw, os.rmdir, os.path.join(rels, prev))
        run_as_user(pw, replace_with_link, os.path.join(dt, "current"), cur)
    assert os.readlink(os.path.join(dt, "current")) == cur
    assert_unchanged(before, host_snapshot(a, outside))

    # A real previous release; the old temporary name (pid-based) planted
    # as a directory: rollback works and goes there.
    run_as_user(pw, os.mkdir, os.path.join(rels, prev))
    run_as_user(pw, os.mkdir, os.path.join(dt, f".current.rollback.{a.proc.pid}"))
    r = a.ctl_json("rollback", "plone_instances")
    assert r["to"] == prev and r["from"] == name, r
    assert os.readlink(os.path.join(dt, "current")) == f"releases/{prev}"
    assert not [n for n in os.listdir(dt) if n.startswith(".current") and n != f".current.rollback.{a.proc.pid}"]
    a.wait_idle(timeout=120)
    assert_unchanged(before, host_snapshot(a, outside))


def test_names_from_disk_are_escaped_in_messages(env):
    # F5: a link named "x\n<forged log line>" in the user's tree: the
    # refusal names it with "\n" escaped, in the log, the run's error and
    # agentctl show; no forged line appears anywhere.
    a, pw, outside = env
    dt = os.path.join(a.root, DEPLOY_TO)
    cur = os.readlink(os.path.join(dt, "current"))
    forged = "agentd: info: [run 99] FAKE: deploy of plone_instances succeeded"
    name = "x\n" + forged + "\x1b[2J"

    def plant():
        os.symlink("/etc/sudoers.d", os.path.join(dt, "releases", name))
        os.unlink(os.path.join(dt, "current"))
        os.symlink("releases/" + name, os.path.join(dt, "current"))
    run_as_user(pw, plant)
    p, r = run_event(a, "configure")
    assert r["status"] == "failed", r
    err = run_error(a, r)
    assert "x\\nagentd: info" in err and "\n" not in err and "\x1b" not in err, err
    show = a.ctl("show", str(r["id"]))
    assert forged not in show.stdout.splitlines(), show.stdout
    assert "\x1b" not in show.stdout
    log = a.stderr_text()
    assert not [ln for ln in log.splitlines() if ln.startswith(forged)], log[-2000:]
    assert "\x1b[2J" not in log
    # Rollback names current's text too (it goes back to the real release
    # that sorts before the planted name).
    p = a.ctl("rollback", "plone_instances", timeout=60)
    out = p.stdout + p.stderr
    assert "x\\nagentd" in out and "\x1b" not in out and forged not in out.splitlines(), out
    assert not [ln for ln in a.stderr_text().splitlines() if ln.startswith(forged)]
    a.wait_idle(timeout=120)

    def restore():
        os.unlink(os.path.join(dt, "current"))
        os.symlink(cur, os.path.join(dt, "current"))
        os.unlink(os.path.join(dt, "releases", name))
    run_as_user(pw, restore)


def test_children_get_only_their_stdio(env, tmpdir_agent):
    # F6: no descriptor of agentd reaches a child: an exec step listing
    # /proc/self/fd (as the app user and as root) sees 0, 1, 2 and the
    # listing's own directory only, also after agentd fetched something
    # over HTTP (libcurl's wakeup socketpair).
    a, pw, outside = env
    out = os.path.join(tmpdir_agent, "fds")
    os.makedirs(out)
    os.chmod(out, 0o777)
    lister = os.path.join(tmpdir_agent, "list-fds")
    with open(lister, "w") as f:
        f.write("#!/usr/bin/python3\nimport os, sys\n"
                "fds = sorted(int(x) for x in os.listdir('/proc/self/fd'))\n"
                "desc = [(fd, os.readlink(f'/proc/self/fd/{fd}')) for fd in fds if os.path.exists(f'/proc/self/fd/{fd}')]\n"
                f"open(os.path.join({out!r}, sys.argv[1]), 'w').write(repr(desc))\n")
    os.chmod(lister, 0o755)
    n = len(a.finished_runs())
    stack = json.load(open(a.stack_path))
    stack.setdefault("agent", {})
    stack["agent"]["recipes"] = {"fds_user": {"command": [lister, "user"], "user": pw.pw_name},
                                 "fds_root": {"command": [lister, "root"]}}
    stack["agent"]["layers"] = {"plone_instances": {"configure": ["fds_user", "fds_root"]}}
    a.write_stack(stack)
    _new_runs_done(a, n)
    p, r = run_event(a, "configure")
    assert r["status"] == "success", (r, run_steps(a, r["id"]))
    for who in ("user", "root"):
        desc = eval(open(os.path.join(out, who)).read())
        # os.listdir's own descriptor is closed by the time it is read.
        assert [fd for fd, _ in desc] == [0, 1, 2], (who, desc)
