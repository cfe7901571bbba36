# A daemon run under valgrind: first start, a stack change, agentctl traffic,
# a failing recipe, SIGTERM. valgrind's exit status 99 means errors or
# definite leaks. Run by `make check` as its own stage (AGENTD_VALGRIND=1).
import os

import pytest

from conftest import simple_stack, wait_for

pytestmark = pytest.mark.skipif(os.environ.get("AGENTD_VALGRIND") != "1", reason="valgrind stage only")


def test_daemon_is_valgrind_clean(make_agent):
    stack = simple_stack(extra={"deploy": {"shop": {}}})
    stack["agent"]["recipes"]["bad"] = {"command": ["/bin/sh", "-c", "echo oops; exit 3"]}
    stack["agent"]["files"] = {"web": [{"path": "/etc/x.conf", "content": "x\n"}]}
    stack["agent"]["layers"]["web"]["configure"] = ["touch", "files"]
    a = make_agent(stack)
    a.start(valgrind=True)
    a.wait_runs(3, timeout=120)
    stack["opsworks"]["layers"]["web"]["instances"]["app2"] = {"private_ip": "10.0.0.2", "status": "online"}
    a.write_stack(stack)
    a.wait_runs(4, timeout=120)
    for verb in (["status"], ["runs"], ["stack"], ["show", "1"], ["log", "last"], ["plan", "configure"]):
        assert a.ctl(*verb, timeout=60).returncode == 0, verb
    assert a.ctl("run", "deploy", "--app", "shop", "--wait", timeout=120).returncode == 0
    stack["agent"]["layers"]["db"]["configure"] = ["bad"]
    a.write_stack(stack)
    wait_for(lambda: a.status()["state"] == "failed", timeout=120, what="the failed run")
    a.wait_idle(timeout=120)
    rc = a.stop(timeout=120)
    assert rc == 0, a.stderr_text()[-4000:]
