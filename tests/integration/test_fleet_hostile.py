# Issue 12: a hostile etcd, through a fake JSON gateway that the test
# controls (etcd_fixture.FakeGateway): keys outside the prefix, a stream
# that sends garbage, an oversized stack value. Clear errors, the last good
# stack kept, and back to normal once etcd behaves.
import json

from conftest import wait_for
from etcd_fixture import FakeGateway
from fleet_env import PREFIX, fleet_stack, start_agent, wait_idle_runs


def compacted(g):
    """A watch cancelled for compaction: the agent reads the prefix again."""
    g.send({"result": {"header": g.header(), "canceled": True, "compact_revision": str(g.revision)}})


def test_hostile_gateway(make_agent):
    g = FakeGateway()
    try:
        good = json.dumps(fleet_stack())
        g.kvs[f"{PREFIX}/stack"] = good
        a = start_agent(make_agent, None, "app1", url=g.url(PREFIX))
        runs = wait_idle_runs(a, 3)
        rev = a.status()["source"]["stack_revision"]
        assert g.watch_starts and g.watch_starts[0] == g.revision + 1

        # A key outside the prefix: warned about, ignored.
        g.put_event("/agentd/other/stack", json.dumps(fleet_stack(extra={"x": 1})))
        wait_for(lambda: "outside the prefix" in a.stderr_text(), timeout=5, what="the warning")
        assert a.status()["source"]["error"] is None and a.status()["source"]["stack_revision"] == rev

        # Garbage in the stream, and in every stream opened after it.
        g.watch_reply = b'{"result": {"header": nonsense'
        g.send(b'}}}not json at all{{')
        err = wait_for(lambda: a.status()["source"]["error"], timeout=5, what="the stream's error")
        assert str(g.port) in err, err
        n = len(g.watch_starts)
        wait_for(lambda: len(g.watch_starts) >= n + 2, timeout=5, what="re-opened with backoff")
        assert a.status()["source"]["error"] and a.status()["source"]["stack_revision"] == rev
        g.watch_reply = None
        wait_for(lambda: a.status()["source"]["error"] is None, timeout=10, what="the stream back")

        # A stack over 16 MiB, read by a re-range after a compaction.
        g.kvs[f"{PREFIX}/stack"] = b"{" + b" " * (16 * 1024 * 1024) + b"}"
        g.revision += 1
        compacted(g)
        err = wait_for(lambda: a.status()["source"]["error"], timeout=20, what="the oversized stack named")
        assert f"{PREFIX}/stack" in err and "16777216" in err, (err, a.stderr_text()[-6000:])
        assert a.status()["source"]["stack_revision"] == rev
        # Back to the good one: nothing runs, the error clears.
        g.kvs[f"{PREFIX}/stack"] = good
        g.revision += 1
        compacted(g)
        wait_for(lambda: a.status()["source"]["error"] is None, timeout=10, what="the good stack back")
        s = a.status()
        assert s["source"]["stack_revision"] == rev and s["current_run"] is None and not s["queue"]
        assert len(a.finished_runs()) == len(runs)
        assert a.stop() == 0
    finally:
        g.close()
