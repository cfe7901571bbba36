# The http:// and imds: sources through the real daemon, against a local
# server that speaks HTTP and IMDSv2 (tests/integration/httpfixture.py) and
# misbehaves on demand: 500s, a hang, a truncated body, an oversized body,
# connection refused, and an endpoint that comes back.
import json
import socket

import pytest

from conftest import simple_stack, wait_for
from httpfixture import Fixture


def doc(stack):
    return json.dumps(stack).encode()


@pytest.fixture
def fx():
    f = Fixture(mode="stack", stack=doc(simple_stack())).start()
    yield f
    f.stop()


def http_agent(make_agent, url, **extra):
    conf = {"poll_interval": 1}
    conf.update(extra)
    return make_agent(None, source=url, conf_extra=conf)


def error_of(a):
    return a.status()["source"]["error"]


def test_http_conditional_get_and_recovery(make_agent, fx):
    stack = simple_stack()
    a = http_agent(make_agent, fx.url()).start()
    a.wait_runs(3)
    # The next polls are conditional and answered 304.
    wait_for(lambda: any("if-none-match" in r["headers"] for r in fx.log()), what="a conditional GET")
    assert len(a.runs()) == 3
    rev = a.status()["source"]["stack_revision"]

    fx.set(mode="500")
    wait_for(lambda: error_of(a) and "HTTP 500" in error_of(a), what="the 500 in status")
    assert fx.url() in error_of(a)
    assert a.status()["source"]["stack_revision"] == rev

    stack["opsworks"]["layers"]["web"]["instances"]["app2"] = {"private_ip": "10.0.0.2", "status": "online"}
    fx.set(mode="stack", stack=json.dumps(stack))
    a.wait_runs(4)
    wait_for(lambda: error_of(a) is None, what="the error to clear")
    assert a.runs()[0]["event"] == "configure"


@pytest.mark.parametrize("mode,words", [
    ("hang", "imed out"),
    ("truncate", "transfer closed"),
    ("big", "larger than"),
    ("big-stream", "larger than"),
    ("close", "Empty reply"),
])
def test_http_misbehaving_server_keeps_last_good(make_agent, fx, mode, words):
    a = http_agent(make_agent, fx.url()).start()
    a.wait_runs(3)
    rev = a.status()["source"]["stack_revision"]
    fx.set(mode=mode)
    wait_for(lambda: error_of(a) and words in error_of(a), timeout=20, what=f"the {mode} error")
    st = a.status()
    assert st["source"]["stack_revision"] == rev and len(a.runs()) == 3
    # The agent itself still answers promptly while the server misbehaves.
    assert a.ctl("status").returncode == 0
    fx.set(mode="stack")
    fx.set_stack(doc(simple_stack(extra={"new": 1})))
    a.wait_runs(4, timeout=30)


def test_http_connection_refused_then_endpoint_comes_back(make_agent):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    url = f"http://127.0.0.1:{port}/stack.json"
    a = http_agent(make_agent, url).start()
    wait_for(lambda: error_of(a) and "refused" in error_of(a).lower(), what="connection refused")
    assert a.runs() == []
    f = Fixture(mode="stack", stack=doc(simple_stack()), port=port).start()
    try:
        a.wait_runs(3, timeout=30)
        assert error_of(a) is None
    finally:
        f.stop()


@pytest.fixture
def imds():
    f = Fixture(mode="imds", user_data=doc(simple_stack()), instance_id="i-0abc", region="eu-west-1").start()
    yield f
    f.stop()


def imds_agent(make_agent, imds):
    return make_agent(None, source="imds:", conf_extra={"poll_interval": 1, "imds_endpoint": imds.url("")})


