#!/usr/bin/python3
"""A small HTTP server for agentd's tests (Python 3 standard library only).

It stands in for a stack metadata endpoint (the http:// source) and for EC2's
instance metadata service (the imds: source), and can misbehave on demand.

Command line:

    python3 tests/integration/httpfixture.py --port-file F [--mode MODE]
        [--stack FILE] [--user-data FILE] [--instance-id ID] [--region R]
        [--host 127.0.0.1] [--port 0] [--verbose]

binds HOST:PORT (port 0: any free port), writes the bound port number to F
(atomically: a temporary file, then rename) and serves until SIGTERM/SIGINT.

As a module:

    from httpfixture import Fixture
    with Fixture(mode="stack", stack=b'{"opsworks": {}}') as fx:
        fx.url("/stack.json"); fx.set(mode="500"); fx.log(); fx.clear_log()

Modes (for every path outside /_ctl/):

    stack       GET/HEAD serve the stack document with ETag and Last-Modified;
                304 when If-None-Match matches the ETag (or "*"), or, without
                If-None-Match, when If-Modified-Since is not older than
                Last-Modified. Other methods: 405.
    500         every request: HTTP 500.
    hang        accept and read the request, never answer (until the mode
                changes, a reset, or shutdown; then the connection is closed).
    truncate    the stack document with a Content-Length 100 bytes larger than
                what is sent, then close the connection.
    big         a body of big_size bytes (default 16 MiB + 1 MiB) with its
                Content-Length.
    big-stream  the same without Content-Length (delimited by closing), so a
                client only sees the size while reading.
    close       close the connection without answering.
    drip        a chunked body of four lines, "chunk 0\n" .. "chunk 3\n", one
                every 0.5 s (a watch stream, slower than a 1 s deadline).
    304         every request: 304 Not Modified with the validators, whether
                or not it was conditional (a broken cache or server).
    imds        EC2 IMDSv2 (reference/protocols.md):
                PUT /latest/api/token needs X-aws-ec2-metadata-token-ttl-seconds
                  in 1..21600 (else 400); a PUT with X-Forwarded-For gets 403;
                  the answer is a new token, valid for that many seconds.
                GET /latest/user-data, /latest/meta-data/instance-id,
                  /latest/meta-data/placement/region need
                  X-aws-ec2-metadata-token with a known, unexpired token, else
                  401. Other paths: 404. user_data null: 404.
                imds_disabled: 403 on everything.

Control endpoints (never recorded in the log):

    GET  /_ctl/log          JSON list of {"method", "path", "headers"} for every
                            request so far; header names are lower-case.
    POST /_ctl/log/clear    empties the log.
    GET  /_ctl/state        the current settings as JSON.
    POST /_ctl/reset        back to the start-up settings, log cleared, tokens
                            forgotten, hanging requests released.
    POST /_ctl/mode/NAME    switches the mode.
    POST /_ctl/stack        the request body becomes the stack document (new
                            ETag, Last-Modified = now).
    POST /_ctl/set          a JSON object with any of: "mode", "stack" (string),
                            "big_size" (int), "imds_disabled" (bool),
                            "user_data" (string or null), "instance_id",
                            "region", "expire_tokens" (true: every token issued
                            so far is expired at once), "token_ttl_max" (int,
                            caps the TTL granted),
                            and, to serve hostile answers:
                            "etag", "last_modified" (string: served instead
                            of the real validator, any bytes, CR/LF/NUL
                            included; null: the real one), "headers" (list of
                            [name, value] added to every answer), "token"
                            (string: the body of every token PUT answer),
                            "token_ttl_header" (string: the TTL header of the
                            token answer), "max_header_bytes" (int: a request
                            header line longer than this gets 431, as real
                            servers do; default 8192),
                            and, for compressed documents:
                            "content_encoding" ("gzip" or null: mode stack
                            gzips the document as it sends it, with
                            Content-Encoding: gzip, whether or not the client
                            asked for it, as S3 does for an object stored so),
                            "stack_base64", "user_data_base64" (string: the
                            document or user-data as these bytes, base64;
                            binary bodies such as a .json.gz or a gzip bomb).

Every request's log entry also has "status", the status answered.
"""

import argparse
import base64
import email.utils
import gzip
import hashlib
import json
import os
import secrets
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODES = ("stack", "500", "hang", "truncate", "big", "big-stream", "close", "imds", "304", "drip")
DEFAULT_MAX_HEADER_BYTES = 8192  # nginx's and Apache's default for one request header line
DEFAULT_STACK = b'{"opsworks": {"stack": {"name": "fixture"}, "layers": {}}}\n'
DEFAULT_BIG_SIZE = 17 * 1024 * 1024
IMDS_PATHS = {
    "/latest/user-data": "user_data",
    "/latest/meta-data/instance-id": "instance_id",
    "/latest/meta-data/placement/region": "region",
}


