# systemd integration without systemd as PID 1: sd_notify messages on a
# datagram socket the test creates (NOTIFY_SOCKET), the watchdog, and socket
# activation through systemd-socket-activate.
import os
import shutil
import socket
import subprocess

import pytest

from conftest import AGENTD, AGENTCTL, simple_stack, wait_for


def notify_socket(tmp):
    path = os.path.join(tmp, "notify.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    s.settimeout(0.05)
    return s, path


def drain(s, into):
    try:
        while True:
            into.extend(s.recv(4096).decode().split("\n"))
    except (socket.timeout, BlockingIOError):
        pass
    return into


def test_ready_status_watchdog_and_stopping(make_agent):
    a = make_agent(simple_stack())
    s, path = notify_socket(a.tmp)
    a.start(env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000"})
    msgs = []
    wait_for(lambda: "READY=1" in drain(s, msgs), what="READY=1")
    a.wait_runs(3)
    wait_for(lambda: drain(s, msgs).count("WATCHDOG=1") >= 3, what="watchdog pings")
    assert any(m.startswith("STATUS=running") for m in msgs), msgs
    wait_for(lambda: "STATUS=idle" in drain(s, msgs), what="STATUS=idle")
    a.stop()
    drain(s, msgs)
    assert "STOPPING=1" in msgs


@pytest.mark.skipif(not shutil.which("systemd-socket-activate"), reason="systemd-socket-activate missing")
def test_socket_activation(make_agent):
    a = make_agent(simple_stack())
    # The configured socket path is not used: the listening socket comes from
    # the activator on another path.
    act = os.path.join(a.tmp, "activated.sock")
    log = open(os.path.join(a.tmp, "activate.log"), "wb")
    p = subprocess.Popen(["systemd-socket-activate", "-l", act, AGENTD, "-d", "--config", a.conf_path],
                         stdout=log, stderr=log)
    try:
        wait_for(lambda: os.path.exists(act), what="the activator's socket")
        r = wait_for(lambda: (lambda r: r.returncode == 0 and r)(
            subprocess.run([AGENTCTL, "--socket", act, "--json", "status"], capture_output=True, text=True)),
            timeout=20, what="agentd to answer on the activated socket")
        assert '"instance": "app1"' in r.stdout
        assert not os.path.exists(a.sock)
    finally:
        p.terminate()
        p.wait(20)