def test_imds_token_and_metadata(make_agent, imds):
    a = imds_agent(make_agent, imds).start()
    a.wait_runs(3)
    st = a.status()
    assert st["source"]["instance_id"] == "i-0abc" and st["source"]["region"] == "eu-west-1"
    log = imds.log()
    puts = [r for r in log if r["method"] == "PUT"]
    assert puts and puts[0]["path"] == "/latest/api/token"
    assert 1 <= int(puts[0]["headers"]["x-aws-ec2-metadata-token-ttl-seconds"]) <= 21600
    gets = [r for r in log if r["method"] == "GET"]
    assert gets and all("x-aws-ec2-metadata-token" in r["headers"] for r in gets)
    # Instance id and region are read once, user-data on every poll.
    wait_for(lambda: sum(r["path"] == "/latest/user-data" for r in imds.log()) >= 3, what="polls")
    assert sum(r["path"] == "/latest/meta-data/instance-id" for r in imds.log()) == 1
    # Expired tokens: 401, a new token, the GET again; nothing fails.
    n_puts = len([r for r in imds.log() if r["method"] == "PUT"])
    imds.set(expire_tokens=True)
    wait_for(lambda: len([r for r in imds.log() if r["method"] == "PUT"]) > n_puts, what="a new token")
    imds.set(user_data=json.dumps(simple_stack(extra={"v": 2})))
    a.wait_runs(4)
    assert error_of(a) is None


def test_imds_403_stops_polling_until_reload(make_agent, imds):
    a = imds_agent(make_agent, imds).start()
    a.wait_runs(3)
    imds.set(imds_disabled=True)
    wait_for(lambda: error_of(a) and "403" in error_of(a), what="the 403 error")
    imds.clear_log()
    # Three poll intervals pass without a single request...
    deadline_runs = len(a.runs())
    import time
    time.sleep(3.5)  # absence of requests can only be shown by waiting (not a timing assertion)
    assert imds.log() == [] and len(a.runs()) == deadline_runs
    # ... until an operator asks.
    imds.set(imds_disabled=False, user_data=json.dumps(simple_stack(extra={"v": 3})))
    a.ctl("reload", check=0)
    a.wait_runs(4)
    wait_for(lambda: error_of(a) is None, what="the error to clear")


def test_imds_404_no_user_data(make_agent, imds):
    imds.set(user_data=None)
    a = imds_agent(make_agent, imds).start()
    wait_for(lambda: error_of(a) and "no user-data" in error_of(a), what="no user-data")
    assert a.runs() == []
    imds.set(user_data=json.dumps(simple_stack()))
    a.wait_runs(3, timeout=30)


# ---- issue 9, kind 5: a source poisoned by what a server sent, or left with a stale error ----

def statuses(fx):
    return [r.get("status") for r in fx.log()]


def test_http_huge_etag_no_431_loop(make_agent, fx):
    """One 200 with a 90 KB ETag made every later request fail with 431, reload included."""
    fx.set(etag='"' + "e" * 90000 + '"')
    a = http_agent(make_agent, fx.url()).start()
    a.wait_runs(3)
    n = len(fx.log())
    wait_for(lambda: len(fx.log()) >= n + 2, what="two more polls")
    assert error_of(a) is None
    assert 431 not in statuses(fx)
    assert all("if-none-match" not in r["headers"] for r in fx.log())
    # The server comes to its senses: the next document is picked up, on a
    # poll and on a reload.
    fx.set(etag=None)
    fx.set_stack(doc(simple_stack(extra={"v": 2})))
    a.wait_runs(4)
    fx.set_stack(doc(simple_stack(extra={"v": 3})))
    a.ctl("reload", check=0)
    a.wait_runs(5)
    assert error_of(a) is None and 431 not in statuses(fx)


