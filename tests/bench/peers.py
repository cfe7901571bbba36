# The peers of tests/bench/run: `puppet apply` and `ansible-playbook -c local`
# doing the same no-op as agentd's benchmark (20 files already in place), each
# under its own temporary directory so that nothing on the host is touched.
import os
import re
import shutil
import subprocess
import time

TIME = "/usr/bin/time"


def file_content(i):
    """The content of bench file i, the same for agentd and every peer."""
    return f"# managed file {i:02d}\nkey{i} = value{i}\n"


def ensure_installed(install, log):
    """Installs puppet and ansible-core from Debian when missing and allowed.

    Returns nothing; a failure only means the peer is reported as not
    installed. `time` is needed for peer RSS (/usr/bin/time -v)."""
    want = []
    if not shutil.which("puppet"):
        want.append("puppet")
    if not shutil.which("ansible-playbook"):
        want.append("ansible-core")
    if not os.path.exists(TIME):
        want.append("time")
    if not want:
        return
    if not install:
        log(f"bench: not installing {' '.join(want)} (--no-install)")
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        log(f"bench: {' '.join(want)} missing and cannot apt-get install here")
        return
    log(f"bench: apt-get install {' '.join(want)} (peers for comparison) ...")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    p = subprocess.run(["apt-get", "-o", "DPkg::Lock::Timeout=300", "install", "-y",
                        "--no-install-recommends"] + want,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    if p.returncode != 0:
        log("bench: apt-get install failed; the missing peers are reported as not installed:\n"
            + p.stdout[-2000:])


def timed(cmd, cwd, env, time_out):
    """Runs cmd under /usr/bin/time -v; returns (wall seconds, max RSS KiB, proc)."""
    full = ([TIME, "-v", "-o", time_out] if os.path.exists(TIME) else []) + cmd
    t0 = time.perf_counter()
    p = subprocess.run(full, cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    rss = None
    if os.path.exists(time_out):
        with open(time_out) as f:
            m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", f.read())
        if m:
            rss = int(m.group(1))
    return wall, rss, p


class Peer:
    name = "?"

    def __init__(self, tmp, nfiles):
        self.tmp = tmp
        self.nfiles = nfiles
        self.target = os.path.join(tmp, "files")
        os.makedirs(self.target, exist_ok=True)
        self.time_out = os.path.join(tmp, "time.txt")

    def available(self):
        raise NotImplementedError

    def version(self):
        return ""

    def command(self):
        raise NotImplementedError

    def env(self):
        return dict(os.environ)

    def is_noop(self, p):
        raise NotImplementedError

    def run_once(self):
        return timed(self.command(), self.tmp, self.env(), self.time_out)

    def bench(self, samples, log):
        """One converging run, then `samples` timed no-op runs.

        Returns a dict of wall times and RSS, or an error string."""
        wall, rss, p = self.run_once()
        if p.returncode not in self.ok_codes():
            return f"first run failed ({p.returncode}): {(p.stdout + p.stderr)[-800:]}"
        walls, rsses, noops = [], [], 0
        for _ in range(samples):
            wall, rss, p = self.run_once()
            if p.returncode not in self.ok_codes():
                return f"run failed ({p.returncode}): {(p.stdout + p.stderr)[-800:]}"
            walls.append(wall)
            if rss:
                rsses.append(rss)
            noops += 1 if self.is_noop(p) else 0
        if noops != samples:
            log(f"bench: {self.name}: only {noops} of {samples} runs were no-ops")
        return {"wall_s": walls, "max_rss_kib": rsses, "noop_runs": noops}


class Puppet(Peer):
    name = "puppet apply"

    def available(self):
        return shutil.which("puppet") is not None

    def version(self):
        p = subprocess.run(["puppet", "--version"], capture_output=True, text=True, env=self.env())
        return p.stdout.strip()

    def setup(self):
        lines = []
        for i in range(1, self.nfiles + 1):
            path = os.path.join(self.target, f"file{i:02d}.conf")
            content = file_content(i).replace("\\", "\\\\").replace("'", "\\'")
            lines.append(f"file {{ '{path}':\n  ensure  => file,\n  content => '{content}',\n"
                         f"  mode    => '0644',\n}}\n")
        self.manifest = os.path.join(self.tmp, "bench.pp")
        with open(self.manifest, "w") as f:
            f.write("".join(lines))

    def env(self):
        return dict(os.environ, HOME=self.tmp)

    def command(self):
        # Every directory puppet would use under /etc/puppet or /var/lib/puppet
        # is moved into the temporary directory.
        d = lambda n: os.path.join(self.tmp, n)  # noqa: E731
        return ["puppet", "apply", "--detailed-exitcodes", "--color=false",
                "--confdir", d("conf"), "--vardir", d("var"), "--codedir", d("code"),
                "--logdir", d("log"), "--rundir", d("run"), "--publicdir", d("public"),
                self.manifest]

    def ok_codes(self):
        return (0, 2)  # --detailed-exitcodes: 0 nothing changed, 2 changes made

    def is_noop(self, p):
        return p.returncode == 0


class Ansible(Peer):
    name = "ansible-playbook -c local"

    def available(self):
        return shutil.which("ansible-playbook") is not None

    def version(self):
        p = subprocess.run(["ansible-playbook", "--version"], capture_output=True, text=True,
                           env=self.env(), cwd=self.tmp)
        m = re.search(r"\[core ([^\]]+)\]", p.stdout)
        return "core " + m.group(1) if m else (p.stdout.splitlines() or [""])[0]

    def setup(self):
        # Facts are not gathered: agentd reads no facts either, and this keeps
        # the comparison on the 20 tasks themselves (the peer's best case).
        tasks = []
        for i in range(1, self.nfiles + 1):
            path = os.path.join(self.target, f"file{i:02d}.conf")
            content = file_content(i).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
            tasks.append(f"    - name: file {i:02d}\n      copy:\n        dest: \"{path}\"\n"
                         f"        content: \"{content}\"\n        mode: \"0644\"\n")
        self.playbook = os.path.join(self.tmp, "bench.yml")
        with open(self.playbook, "w") as f:
            f.write("- hosts: localhost\n  gather_facts: false\n  tasks:\n" + "".join(tasks))

    def env(self):
        return dict(os.environ, HOME=self.tmp, ANSIBLE_LOCAL_TEMP=os.path.join(self.tmp, "atmp"),
                    ANSIBLE_REMOTE_TEMP=os.path.join(self.tmp, "rtmp"), ANSIBLE_NOCOWS="1",
                    ANSIBLE_RETRY_FILES_ENABLED="0", ANSIBLE_CONFIG=os.path.join(self.tmp, "none.cfg"),
                    ANSIBLE_PYTHON_INTERPRETER="/usr/bin/python3")

    def command(self):
        return ["ansible-playbook", "-c", "local", "-i", "localhost,", self.playbook]

    def ok_codes(self):
        return (0,)

    def is_noop(self, p):
        return re.search(r"changed=0\b", p.stdout) is not None


def all_peers():
    return [Puppet, Ansible]
