"""A local EC2 Query API endpoint and an IMDS stand-in for agentd's tests.

Ec2Fixture speaks the EC2 Query API (Version 2016-11-15) the way EC2 does:
  - every request's SigV4 signature is checked with botocore (an independent
    implementation): the request is rebuilt from the received method, URL,
    headers named in SignedHeaders and body, signed again with
    botocore.auth.SigV4Auth for service ec2 and the fixture's region at the
    request's X-Amz-Date, and compared with the Authorization header; a bad
    one gets AuthFailure XML with HTTP 401;
  - snapshots live in memory (self.snapshots, a list of dicts that tests may
    age: startTime, state); DescribeSnapshots answers pages of `page` (2)
    with NextToken; CreateSnapshot makes a `pending` snapshot (or
    `completed`, with complete_new); DeleteSnapshot removes one, except the
    ids in in_use (InvalidSnapshot.InUse);
  - throttle = N: the next N requests get RequestLimitExceeded (HTTP 503);
  - stuck_token = "T": every DescribeSnapshots page answers nextToken T (a
    broken endpoint whose pagination never ends);
  - create_gate: a threading.Event CreateSnapshot waits on (freeze tests);
    hang_create: CreateSnapshot never answers;
  - counts[Action] and requests (Action, params, headers) record what came.

ImdsFixture: IMDSv2 token PUT, iam/security-credentials/ -> role name,
/<role> -> AccessKeyId, SecretAccessKey, Token, Expiration; placement/region.
"""
import datetime
import http.server
import threading
import urllib.parse
import uuid
from xml.sax.saxutils import escape

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

NS = "http://ec2.amazonaws.com/doc/2016-11-15/"


