# Files that carry secrets are not world-readable on disk (issue 9 kind 6,
# break3 finding 4): a file of agent.files marked "secret": true without a
# "mode" is written 0600 (it was 0644); an explicit mode is the operator's and
# is honoured; a secret file an older agentd left 0644 is narrowed by the next
# run. (The files agentd renders with passwords are 0600: deploy.cfg and
# supervisor program files in test_apps.py, haproxy.cfg with a stats
# password in recipes/front.c.)
import os
import pwd
import stat
import subprocess

from conftest import simple_stack

SECRET = "db-password-Qx81-LEAK"


def mode_of(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


def nobody_can_read(path):
    pw = pwd.getpwnam("nobody")
    p = subprocess.run(["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--clear-groups",
                        "/bin/cat", path], capture_output=True, text=True, timeout=30)
    return p.returncode == 0 or SECRET in p.stdout


def files_stack(files):
    stack = simple_stack()
    stack["agent"]["layers"]["web"]["configure"] = ["files"]
    stack["agent"]["files"] = {"web": files}
    return stack


def test_a_secret_file_without_a_mode_is_not_world_readable(make_agent):
    a = make_agent()
    a.write_stack(files_stack([
        {"path": "/etc/app/secret.ini", "content": SECRET + "\n", "secret": True},
        {"path": "/etc/app/shared.ini", "content": SECRET + "\n", "secret": True, "mode": "0640"},
        {"path": "/etc/app/wide.ini", "content": SECRET + "\n", "secret": True, "mode": "0644"},
        {"path": "/etc/app/public.ini", "content": "hello\n", "secret": False},
        {"path": "/etc/app/plain.ini", "content": "hello\n"},
    ]))
    a.start()
    a.wait_idle()
    runs = [r for r in a.runs() if r["event"] == "configure"]
    assert runs and runs[0]["status"] == "success", runs
    etc = os.path.join(a.root, "etc/app")
    assert mode_of(os.path.join(etc, "secret.ini")) == 0o600
    assert not nobody_can_read(os.path.join(etc, "secret.ini"))
    # An explicit mode is the operator's choice, as documented.
    assert mode_of(os.path.join(etc, "shared.ini")) == 0o640
    assert not nobody_can_read(os.path.join(etc, "shared.ini"))
    assert mode_of(os.path.join(etc, "wide.ini")) == 0o644
    assert mode_of(os.path.join(etc, "public.ini")) == 0o644
    assert mode_of(os.path.join(etc, "plain.ini")) == 0o644


def test_a_secret_file_left_world_readable_is_narrowed(make_agent):
    a = make_agent()
    # What an agentd before this fix wrote: the same content, 0644.
    etc = os.path.join(a.root, "etc/app")
    os.makedirs(etc)
    path = os.path.join(etc, "secret.ini")
    with open(path, "w") as f:
        f.write(SECRET + "\n")
    os.chmod(path, 0o644)
    a.write_stack(files_stack([{"path": "/etc/app/secret.ini", "content": SECRET + "\n", "secret": True}]))
    a.start()
    a.wait_idle()
    # The plan says what the run does (and shows nobody no diff).
    plan = a.ctl_json("plan", "configure", "--layer", "web")
    assert [s["action"] for s in plan["steps"] if s["target"] == "/etc/app/secret.ini"] == ["none"]
    assert mode_of(path) == 0o600
    assert not nobody_can_read(path)
    runs = [r for r in a.runs() if r["event"] == "configure"]
    assert runs[0]["status"] == "success", runs

