#!/usr/bin/python3
"""Fleet fan-out on etcd (design.md §9, §10): one etcd and N agents on this machine.

Each agent has its own root, state, socket and instance name ("n0001"...), all
in layer "web" (config `layers`, and static members with the addresses their
registrations carry), whose configure recipe is /bin/true. The fan-out is
timed from just before `agentctl stack push` (validation and the etcd txn
included) to each agent's run started. For each
N in --sizes:
  1. start etcd and the N agents, wait until every agent is idle (their
     registrations' membership storm settled);
  2. one `agentctl stack push` of a Custom JSON change (a configure for every
     agent), then the time from just before the push to every agent's run
     started (the run's "started", RFC 3339 with ms): p50, p95, p100;
  3. beside it, with the N agents still watching, the floor: F `etcdctl watch
     --prefix` processes on the same prefix (F = min(N, --floor-max, default
     50): each is a Go process of ~20 MB whose start costs ~50 ms of CPU, and
     200 of them beside 200 agents made this 2-core machine's etcd answer 503),
     and the time from a put to each watcher printing it;
  4. the RSS (and anonymous memory) of the whole fleet and of etcd; the idle
     wake-ups (context switches over 10 s) and anonymous memory of one agent;
  5. kill -9 of one agent of layer "app" (the first size only: 1 app agent
     and 3 lb agents whose configure is /bin/true) and the time until every
     lb member's configure started, beside lease_ttl + settle + 1 s.
Timing never fails the bench; it exits non-zero only when something broke.
Options: --sizes 10,200,1000  --floor-max 50  --lease-ttl 10  --dir DIR  --json FILE  --keep
"""
import argparse
import importlib.machinery
import json
import os
import selectors
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.abspath(os.path.join(HERE, "..", ".."))
BUILD = os.environ.get("BUILD", os.path.join(TOP, "build"))
AGENTD = os.path.join(BUILD, "agentd")
AGENTCTL = os.path.join(BUILD, "agentctl")
sys.path.insert(0, os.path.join(TOP, "tests", "integration"))
from etcd_fixture import Etcd  # noqa: E402

bench = importlib.machinery.SourceFileLoader("bench_run", os.path.join(HERE, "run")).load_module()
PREFIX = "/agentd/bench"


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def stack(seq, lb=False, members=()):
    """members: static members of "web", online, with the address their
    registrations will carry, so that the agents registering at start
    change no effective stack (no start-up storm of N configures times N
    agents: real fleets do not start 1000 instances in one second)."""
    layers = {"web": {"name": "Web", "instances": {m: {"private_ip": "127.0.0.1", "status": "online"}
                                                   for m in members}}}
    recipes = {"web": {"setup": [], "configure": ["noop"], "deploy": []}}
    if lb:
        layers.update({"lb": {"name": "LB", "instances": {}}, "app": {"name": "App", "instances": {}}})
        recipes.update({"lb": {"setup": [], "configure": ["noop"], "deploy": []},
                        "app": {"setup": [], "configure": ["noop"], "deploy": []}})
    return {"opsworks": {"stack": {"name": "bench"}, "layers": layers}, "deploy": {},
            "agent": {"recipes": {"noop": {"command": ["/bin/true"]}}, "layers": recipes},
            "bench": {"seq": seq}}