def iso(dt):
    return dt.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def error_xml(code, message):
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error><Code>{escape(code)}</Code>'
            f"<Message>{escape(message)}</Message></Error></Errors>"
            f"<RequestID>{uuid.uuid4()}</RequestID></Response>").encode()


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class Ec2Fixture:
    def __init__(self, region="eu-west-1", keys=None, page=2):
        # keys: access key id -> (secret, session token or None)
        self.region = region
        self.keys = keys or {"AKIDTEST": ("s3cr3t/Key+With=Chars", None)}
        self.page = page
        self.snapshots = []
        self.in_use = set()
        self.throttle = 0
        self.stuck_token = None
        self.complete_new = False
        self.create_gate = None
        self.hang_create = False
        self.counts = {}
        self.requests = []
        self.auth_failures = 0
        self.lock = threading.Lock()
        self._tokens = {}
        fx = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body in one segment, no Nagle: else each answer
            # waits ~40 ms for the client's delayed ACK, which the figures
            # would charge to agentd.
            disable_nagle_algorithm = True
            wbufsize = 1 << 16

            def log_message(self, *a):
                pass

            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(n)
                status, reply = fx._handle(self, body)
                if reply is None:
                    return
                self.send_response(status)
                self.send_header("Content-Type", "text/xml;charset=UTF-8")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.hang_create = False
        if self.create_gate:
            self.create_gate.set()
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    # ---- signature

    def _verify(self, h, body):
        auth = h.headers.get("Authorization", "")
        if not auth.startswith("AWS4-HMAC-SHA256 "):
            return "no AWS4-HMAC-SHA256 Authorization header"
        parts = dict(p.strip().split("=", 1) for p in auth[len("AWS4-HMAC-SHA256 "):].split(","))
        cred = parts.get("Credential", "").split("/")
        if len(cred) != 5 or cred[2] != self.region or cred[3] != "ec2" or cred[4] != "aws4_request":
            return f"bad credential scope {parts.get('Credential')!r}"
        key = cred[0]
        if key not in self.keys:
            return "unknown access key"
        secret, token = self.keys[key]
        signed = parts.get("SignedHeaders", "").split(";")
        if "host" not in signed or "x-amz-date" not in signed:
            return "host and x-amz-date must be signed"
        if token is not None and ("x-amz-security-token" not in signed or
                                  h.headers.get("X-Amz-Security-Token") != token):
            return "the session token is missing, wrong or unsigned"
        amz_date = h.headers.get("X-Amz-Date", "")
        req = AWSRequest(method=h.command, url=f"http://{h.headers.get('Host')}{h.path}", data=body,
                         headers={k: h.headers.get(k) for k in signed if h.headers.get(k) is not None})
        ts = datetime.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ")
        auth4 = SigV4Auth(Credentials(key, secret, token), "ec2", self.region)
        req.context["timestamp"] = amz_date
        # botocore signs the headers it is given (minus its own blacklist);
        # the request holds exactly the signed ones.
        canonical = auth4.canonical_request(req)
        sts = auth4.string_to_sign(req, canonical)
        want = auth4.signature(sts, req)
        if abs((datetime.datetime.utcnow() - ts).total_seconds()) > 300:
            return "request time too skewed"
        if want != parts.get("Signature"):
            return "signature mismatch"
        return None

    # ---- actions

    def _handle(self, h, body):
        params = dict(urllib.parse.parse_qsl(body.decode(), keep_blank_values=True, strict_parsing=False))
        action = params.get("Action", "?")
        with self.lock:
            self.counts[action] = self.counts.get(action, 0) + 1
            self.requests.append((action, params, dict(h.headers)))
        if h.path != "/" or "?" in h.path:
            return 400, error_xml("InvalidParameter", "query strings are not expected")
        bad = self._verify(h, body)
        if bad:
            with self.lock:
                self.auth_failures += 1
            return 401, error_xml("AuthFailure", "AWS was not able to validate the provided access credentials")
        if params.get("Version") != "2016-11-15":
            return 400, error_xml("InvalidParameterValue", "Version")
        with self.lock:
            if self.throttle > 0:
                self.throttle -= 1
                return 503, error_xml("RequestLimitExceeded", "Request limit exceeded.")
        fn = getattr(self, "_" + action, None)
        if not fn:
            return 400, error_xml("InvalidAction", f"The action {action} is not valid for this web service.")
        return fn(h, params)

    def _item(self, s):
        tags = "".join(f"<item><key>{escape(k)}</key><value>{escape(v)}</value></item>" for k, v in s["tags"].items())
        return (f"<item><snapshotId>{s['id']}</snapshotId><volumeId>{s['volume']}</volumeId>"
                f"<status>{s['state']}</status><startTime>{iso(s['start'])}</startTime><progress>100%</progress>"
                f"<ownerId>123456789012</ownerId><volumeSize>8</volumeSize>"
                f"<description>{escape(s['description'])}</description><encrypted>false</encrypted>"
                f"<tagSet>{tags}</tagSet></item>")

    def _DescribeSnapshots(self, h, p):
        if p.get("Owner.1") != "self":
            return 400, error_xml("InvalidParameterValue", "Owner.1 must be self here")
        vols = set()
        i = 1
        while f"Filter.{i}.Name" in p:
            if p[f"Filter.{i}.Name"] == "volume-id":
                j = 1
                while f"Filter.{i}.Value.{j}" in p:
                    vols.add(p[f"Filter.{i}.Value.{j}"])
                    j += 1
            i += 1
        with self.lock:
            match = [s for s in self.snapshots if not vols or s["volume"] in vols]
        if self.stuck_token is not None:
            page, nxt = match[:self.page], f"<nextToken>{escape(self.stuck_token)}</nextToken>"
        else:
            start = int(p.get("NextToken", "0") or "0")
            page = match[start:start + self.page]
            nxt = f"<nextToken>{start + self.page}</nextToken>" if start + self.page < len(match) else ""
        body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<DescribeSnapshotsResponse xmlns="{NS}">'
                f"<requestId>{uuid.uuid4()}</requestId><snapshotSet>{''.join(self._item(s) for s in page)}"
                f"</snapshotSet>{nxt}</DescribeSnapshotsResponse>")
        return 200, body.encode()

    def _CreateSnapshot(self, h, p):
        if self.create_gate is not None:
            self.create_gate.wait(60)
        while self.hang_create:
            threading.Event().wait(0.05)
        tags = {}
        i = 1
        if p.get("TagSpecification.1.ResourceType") != "snapshot":
            return 400, error_xml("InvalidParameterValue", "TagSpecification.1.ResourceType")
        while f"TagSpecification.1.Tag.{i}.Key" in p:
            tags[p[f"TagSpecification.1.Tag.{i}.Key"]] = p.get(f"TagSpecification.1.Tag.{i}.Value", "")
            i += 1
        s = self.add(p["VolumeId"], state="completed" if self.complete_new else "pending",
                     description=p.get("Description", ""), tags=tags)
        body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<CreateSnapshotResponse xmlns="{NS}">'
                f"<requestId>{uuid.uuid4()}</requestId><snapshotId>{s['id']}</snapshotId>"
                f"<volumeId>{s['volume']}</volumeId><status>{s['state']}</status>"
                f"<startTime>{iso(s['start'])}</startTime><progress></progress><ownerId>123456789012</ownerId>"
                f"<volumeSize>8</volumeSize><description>{escape(s['description'])}</description>"
                f"<encrypted>false</encrypted></CreateSnapshotResponse>")
        return 200, body.encode()

    def _DeleteSnapshot(self, h, p):
        sid = p.get("SnapshotId")
        if sid in self.in_use:
            return 400, error_xml("InvalidSnapshot.InUse", f"The snapshot {sid} is currently in use by ami-0123")
        with self.lock:
            before = len(self.snapshots)
            self.snapshots = [s for s in self.snapshots if s["id"] != sid]
            if len(self.snapshots) == before:
                return 400, error_xml("InvalidSnapshot.NotFound", f"The snapshot '{sid}' does not exist.")
        return 200, (f'<DeleteSnapshotResponse xmlns="{NS}"><requestId>{uuid.uuid4()}</requestId>'
                     f"<return>true</return></DeleteSnapshotResponse>").encode()

    # ---- helpers for tests

    def add(self, volume, state="completed", start=None, description="", tags=None):
        with self.lock:
            s = {"id": "snap-" + uuid.uuid4().hex[:17], "volume": volume, "state": state,
                 "start": start or datetime.datetime.utcnow(), "description": description, "tags": dict(tags or {})}
            self.snapshots.append(s)
            return s

    def of(self, volume):
        with self.lock:
            return [s for s in self.snapshots if s["volume"] == volume]

    def complete_all(self):
        with self.lock:
            for s in self.snapshots:
                s["state"] = "completed"

    def age_all(self, delta):
        with self.lock:
            for s in self.snapshots:
                s["start"] = s["start"] - delta

    def reset_counts(self):
        with self.lock:
            self.counts = {}
            self.requests = []
            self.auth_failures = 0


