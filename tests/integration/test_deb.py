# The Debian package (issue 14, item 1): `make deb` builds it once, lintian
# finds no error in it, and the real dpkg/apt and the package's maintainer
# scripts install, upgrade and purge it on a throwaway copy of this machine.
#
# The throwaway machine is a private mount namespace (unshare -m) in which
# /usr, /etc and /var (and /lib, /bin, /sbin where they are not links into
# /usr) are overlayfs mounts over the host's, with their upper layers on a
# tmpfs, and /run a fresh tmpfs. apt, dpkg, addgroup, deb-systemd-helper and
# deb-systemd-invoke are the host's own and run as they would on a server;
# whatever they write lands in the overlay and is gone with the namespace.
# It is a better stand-in than `dpkg --root`, which would need a whole system
# in the root for the maintainer scripts to chroot into.
#
# systemd is not PID 1 there, so /run/systemd/system is created (the
# maintainer scripts act on units only when it exists) and systemctl is a
# stand-in (STANDIN below) that runs agentd.service's ExecStart as the unit's
# one process: start, stop (SIGTERM, then waiting for the exit, as systemd
# does), try-restart (only if running), is-active, is-enabled (from the
# symlinks), and hands `--root=` calls (deb-systemd-helper's presets, which
# make the enablement symlinks) to the real systemctl. It logs every call,
# so the test sees what the maintainer scripts asked for and when.
#
# The binaries packaged are those `make` already built (AGENTD_BUILD): `make
# deb DEB_BUILD=$AGENTD_BUILD` runs `make` there, a no-op. Under ASan the
# whole file is skipped: the package would carry ASan binaries, and its
# scripts are the same as in the plain run.
import json
import os
import re
import shutil
import subprocess
import tempfile
import time

import pytest

from conftest import BUILD, wait_for

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def _asan_build():
    if os.path.basename(os.path.normpath(BUILD)) == "build-asan":
        return True
    try:
        with open(os.path.join(BUILD, "agentd"), "rb") as f:
            return b"__asan_init" in f.read()
    except OSError:
        return False


pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="installs a package (in a private mount namespace): needs root"),
    pytest.mark.skipif(_asan_build(), reason="ASan build: the package is built and tested in the plain run"),
]


def project_version():
    with open(os.path.join(REPO, "lib", "proto.h")) as f:
        return re.search(r'^#define AGENTD_VERSION "([^"]+)"', f.read(), re.M).group(1)


STANDIN = r"""#!/bin/sh
# systemctl stand-in for test_deb.py's mount namespace (systemd is not PID 1).
d=/run/agentd-test
mkdir -p $d
echo "$*" >>$d/systemctl.log
# Unit files' enablement (deb-systemd-helper calls `systemctl --root=/
# preset`): the real systemctl does it on the files, no manager needed.
case " $* " in *" --root="*) exec /usr/bin/systemctl.real "$@" ;; esac
verb=
units=
for a in "$@"; do
	case $a in
	-*) [ "$a" = --version ] && { echo "systemd 252 (test stand-in)"; exit 0; } ;;
	*) if [ -z "$verb" ]; then verb=$a; else units="$units $a"; fi ;;
	esac
done
alive() {
	[ -f $d/$1.pid ] || return 1
	st=$(ps -o stat= -p "$(cat $d/$1.pid)" 2>/dev/null) || return 1
	case $st in Z*) return 1 ;; esac
}
start() {
	[ "$1" = agentd.service ] || return 0
	alive $1 && return 0
	# What systemd would make: StateDirectory, LogsDirectory, RuntimeDirectory.
	mkdir -p /var/lib/agentd /var/log/agentd /run/agentd
	cmd=$(sed -n 's/^ExecStart=//p' /lib/systemd/system/$1)
	echo "start: $cmd" >>$d/systemctl.log
	# shellcheck disable=SC2086
	setsid $cmd </dev/null >>$d/agentd.log 2>&1 &
	echo $! >$d/$1.pid
}
stop() {
	alive $1 || return 0
	pid=$(cat $d/$1.pid)
	echo "stopping: $pid" >>$d/systemctl.log
	kill -TERM "$pid"
	n=0
	while alive $1; do
		n=$((n + 1))
		[ $n -gt 1200 ] && kill -KILL "$pid"
		sleep 0.05
	done
	echo "stopped: $pid" >>$d/systemctl.log
	rm -f $d/$1.pid
}
rc=0
for u in $units; do
	case $verb in
	start) start $u ;;
	stop) stop $u ;;
	restart) stop $u; start $u ;;
	try-restart) if alive $u; then stop $u; start $u; fi ;;
	is-active) alive $u || rc=3 ;;
	is-enabled)
		if ls /etc/systemd/system/*.wants/$u >/dev/null 2>&1; then echo enabled; else echo disabled; rc=1; fi ;;
	esac
done
exit $rc
"""

