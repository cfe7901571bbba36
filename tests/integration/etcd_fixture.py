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
        self.timeout = 5  # seconds per request (the fan-out bench raises it)
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
    def post(self, path, body, timeout=None):
        timeout = timeout or self.timeout
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


class TcpProxy:
    """A TCP forwarder on a free loopback port to target (host, port) that the
    test controls: cut() closes every connection and refuses new ones (an
    agent "disconnected" while etcd keeps serving the test), restore() lets
    connections through again."""

    def __init__(self, target_port, target_host="127.0.0.1"):
        import threading
        self.target = (target_host, target_port)
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.lock = threading.Lock()
        self.conns = []
        self.open = True
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        import threading
        while not self.closed:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                if not self.open:
                    c.close()
                    continue
            try:
                u = socket.create_connection(self.target, timeout=5)
            except OSError:
                c.close()
                continue
            u.settimeout(None)
            with self.lock:
                self.conns += [c, u]
            for a, b in ((c, u), (u, c)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a, b):
        try:
            while True:
                d = a.recv(65536)
                if not d:
                    break
                b.sendall(d)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self):
        with self.lock:
            self.open = False
            conns, self.conns = self.conns, []
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
                s.close()
            except OSError:
                pass

    def restore(self):
        with self.lock:
            self.open = True

    def close(self):
        self.closed = True
        self.cut()
        self.sock.close()


class FakeGateway:
    """A stand-in for etcd's JSON gateway that the test controls, speaking
    the real gateway's JSON (base64 keys and values, int64 as strings): kv
    range and put, lease grant, keepalive and timetolive, and a watch
    stream whose messages the test sends with send() (a dict, or raw bytes:
    garbage). kvs maps key -> value (bytes or str); revision is the header
    revision of every answer."""

    def __init__(self):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        outer = self
        self.kvs = {}
        self.revision = 10
        self.cond = threading.Condition()
        self.queue = []          # messages for the watch stream
        self.watch_starts = []   # start_revision of every watch opened
        self.watch_reply = None  # raw bytes answering every new watch instead of created (None: normal)
        self.requests = []

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(n) or b"{}")
                outer.requests.append(self.path)
                if self.path == "/v3/watch":
                    return outer._watch(self, body)
                r = outer._unary(self.path, body)
                data = json.dumps(r).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        ThreadingHTTPServer.daemon_threads = True
        self.srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.port = self.srv.server_address[1]
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def header(self):
        return {"cluster_id": "1", "member_id": "1", "revision": str(self.revision), "raft_term": "2"}

    @staticmethod
    def kv(key, value, mod_revision=5):
        return {"key": b64(key), "value": b64(value), "create_revision": "2",
                "mod_revision": str(mod_revision), "version": "1"}

    def _unary(self, path, body):
        if path == "/v3/kv/range":
            start = unb64(body.get("key"))
            end = unb64(body.get("range_end")) if body.get("range_end") else None
            kvs = []
            for k in sorted(self.kvs):
                kb = k.encode()
                if (end is None and kb == start) or (end is not None and start <= kb < end):
                    kvs.append(self.kv(k, self.kvs[k]))
            r = {"header": self.header(), "count": str(len(kvs))}
            if kvs:
                r["kvs"] = kvs
            return r
        if path == "/v3/kv/put":
            return {"header": self.header()}
        if path == "/v3/lease/grant":
            return {"header": self.header(), "ID": "7587869447018296842", "TTL": str(body.get("TTL", 10))}
        if path == "/v3/lease/keepalive":
            return {"result": {"header": self.header(), "ID": "7587869447018296842", "TTL": "10"}}
        if path == "/v3/lease/timetolive":
            return {"header": self.header(), "ID": "7587869447018296842", "TTL": "9", "grantedTTL": "10"}
        if path == "/v3/lease/revoke":
            return {"header": self.header()}
        return {"header": self.header()}

    def _watch(self, h, body):
        start = int(body.get("create_request", {}).get("start_revision", "0"))
        with self.cond:
            self.watch_starts.append(start)
            gen = len(self.watch_starts)
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()

        def chunk(data):
            h.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            h.wfile.flush()
        try:
            if self.watch_reply is not None:
                chunk(self.watch_reply)
                h.wfile.write(b"0\r\n\r\n")
                h.wfile.flush()
                h.close_connection = True
                return
            chunk(json.dumps({"result": {"header": self.header(), "created": True, "watch_id": "0"}}).encode())
            while True:
                with self.cond:
                    if gen != len(self.watch_starts):
                        h.close_connection = True
                        return  # a newer stream takes the messages
                    if not self.queue:
                        self.cond.wait(0.5)
                        continue
                    items, self.queue = self.queue, []
                for it in items:
                    if it is None:
                        h.close_connection = True
                        return
                    chunk(it if isinstance(it, bytes) else json.dumps(it).encode())
        except OSError:
            h.close_connection = True

    def send(self, msg):
        with self.cond:
            self.queue.append(msg)
            self.cond.notify_all()

    def put_event(self, key, value, revision=None):
        """A watch message with one PUT of key (as etcd sends it: no type)."""
        self.revision = revision or self.revision + 1
        self.send({"result": {"header": self.header(), "events": [
            {"kv": self.kv(key, value, self.revision)}]}})

    def url(self, prefix="/agentd/test"):
        return f"etcd://127.0.0.1:{self.port}{prefix}"

    def close(self):
        self.send(None)
        self.srv.shutdown()
        self.srv.server_close()