class Fleet:
    def __init__(self, tmp, etcd, lease_ttl):
        self.tmp, self.etcd, self.lease_ttl = tmp, etcd, lease_ttl
        self.agents = {}   # name -> (proc, sock)

    def start(self, name, layers):
        d = os.path.join(self.tmp, name)
        os.makedirs(os.path.join(d, "root"), exist_ok=True)
        conf = {"source": f"etcd://127.0.0.1:{self.etcd.port}{PREFIX}", "instance": name, "layers": layers,
                "root": os.path.join(d, "root"), "state_dir": os.path.join(d, "state"),
                "log_dir": os.path.join(d, "log"), "socket": os.path.join(d, "s"),
                "admin_group": "agentd", "lease_ttl": self.lease_ttl, "history": 5,
                "metrics_file": os.path.join(d, "agentd.prom")}
        with open(os.path.join(d, "agentd.conf"), "w") as f:
            json.dump(conf, f)
        out = open(os.path.join(d, "agentd.log"), "ab")
        p = subprocess.Popen([AGENTD, "-d", "--config", os.path.join(d, "agentd.conf")], stdout=out, stderr=out)
        self.agents[name] = (p, os.path.join(d, "s"))

    def client(self, name):
        return bench.Client(self.agents[name][1])

    def status(self, name):
        try:
            return self.client(name).call("status")
        except Exception:
            return None

    def wait_all_idle(self, names, timeout):
        deadline = time.monotonic() + timeout
        pending = set(names)
        while pending and time.monotonic() < deadline:
            for n in list(pending):
                s = self.status(n)
                if s and s.get("current_run") is None and not s.get("queue") and s.get("last_run"):
                    pending.discard(n)
            if pending:
                time.sleep(0.2)
        if pending:
            raise bench.Broken(f"{len(pending)} agents not idle after {timeout} s, e.g. {sorted(pending)[:3]}")

    def last_run_id(self, name):
        s = self.status(name)
        return (s.get("last_run") or {}).get("id", 0) if s else 0

    def run_started_after(self, name, since_id, event="configure"):
        """The started time of the first run newer than since_id, or None."""
        try:
            runs = self.client(name).call("runs", {"n": 10})["runs"]
        except Exception:
            return None
        for r in sorted(runs, key=lambda r: r["id"]):
            if r["id"] > since_id and r["event"] == event and r.get("started"):
                return bench.parse_rfc3339(r["started"])
        return None

    def rss(self):
        total = {"Rss": 0, "Anonymous": 0}
        for p, _ in self.agents.values():
            if p.poll() is None:
                m = bench.smaps(p.pid)
                total["Rss"] += m["Rss"]
                total["Anonymous"] += m["Anonymous"]
        return total

    def stop(self):
        for p, _ in self.agents.values():
            if p.poll() is None:
                p.terminate()
        for p, _ in self.agents.values():
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()


def push(fleet, via, doc):
    path = os.path.join(fleet.tmp, "push.json")
    with open(path, "w") as f:
        json.dump(doc, f)
    t0 = time.time()
    p = subprocess.run([AGENTCTL, "--socket", fleet.agents[via][1], "stack", "push", path],
                       capture_output=True, text=True)
    if p.returncode != 0:
        raise bench.Broken(f"stack push failed: {p.stdout}{p.stderr}")
    return t0


def wait_quiet(etcd, quiet_s=2.0, timeout=300):
    """Waits until etcd's revision has not moved for quiet_s: the fleet's
    registrations and state updates after its start have all landed."""
    deadline = time.monotonic() + timeout
    last, since = None, time.monotonic()
    while time.monotonic() < deadline:
        try:
            rev = etcd.revision()
        except Exception:
            rev = None
        if rev != last:
            last, since = rev, time.monotonic()
        elif rev is not None and time.monotonic() - since >= quiet_s:
            return rev
        time.sleep(0.2)
    raise bench.Broken(f"etcd's revision still moving after {timeout} s")


def fan_out(fleet, names, seq, timeout=120):
    since = {n: fleet.last_run_id(n) for n in names}
    t0 = push(fleet, names[0], stack(seq, members=names))
    lat = {}
    deadline = time.monotonic() + timeout
    while len(lat) < len(names) and time.monotonic() < deadline:
        for n in names:
            if n not in lat:
                t = fleet.run_started_after(n, since[n])
                if t is not None:
                    lat[n] = (t - t0) * 1000
        time.sleep(0.05)
    if len(lat) < len(names):
        raise bench.Broken(f"{len(names) - len(lat)} agents never started a run after the push")
    fleet.wait_all_idle(names, timeout)
    return sorted(lat.values())


