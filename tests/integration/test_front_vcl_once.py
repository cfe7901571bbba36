# Issue 12, item 9: varnish compiles each VCL once. The VCL's check is
# `varnishadm vcl.load` into the running varnishd (which refuses a bad VCL and
# keeps its active one); `varnishd -C` checks only when varnishadm cannot reach
# varnishd. A real varnishd on a private -n directory and free ports; the
# varnishd and varnishadm commands are wrappers that log their arguments, so
# the tests count the compiles.
import os
import shutil
import signal
import subprocess
import tempfile

import pytest

from conftest import Agent, wait_for
from front_env import free_port, stack_doc

IP = "127.0.0.2"
# Only the varnish recipe: its runs are all these tests look at.
VARNISH_ONLY = {"agent": {"layers": {"lb": {"setup": [], "configure": ["varnish"], "deploy": []}}}}
VCL = "etc/varnish/default.vcl"


def doc(online, addresses=None):
    return stack_doc(online, extra=VARNISH_ONLY, addresses=addresses)


def wrapper(path, real, log):
    with open(path, "w") as f:
        f.write(f"#!/bin/sh\necho \"$*\" >> '{log}'\nexec {real} \"$@\"\n")
    os.chmod(path, 0o755)


class Env:
    """varnishd (optional) and an agentd whose varnish commands are logged."""

    def __init__(self, varnishd):
        self.tmp = tempfile.mkdtemp(prefix="agentd-vcl-")
        os.chmod(self.tmp, 0o755)
        t = self.tmp
        self.proc = None
        self.agent = None
        self.adm_port = free_port(IP)
        self.secret = os.path.join(t, "secret")
        with open(self.secret, "w") as f:
            f.write("agentd-vcl-once-secret\n")
        os.chmod(self.secret, 0o600)
        self.adm_log, self.vd_log = os.path.join(t, "varnishadm.log"), os.path.join(t, "varnishd.log")
        wrapper(os.path.join(t, "varnishadm"), "varnishadm", self.adm_log)
        wrapper(os.path.join(t, "varnishd"), "varnishd", self.vd_log)
        self.varnishadm = ["varnishadm", "-T", f"{IP}:{self.adm_port}", "-S", self.secret]
        if varnishd:
            self.start_varnishd()
        self.conf = {
            "instance": "lb1",
            "haproxy_address": f"{IP}:{free_port(IP)}",
            "varnishd_command": [os.path.join(t, "varnishd"), "-n", os.path.join(t, "varnish-check")],
            "varnishadm_command": [os.path.join(t, "varnishadm")] + self.varnishadm[1:],
            "retry_min": 60,
            "retry_max": 60,
        }

    def start_varnishd(self):
        t = self.tmp
        boot = os.path.join(t, "boot.vcl")
        with open(boot, "w") as f:
            f.write(f'vcl 4.1;\nbackend default {{ .host = "{IP}"; .port = "9"; }}\n')
        self.proc = subprocess.Popen(
            ["varnishd", "-F", "-n", os.path.join(t, "varnish"), "-a", f"{IP}:{free_port(IP)}",
             "-T", f"{IP}:{self.adm_port}", "-S", self.secret, "-f", boot, "-s", "malloc,16m"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        wait_for(lambda: subprocess.run(self.varnishadm + ["ping"], capture_output=True).returncode == 0,
                 timeout=30, what="varnishd's admin port")

    def start_agent(self, stack):
        d = os.path.join(self.tmp, "agent")
        os.makedirs(d, exist_ok=True)
        self.agent = Agent(d, stack, conf_extra=self.conf)
        self.agent.start()
        return self.agent

    def calls(self):
        """(varnishadm argument lines, varnishd argument lines) so far, and forgets them."""
        out = []
        for p in (self.adm_log, self.vd_log):
            lines = open(p).read().splitlines() if os.path.exists(p) else []
            open(p, "w").close()
            out.append(lines)
        return out

    def vcl_list(self):
        """[(status, name)] of varnishd's VCLs."""
        out = subprocess.run(self.varnishadm + ["vcl.list"], capture_output=True, text=True, check=True).stdout
        return [(w[0], w[-1]) for w in (line.split() for line in out.splitlines()) if len(w) >= 5]

    def vcl_file(self):
        p = os.path.join(self.agent.root, VCL)
        return open(p).read() if os.path.exists(p) else None

    def close(self):
        rc, err = None, ""
        if self.agent:
            rc = self.agent.stop()
            err = self.agent.stderr_text()
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        shutil.rmtree(self.tmp, ignore_errors=True)
        return rc, err


def new_run(agent, before):
    """The newest configure run, once more than `before` runs finished and agentd is idle."""
    agent.wait_idle()
    runs = wait_for(lambda: len(agent.finished_runs()) > before and agent.finished_runs(), timeout=20,
                    what="a new finished run")
    return agent.ctl_json("show", str([r for r in runs if r["event"] == "configure"][0]["id"]))


def failed_steps(run):
    return [s for s in run["steps"] if s["status"] == "failed"]


@pytest.fixture(scope="module")
def live():
    e = Env(varnishd=True)
    try:
        a = e.start_agent(doc(["app1", "app2"]))
        wait_for(lambda: any(r["event"] == "configure" and r["status"] == "success" for r in a.finished_runs()),
                 timeout=30, what="the first configure")
        a.wait_idle()
        yield e
    finally:
        rc, err = e.close()
    assert "Sanitizer" not in err and "runtime error:" not in err, err[-4000:]
    assert rc == 0, err[-2000:]


def test_good_vcl_is_compiled_once_and_made_active(live):
    a = live.agent
    live.calls()
    n = len(a.finished_runs())
    a.write_stack(doc(["app1", "app2", "app3"]))
    run = new_run(a, n)
    assert run["status"] == "success", run
    adm, vd = live.calls()
    loads = [c for c in adm if " vcl.load " in c]
    # One compile: the check's vcl.load; no varnishd -C, no second vcl.load.
    assert len(loads) == 1 and vd == [], (adm, vd)
    name = loads[0].split(" vcl.load ")[1].split()[0]
    assert name.startswith(f"agentd_{run['id']}_"), loads
    assert any(c.endswith(f" vcl.use {name}") for c in adm), adm
    assert ("active", name) in live.vcl_list()
    # The file on disk is the VCL varnishd runs, and no candidate is left.
    assert '"127.0.0.4";' in live.vcl_file()
    assert os.listdir(os.path.dirname(os.path.join(a.root, VCL))) == ["default.vcl"]
    # The older VCLs agentd loaded were discarded.
    assert [s for s, v in live.vcl_list() if v.startswith("agentd_") and s != "discarded"] == ["active"]


def test_bad_vcl_keeps_the_active_vcl_and_the_file(live):
    a = live.agent
    a.wait_idle()
    active = [v for s, v in live.vcl_list() if s == "active"]
    good = live.vcl_file()
    live.calls()
    n = len(a.finished_runs())
    # A well-formed host name that does not resolve: validation accepts
    # it, the VCL compiler refuses it (DNS lookup in the purge ACL).
    a.write_stack(doc(["app1", "app2", "app3"], addresses={"app3": "no-such-host.invalid"}))
    run = new_run(a, n)
    assert run["status"] == "failed", run
    failed = failed_steps(run)
    assert [s["kind"] for s in failed] == ["checked-file"], failed
    err = failed[0]["error"]
    assert "/varnishadm rejected the new /etc/varnish/default.vcl (exited with status 1)" in err, err
    assert "the old one is kept" in err
    # varnish's own compiler message.
    assert "Message from VCC-compiler" in err and "DNS lookup(no-such-host.invalid)" in err, err
    vcl_steps = [s for s in run["steps"] if s["kind"] == "varnish-vcl"]
    assert [s["status"] for s in vcl_steps] == ["skipped"], vcl_steps
    adm, vd = live.calls()
    assert len([c for c in adm if " vcl.load " in c]) == 1 and vd == [], (adm, vd)
    assert [v for s, v in live.vcl_list() if s == "active"] == active
    assert not [v for s, v in live.vcl_list() if v.startswith(f"agentd_{run['id']}_")]
    assert live.vcl_file() == good
    assert os.listdir(os.path.dirname(os.path.join(a.root, VCL))) == ["default.vcl"]

    # Back to a good stack: loaded, active, file replaced.
    n = len(a.finished_runs())
    a.write_stack(doc(["app1", "app3"]))
    run = new_run(a, n)
    assert run["status"] == "success", run
    assert '"127.0.0.4";' in live.vcl_file() and '"127.0.0.3";' not in live.vcl_file()
    assert [v for s, v in live.vcl_list() if s == "active"][0].startswith(f"agentd_{run['id']}_")


def test_without_varnishd_varnishd_c_still_refuses_a_bad_vcl():
    e = Env(varnishd=False)
    try:
        a = e.start_agent(doc(["app1", "app2"]))
        # The VCL passes `varnishd -C` and is written; there is no varnishd
        # to make it active, so the run fails at the varnish-vcl step.
        run = new_run(a, 0)
        assert run["event"] == "configure" and run["status"] == "failed", run
        assert [s["kind"] for s in failed_steps(run)] == ["varnish-vcl"], run["steps"]
        assert "vcl.use" in failed_steps(run)[0]["error"] and "Connection" in failed_steps(run)[0]["error"]
        good = e.vcl_file()
        assert good is not None and '"127.0.0.3";' in good
        adm, vd = e.calls()
        assert len([c for c in vd if c.split()[-3:-1] == ["-C", "-f"]]) == 1, vd
        assert adm and all(" vcl." in c for c in adm), adm

        n = len(a.finished_runs())
        a.write_stack(doc(["app1", "app2", "app3"], addresses={"app3": "no-such-host.invalid"}))
        run = new_run(a, n)
        assert run["status"] == "failed", run
        failed = failed_steps(run)
        assert [s["kind"] for s in failed] == ["checked-file"], failed
        err = failed[0]["error"]
        assert "/varnishd rejected the new /etc/varnish/default.vcl (exited with status 2)" in err, err
        assert "DNS lookup(no-such-host.invalid)" in err, err
        assert e.vcl_file() == good
        assert os.listdir(os.path.dirname(os.path.join(a.root, VCL))) == ["default.vcl"]
        adm, vd = e.calls()
        assert len(vd) == 1 and len([c for c in adm if " vcl.load " in c]) == 1, (adm, vd)

        # varnishd comes up; the VCL on disk is as the good stack renders
        # it, so the file step is unchanged, and the varnish-vcl step, owed
        # since the first run, loads that file itself and makes it active.
        e.start_varnishd()
        n = len(a.finished_runs())
        a.write_stack(doc(["app1", "app2"]))
        run = new_run(a, n)
        assert run["status"] == "success", run
        # (Leaving out the removals of agentd's apt files: no apt key here.)
        assert [(s["kind"], s["status"]) for s in run["steps"] if s["kind"] != "absent"] == [
            ("checked-file", "unchanged"),
                                                                     ("varnish-vcl", "changed")], run["steps"]
        adm, vd = e.calls()
        assert vd == [] and len([c for c in adm if " vcl.load " in c]) == 1, adm
        assert [c for c in adm if " vcl.load " in c][0].endswith("/etc/varnish/default.vcl"), adm
        assert [v for s, v in e.vcl_list() if s == "active"][0].startswith(f"agentd_{run['id']}_")
        assert e.vcl_file() == good
    finally:
        rc, err = e.close()
    assert "Sanitizer" not in err and "runtime error:" not in err, err[-4000:]
    assert rc == 0, err[-2000:]
