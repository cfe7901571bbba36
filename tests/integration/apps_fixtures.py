# Fixtures for the apps tests: a private supervisord, a git repository of the
# demo buildout app, and an agent configured to drive both.
import http.client
import json
import os
import shutil
import socket
import subprocess
import tempfile
import urllib.request
import xmlrpc.client

import pytest

from conftest import wait_for

TOP = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DEMO_APP = os.path.join(TOP, "conf", "demo", "app")
BUILDOUT = os.path.join(TOP, "conf", "demo", "bin", "buildout")
CONF_DIR = "/etc/supervisor/conf.d"


class _UnixConn(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost", timeout=30)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(30)
        self.sock.connect(self.path)


class _UnixTransport(xmlrpc.client.Transport):
    def __init__(self, path):
        super().__init__()
        self.path = path

    def make_connection(self, host):
        return _UnixConn(self.path)


class Supervisord:
    """A real supervisord with its socket, pid file and logs in a temp dir,
    including program files from <root>/etc/supervisor/conf.d."""

    def __init__(self, tmp, root):
        self.tmp = tmp
        self.sock = os.path.join(tmp, "supervisor.sock")
        self.conf = os.path.join(tmp, "supervisord.conf")
        os.makedirs(os.path.join(root, CONF_DIR.lstrip("/")), exist_ok=True)
        with open(self.conf, "w") as f:
            f.write(f"""[unix_http_server]
file = {self.sock}
chmod = 0700

[supervisord]
logfile = {tmp}/supervisord.log
pidfile = {tmp}/supervisord.pid
childlogdir = {tmp}
nodaemon = true

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[include]
files = {root}{CONF_DIR}/*.conf
""")
        self.proc = subprocess.Popen(["supervisord", "-c", self.conf], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        self.rpc = xmlrpc.client.ServerProxy("http://localhost", transport=_UnixTransport(self.sock))
        wait_for(lambda: os.path.exists(self.sock) and self.rpc.supervisor.getState(), timeout=20,
                 what="supervisord")

    def info(self):
        return {p["name"]: p for p in self.rpc.supervisor.getAllProcessInfo()}

    def pids(self, prefix):
        return {n: p["pid"] for n, p in self.info().items() if n.startswith(prefix)}

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def http_get(port, host="127.0.0.1"):
    with urllib.request.urlopen(f"http://{host}:{port}/", timeout=5) as r:
        return dict(line.split("=", 1) for line in r.read().decode().splitlines())


def answers(port):
    try:
        return http_get(port)
    except OSError:
        return None


def git(repo, *args):
    subprocess.run(["git", "-C", repo, "-c", "user.name=t", "-c", "user.email=t@t", *args], check=True,
                   capture_output=True)


def make_repo(tmp):
    """The demo buildout app as a git repository with tag v1."""
    repo = os.path.join(tmp, "repo")
    shutil.copytree(DEMO_APP, repo, ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    subprocess.run(["git", "init", "-q", "-b", "main", repo], check=True)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "v1")
    git(repo, "tag", "v1")
    return repo


def commit(repo, tag, path="VERSION", content=None):
    with open(os.path.join(repo, path), "w") as f:
        f.write(content if content is not None else tag + "\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", tag)
    git(repo, "tag", tag)


def apps_stack(repo, revision="v1", zeo_ip="10.9.0.1", pi=None, apps=None, layers_extra=None):
    stack = {
        "opsworks": {
            "stack": {"name": "apps-test"},
            "layers": {
                "plone_instances": {"name": "Plone", "instances": {
                    "app1": {"private_ip": "127.0.0.1", "status": "online"}}},
                "zeoserver": {"name": "ZEO", "instances": {
                    "zeo1": {"private_ip": zeo_ip, "status": "online"}}},
            },
        },
        "deploy": apps or {
            "plone_instances": {
                "scm": {"scm_type": "git", "repository": repo, "revision": revision},
                "deploy_to": "/srv/www/plone_instances", "user": "root", "group": "root",
                "keep_releases": 2,
                "environment": {"ZOPE_MODE": "test", "RAILS_ENV": "production"},
            },
        },
        "plone_instances": dict({"instance_count": 2}, **(pi or {})),
    }
    if layers_extra:
        stack["opsworks"]["layers"].update(layers_extra)
    return stack


@pytest.fixture
def apps_env(make_agent, tmpdir_agent):
    """(make, sup, repo): make(stack) starts an agent wired to a private supervisord."""
    made = {}
    repo = make_repo(tmpdir_agent)

    # No network here: packages dpkg says are missing are recorded, not installed.
    recorder = os.path.join(tmpdir_agent, "install-packages")
    with open(recorder, "w") as f:
        f.write(f"#!/bin/sh\necho \"$@\" >> {tmpdir_agent}/installed-packages\n")
    os.chmod(recorder, 0o755)

    def make(stack, **kw):
        a = make_agent(None, conf_extra={
            "supervisor_socket": os.path.join(tmpdir_agent, "supervisor.sock"),
            "supervisor_conf_dir": CONF_DIR,
            "buildout_command": [BUILDOUT],
            "package_install_command": [recorder],
        }, **kw)
        made["sup"] = Supervisord(tmpdir_agent, a.root)
        a.write_stack(stack)
        a.start()
        return a, made["sup"]

    yield make, repo
    if "sup" in made:
        made["sup"].stop()


def last_run(a, **match):
    runs = [r for r in a.runs() if all(r.get(k) == v for k, v in match.items())]
    return runs[0] if runs else None


def run_steps(a, run_id):
    return a.ctl_json("show", run_id)["steps"]