def floor(etcd, n, seq):
    """n etcdctl watchers; ms from the put to each printing it. A watcher
    prints nothing when its watch is created, so warm-up puts go first until
    every one has printed one; the measured put carries a marker."""
    procs = []
    try:
        return floor_measure(etcd, n, seq, procs)
    finally:
        for p in procs:  # whatever happened: no watcher outlives the bench
            p.kill()
            p.wait()


def floor_measure(etcd, n, seq, procs):
    for _ in range(n):
        procs.append(subprocess.Popen(["etcdctl", "--endpoints", etcd.url, "watch", "--prefix",
                                       PREFIX + "/stack"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL))
    bufs = {p.stdout.fileno(): b"" for p in procs}
    sel = selectors.DefaultSelector()
    for p in procs:
        os.set_blocking(p.stdout.fileno(), False)
        sel.register(p.stdout.fileno(), selectors.EVENT_READ)

    def pump(until, timeout):
        deadline = time.monotonic() + timeout
        while not until() and time.monotonic() < deadline:
            for key, _ in sel.select(timeout=0.5):
                try:
                    bufs[key.fd] += os.read(key.fd, 65536)
                except BlockingIOError:
                    pass

    deadline = time.monotonic() + 300
    while not all(bufs.values()) and time.monotonic() < deadline:
        etcd.put(PREFIX + "/stack-warmup", str(time.time()))
        pump(lambda: all(bufs.values()), 2)
    if not all(bufs.values()):
        raise bench.Broken("etcdctl watchers did not all start")
    marker = f"floor-{seq}-{time.time()}".encode()
    seen = {}
    for fd in bufs:
        bufs[fd] = b""
    t0 = time.time()
    etcd.put(PREFIX + "/stack-floor", marker.decode())

    def all_seen():
        now = time.time()
        for fd, data in bufs.items():
            if fd not in seen and marker in data:
                seen[fd] = (now - t0) * 1000
        return len(seen) == len(bufs)
    pump(all_seen, 60)
    rss = sum(bench.smaps(p.pid)["Rss"] for p in procs)
    return sorted(seen.values()), rss


def idle_figures(pid, seconds=10.0):
    m0 = bench.smaps(pid)
    time.sleep(seconds)
    m1 = bench.smaps(pid)
    switches = (m1["voluntary_ctxt_switches"] + m1["nonvoluntary_ctxt_switches"]
                - m0["voluntary_ctxt_switches"] - m0["nonvoluntary_ctxt_switches"])
    return {"wakeups_per_10s": switches, "anon_kib": m1["Anonymous"], "rss_kib": m1["Rss"]}


def kill_to_configure(tmp, etcd, lease_ttl):
    fleet = Fleet(os.path.join(tmp, "kill"), etcd, lease_ttl)
    os.makedirs(fleet.tmp)
    etcd.put(PREFIX + "/stack", json.dumps(stack(0, lb=True)))
    lbs = [f"lb{i}" for i in range(3)]
    for n in lbs:
        fleet.start(n, ["lb"])
    fleet.start("app0", ["app"])
    try:
        fleet.wait_all_idle(lbs + ["app0"], 60)
        wait_quiet(etcd)
        since = {n: fleet.last_run_id(n) for n in lbs}
        p = fleet.agents["app0"][0]
        t0 = time.time()
        p.kill()
        p.wait()
        lat = {}
        deadline = time.monotonic() + lease_ttl + 30
        while len(lat) < len(lbs) and time.monotonic() < deadline:
            for n in lbs:
                if n not in lat:
                    t = fleet.run_started_after(n, since[n])
                    if t is not None:
                        lat[n] = t - t0
            time.sleep(0.05)
        return max(lat.values()) if len(lat) == len(lbs) else None
    finally:
        fleet.stop()
        etcd.delete(PREFIX + "/", prefix=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10,200,1000")
    ap.add_argument("--floor-max", type=int, default=50)
    ap.add_argument("--lease-ttl", type=int, default=10)
    ap.add_argument("--dir", help="where the agents' roots and state go (default: $TMPDIR); /dev/shm takes "
                    "the one disk that N agents share here out of the figures")
    ap.add_argument("--json")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="agentd-bench-fleet-", dir=args.dir)
    etcd = Etcd()
    etcd.timeout = 60  # a loaded 2-core machine with 1000 agents answers slowly
    results = {"sizes": [], "lease_ttl": args.lease_ttl}
    try:
        etcd.start()
        results["kill_to_configure_s"] = kill_to_configure(tmp, etcd, args.lease_ttl)
        results["kill_bound_s"] = args.lease_ttl + 0.2 + 1
        for n in [int(x) for x in args.sizes.split(",")]:
            fleet = Fleet(os.path.join(tmp, f"n{n}"), etcd, args.lease_ttl)
            os.makedirs(fleet.tmp)
            names = [f"n{i:04d}" for i in range(n)]
            etcd.put(PREFIX + "/stack", json.dumps(stack(0, members=names)))
            log(f"bench_fleet: starting {n} agents")
            try:
                for name in names:
                    fleet.start(name, ["web"])
                fleet.wait_all_idle(names, 120 + n // 2)
                wait_quiet(etcd)
                idle = idle_figures(fleet.agents[names[0]][0].pid)
                load_at_push = os.getloadavg()[0]
                lat = fan_out(fleet, names, 1)
                wait_quiet(etcd)
                flo, flo_rss = floor(etcd, min(n, args.floor_max), 2)
                rss = fleet.rss()
                row = {"n": n, "p50_ms": bench.percentile(lat, 50), "p95_ms": bench.percentile(lat, 95),
                       "p100_ms": lat[-1], "floor_n": len(flo), "floor_p100_ms": flo[-1],
                       "floor_p50_ms": bench.percentile(flo, 50),
                       "fleet_rss_mib": rss["Rss"] / 1024, "fleet_anon_mib": rss["Anonymous"] / 1024,
                       "etcd_rss_mib": bench.smaps(etcd.proc.pid)["Rss"] / 1024,
                       "floor_rss_mib": flo_rss / 1024, "idle_agent": idle,
                       "loadavg_at_push": load_at_push}
                row["ratio_p100"] = row["p100_ms"] / max(row["floor_p100_ms"], 0.001)
                results["sizes"].append(row)
                log(json.dumps(row))
            finally:
                fleet.stop()
                etcd.delete(PREFIX + "/", prefix=True)
    finally:
        etcd.stop()
        if args.keep:
            log(f"bench_fleet: kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
            etcd.remove()
    print(f"{'N':>5} {'p50 ms':>8} {'p95 ms':>8} {'p100 ms':>8} {'floor p100':>10} {'ratio':>6} "
          f"{'fleet RSS MiB':>13} {'fleet anon MiB':>14} {'etcd RSS MiB':>12}")
    for r in results["sizes"]:
        print(f"{r['n']:>5} {r['p50_ms']:>8.1f} {r['p95_ms']:>8.1f} {r['p100_ms']:>8.1f} "
              f"{r['floor_p100_ms']:>10.1f} {r['ratio_p100']:>6.1f} {r['fleet_rss_mib']:>13.1f} "
              f"{r['fleet_anon_mib']:>14.1f} {r['etcd_rss_mib']:>12.1f}")
    for r in results["sizes"][:1]:
        i = r["idle_agent"]
        print(f"idle agent on etcd: {i['wakeups_per_10s']} context switches in 10 s, "
              f"anonymous {i['anon_kib']} KiB, RSS {i['rss_kib']} KiB")
    k = results["kill_to_configure_s"]
    print(f"kill -9 -> every lb member's configure started: "
          f"{'%.2f s' % k if k is not None else 'NOT SEEN'} (bound lease_ttl + settle + 1 = "
          f"{results['kill_bound_s']:.1f} s)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