SETUP = r"""set -e
t=$1
mount -t tmpfs -o mode=0755 agentd-deb-test "$t"
for d in usr etc var lib bin sbin; do
	[ -L /$d ] && continue
	mkdir "$t/$d.up" "$t/$d.work"
	mount -t overlay overlay -o "lowerdir=/$d,upperdir=$t/$d.up,workdir=$t/$d.work" /$d
done
mount -t tmpfs -o mode=0755 agentd-deb-run /run
mkdir -p /run/systemd/system /run/lock /run/agentd-test
cp -p /usr/bin/systemctl /usr/bin/systemctl.real
install -m 0755 "$2" /usr/bin/systemctl
# A container's policy-rc.d ("start nothing") is not on a server.
rm -f /usr/sbin/policy-rc.d
# No man-db trigger: indexing every page would take seconds.
rm -f /var/lib/man-db/auto-update
echo ready
read _
"""


class Machine:
    """A throwaway copy of this machine: a private mount namespace held by one
    process (ended by closing its stdin); run() enters it with nsenter."""

    def __init__(self, tmp):
        self.tmp = tmp
        upper = os.path.join(tmp, "upper")
        os.mkdir(upper)
        standin = os.path.join(tmp, "systemctl")
        with open(standin, "w") as f:
            f.write(STANDIN)
        self.holder = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "/bin/sh", "-c", SETUP, "sh", upper, standin],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.holder.stdout.readline()
        if line.strip() != "ready":
            raise AssertionError(f"namespace setup failed: {line}{self.holder.stderr.read()}")
        self.pid = self.holder.pid

    def path(self, p):
        """p as seen inside the namespace, readable from outside."""
        return f"/proc/{self.pid}/root{p}"

    def run(self, *cmd, check=True, timeout=120, env=None):
        e = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C.UTF-8"}
        if env:
            e.update(env)
        p = subprocess.run(["nsenter", "--target", str(self.pid), "--mount", "--"] + list(cmd),
                           capture_output=True, text=True, timeout=timeout, env=e, cwd="/")
        if check and p.returncode != 0:
            raise AssertionError(f"{cmd} exited {p.returncode}: {p.stdout}{p.stderr}")
        return p

    def popen(self, *cmd):
        e = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C.UTF-8"}
        return subprocess.Popen(["nsenter", "--target", str(self.pid), "--mount", "--"] + list(cmd),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=e, cwd="/")

    def read(self, p):
        with open(self.path(p)) as f:
            return f.read()

    def exists(self, p):
        return os.path.lexists(self.path(p))

    def systemctl_log(self):
        try:
            return self.read("/run/agentd-test/systemctl.log").splitlines()
        except FileNotFoundError:
            return []

    def daemon_pid(self):
        p = self.run("systemctl", "is-active", "agentd.service", check=False)
        return int(self.read("/run/agentd-test/agentd.service.pid")) if p.returncode == 0 else None

    def ctl_json(self, *args):
        p = self.run("/usr/bin/agentctl", "--json", *args, check=False, timeout=30)
        if p.returncode != 0:  # not an AssertionError: wait_for retries it while agentd starts
            raise RuntimeError(f"agentctl {args} exited {p.returncode}: {p.stdout}{p.stderr}")
        return json.loads(p.stdout)

    def close(self):
        # The unit's daemon first (it keeps the namespace alive), by its pid.
        pid = None
        try:
            pid = int(self.read("/run/agentd-test/agentd.service.pid"))
        except (OSError, ValueError):
            pass
        if pid:
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        self.holder.stdin.close()
        self.holder.wait(10)