@pytest.mark.parametrize("key,value", [
    ("etag", '"a\rb"'),
    ("etag", '"a\x01b"'),
    ("last_modified", "Mon, 30 Nov 2026 12:00:00 GMT " + "x" * 20000),
    ("last_modified", "Mon, 30 Nov 2026\r 12:00:00 GMT"),
], ids=["etag-cr", "etag-ctl", "last-modified-20k", "last-modified-cr"])
def test_http_hostile_validator_not_sent_back(make_agent, fx, key, value):
    fx.set(**{key: value})
    a = http_agent(make_agent, fx.url()).start()
    a.wait_runs(3)
    n = len(fx.log())
    wait_for(lambda: len(fx.log()) >= n + 2, what="two more polls")
    assert error_of(a) is None
    for r in fx.log():
        h = r["headers"]
        assert "\r" not in h.get("if-none-match", "") and "\x01" not in h.get("if-none-match", "")
        assert len(h.get("if-modified-since", "")) < 64
    assert 431 not in statuses(fx)
    fx.set(**{key: None})
    fx.set_stack(doc(simple_stack(extra={"v": 2})))
    a.wait_runs(4)


@pytest.mark.parametrize("value", ['"a\nb"', '"a\x00b"'], ids=["etag-lf", "etag-nul"])
def test_http_etag_lf_nul_is_an_error_then_recovers(make_agent, fx, value):
    """libcurl refuses such a header line: the answer is an error, never a stored validator."""
    fx.set(etag=value)
    a = http_agent(make_agent, fx.url()).start()
    wait_for(lambda: error_of(a), what="the error")
    assert fx.url() in error_of(a)
    fx.set(etag=None)
    a.wait_runs(3)
    wait_for(lambda: error_of(a) is None, what="the error to clear")
    assert all("if-none-match" not in r["headers"] or r["headers"]["if-none-match"].endswith('"')
               for r in fx.log())


@pytest.mark.parametrize("then", ["stack", "304"])
def test_http_500_then_304s_clears_error(make_agent, fx, then):
    """A 500 followed by endless 304s left 'HTTP 500' in status for good."""
    a = http_agent(make_agent, fx.url()).start()
    a.wait_runs(3)
    rev = a.status()["source"]["stack_revision"]
    fx.set(mode="500")
    wait_for(lambda: error_of(a) and "HTTP 500" in error_of(a), what="the 500 in status")
    fx.set(mode=then)
    wait_for(lambda: error_of(a) is None, what="the error to clear")
    assert 304 in statuses(fx)
    st = a.status()
    assert st["source"]["stack_revision"] == rev and len(a.runs()) == 3


def test_http_304_to_first_request_is_an_error(make_agent, fx):
    """A 304 to the first, unconditional request left no stack and no error."""
    fx.set(mode="304")
    a = http_agent(make_agent, fx.url()).start()
    wait_for(lambda: error_of(a) and "304" in error_of(a), what="the 304 error")
    assert fx.url() in error_of(a)
    assert a.status()["source"]["stack_revision"] is None and a.runs() == []
    # Asked again without validators, and a later 200 is applied.
    wait_for(lambda: len(fx.log()) >= 2, what="another request")
    assert all("if-none-match" not in r["headers"] for r in fx.log())
    fx.set(mode="stack")
    a.wait_runs(3)
    wait_for(lambda: error_of(a) is None, what="the error to clear")


def test_http_rejected_stack_stays_rejected_after_500_and_304(make_agent, fx):
    """A 304 confirms the document we have; if that one was rejected, status keeps saying why."""
    a = http_agent(make_agent, fx.url()).start()
    a.wait_runs(3)
    fx.set_stack(b'{"opsworks": 1}')
    wait_for(lambda: error_of(a) and "stack rejected" in error_of(a), what="the rejection")
    fx.set(mode="500")
    wait_for(lambda: error_of(a) and "HTTP 500" in error_of(a), what="the 500 in status")
    fx.set(mode="stack")
    wait_for(lambda: error_of(a) and "stack rejected" in error_of(a), what="the rejection again")
    fx.set_stack(doc(simple_stack(extra={"v": 2})))
    a.wait_runs(4)
    wait_for(lambda: error_of(a) is None, what="the error to clear")


