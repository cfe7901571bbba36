# Under systemd agentd logs to the journal with structured fields. Without
# systemd as PID 1, the test gives agentd a journal socket of its own inside
# a mount namespace (journal_ns.py) and reads the native-protocol datagrams.
import json
import os
import shutil
import subprocess

import pytest

from conftest import AGENTCTL, AGENTD, HERE, simple_stack


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root and unshare")
def test_structured_journal_fields(make_agent):
    a = make_agent(simple_stack())
    r = subprocess.run(["unshare", "-m", "/usr/bin/python3", os.path.join(HERE, "journal_ns.py"), a.tmp, AGENTD,
                        AGENTCTL, a.conf_path, a.sock], capture_output=True, text=True, timeout=90)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    msgs = out["messages"]
    assert msgs, out["stderr"]
    # Nothing went to stderr: the journal took it all.
    assert out["stderr"] == ""
    fields = [dict(l.split("=", 1) for l in m.split("\n") if "=" in l) for m in msgs]
    started = [f for f in fields if f.get("MESSAGE", "").startswith("Run 1 started")]
    assert started and started[0]["RUN_ID"] == "1" and started[0]["EVENT"] == "setup"
    assert started[0]["SYSLOG_IDENTIFIER"] == "agentd" and started[0]["PRIORITY"] == "6"
    step = [f for f in fields if f.get("RUN_ID") == "3" and f.get("STEP")]
    assert step and step[0]["EVENT"] == "deploy"
    plain = [f for f in fields if f.get("MESSAGE", "").startswith("agentd 0.1.0 started")]
    assert plain and plain[0]["RUN_ID"] == ""