@pytest.fixture(scope="module")
def pkg():
    """Builds the package once with `make deb`; returns the .deb's path."""
    out = tempfile.mkdtemp(prefix="agentd-deb-")
    build = os.path.relpath(os.path.abspath(BUILD), REPO)
    if build.startswith(".."):
        build = os.path.abspath(BUILD)
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    p = subprocess.run(["make", "-s", "deb", f"DEB_BUILD={build}", f"DEB_DIR={out}"], cwd=REPO,
                       capture_output=True, text=True, timeout=300, env=env)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    debs = [f for f in os.listdir(out) if f.endswith(".deb")]
    arch = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True).stdout.strip()
    assert debs == [f"agentd_{project_version()}_{arch}.deb"], debs
    yield os.path.join(out, debs[0])
    shutil.rmtree(out, ignore_errors=True)


@pytest.fixture
def machine():
    tmp = tempfile.mkdtemp(prefix="agentd-deb-ns-")
    m = Machine(tmp)
    yield m
    m.close()
    shutil.rmtree(tmp, ignore_errors=True)


def deb_field(deb, field):
    return subprocess.run(["dpkg-deb", "-f", deb, field], capture_output=True, text=True, check=True).stdout.strip()


def test_package_lints_and_declares(pkg):
    p = subprocess.run(["lintian", "--no-tag-display-limit", pkg], capture_output=True, text=True, timeout=120)
    errors = [line for line in p.stdout.splitlines() if line.startswith("E:")]
    assert not errors, p.stdout
    # Every warning is one the README explains.
    readme = open(os.path.join(REPO, "README.md")).read()
    for line in p.stdout.splitlines():
        if line.startswith("W:"):
            tag = line.split()[2]
            assert tag in readme, f"lintian warning not explained in README.md: {line}"
    assert deb_field(pkg, "Version") == project_version()
    depends = deb_field(pkg, "Depends")
    # From ${shlibs:Depends}: the libraries agentd links.
    for lib in ("libuv1", "libcurl4", "libjansson4", "libsystemd0", "libc6"):
        assert lib in depends, depends
    suggests = [s.strip() for s in deb_field(pkg, "Suggests").split(",")]
    for tool in ("supervisor", "haproxy", "varnish", "nginx", "etcd-client", "xfsprogs", "glusterfs-client",
                 "nfs-common", "logrotate", "unattended-upgrades", "python3-zc.buildout", "git"):
        assert tool in suggests and tool not in depends, (tool, suggests)