class State:
    """Everything a request can see or change, behind one lock."""

    def __init__(self, mode="stack", stack=DEFAULT_STACK, user_data=DEFAULT_STACK,
                 instance_id="i-0123456789abcdef0", region="eu-west-1"):
        self.initial = dict(mode=mode, stack=stack, user_data=user_data,
                            instance_id=instance_id, region=region)
        self.lock = threading.Lock()
        self.log = []
        self.release = threading.Event()
        self.reset()

    def reset(self):
        with self.lock:
            i = self.initial
            self.mode = i["mode"]
            self.set_stack(i["stack"])
            self.big_size = DEFAULT_BIG_SIZE
            self.imds_disabled = False
            self.user_data = i["user_data"]
            self.instance_id = i["instance_id"]
            self.region = i["region"]
            self.token_ttl_max = 21600
            self.etag_override = None
            self.last_modified_override = None
            self.extra_headers = []
            self.token_override = None
            self.token_ttl_header = None
            self.max_header_bytes = DEFAULT_MAX_HEADER_BYTES
            self.content_encoding = None
            self.tokens = {}
            self.log = []
            self._release_hanging()

    def _release_hanging(self):
        self.release.set()
        self.release = threading.Event()

    def set_stack(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.stack = data
        self.etag = '"%s"' % hashlib.sha256(data).hexdigest()[:16]
        self.mtime = int(time.time())
        self.last_modified = email.utils.formatdate(self.mtime, usegmt=True)

    def apply(self, settings):
        with self.lock:
            for k, v in settings.items():
                if k == "mode":
                    if v not in MODES:
                        raise ValueError("unknown mode %r" % v)
                    self.mode = v
                    self._release_hanging()
                elif k == "stack":
                    self.set_stack(v)
                elif k == "big_size":
                    self.big_size = int(v)
                elif k == "imds_disabled":
                    self.imds_disabled = bool(v)
                elif k == "user_data":
                    self.user_data = v.encode() if isinstance(v, str) else v
                elif k in ("instance_id", "region"):
                    setattr(self, k, v)
                elif k == "expire_tokens":
                    if v:
                        self.tokens = {t: 0 for t in self.tokens}
                elif k == "token_ttl_max":
                    self.token_ttl_max = int(v)
                elif k == "etag":
                    self.etag_override = v
                elif k == "last_modified":
                    self.last_modified_override = v
                elif k == "headers":
                    self.extra_headers = [(str(n), str(x)) for n, x in (v or [])]
                elif k == "token":
                    self.token_override = v
                elif k == "token_ttl_header":
                    self.token_ttl_header = v
                elif k == "max_header_bytes":
                    self.max_header_bytes = int(v)
                elif k == "content_encoding":
                    if v not in (None, "gzip"):
                        raise ValueError("content_encoding: gzip or null")
                    self.content_encoding = v
                elif k == "stack_base64":
                    self.set_stack(base64.b64decode(v))
                elif k == "user_data_base64":
                    self.user_data = base64.b64decode(v)
                else:
                    raise ValueError("unknown setting %r" % k)

    def snapshot(self):
        with self.lock:
            return {
                "mode": self.mode, "etag": self.etag, "last_modified": self.last_modified,
                "stack_len": len(self.stack), "big_size": self.big_size,
                "imds_disabled": self.imds_disabled,
                "user_data": None if self.user_data is None else self.user_data.decode("utf-8", "replace"),
                "instance_id": self.instance_id, "region": self.region,
                "tokens": len(self.tokens), "requests": len(self.log),
            }


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real servers do
    server_version = "httpfixture"

    @property
    def st(self):
        return self.server.state

    def log_message(self, fmt, *args):
        if self.server.verbose:
            sys.stderr.write("httpfixture: %s\n" % (fmt % args))

    # -- plumbing --

    def _body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n > 0 else b""

    def _send(self, code, body=b"", headers=(), content_type="text/plain"):
        if getattr(self, "_entry", None) is not None:
            with self.st.lock:
                self._entry["status"] = code
        self.send_response(code)
        if body or code not in (204, 304):
            self.send_header("Content-Type", content_type)
        with self.st.lock:
            extra = list(self.st.extra_headers) if not self.path.startswith("/_ctl/") else []
        for k, v in list(headers) + extra:
            self._raw_header(k, v)
        if code != 304:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)

    def _raw_header(self, name, value):
        # Any bytes, CR, LF and NUL included: hostile answers are the point.
        if not hasattr(self, "_headers_buffer"):
            self._headers_buffer = []
        if isinstance(value, str):
            value = value.encode("latin-1", "replace")
        self._headers_buffer.append(name.encode("latin-1") + b": " + value + b"\r\n")

    def _record(self, body):
        entry = {
            "method": self.command,
            "path": self.path,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "header_bytes": max((len(k) + 2 + len(v) for k, v in self.headers.items()), default=0),
            "body_len": len(body),
            "time": time.time(),
            "status": None,
        }
        with self.st.lock:
            self.st.log.append(entry)
        self._entry = entry

    def _handle(self):
        self._entry = None
        body = self._body()
        if self.path.startswith("/_ctl/"):
            return self._control(body)
        self._record(body)
        with self.st.lock:
            limit = self.st.max_header_bytes
        if self._entry["header_bytes"] > limit:
            return self._send(431, b"Request Header Fields Too Large\n")
        with self.st.lock:
            mode = self.st.mode
        try:
            getattr(self, "_mode_" + mode.replace("-", "_"))(body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _handle

    # -- control --

    def _control(self, body):
        st = self.st
        path = self.path.split("?", 1)[0]
        try:
            if self.command == "GET" and path == "/_ctl/log":
                with st.lock:
                    data = json.dumps(st.log)
                return self._send(200, data.encode(), content_type="application/json")
            if self.command == "GET" and path == "/_ctl/state":
                return self._send(200, json.dumps(st.snapshot()).encode(), content_type="application/json")
            if self.command != "POST":
                return self._send(405, b"control endpoints take POST\n")
            if path == "/_ctl/log/clear":
                with st.lock:
                    st.log = []
            elif path == "/_ctl/reset":
                st.reset()
            elif path.startswith("/_ctl/mode/"):
                st.apply({"mode": path[len("/_ctl/mode/"):]})
            elif path == "/_ctl/stack":
                st.apply({"stack": body})
            elif path == "/_ctl/set":
                st.apply(json.loads(body or b"{}"))
            else:
                return self._send(404, b"unknown control endpoint\n")
        except (ValueError, TypeError) as e:
            return self._send(400, ("%s\n" % e).encode())
        self._send(200, b'{"ok": true}\n', content_type="application/json")

    # -- modes --

    def _mode_stack(self, body):
        if self.command not in ("GET", "HEAD"):
            return self._send(405, b"method not allowed\n")
        with self.st.lock:
            doc, etag, lm, mtime = self.st.stack, self.st.etag, self.st.last_modified, self.st.mtime
            served_etag = self.st.etag_override if self.st.etag_override is not None else etag
            served_lm = self.st.last_modified_override if self.st.last_modified_override is not None else lm
            encoding = self.st.content_encoding
        validators = [("ETag", served_etag), ("Last-Modified", served_lm)]
        inm = self.headers.get("If-None-Match")
        ims = self.headers.get("If-Modified-Since")
        if inm is not None:
            tags = [t.strip() for t in inm.split(",")]
            if "*" in tags or etag in tags or ("W/" + etag) in tags:
                return self._send(304, headers=validators)
        elif ims is not None:
            try:
                when = email.utils.parsedate_to_datetime(ims).timestamp()
            except (TypeError, ValueError):
                when = None
            if when is not None and mtime <= when:
                return self._send(304, headers=validators)
        ctype = "application/json"
        if encoding == "gzip":
            doc = gzip.compress(doc, mtime=0)
            validators.append(("Content-Encoding", "gzip"))
        elif doc[:2] == b"\x1f\x8b":
            ctype = "application/octet-stream"  # a .json.gz file, as a static server labels it
        self._send(200, doc, headers=validators, content_type=ctype)

    def _mode_304(self, body):
        with self.st.lock:
            validators = [("ETag", self.st.etag), ("Last-Modified", self.st.last_modified)]
        self._send(304, headers=validators)

    def _mode_500(self, body):
        self._send(500, b"internal server error (fixture)\n")

    def _mode_hang(self, body):
        with self.st.lock:
            release = self.st.release
        while not release.wait(0.2):
            if self.server.stopping.is_set():
                break
        self.close_connection = True

    def _mode_truncate(self, body):
        with self.st.lock:
            doc = self.st.stack
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(doc) + 100))
        self.end_headers()
        self.wfile.write(doc)
        self.wfile.flush()
        self.close_connection = True

    def _send_big(self, with_length):
        with self.st.lock:
            size = self.st.big_size
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        if with_length:
            self.send_header("Content-Length", str(size))
        else:
            self.send_header("Connection", "close")
        self.end_headers()
        chunk = b"x" * 65536
        left = size
        while left > 0:
            n = min(left, len(chunk))
            self.wfile.write(chunk[:n])
            left -= n
        self.close_connection = True

    def _mode_big(self, body):
        self._send_big(True)

    def _mode_big_stream(self, body):
        self._send_big(False)

    def _mode_drip(self, body):
        self.send_response(200)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for i in range(4):
            if i:
                time.sleep(0.5)
            line = b"chunk %d\n" % i
            self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")

    def _mode_close(self, body):
        self.close_connection = True

    def _mode_imds(self, body):
        st = self.st
        path = self.path.split("?", 1)[0]
        with st.lock:
            disabled = st.imds_disabled
        if disabled:
            return self._send(403, b"Forbidden\n")
        if path == "/latest/api/token":
            if self.command != "PUT":
                return self._send(405, b"Method Not Allowed\n")
            if self.headers.get("X-Forwarded-For") is not None:
                return self._send(403, b"Forbidden\n")
            raw = self.headers.get("X-aws-ec2-metadata-token-ttl-seconds")
            try:
                ttl = int(raw)
            except (TypeError, ValueError):
                ttl = 0
            if not 1 <= ttl <= 21600:
                return self._send(400, b"Bad Request\n")
            token = secrets.token_urlsafe(32)
            with st.lock:
                if st.token_override is not None:
                    token = st.token_override
                ttl = min(ttl, st.token_ttl_max)
                st.tokens[token] = time.monotonic() + ttl
                ttl_header = st.token_ttl_header if st.token_ttl_header is not None else str(ttl)
            return self._send(200, token.encode("latin-1", "replace"),
                              headers=[("X-aws-ec2-metadata-token-ttl-seconds", ttl_header)])
        if self.command not in ("GET", "HEAD"):
            return self._send(405, b"Method Not Allowed\n")
        token = self.headers.get("X-aws-ec2-metadata-token")
        with st.lock:
            expiry = st.tokens.get(token) if token else None
            valid = expiry is not None and expiry > time.monotonic()
            attr = IMDS_PATHS.get(path)
            value = getattr(st, attr) if attr else None
        if not valid:
            return self._send(401, b"Unauthorized\n")
        if value is None:
            return self._send(404, b"Not Found\n")
        if isinstance(value, str):
            value = value.encode()
        self._send(200, value, content_type="application/octet-stream")


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr, state, verbose=False):
        self.state = state
        self.verbose = verbose
        self.stopping = threading.Event()
        super().__init__(addr, Handler)

    def handle_error(self, request, client_address):
        # Clients that hang up (timeouts, aborted big bodies) are expected.
        if self.verbose:
            super().handle_error(request, client_address)


