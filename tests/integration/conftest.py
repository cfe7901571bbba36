# Shared fixtures for the integration tests: a real agentd started under a
# temporary root, with its own state, log and socket, driven through agentctl.
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time

import pytest

BUILD = os.environ.get("AGENTD_BUILD", os.path.join(os.path.dirname(__file__), "..", "..", "build"))
AGENTD = os.path.join(BUILD, "agentd")
AGENTCTL = os.path.join(BUILD, "agentctl")
HERE = os.path.dirname(os.path.abspath(__file__))


def wait_for(cond, timeout=10.0, what="condition", interval=0.01):
    """Polls cond() until it returns a truthy value or the deadline passes."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = cond()
        except Exception as e:  # the daemon may be starting
            last = e
            if isinstance(e, AssertionError):
                raise
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


class Agent:
    """One agentd process with its own temporary directories."""

    def __init__(self, tmp, stack=None, conf_extra=None, source=None):
        self.tmp = tmp
        self.root = os.path.join(tmp, "root")
        self.state = os.path.join(tmp, "state")
        self.logs = os.path.join(tmp, "log")
        self.sock = os.path.join(tmp, "agentd.sock")
        self.stack_path = os.path.join(tmp, "stack.json")
        self.conf_path = os.path.join(tmp, "agentd.conf")
        for d in (self.root,):
            os.makedirs(d, exist_ok=True)
        self.conf = {
            "source": source or ("file://" + self.stack_path),
            "instance": "app1",
            "root": self.root,
            "state_dir": self.state,
            "log_dir": self.logs,
            "socket": self.sock,
            # Never the host's node exporter directory.
            "metrics_file": os.path.join(tmp, "agentd.prom"),
            "admin_group": "agentd-test-admins",
            "poll_interval": 60,
            "retry_min": 1,
            "retry_max": 4,
        }
        if conf_extra:
            self.conf.update(conf_extra)
        with open(self.conf_path, "w") as f:
            json.dump(self.conf, f)
        if stack is not None:
            self.write_stack(stack)
        self.proc = None
        self.stderr_path = os.path.join(tmp, "agentd.stderr")

    def write_stack(self, stack):
        """Writes the stack like an editor would: a temp file renamed over."""
        data = stack if isinstance(stack, (str, bytes)) else json.dumps(stack, indent=1)
        if isinstance(data, str):
            data = data.encode()
        tmp = self.stack_path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(data)
        os.rename(tmp, self.stack_path)

    def start(self, wait=True, env=None, valgrind=False):
        self.stderr = open(self.stderr_path, "ab")
        e = dict(os.environ)
        e.pop("NOTIFY_SOCKET", None)
        if env:
            e.update(env)
        cmd = [AGENTD, "-d", "--config", self.conf_path]
        if valgrind:
            # Exit status 99 when valgrind found errors or definite leaks.
            cmd = ["valgrind", "--quiet", "--error-exitcode=99", "--leak-check=full",
                   "--errors-for-leak-kinds=definite", "--show-leak-kinds=definite",
                   "--track-fds=no"] + cmd
        self.proc = subprocess.Popen(cmd, stdout=self.stderr, stderr=self.stderr, env=e)
        if wait:
            wait_for(lambda: self.ctl_ok("status"), timeout=60 if valgrind else 10,
                     what="agentd to answer on its socket")
        return self

    def ctl(self, *args, user=None, timeout=30, check=None):
        cmd = [AGENTCTL, "--socket", self.sock] + [str(a) for a in args]
        if user:
            import pwd
            pw = pwd.getpwnam(user)
            cmd = ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--clear-groups"] + cmd
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if check is not None and p.returncode != check:
            raise AssertionError(f"{cmd} exited {p.returncode}, expected {check}: {p.stdout}{p.stderr}")
        return p

    def ctl_ok(self, *args):
        return self.ctl(*args).returncode == 0

    def ctl_json(self, *args, user=None):
        p = self.ctl("--json", *args, user=user)
        if p.returncode != 0:
            raise AssertionError(f"agentctl {args} exited {p.returncode}: {p.stdout}{p.stderr}")
        return json.loads(p.stdout)

    def status(self):
        return self.ctl_json("status")

    def runs(self):
        return self.ctl_json("runs", "-n", "100")["runs"]

    def wait_idle(self, timeout=30):
        """Waits until nothing is running or queued."""
        def idle():
            s = self.status()
            return s["current_run"] is None and not s["queue"] and s
        return wait_for(idle, timeout, "agentd to be idle")

    def wait_runs(self, n, timeout=30):
        return wait_for(lambda: len(self.finished_runs()) >= n and self.finished_runs(), timeout,
                        f"{n} finished runs")

    def finished_runs(self):
        return [r for r in self.runs() if r["status"] not in ("queued", "running")]

    def stop(self, sig=signal.SIGTERM, timeout=20):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        rc = self.proc.returncode if self.proc else None
        self.proc = None
        return rc

    def kill9(self):
        self.proc.kill()
        self.proc.wait()
        self.proc = None

    def stderr_text(self):
        with open(self.stderr_path, "rb") as f:
            return f.read().decode(errors="replace")


@pytest.fixture
def tmpdir_agent():
    d = tempfile.mkdtemp(prefix="agentd-test-")
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def make_agent(tmpdir_agent):
    agents = []

    def make(stack=None, **kw):
        sub = os.path.join(tmpdir_agent, f"a{len(agents)}")
        os.makedirs(sub)
        os.chmod(sub, 0o755)
        a = Agent(sub, stack, **kw)
        agents.append(a)
        return a

    yield make
    for a in agents:
        a.stop()


def simple_stack(layers=None, extra=None, recipes=None, members=None):
    """A two-layer stack whose recipes are tiny custom executables."""
    members = members or {"app1": {"private_ip": "10.0.0.1", "status": "online"}}
    stack = {
        "opsworks": {
            "stack": {"name": "test"},
            "layers": layers or {
                "web": {"name": "Web", "instances": members},
                "db": {"name": "DB", "instances": {"app1": {"private_ip": "10.0.0.1", "status": "online"}}},
            },
        },
        "deploy": {},
        "agent": {
            "recipes": recipes or {"touch": {"command": ["/bin/true"]}},
            "layers": {
                "web": {e: ["touch"] for e in ("setup", "configure", "deploy", "undeploy", "shutdown")},
                "db": {e: ["touch"] for e in ("setup", "configure", "deploy", "undeploy", "shutdown")},
            },
        },
    }
    if extra:
        stack.update(extra)
    return stack


def nobody_socket(agent):
    """A socket connected to agent's control socket as user nobody: a forked
    child takes nobody's ids, connects, and passes the socket back."""
    import pwd
    import socket
    pw = pwd.getpwnam("nobody")
    r, w = socket.socketpair()
    pid = os.fork()
    if pid == 0:
        try:
            os.setgroups([])
            os.setgid(pw.pw_gid)
            os.setuid(pw.pw_uid)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(agent.sock)
            socket.send_fds(w, [b"x"], [s.fileno()])
        finally:
            os._exit(0)
    _msg, fds, _flags, _addr = socket.recv_fds(r, 10, 1)
    os.waitpid(pid, 0)
    r.close()
    w.close()
    return socket.socket(fileno=fds[0])


class Collected:
    """A command run in the background (e.g. `agentctl log RUN -f`), its
    stdout collected as it comes: text() so far, finish() -> (status, text)."""

    def __init__(self, cmd):
        import threading
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.out = b""
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        while True:
            chunk = self.proc.stdout.read1(65536)
            if not chunk:
                return
            with self.lock:
                self.out += chunk

    def text(self):
        with self.lock:
            return self.out.decode(errors="replace")

    def finish(self, timeout=60):
        self.proc.wait(timeout)
        self.thread.join(timeout)
        return self.proc.returncode, self.text()