def installed_files_ok(m, version):
    """The files, the conffile, the group and the units' state of an install."""
    for path, mode in (("/usr/sbin/agentd", 0o755), ("/usr/bin/agentctl", 0o755),
                       ("/etc/agentd/agentd.conf", 0o644), ("/lib/systemd/system/agentd.service", 0o644),
                       ("/lib/systemd/system/agentd.socket", 0o644),
                       ("/lib/systemd/system/agentd-shutdown.service", 0o644)):
        assert m.exists(path), path
        assert os.stat(m.path(path)).st_mode & 0o777 == mode, path
    unit = m.read("/lib/systemd/system/agentd.service")
    assert "ExecStart=/usr/sbin/agentd " in unit and "/usr/local" not in unit
    assert "/usr/bin/agentctl" in m.read("/lib/systemd/system/agentd-shutdown.service")
    assert m.run("/usr/sbin/agentd", "--version").stdout.strip() == f"agentd {version}"
    assert m.run("dpkg-query", "-W", "-f=${Version}", "agentd").stdout == version
    conffiles = m.run("dpkg-query", "-W", "-f=${Conffiles}", "agentd").stdout
    assert "/etc/agentd/agentd.conf" in conffiles, conffiles
    for f in os.listdir(os.path.join(REPO, "conf", "examples")):
        assert m.exists(f"/usr/share/agentd/examples/{f}"), f
    for f in os.listdir(os.path.join(REPO, "man")):
        if re.fullmatch(r".+\.[1-8]", f):
            assert m.exists(f"/usr/share/man/man{f[-1]}/{f}.gz"), f
    comp = os.path.join(REPO, "conf", "bash-completion")
    for f in (os.listdir(comp) if os.path.isdir(comp) else []):
        assert m.exists(f"/usr/share/bash-completion/completions/{f}"), f
    group = m.run("getent", "group", "agentd").stdout.split(":")
    assert group[0] == "agentd" and int(group[2]) < 1000, group  # a system group
    # Enabled ...
    for wants in ("multi-user.target.wants/agentd.service", "sockets.target.wants/agentd.socket",
                  "multi-user.target.wants/agentd-shutdown.service"):
        assert m.exists(f"/etc/systemd/system/{wants}"), wants


def test_install_enables_but_does_not_start(pkg, machine):
    m = machine
    host_before = subprocess.run(["dpkg-query", "-W", "agentd"], capture_output=True, text=True).stdout
    m.run("apt-get", "install", "-y", "-q", pkg)
    installed_files_ok(m, project_version())
    # ... not started: nothing asked systemctl to start anything.
    assert not [c for c in m.systemctl_log() if re.match(r"(start|restart|try-restart) ", c)], m.systemctl_log()
    assert m.daemon_pid() is None
    # Nothing reached the host.
    assert not os.path.exists("/usr/sbin/agentd") or host_before
    assert subprocess.run(["dpkg-query", "-W", "agentd"], capture_output=True, text=True).stdout == host_before


def previous_package(deb, tmp):
    """The same package as version 0.0.0 (every digit of the version made 0):
    unpacked, its control and both binaries' version strings patched (same
    length), md5sums fixed, repacked. Cheaper than a second build."""
    v = project_version()
    old = re.sub(r"[0-9]", "0", v)
    assert old != v
    root = os.path.join(tmp, "prev")
    subprocess.run(["dpkg-deb", "-R", deb, root], check=True)
    ctl = os.path.join(root, "DEBIAN", "control")
    text = open(ctl).read()
    open(ctl, "w").write(re.sub(r"^Version: .*$", f"Version: {old}", text, flags=re.M))
    for b in ("usr/sbin/agentd", "usr/bin/agentctl"):
        path = os.path.join(root, b)
        data = open(path, "rb").read()
        needle = b"\0" + v.encode() + b"\0"
        assert needle in data, b
        open(path, "wb").write(data.replace(needle, b"\0" + old.encode() + b"\0"))
    sums = subprocess.run(["md5sum"] + [p for p in subprocess.run(
        ["find", ".", "-type", "f", "-not", "-path", "./DEBIAN/*"], cwd=root, capture_output=True, text=True,
        check=True).stdout.split()], cwd=root, capture_output=True, text=True, check=True).stdout
    open(os.path.join(root, "DEBIAN", "md5sums"), "w").write(sums.replace("  ./", "  "))
    out = os.path.join(tmp, f"agentd_{old}.deb")
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Zgzip", "-b", root, out], check=True, capture_output=True)
    return out, old