class Fixture:
    """The server on a background thread, for Python tests."""

    def __init__(self, mode="stack", stack=DEFAULT_STACK, host="127.0.0.1", port=0,
                 user_data=DEFAULT_STACK, instance_id="i-0123456789abcdef0", region="eu-west-1",
                 verbose=False):
        if mode not in MODES:
            raise ValueError("unknown mode %r" % mode)
        if isinstance(stack, str):
            stack = stack.encode()
        if isinstance(user_data, str):
            user_data = user_data.encode()
        self.state = State(mode, stack, user_data, instance_id, region)
        self.server = Server((host, port), self.state, verbose)
        self.host = host
        self.port = self.server.server_address[1]
        self.thread = None

    def start(self):
        self.thread = threading.Thread(target=self.server.serve_forever, name="httpfixture", daemon=True)
        self.thread.start()
        return self

    def stop(self):
        self.server.stopping.set()
        with self.state.lock:
            self.state._release_hanging()
        if self.thread:
            self.server.shutdown()
            self.thread.join()
        self.server.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def url(self, path="/stack.json"):
        return "http://%s:%d%s" % (self.host, self.port, path)

    def set(self, **settings):
        self.state.apply(settings)

    def set_stack(self, data):
        self.state.apply({"stack": data})

    def reset(self):
        self.state.reset()

    def log(self):
        with self.state.lock:
            return list(self.state.log)

    def clear_log(self):
        with self.state.lock:
            self.state.log = []


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def main(argv=None):
    ap = argparse.ArgumentParser(description="HTTP/IMDS fixture for agentd tests")
    ap.add_argument("--port-file", required=True, help="write the bound port here")
    ap.add_argument("--mode", default="stack", choices=MODES)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--stack", help="file holding the initial stack document")
    ap.add_argument("--user-data", help="file holding the IMDS user-data")
    ap.add_argument("--instance-id", default="i-0123456789abcdef0")
    ap.add_argument("--region", default="eu-west-1")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args(argv)

    stack = _read(args.stack) if args.stack else DEFAULT_STACK
    user_data = _read(args.user_data) if args.user_data else stack
    fx = Fixture(args.mode, stack, args.host, args.port, user_data, args.instance_id, args.region,
                 args.verbose)

    def on_signal(signum, frame):
        fx.server.stopping.set()
        with fx.state.lock:
            fx.state._release_hanging()
        # shutdown() waits for serve_forever(), which runs on this thread.
        threading.Thread(target=fx.server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write("%d\n" % fx.port)
    os.rename(tmp, args.port_file)

    fx.server.serve_forever()
    fx.server.stopping.set()
    fx.server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
