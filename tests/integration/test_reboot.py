"""Reboots one at a time (design.md §8.1, issue 13 item 5): with an etcd
source and apt.unattended_upgrades.automatic_reboot, unattended-upgrades is
told not to reboot and agentd's job `reboot` does it behind the semaphore
`reboot` (1 slot), only when /var/run/reboot-required exists.

The reboot command is a stand-in that records when it starts and ends and,
like `systemctl reboot`, returns at once while the machine "goes down" a
moment later the way a reboot takes agentd down: SIGTERM to its agentd.
The slot is held from before the command until that agentd stops, so the
next instance's command starts only after the previous instance went
down; an instance without reboot-required runs no command at all."""
import os
import signal
import sys
import time

from conftest import wait_for
from etcd_fixture import etcd, etcd_source  # noqa: F401 (fixture)

PREFIX = "/agentd/reboot"
STANDIN = r"""
import os, signal, sys, time
times, host, pidfile = sys.argv[1:4]
def note(what):
    with open(times, "a") as f:
        f.write("%s %s %.6f\n" % (what, host, time.time()))
note("start")
time.sleep(0.1)
note("end")
# Like systemctl reboot: return at once; the machine goes down a moment later.
if os.fork() == 0:
    os.setsid()
    fd = os.open(os.devnull, os.O_RDWR)
    for i in (0, 1, 2):
        os.dup2(fd, i)
    time.sleep(0.5)
    note("down")
    os.kill(int(open(pidfile).read()), signal.SIGTERM)
    os._exit(0)
"""


def stack():
    return {
        "opsworks": {"stack": {"name": "reboot"}, "layers": {"web": {"name": "Web", "instances": {}}}},
        "deploy": {},
        "apt": {"unattended_upgrades": {"enable": True, "automatic_reboot": True,
                                        "automatic_reboot_time": "04:15"}},
        "agent": {"recipes": {"noop": {"command": ["/bin/true"]}},
                  "layers": {"web": {e: ["noop"] for e in ("setup", "configure", "deploy")}}},
    }


def spans(path):
    """{host: {"start": t, "end": t, "down": t}} from the stand-in's notes."""
    out = {}
    if os.path.exists(path):
        for line in open(path):
            what, host, t = line.split()
            out.setdefault(host, {})[what] = float(t)
    return out


def test_reboots_one_at_a_time_and_only_where_required(make_agent, etcd, tmpdir_agent):  # noqa: F811
    script = os.path.join(tmpdir_agent, "standin.py")
    times = os.path.join(tmpdir_agent, "times")
    with open(script, "w") as f:
        f.write(STANDIN)
    etcd.put(PREFIX + "/stack", stack())
    agents = []
    for i in range(4):
        host = f"h{i}"
        pidfile = os.path.join(tmpdir_agent, f"{host}.pid")
        a = make_agent(conf_extra={"instance": host, "layers": ["web"], "lease_ttl": 2, "watch_timeout": 5,
                                   "settle": 0.05, "settle_max": 1,
                                   "reboot_command": [sys.executable, script, times, host, pidfile]},
                       source=etcd_source(etcd, PREFIX))
        a.start()
        with open(pidfile, "w") as f:
            f.write(str(a.proc.pid))
        if i < 3:  # h3 has nothing to reboot for
            os.makedirs(os.path.join(a.root, "var/run"), exist_ok=True)
            open(os.path.join(a.root, "var/run/reboot-required"), "w").close()
        agents.append(a)
    for a in agents:
        a.wait_runs(3, timeout=20)
        a.wait_idle(20)
        # unattended-upgrades itself is told not to reboot.
        uu = open(os.path.join(a.root, "etc/apt/apt.conf.d/52agentd-unattended-upgrades")).read()
        assert 'Unattended-Upgrade::Automatic-Reboot "false";' in uu, uu
    # All four asked at once.
    t0 = time.time()
    for a in agents:
        a.ctl("run", "maintenance", "--recipe", "reboot", check=0)
    for a in agents[:3]:
        wait_for(lambda: a.proc.poll() is not None, 15, f"{a.conf['instance']} to go down", interval=0.05)
    elapsed = time.time() - t0
    got = spans(times)
    assert sorted(got) == ["h0", "h1", "h2"], got
    order = sorted(got.values(), key=lambda s: s["start"])
    for prev, nxt in zip(order, order[1:]):
        assert nxt["start"] >= prev["down"], order  # never two at once, and not before the last went down

    # h3 took the slot, found nothing to do and gave it back: still up, no command.
    h3 = agents[3]
    wait_for(lambda: any(r.get("recipe") == "reboot" and r["status"] == "success" for r in h3.runs()), 15,
             "h3's reboot run")
    assert h3.proc.poll() is None
    run = [r for r in h3.runs() if r.get("recipe") == "reboot"][0]
    steps = h3.ctl_json("show", str(run["id"]))["steps"]
    assert [s["status"] for s in steps] == ["skipped", "skipped", "skipped"], steps
    wait_for(lambda: etcd.get_prefix(PREFIX + "/semaphores/reboot/") == {}, 10, "every slot given back")
    print(f"3 serial reboots in {elapsed:.1f} s")