def test_http_4xx_forgets_validators(make_agent, fx):
    a = http_agent(make_agent, fx.url()).start()
    a.wait_runs(3)
    # The conditional GET's If-Modified-Since line is longer than 30 bytes.
    fx.set(max_header_bytes=30)
    wait_for(lambda: 431 in statuses(fx), what="a 431")
    log = fx.log()
    i = statuses(fx).index(431)
    wait_for(lambda: len(fx.log()) > i + 1, what="the next request")
    nxt = fx.log()[i + 1]
    assert "if-none-match" not in nxt["headers"] and "if-modified-since" not in nxt["headers"]
    assert nxt["status"] == 200
    wait_for(lambda: error_of(a) is None, what="the error to clear")
    assert log


# ---- imds: the same kind ----

def test_imds_granted_token_ttl_is_used(make_agent, imds):
    """A token TTL shorter than asked: renewed in time, no 401 on every poll."""
    imds.set(token_ttl_max=4)
    a = imds_agent(make_agent, imds).start()
    a.wait_runs(3)
    wait_for(lambda: sum(r["path"] == "/latest/user-data" for r in imds.log()) >= 6, timeout=20,
             what="six polls")
    assert 401 not in statuses(imds)
    assert sum(r["method"] == "PUT" for r in imds.log()) >= 2
    assert error_of(a) is None


@pytest.mark.parametrize("ttl", ["99999999999999999999999", "-1", "0", "abc"])
def test_imds_hostile_token_ttl(make_agent, imds, ttl):
    imds.set(token_ttl_header=ttl)
    a = imds_agent(make_agent, imds).start()
    a.wait_runs(3)
    wait_for(lambda: sum(r["path"] == "/latest/user-data" for r in imds.log()) >= 2, what="two polls")
    assert error_of(a) is None
    assert sum(r["method"] == "PUT" for r in imds.log()) == 1


def test_imds_oversized_token_refused_then_recovers(make_agent, imds):
    imds.set(token="t" * 2000)
    a = imds_agent(make_agent, imds).start()
    wait_for(lambda: error_of(a) and "/latest/api/token" in error_of(a), what="the token error")
    assert not any(r["path"] == "/latest/user-data" for r in imds.log())
    assert a.runs() == []
    imds.set(token=None)
    a.wait_runs(3)
    wait_for(lambda: error_of(a) is None, what="the error to clear")


def test_imds_hostile_metadata_refused(make_agent, imds):
    imds.set(instance_id='i-0abc"\\/x', region="r" * 300)
    a = imds_agent(make_agent, imds).start()
    wait_for(lambda: error_of(a) and "malformed" in error_of(a), what="the error")
    assert "instance_id" not in a.status()["source"]
    imds.set(instance_id="i-0abc")
    wait_for(lambda: error_of(a) and "region" in error_of(a), what="the region error")
    imds.set(region="eu-west-1")
    a.wait_runs(3)
    st = a.status()["source"]
    assert st["instance_id"] == "i-0abc" and st["region"] == "eu-west-1" and st["error"] is None


def test_imds_huge_header_ignored(make_agent, imds):
    imds.set(headers=[["X-Junk", "j" * 90000]])
    a = imds_agent(make_agent, imds).start()
    a.wait_runs(3)
    assert error_of(a) is None


# ---- issue 11, kind 4: sources that real endpoints produce (design.md §4: gzip) ----

import gzip as gzip_mod  # noqa: E402

BOMB = 20 * 1024 * 1024  # zeros: about 20 KiB compressed, over the 16 MiB cap decompressed


def gz(data):
    return gzip_mod.compress(data, mtime=0)


def test_http_content_encoding_gzip(make_agent, fx):
    """A server that gzips the stack (Content-Encoding: gzip) gave "invalid token at line 1"."""
    fx.set(content_encoding="gzip")
    a = http_agent(make_agent, fx.url()).start()
    a.wait_runs(3)
    assert error_of(a) is None
    assert any("gzip" in r["headers"].get("accept-encoding", "") for r in fx.log())
    # Changes keep coming through, and the polls stay conditional.
    fx.set_stack(doc(simple_stack(extra={"new": 1})))
    a.wait_runs(4)
    wait_for(lambda: any("if-none-match" in r["headers"] for r in fx.log()), what="a conditional GET")
    assert error_of(a) is None


