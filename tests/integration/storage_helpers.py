# Helpers for the storage tests: loop devices standing in for EBS volumes,
# agentd started in its own mount namespace (so every mount it makes dies
# with it, even when a test fails), and a look into that namespace.
import json
import os
import stat
import subprocess

import conftest

VOLID = "vol-0123456789abcdef0"


def run(*cmd, **kw):
    return subprocess.run(list(cmd), check=True, capture_output=True, text=True, **kw)


class Loop:
    """A sparse file attached to the first free loop device; detach() always."""

    def __init__(self, tmp, name, size=320 << 20):
        self.file = os.path.join(tmp, name + ".img")
        with open(self.file, "wb") as f:
            f.truncate(size)  # xfs wants 300 MB at least
        self.dev = run("losetup", "-f", "--show", self.file).stdout.strip()

    def node_in(self, root, by_id=None):
        """Creates root/dev/loopN (same device number) and optionally a
        udev-style relative by-id link to it."""
        st = os.stat(self.dev)
        node = os.path.join(root, "dev", os.path.basename(self.dev))
        os.makedirs(os.path.dirname(node), exist_ok=True)
        if not os.path.exists(node):
            os.mknod(node, stat.S_IFBLK | 0o600, st.st_rdev)
        if by_id:
            link = os.path.join(root, "dev/disk/by-id", by_id)
            os.makedirs(os.path.dirname(link), exist_ok=True)
            os.symlink("../../" + os.path.basename(self.dev), link)
        return node

    def blkid(self, tag):
        p = subprocess.run(["blkid", "-p", "-o", "value", "-s", tag, self.dev], capture_output=True, text=True)
        return p.stdout.strip()

    def detach(self):
        subprocess.run(["losetup", "-d", self.dev], capture_output=True)


def namespaced(tmp, prelude=""):
    """A wrapper that runs agentd in a private mount namespace, after an
    optional shell prelude (fixed text of the test, never stack data)."""
    path = os.path.join(tmp, "agentd-ns")
    real = os.path.abspath(conftest.AGENTD)
    with open(path, "w") as f:
        f.write("#!/bin/sh\nexec unshare -m --propagation private -- /bin/sh -c '%s exec \"$0\" \"$@\"' %s \"$@\"\n"
                % (prelude, real))
    os.chmod(path, 0o755)
    return path


def mounts_of(pid):
    """{mount point: (source, fstype, options, major:minor)} in pid's namespace."""
    out = {}
    with open(f"/proc/{pid}/mountinfo") as f:
        for line in f:
            a = line.split()
            sep = a.index("-")
            target = a[4].replace("\\040", " ")
            out[target] = (a[sep + 2], a[sep + 1], a[5] + "," + a[sep + 3], a[2])
    return out


def fstab_lines(root):
    try:
        with open(os.path.join(root, "etc/fstab")) as f:
            return [l for l in f.read().splitlines() if l.strip() and not l.startswith("#")]
    except FileNotFoundError:
        return []


def volume_stack(volumes, layers=None, extra=None):
    stack = conftest.simple_stack(layers=layers, extra=extra)
    stack["agent"]["volumes"] = {"app1": volumes}
    return stack


def step_of(agent, run_id, kind):
    info = agent.ctl_json("show", run_id)
    return [s for s in info["steps"] if s["kind"] == kind]
