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