def upgrade_while_running(m, apt_args, gate):
    """Runs apt-get install apt_args in the namespace while agentd runs a
    step that waits for gate; creates gate only once the upgrade's restart
    has sent SIGTERM. Returns the systemctl calls the upgrade made."""
    mark = len(m.systemctl_log())
    upgrade = m.popen("apt-get", "install", "-y", "-q", *apt_args)
    # The old daemon runs through the unpack; postinst's try-restart stops it.
    wait_for(lambda: any(c.startswith("stopping:") for c in m.systemctl_log()[mark:]) or upgrade.poll() is not None,
             60, "the upgrade to stop agentd")
    assert upgrade.poll() is None, upgrade.stdout.read()
    # SIGTERM lets the running step finish: it waits for its gate until now.
    gate.write_text("")
    out, _ = upgrade.communicate(timeout=90)
    assert upgrade.returncode == 0, out
    calls = m.systemctl_log()[mark:]
    # Nothing stopped before postinst; one try-restart, restarted once.
    assert [c for c in calls if re.match(r"(stop|restart|try-restart) ", c)] == ["try-restart agentd.service"], calls
    stops = [i for i, c in enumerate(calls) if c.startswith("stopping:")]
    assert len(stops) == 1 and calls.index("try-restart agentd.service") < stops[0], calls
    assert len([c for c in calls if c.startswith("start: ")]) == 1, calls
    return calls


def wait_idle(m, what):
    wait_for(lambda: (lambda s: s["current_run"] is None and not s["queue"])(m.ctl_json("status")), 20, what)


