"""A real etcd (Debian's etcd-server 3.4) on loopback for the fleet tests.

Each Etcd runs in a temporary data directory on free ports and is removed by
the test. The test talks to it through the JSON gateway with urllib (an
independent client: none of agentd's code), or with etcdctl.
"""
import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

import pytest

ETCD = shutil.which("etcd") or "/usr/bin/etcd"
ETCDCTL = shutil.which("etcdctl") or "/usr/bin/etcdctl"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def b64(s):
    if isinstance(s, str):
        s = s.encode()
    return base64.b64encode(s).decode()


def unb64(s):
    return base64.b64decode(s) if s else b""


def prefix_end(key):
    k = key.encode() if isinstance(key, str) else key
    return k[:-1] + bytes([k[-1] + 1])


class Etcd:
    def __init__(self, tmp=None, progress_notify_s=None):
        self.own_tmp = tmp is None
        self.tmp = tmp or tempfile.mkdtemp(prefix="agentd-etcd-")
        self.data = os.path.join(self.tmp, "etcd-data")
        self.port = free_port()
        self.peer_port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.progress_notify_s = progress_notify_s
        self.proc = None
        self.log_path = os.path.join(self.tmp, "etcd.log")

    def start(self, timeout=15):
        cmd = [ETCD, "--name", "t", "--data-dir", self.data,
               "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
               "--listen-peer-urls", f"http://127.0.0.1:{self.peer_port}",
               "--initial-advertise-peer-urls", f"http://127.0.0.1:{self.peer_port}",
               "--initial-cluster", f"t=http://127.0.0.1:{self.peer_port}",
               "--log-level", "warn", "--logger", "zap"]
        if self.progress_notify_s:
            cmd += ["--experimental-watch-progress-notify-interval", f"{self.progress_notify_s}s"]
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.post("/v3/kv/range", {"key": b64("/")}, timeout=1)
                return self
            except (OSError, urllib.error.URLError):
                if self.proc.poll() is not None:
                    raise AssertionError(f"etcd exited {self.proc.returncode}: {open(self.log_path).read()}")
                time.sleep(0.05)
        raise AssertionError("etcd did not answer within %ss" % timeout)

    def stop(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            if sig == signal.SIGTERM:
                self.sigcont()
            self.proc.send_signal(sig)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def sigstop(self):
        self.proc.send_signal(signal.SIGSTOP)

    def sigcont(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)

    def remove(self):
        self.stop()
        if self.own_tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)

    # The JSON gateway, spoken by urllib.
    def post(self, path, body, timeout=5):
        req = urllib.request.Request(self.url + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read() or b"{}")

    def put(self, key, value, lease=None):
        if not isinstance(value, (str, bytes)):
            value = json.dumps(value)
        body = {"key": b64(key), "value": b64(value)}
        if lease:
            body["lease"] = str(lease)
        return int(self.post("/v3/kv/put", body)["header"]["revision"])

    def get(self, key):
        """(value bytes, mod_revision) or (None, 0)."""
        r = self.post("/v3/kv/range", {"key": b64(key)})
        kvs = r.get("kvs") or []
        if not kvs:
            return None, 0
        return unb64(kvs[0].get("value")), int(kvs[0]["mod_revision"])

    def get_prefix(self, key):
        """{key: (value bytes, create_revision, lease)} of every key under key."""
        r = self.post("/v3/kv/range", {"key": b64(key), "range_end": b64(prefix_end(key))})
        return {unb64(kv["key"]).decode(): (unb64(kv.get("value")), int(kv["create_revision"]),
                                            int(kv.get("lease", "0")))
                for kv in r.get("kvs") or []}

    def delete(self, key, prefix=False):
        body = {"key": b64(key)}
        if prefix:
            body["range_end"] = b64(prefix_end(key))
        return self.post("/v3/kv/deleterange", body)

    def revision(self):
        return int(self.post("/v3/kv/range", {"key": b64("/"), "count_only": True})["header"]["revision"])

    def compact(self, revision=None):
        rev = revision or self.revision()
        self.post("/v3/kv/compaction", {"revision": str(rev), "physical": True})
        return rev

    def grant(self, ttl):
        return int(self.post("/v3/lease/grant", {"TTL": str(ttl)})["ID"])

    def revoke(self, lease):
        return self.post("/v3/lease/revoke", {"ID": str(lease)})

    def ctl(self, *args, check=True, timeout=10):
        p = subprocess.run([ETCDCTL, "--endpoints", self.url] + list(args), capture_output=True, text=True,
                           timeout=timeout, env=dict(os.environ, ETCDCTL_API="3"))
        if check and p.returncode != 0:
            raise AssertionError(f"etcdctl {args} exited {p.returncode}: {p.stderr}")
        return p


@pytest.fixture
def etcd():
    e = Etcd().start()
    yield e
    e.remove()


def etcd_source(e, prefix="/agentd/test"):
    """The agentd.conf source URL for e and prefix."""
    return f"etcd://127.0.0.1:{e.port}{prefix}"