def test_http_body_is_gzip_file(make_agent, fx):
    """A stack.json.gz served as it is on disk (application/octet-stream, no Content-Encoding)."""
    fx.set_stack(gz(doc(simple_stack())))
    a = http_agent(make_agent, fx.url("/stack.json.gz")).start()
    a.wait_runs(3)
    assert error_of(a) is None
    # Several members (cat a.gz b.gz) make one document.
    body = doc(simple_stack(extra={"m": 2}))
    fx.set_stack(gz(body[:10]) + gz(body[10:]))
    a.wait_runs(4)
    assert error_of(a) is None


@pytest.mark.parametrize("how", ["content-encoding", "raw"])
def test_http_gzip_bomb_refused_last_good_kept(make_agent, fx, how):
    a = http_agent(make_agent, fx.url()).start()
    a.wait_runs(3)
    rev = a.status()["source"]["stack_revision"]
    if how == "raw":
        fx.set_stack(gz(b"\0" * BOMB))
    else:
        fx.set(content_encoding="gzip")
        fx.set_stack(b" " * BOMB)
    wait_for(lambda: error_of(a) and "larger than" in error_of(a), what="the bomb refused")
    assert fx.url() in error_of(a) and "16777216" in error_of(a)
    st = a.status()
    assert st["source"]["stack_revision"] == rev and len(a.runs()) == 3
    assert a.proc.poll() is None
    # The next good document is taken.
    fx.set_stack(doc(simple_stack(extra={"after": 1})))
    a.wait_runs(4)
    wait_for(lambda: error_of(a) is None, what="the error to clear")


@pytest.mark.parametrize("bad", [
    b"\x1f\x8bnot gzip at all",
    "truncated",
    "trailing",
])
def test_http_broken_gzip_refused(make_agent, fx, bad):
    good = gz(doc(simple_stack(extra={"g": 1})))
    if bad == "truncated":
        bad = good[:-12]
    elif bad == "trailing":
        bad = good + b"garbage"
    a = http_agent(make_agent, fx.url()).start()
    a.wait_runs(3)
    rev = a.status()["source"]["stack_revision"]
    fx.set_stack(bad)
    wait_for(lambda: error_of(a) and "gzip" in error_of(a), what="the gzip error")
    assert fx.url() in error_of(a)
    assert a.status()["source"]["stack_revision"] == rev
    fx.set_stack(good)
    a.wait_runs(4)
    wait_for(lambda: error_of(a) is None, what="the error to clear")


def test_imds_gzip_user_data(make_agent, imds):
    """User-data gzipped to fit EC2's 16 KiB limit: IMDS serves the bytes, no Content-Encoding."""
    imds.set(user_data=gz(doc(simple_stack())))
    a = imds_agent(make_agent, imds).start()
    a.wait_runs(3)
    assert error_of(a) is None
    imds.set(user_data=gz(doc(simple_stack(extra={"v": 2}))))
    a.wait_runs(4)
    assert error_of(a) is None


def test_imds_gzip_bomb_refused(make_agent, imds):
    a = imds_agent(make_agent, imds).start()
    a.wait_runs(3)
    rev = a.status()["source"]["stack_revision"]
    imds.set(user_data=gz(b"\0" * BOMB))
    wait_for(lambda: error_of(a) and "larger than" in error_of(a), what="the bomb refused")
    assert imds.url("/latest/user-data") in error_of(a)
    assert a.status()["source"]["stack_revision"] == rev and len(a.runs()) == 3
    imds.set(user_data=gz(doc(simple_stack(extra={"v": 3}))))
    a.wait_runs(4)
    wait_for(lambda: error_of(a) is None, what="the error to clear")