def test_upgrade_keeps_runs_and_purge_keeps_state(pkg, machine, tmp_path):
    m = machine
    v = project_version()
    prev, old = previous_package(pkg, str(tmp_path))
    m.run("apt-get", "install", "-y", "-q", prev)
    installed_files_ok(m, old)

    # The operator's edit of the conffile, and a stack whose custom recipes
    # are slow: "hold" waits for a gate file (when armed) that the test
    # creates only once the upgrade's restart has sent SIGTERM; the others
    # append a line to `done` when they end.
    work = tmp_path / "work"
    (work / "root").mkdir(parents=True)
    os.chmod(tmp_path, 0o755)
    done, gate, gate2, armed = (work / n for n in ("done", "gate", "gate2", "armed"))
    wait_gate = "n=0; while [ ! -e {g} ] && [ $n -lt 600 ]; do sleep 0.05; n=$((n+1)); done"
    stack = {
        "opsworks": {"stack": {"name": "deb"}, "layers": {
            "web": {"name": "Web", "instances": {"app1": {"private_ip": "10.0.0.1", "status": "online"}}}}},
        "deploy": {},
        "agent": {
            "recipes": {
                "first": {"command": ["/bin/sh", "-c", wait_gate.format(g=gate) +
                                      f"; echo first $AGENT_RUN_ID >> {done}"]},
                "second": {"command": ["/bin/sh", "-c", f"sleep 0.5; echo second $AGENT_RUN_ID >> {done}"]},
                "hold": {"command": ["/bin/sh", "-c", f"[ ! -e {armed} ] || {{ {wait_gate.format(g=gate2)}; }}"]},
                "mark": {"command": ["/bin/sh", "-c", f"[ ! -e {armed} ] || echo mark $AGENT_RUN_ID >> {done}"]},
                "noop": {"command": ["/bin/true"]},
            },
            "layers": {"web": dict({e: ["noop"] for e in ("setup", "deploy", "undeploy", "shutdown")},
                                   configure=["hold", "mark"])},
        },
    }
    (work / "stack.json").write_text(json.dumps(stack))
    conf = json.loads(m.read("/etc/agentd/agentd.conf"))
    conf.update({"source": f"file://{work}/stack.json", "instance": "app1", "root": str(work / "root")})
    with open(m.path("/etc/agentd/agentd.conf"), "w") as f:
        json.dump(conf, f, indent=2)
    edited = m.read("/etc/agentd/agentd.conf")

    m.run("systemctl", "start", "agentd.service")
    old_pid = m.daemon_pid()
    assert old_pid
    wait_for(lambda: m.ctl_json("version")["version"] == old, 10, "the old agentd to answer")
    wait_idle(m, "the first start's runs")

    # 1. Upgrade from the previous version while "first" (one step) runs
    # and "second" is queued: the step finishes under SIGTERM, the queued run
    # survives the restart in state_dir; each runs exactly once.
    first = m.ctl_json("run", "maintenance", "--recipe", "first")
    second = m.ctl_json("run", "maintenance", "--recipe", "second")
    wait_for(lambda: (lambda s: s["current_run"] and s["current_run"]["id"] == first["id"] and
                      [q["id"] for q in s["queue"]] == [second["id"]])(m.ctl_json("status")), 10,
             "first to run and second to wait")
    upgrade_while_running(m, [pkg], gate)
    new_pid = m.daemon_pid()
    assert new_pid and new_pid != old_pid
    installed_files_ok(m, v)
    assert m.read("/etc/agentd/agentd.conf") == edited  # the operator's conffile is kept
    assert not m.exists("/etc/agentd/agentd.conf.dpkg-dist")
    wait_for(lambda: m.ctl_json("version")["version"] == v, 10, "the new agentd to answer")
    wait_idle(m, "the queued run")
    lines = sorted(done.read_text().splitlines())
    assert lines == sorted([f"first {first['id']}", f"second {second['id']}"]), lines
    runs = {r["id"]: r for r in m.ctl_json("runs", "-n", "100")["runs"]}
    assert runs[first["id"]]["status"] == "success" and runs[second["id"]]["status"] == "success", runs
    assert not [r for r in runs.values() if r["status"] == "interrupted"], runs

    # 2. Upgrade again (a reinstall) while a two-step configure is in its
    # first step: the step finishes, the run is recorded interrupted and
    # queued again, and the new daemon runs it whole: "mark" happens once.
    armed.write_text("")
    done.write_text("")
    conf_run = m.ctl_json("run", "configure", "--layer", "web")
    wait_for(lambda: (lambda s: s["current_run"] and s["current_run"]["id"] == conf_run["id"])(m.ctl_json("status")),
             10, "configure to run")
    upgrade_while_running(m, ["--reinstall", pkg], gate2)
    assert m.daemon_pid() not in (None, new_pid)
    wait_idle(m, "the re-queued run")
    runs = m.ctl_json("runs", "-n", "100")["runs"]
    byid = {r["id"]: r for r in runs}
    assert byid[conf_run["id"]]["status"] == "interrupted", byid[conf_run["id"]]
    lines = done.read_text().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mark "), lines
    again = byid[int(lines[0].split()[1])]
    assert again["id"] > conf_run["id"] and again["event"] == "configure" and again["status"] == "success", again

    # Purge: the package's files go, state_dir stays (and the group).
    m.run("apt-get", "purge", "-y", "-q", "agentd")
    assert m.daemon_pid() is None
    for path in ("/usr/sbin/agentd", "/usr/bin/agentctl", "/lib/systemd/system/agentd.service", "/etc/agentd",
                 "/etc/systemd/system/multi-user.target.wants/agentd.service",
                 "/usr/share/agentd", "/usr/share/man/man8/agentd.8.gz"):
        assert not m.exists(path), path
    assert m.exists("/var/lib/agentd/state.json")
    assert m.run("getent", "group", "agentd", check=False).returncode == 0

    # Asked beforehand, purge takes state_dir and log_dir too.
    m.run("apt-get", "install", "-y", "-q", pkg)
    open(m.path("/var/lib/agentd/.remove-on-purge"), "w").close()
    m.run("apt-get", "purge", "-y", "-q", "agentd")
    assert not m.exists("/var/lib/agentd") and not m.exists("/var/log/agentd")