class ImdsFixture:
    """IMDSv2 with one role: the token PUT, then GETs with the token."""

    def __init__(self, role="agentd-role", creds=None, region="eu-west-1", expires_in=6 * 3600):
        self.role = role  # None: no role (404 on the listing, as IMDS answers)
        self.expires_in = expires_in
        self.creds = creds  # (key, secret, token)
        self.region = region
        self.token = "imds-token-" + uuid.uuid4().hex
        self.counts = {}
        fx = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body in one segment, no Nagle: else each answer
            # waits ~40 ms for the client's delayed ACK, which the figures
            # would charge to agentd.
            disable_nagle_algorithm = True
            wbufsize = 1 << 16

            def log_message(self, *a):
                pass

            def _send(self, status, body):
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_PUT(self):
                fx.counts[self.path] = fx.counts.get(self.path, 0) + 1
                n = int(self.headers.get("Content-Length", "0"))
                self.rfile.read(n)
                if self.path != "/latest/api/token" or not self.headers.get("X-aws-ec2-metadata-token-ttl-seconds"):
                    return self._send(400, b"")
                self._send(200, fx.token.encode())

            def do_GET(self):
                fx.counts[self.path] = fx.counts.get(self.path, 0) + 1
                if self.headers.get("X-aws-ec2-metadata-token") != fx.token:
                    return self._send(401, b"")
                base = "/latest/meta-data/iam/security-credentials/"
                if self.path == base:
                    return self._send(200, (fx.role + "\n").encode()) if fx.role else self._send(404, b"")
                if fx.role and self.path == base + fx.role:
                    k, s, t = fx.creds
                    exp = iso(datetime.datetime.utcnow() + datetime.timedelta(seconds=fx.expires_in))
                    doc = ('{"Code": "Success", "LastUpdated": "%s", "Type": "AWS-HMAC", "AccessKeyId": "%s", '
                           '"SecretAccessKey": "%s", "Token": "%s", "Expiration": "%s"}'
                           % (iso(datetime.datetime.utcnow()), k, s, t, exp))
                    return self._send(200, doc.encode())
                if self.path == "/latest/meta-data/placement/region":
                    return self._send(200, fx.region.encode())
                self._send(404, b"")

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()
