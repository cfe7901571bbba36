# A private front end for the front-end tests and bench: Python backends that
# say which member and client answered, a real varnishd, haproxy (master-worker)
# and nginx on 127.0.0.2-127.0.0.4, driven by a real agentd. Shared by
# tests/integration/test_front.py and tests/bench/bench_front.py.
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from conftest import Agent, wait_for

MEMBERS = {"app1": "127.0.0.2", "app2": "127.0.0.3", "app3": "127.0.0.4"}
CLIENTS = 2


def free_port(addr):
    s = socket.socket()
    s.bind((addr, 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Backends:
    """One tiny HTTP server per client of every member: <ip>:8080+N."""

    def __init__(self):
        self.hits = {}
        self.lock = threading.Lock()
        self.servers = []

    def start(self, member, ip, clients):
        outer = self

        for n in range(1, clients + 1):
            name = f"{member}/{n}"

            class H(BaseHTTPRequestHandler):
                who = name

                def do_GET(self):
                    with outer.lock:
                        outer.hits[self.who] = outer.hits.get(self.who, 0) + 1
                    body = (self.who + " " + self.path + "\n").encode()
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.send_header("Cache-Control", "private")
                    self.end_headers()
                    self.wfile.write(body)

                def do_OPTIONS(self):
                    self.send_response(200)
                    self.send_header("Content-Length", "0")
                    self.end_headers()

                def log_message(self, *a):
                    pass

            ThreadingHTTPServer.allow_reuse_address = True
            srv = ThreadingHTTPServer((ip, 8080 + n), H)
            srv.daemon_threads = True
            t = threading.Thread(target=srv.serve_forever, daemon=True)
            t.start()
            self.servers.append(srv)

    def member_hits(self, member):
        with self.lock:
            return sum(v for k, v in self.hits.items() if k.startswith(member + "/"))

    def stop(self):
        for s in self.servers:
            s.shutdown()
            s.server_close()


def reload_script(path, pidfile, sig, log):
    with open(path, "w") as f:
        f.write("#!/bin/sh\n"
                f"echo reload >> '{log}'\n"
                f"[ -s '{pidfile}' ] || exit 0\n"
                f"exec kill -{sig} \"$(cat '{pidfile}')\"\n")
    os.chmod(path, 0o755)


def stack_doc(online, extra=None, addresses=None):
    addresses = addresses or {}
    inst = {}
    for m, ip in MEMBERS.items():
        if m in online:
            inst[m] = {"private_ip": addresses.get(m, ip), "status": "online"}
    doc = {
        "opsworks": {
            "stack": {"name": "front-test"},
            "layers": {
                "lb": {"name": "LB", "instances": {"lb1": {"private_ip": "127.0.0.2", "status": "online"}}},
                "plone_instances": {"name": "Plone", "instances": inst},
            },
        },
        "deploy": {},
        "plone_instances": {"instance_count": CLIENTS, "site_id": "Plone"},
        "haproxy": {"health_check_method": "OPTIONS", "health_check_url": "/"},
    }
    if extra:
        doc.update(extra)
    return doc


class Front:
    """Everything the front-end tests need, torn down by close()."""

    def __init__(self):
        self.tmp = tempfile.mkdtemp(prefix="agentd-front-")
        os.chmod(self.tmp, 0o755)
        self.procs = []
        self.backends = Backends()
        self.agent = None
        ip = "127.0.0.2"
        self.hp, self.vp, self.vadm, self.np = (free_port(ip) for _ in range(4))
        self.haproxy_addr = f"{ip}:{self.hp}"
        self.varnish_addr = f"{ip}:{self.vp}"
        self.nginx_addr = (ip, self.np)
        t = self.tmp
        self.secret = os.path.join(t, "varnish-secret")
        with open(self.secret, "w") as f:
            f.write("agentd-front-test-secret\n")
        os.chmod(self.secret, 0o600)
        self.reload_log = os.path.join(t, "reloads.log")
        open(self.reload_log, "w").close()
        reload_script(os.path.join(t, "reload-haproxy"), os.path.join(t, "haproxy.pid"), "USR2", self.reload_log)
        reload_script(os.path.join(t, "reload-nginx"), os.path.join(t, "nginx.pid"), "HUP", self.reload_log)
        self.restart_log = os.path.join(t, "restarts.log")
        with open(os.path.join(t, "restart-varnish"), "w") as f:
            f.write(f"#!/bin/sh\necho restart >> '{self.restart_log}'\n")
        os.chmod(os.path.join(t, "restart-varnish"), 0o755)
        self.varnishadm = ["varnishadm", "-T", f"{ip}:{self.vadm}", "-S", self.secret]
        self.conf = {
            "instance": "lb1",
            "haproxy_command": ["haproxy"],
            "haproxy_reload_command": [os.path.join(t, "reload-haproxy")],
            "haproxy_bind": self.haproxy_addr,
            "haproxy_address": self.haproxy_addr,
            "haproxy_maxconn": 2000,
            "haproxy_stats_socket": os.path.join(t, "haproxy.sock"),
            "varnishd_command": ["varnishd", "-n", os.path.join(t, "varnish-check")],
            "varnishadm_command": self.varnishadm,
            "varnish_restart_command": [os.path.join(t, "restart-varnish")],
            "varnish_address": self.varnish_addr,
            "nginx_command": ["nginx"],
            "nginx_reload_command": [os.path.join(t, "reload-nginx")],
            "nginx_listen": f"{ip}:{self.np}",
        }

    # --- services ---
    def start_backends(self):
        for m, ip in MEMBERS.items():
            self.backends.start(m, ip, CLIENTS)

    def start_varnish(self, extra=()):
        """varnishd on varnish_addr; extra: more arguments (e.g. ["-p", "cc_command=..."])."""
        boot = os.path.join(self.tmp, "boot.vcl")
        h, p = self.haproxy_addr.split(":")
        with open(boot, "w") as f:
            f.write(f'vcl 4.1;\nbackend default {{ .host = "{h}"; .port = "{p}"; }}\n')
        p = subprocess.Popen(["varnishd", "-F", "-n", os.path.join(self.tmp, "varnish"), "-a", self.varnish_addr,
                              "-T", f"127.0.0.2:{self.vadm}", "-S", self.secret, "-f", boot, "-s", "malloc,32m", *extra],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        self.procs.append(p)
        wait_for(lambda: subprocess.run(self.varnishadm + ["ping"], capture_output=True).returncode == 0,
                 timeout=30, what="varnishd's admin port")

    def start_agent(self, stack):
        d = os.path.join(self.tmp, "agent")
        os.makedirs(d, exist_ok=True)
        self.agent = Agent(d, stack, conf_extra=self.conf)
        self.agent.start()
        return self.agent

    def start_haproxy_nginx(self):
        root = self.agent.root
        t = self.tmp
        p = subprocess.Popen(["haproxy", "-W", "-f", os.path.join(root, "etc/haproxy/haproxy.cfg"),
                              "-p", os.path.join(t, "haproxy.pid")],
                             stdout=subprocess.DEVNULL, stderr=open(os.path.join(t, "haproxy.stderr"), "wb"),
                             start_new_session=True)
        self.procs.append(p)
        nconf = os.path.join(t, "nginx.conf")
        for d in ("nginx-body", "nginx-proxy", "nginx-fastcgi", "nginx-uwsgi", "nginx-scgi"):
            os.makedirs(os.path.join(t, d), exist_ok=True)
        with open(nconf, "w") as f:
            f.write(f"daemon off;\nmaster_process on;\nworker_processes 2;\npid {t}/nginx.pid;\n"
                    f"error_log {t}/nginx-error.log;\nevents {{}}\nhttp {{\n access_log off;\n"
                    f" client_body_temp_path {t}/nginx-body;\n proxy_temp_path {t}/nginx-proxy;\n"
                    f" fastcgi_temp_path {t}/nginx-fastcgi;\n uwsgi_temp_path {t}/nginx-uwsgi;\n"
                    f" scgi_temp_path {t}/nginx-scgi;\n include {root}/etc/nginx/sites-enabled/*;\n}}\n")
        p = subprocess.Popen(["nginx", "-p", t, "-c", nconf, "-e", os.path.join(t, "nginx-error.log")],
                             stdout=subprocess.DEVNULL, stderr=open(os.path.join(t, "nginx.stderr"), "wb"),
                             start_new_session=True)
        self.procs.append(p)
        wait_for(lambda: os.path.exists(os.path.join(t, "haproxy.pid")) and os.path.exists(
            os.path.join(t, "nginx.pid")), timeout=20, what="haproxy and nginx pid files")
        wait_for(lambda: self.get()[0] == 200, timeout=30, what="a first answer through nginx")

    def get(self, path="/"):
        """One request through nginx on a new connection: (status, body)."""
        c = http.client.HTTPConnection(*self.nginx_addr, timeout=10)
        try:
            c.request("GET", path)
            r = c.getresponse()
            return r.status, r.read().decode(errors="replace")
        finally:
            c.close()

    def reloads(self):
        with open(self.reload_log) as f:
            return len(f.read().splitlines())

    def close(self):
        """Stops everything; returns agentd's exit status and stderr."""
        rc, err = None, ""
        if self.agent:
            rc = self.agent.stop()
            err = self.agent.stderr_text()
        for p in reversed(self.procs):
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait()
        self.backends.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)
        return rc, err


class Loop:
    """Requests through nginx, one after another on new connections, in a thread."""

    def __init__(self, front):
        self.front = front
        self.ok = 0
        self.failed = []
        self.stop_ev = threading.Event()
        self.t = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while not self.stop_ev.is_set():
            try:
                st, body = self.front.get()
                if st == 200:
                    self.ok += 1
                else:
                    self.failed.append(f"status {st}: {body[:200]}")
            except Exception as e:  # noqa: BLE001 - every failure counts
                self.failed.append(repr(e))

    def __enter__(self):
        self.t.start()
        return self

    def __exit__(self, *a):
        self.stop_ev.set()
        self.t.join(30)

    def wait_more(self, n, timeout=30):
        start = self.ok
        wait_for(lambda: self.ok >= start + n, timeout=timeout, what=f"{n} more answered requests")
