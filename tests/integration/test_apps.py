# Plone apps end to end (issue 3): real git, real buildout (Debian's
# zc.buildout through conf/demo/bin/buildout), a real private supervisord.
import json
import os
import shutil
import subprocess

from apps_fixtures import answers, apps_env, apps_stack, commit, http_get, last_run, run_steps  # noqa: F401
from conftest import wait_for

DEPLOY_TO = "srv/www/plone_instances"


def wait_clients(ports, zeo=None, timeout=30):
    def ok():
        got = [answers(p) for p in ports]
        return all(g and (zeo is None or g["zeo"] == zeo) for g in got) and got
    return wait_for(ok, timeout=timeout, what=f"clients on {ports}")


def dpkg_missing(names):
    import subprocess
    out = subprocess.run(["dpkg-query", "-W", "-f=${Package} ${db:Status-Status}\n", *names],
                         capture_output=True, text=True).stdout
    installed = {l.split()[0] for l in out.splitlines() if l.endswith(" installed")}
    return [n for n in names if n not in installed]


def test_deploy_from_git_then_noop_then_zeo_change(apps_env, tmpdir_agent):
    make, repo = apps_env
    stack = apps_stack(repo)
    stack["deploy"]["plone_instances"]["os_packages"] = ["coreutils", "agentd-test-no-such-package"]
    # supervisord expands %(...)s: a % is written %%.
    stack["deploy"]["plone_instances"]["environment"]["PCT"] = "50%(x)s"
    a, sup = make(stack)
    a.wait_runs(3, timeout=120)
    a.wait_idle(timeout=120)
    runs = a.runs()
    assert all(r["status"] == "success" for r in runs), [r.get("error") for r in runs]
    # Setup asked to install only what dpkg says is missing.
    want = dpkg_missing(["libjpeg-dev", "libpng-dev", "libxml2-dev", "libxslt1-dev", "coreutils",
                         "agentd-test-no-such-package"])
    assert open(os.path.join(tmpdir_agent, "installed-packages")).read().split() == want
    got = wait_clients([8081, 8082], zeo="10.9.0.1:8001")
    assert [g["part"] for g in got] == ["client1", "client2"]
    assert answers(8083) is None  # instance_count is 2
    cur = os.readlink(os.path.join(a.root, DEPLOY_TO, "current"))
    assert cur.startswith("releases/")
    for d in ("eggs", "downloads", "extends", "var", "parts", "log"):
        assert os.readlink(os.path.join(a.root, DEPLOY_TO, "current", d)) == f"../../shared/{d}"
    pids = sup.pids("plone_instances-")
    assert set(pids) == {"plone_instances-client1", "plone_instances-client2"}
    # The first deploy added and started the programs: they were not restarted a second time.
    first = run_steps(a, last_run(a, event="deploy")["id"])
    assert [s["status"] for s in first if s["kind"] == "service"] == ["changed", "unchanged", "unchanged"]
    conf = open(os.path.join(a.root, "etc/supervisor/conf.d/plone_instances-client1.conf")).read()
    assert "bin/client1 console" in conf and 'ZOPE_MODE="test"' in conf and "RAILS_ENV" not in conf
    assert 'PCT="50%%(x)s"' in conf
    # The program files hold the environment, .agentd-source the repository URL (maybe with a token).
    assert os.stat(os.path.join(a.root, "etc/supervisor/conf.d/plone_instances-client1.conf")).st_mode & 0o777 == 0o600
    assert os.stat(os.path.join(a.root, DEPLOY_TO, "current", ".agentd-source")).st_mode & 0o777 == 0o600

    # Deploy again with nothing changed: nothing changes, nothing is built or restarted.
    p = a.ctl("--json", "run", "deploy", "--app", "plone_instances", "--wait", check=0)
    r = last_run(a, event="deploy")
    assert r["status"] == "success" and r["changed"] == 0, r
    steps = run_steps(a, r["id"])
    build = [s for s in steps if s["target"] == "buildout"]
    assert build and all(s["status"] == "skipped" for s in build), build
    assert sup.pids("plone_instances-") == pids
    assert os.readlink(os.path.join(a.root, DEPLOY_TO, "current")) == cur

    # The ZEO member moves: configure re-renders deploy.cfg, builds once and
    # restarts the clients one after another.
    n = len(a.finished_runs())
    stack = apps_stack(repo, zeo_ip="10.9.0.2", pi={"restart_delay": 1})
    stack["deploy"]["plone_instances"]["os_packages"] = ["coreutils", "agentd-test-no-such-package"]
    stack["deploy"]["plone_instances"]["environment"]["PCT"] = "50%(x)s"
    a.write_stack(stack)
    a.wait_runs(n + 1, timeout=120)
    a.wait_idle(timeout=120)
    r = last_run(a, event="configure")
    assert r["status"] == "success", r
    steps = run_steps(a, r["id"])
    assert [s["status"] for s in steps if s["target"] == "buildout"] == ["changed"]
    restarts = [s for s in steps if s["kind"] == "service" and s["target"].startswith("supervisor:plone_instances-")]
    assert [s["status"] for s in restarts] == ["changed", "changed"], restarts
    # Rolling: each running client waited its delay (1 s) before its restart,
    # one after the other (steps run in order).
    assert all(s["duration_ms"] >= 1000 for s in restarts), restarts
    cfg = open(os.path.join(a.root, DEPLOY_TO, "current", "deploy.cfg")).read()
    assert "address = 10.9.0.2:8001" in cfg
    wait_clients([8081, 8082], zeo="10.9.0.2:8001")
    new = sup.pids("plone_instances-")
    assert all(new[k] != pids[k] for k in pids), (pids, new)


def releases(a):
    return sorted(os.listdir(os.path.join(a.root, DEPLOY_TO, "releases")))


def current(a):
    return os.readlink(os.path.join(a.root, DEPLOY_TO, "current")).split("/")[-1]


def deploy_and_wait(a, stack):
    n = len(a.finished_runs())
    a.write_stack(stack)
    a.wait_runs(n + 1, timeout=120)
    a.wait_idle(timeout=120)
    return last_run(a, event="deploy")


def test_new_revisions_prune_rollback_and_failed_build(apps_env):
    make, repo = apps_env
    a, sup = make(apps_stack(repo))
    a.wait_runs(3, timeout=120)
    a.wait_idle(timeout=120)
    wait_clients([8081, 8082])
    first = current(a)

    commit(repo, "v2")
    r = deploy_and_wait(a, apps_stack(repo, revision="v2"))
    assert r["status"] == "success", r
    second = current(a)
    assert second != first and releases(a) == [first, second]
    assert open(os.path.join(a.root, DEPLOY_TO, "current", "VERSION")).read() == "v2\n"
    pids = sup.pids("plone_instances-")

    commit(repo, "v3")
    r = deploy_and_wait(a, apps_stack(repo, revision="v3", pi={"restart_delay": 1}))
    assert r["status"] == "success", r
    third = current(a)
    # keep_releases is 2: the oldest went.
    assert releases(a) == [second, third]
    # A new release restarts the clients.
    wait_clients([8081, 8082])
    assert all(sup.pids("plone_instances-")[k] != pids[k] for k in pids)

    # Rollback goes back to the previous release and restarts the services.
    pids = sup.pids("plone_instances-")
    out = a.ctl_json("rollback", "plone_instances")
    assert out["from"] == third and out["to"] == second and out["restart_run"]
    assert current(a) == second
    wait_for(lambda: a.ctl_json("show", out["restart_run"])["status"] == "success", timeout=60,
             what="the restart after the rollback")
    wait_clients([8081, 8082])
    assert all(sup.pids("plone_instances-")[k] != pids[k] for k in pids)
    # Rolling: each running client waited its restart_delay (1 s) first.
    restarts = [s for s in run_steps(a, out["restart_run"]) if s["kind"] == "service"]
    assert len(restarts) == 2 and all(s["duration_ms"] >= 1000 for s in restarts), restarts

    # A revision whose buildout fails: the run fails with buildout's output in
    # its log, current and the running clients stay as they were.
    commit(repo, "v4", path="cfg/base.cfg",
           content=open(os.path.join(repo, "cfg/base.cfg")).read().replace(
               "recipe = demo_recipe\nhttp-address = 8081", "recipe = no_such_recipe_egg\nhttp-address = 8081"))
    pids = sup.pids("plone_instances-")
    r = deploy_and_wait(a, apps_stack(repo, revision="v4"))
    assert r["status"] == "failed", r
    log = a.ctl("log", r["id"]).stdout
    assert "no_such_recipe_egg" in log, log
    assert "buildout of release" in r["error"], r
    assert current(a) == second
    assert releases(a) == [second, third]  # the failed release was removed
    assert sup.pids("plone_instances-") == pids
    assert http_get(8081)["part"] == "client1"


def test_branch_that_moved_is_a_new_release_on_deploy(apps_env):
    # revision "main" is a branch: a deploy asks git where it points now, so
    # a new commit is a new release and an unmoved branch is no change.
    make, repo = apps_env
    a, sup = make(apps_stack(repo, revision="main"))
    a.wait_runs(3, timeout=120)
    a.wait_idle(timeout=120)
    wait_clients([8081, 8082])
    first = current(a)

    def deploy():
        p = a.ctl("run", "deploy", "--app", "plone_instances", "--wait")
        r = last_run(a, event="deploy")
        assert (p.returncode == 0) == (r["status"] == "success"), (p, r)
        return r

    r = deploy()
    assert r["status"] == "success" and r["changed"] == 0, r
    assert current(a) == first

    commit(repo, "v2")
    r = deploy()
    assert r["status"] == "success" and r["changed"] > 0, r
    second = current(a)
    assert second != first
    assert open(os.path.join(a.root, DEPLOY_TO, "current", "VERSION")).read() == "v2\n"
    head = subprocess.run(["git", "-C", repo, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert ("commit " + head) in a.ctl("log", str(r["id"])).stdout

    # A repository that is gone: the lookup fails the step, current stays.
    shutil.rmtree(os.path.join(repo, ".git"))
    r = deploy()
    assert r["status"] == "failed", r
    steps = run_steps(a, r["id"])
    assert any("cannot look up revision main" in (st.get("error") or "") for st in steps), steps
    assert current(a) == second


def two_apps_stack(repo):
    app = {"scm": {"scm_type": "git", "repository": repo, "revision": "v1"}, "user": "root", "group": "root"}
    stack = apps_stack(repo, apps={
        "plone_instances": dict(app, deploy_to="/srv/www/plone_instances"),
        "zeoserver": dict(app, deploy_to="/srv/www/zeoserver"),
    })
    stack["opsworks"]["layers"]["zeoserver"]["instances"] = {"app1": {"private_ip": "127.0.0.1", "status": "online"}}
    stack["plone_zeoserver"] = {"enable_pack": False}
    return stack


def test_undeploy_of_one_app_leaves_the_other_alone(apps_env):
    make, repo = apps_env
    a, sup = make(two_apps_stack(repo))
    a.wait_runs(4, timeout=180)
    a.wait_idle(timeout=180)
    assert all(r["status"] == "success" for r in a.runs()), [r.get("error") for r in a.runs()]
    # The clients found the ZEO server on this instance (its private address).
    wait_clients([8081, 8082], zeo="127.0.0.1:8001")
    assert wait_for(lambda: answers(8001), what="the zeoserver stand-in")["part"] == "zeoserver"
    zeo_pid = sup.pids("zeoserver")["zeoserver"]
    zeo_files = sorted(os.listdir(os.path.join(a.root, "srv/www/zeoserver")))

    p = a.ctl("run", "undeploy", "--layer", "plone_instances", "--app", "plone_instances", "--wait")
    assert p.returncode == 0, p.stdout + p.stderr
    assert not os.path.exists(os.path.join(a.root, "srv/www/plone_instances"))
    assert not [f for f in os.listdir(os.path.join(a.root, "etc/supervisor/conf.d")) if f.startswith("plone_instances")]
    assert set(sup.info()) == {"zeoserver"}
    assert wait_for(lambda: answers(8081) is None and answers(8082) is None, what="the clients to stop")
    # The other app: same files, same process, still answering.
    assert sorted(os.listdir(os.path.join(a.root, "srv/www/zeoserver"))) == zeo_files
    assert sup.pids("zeoserver")["zeoserver"] == zeo_pid
    assert answers(8001)["part"] == "zeoserver"


def test_client_count_follows_backends_then_cpus(apps_env):
    make, repo = apps_env
    stack = apps_stack(repo)
    stack["plone_instances"] = {"per_cpu": 2}
    stack["opsworks"]["layers"]["plone_instances"]["instances"]["app1"]["backends"] = 12  # ceil(12*2/8) = 3
    a, sup = make(stack)
    a.wait_runs(3, timeout=120)
    a.wait_idle(timeout=120)
    wait_clients([8081, 8082, 8083])
    assert set(sup.pids("plone_instances-")) == {f"plone_instances-client{i}" for i in (1, 2, 3)}

    # No instance_count, no backends: ceil(CPUs x per_cpu), CPUs as agentd may use them.
    cpus = len(os.sched_getaffinity(0))
    n = len(a.finished_runs())
    del stack["opsworks"]["layers"]["plone_instances"]["instances"]["app1"]["backends"]
    stack["plone_instances"] = {"per_cpu": 1}
    a.write_stack(stack)
    a.wait_runs(n + 1, timeout=120)
    a.wait_idle(timeout=120)
    want = {f"plone_instances-client{i}" for i in range(1, cpus + 1)}
    assert set(sup.pids("plone_instances-")) == want
    assert sorted(f for f in os.listdir(os.path.join(a.root, "etc/supervisor/conf.d"))) == sorted(
        w + ".conf" for w in want)
    wait_clients([8080 + i for i in range(1, cpus + 1)])
    if cpus < 3:
        assert wait_for(lambda: answers(8083) is None, what="client3 to stop")
    # instance_count wins over both.
    plan = a.ctl_json("plan", "configure", "--layer", "plone_instances")
    confs = [s for s in plan["steps"] if s["kind"] == "file" and s["target"].endswith(".conf")]
    assert len(confs) == cpus
    stack["plone_instances"] = {"per_cpu": 1, "instance_count": 4}
    stack["opsworks"]["layers"]["plone_instances"]["instances"]["app1"]["backends"] = 40
    n = len(a.finished_runs())
    a.write_stack(stack)
    a.wait_runs(n + 1, timeout=120)
    a.wait_idle(timeout=120)
    assert len(sup.pids("plone_instances-")) == 4
    wait_clients([8081, 8082, 8083, 8084])


BAD = [
    # (what to change, JSON path the error must name)
    (lambda s: s["deploy"]["plone_instances"]["scm"].update(repository="/tmp/r;touch /tmp/agentd-pwned"),
     "$.deploy.plone_instances.scm.repository"),
    (lambda s: s["deploy"]["plone_instances"]["scm"].update(repository="ext::sh"),
     "$.deploy.plone_instances.scm.repository"),
    (lambda s: s["deploy"]["plone_instances"]["scm"].update(revision="v1;id"),
     "$.deploy.plone_instances.scm.revision"),
    (lambda s: s["deploy"]["plone_instances"]["scm"].update(revision="$(id)"),
     "$.deploy.plone_instances.scm.revision"),
    (lambda s: s["deploy"].update({"bad;name": {}}), "$.deploy"),
    (lambda s: s["deploy"]["plone_instances"].update(
        buildout_init_commands=[{"name": "x", "cmd": "../../../bin/sh"}]),
     "$.deploy.plone_instances.buildout_init_commands[0]"),
    (lambda s: s["deploy"]["plone_instances"].update(
        buildout_init_commands=[{"name": "x", "cmd": "bin/x", "args": "a; rm -rf /"}]),
     "$.deploy.plone_instances.buildout_init_commands[0]"),
    (lambda s: s["deploy"]["plone_instances"].update(
        buildout_init_commands=[{"name": "x", "cmd": "/bin/sh"}]),
     "$.deploy.plone_instances.buildout_init_commands[0]"),
    (lambda s: s["deploy"]["plone_instances"].update(deploy_to="/srv/www/../../etc"),
     "$.deploy.plone_instances.deploy_to"),
    (lambda s: s["deploy"]["plone_instances"].update(
        buildout_cache_archives=[{"url": "http://x/a.tar.gz", "path": "../../etc"}]),
     "$.deploy.plone_instances.buildout_cache_archives[0]"),
    (lambda s: s["deploy"]["plone_instances"].update(environment={"A": "x\"; rm -rf /"}),
     "$.deploy.plone_instances.environment.A"),
    # Newlines would add lines (sections, programs) to deploy.cfg or a supervisor program.
    (lambda s: s["deploy"]["plone_instances"].update(environment={"A": "x\n[program:evil]\ncommand=/bin/sh"}),
     "$.deploy.plone_instances.environment.A"),
    (lambda s: s["deploy"]["plone_instances"].update(environment={"A\nB": "x"}),
     "$.deploy.plone_instances.environment"),
    (lambda s: s["plone_instances"].update(enable_relstorage=True,
                                           relstorage={"db": {"password": "pw\n[buildout]\nparts = evil"}}),
     "$.plone_instances.relstorage.db.password"),
    (lambda s: s["plone_instances"].update(enable_celery=True, broker={"host": "b\n[celery]"}),
     "$.plone_instances.broker.host"),
    (lambda s: s["deploy"]["plone_instances"].update(
        buildout_init_commands=[{"name": "client1", "cmd": "bin/x"}]),
     "$.deploy.plone_instances.buildout_init_commands[0]"),
]


def test_hostile_values_are_rejected_at_validation(make_agent, tmpdir_agent):
    from apps_fixtures import make_repo
    repo = make_repo(tmpdir_agent)
    good = apps_stack(repo)
    a = make_agent(None, conf_extra={"supervisor_socket": os.path.join(tmpdir_agent, "none.sock")})
    bad = json.loads(json.dumps(good))
    BAD[0][0](bad)
    a.write_stack(bad)
    a.start()
    sentinel = json.loads(json.dumps(good))
    sentinel["plone_instances"]["instance_count"] = "many"
    for i, (change, path) in enumerate(BAD):
        # Between cases, a document failing elsewhere: each case's error is its own.
        a.write_stack(sentinel)
        wait_for(lambda: (a.status()["source"]["error_path"] or "").startswith("$.plone_instances.instance_count"),
                 what="the sentinel error")
        bad = json.loads(json.dumps(good))
        change(bad)
        a.write_stack(bad)
        wait_for(lambda: (a.status()["source"]["error_path"] or "").startswith(path), timeout=10,
                 what=f"case {i}: error at {path} (status {a.status()['source']})")
    assert a.runs() == []
    assert not os.path.exists("/tmp/agentd-pwned")


def test_archive_over_http_with_basic_auth(apps_env, tmpdir_agent):
    import base64
    import http.server
    import tarfile
    import threading
    make, repo = apps_env
    tgz = os.path.join(tmpdir_agent, "app.tar.gz")
    with tarfile.open(tgz, "w:gz") as t:
        for name in os.listdir(repo):
            if name != ".git":
                t.add(os.path.join(repo, name), arcname=name)
    data = open(tgz, "rb").read()
    cache = os.path.join(tmpdir_agent, "cache.tar.gz")
    with tarfile.open(cache, "w:gz") as t:
        t.add(os.path.join(repo, "cfg", "base.cfg"), arcname="cached/base.cfg")
    cache_data = open(cache, "rb").read()
    want = "Basic " + base64.b64encode(b"ci:s3cret").decode()
    gets = []

    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            gets.append(self.path)
            if self.path == "/cache.tar.gz":
                self.send_response(200)
                self.send_header("Content-Length", str(len(cache_data)))
                self.end_headers()
                self.wfile.write(cache_data)
                return
            if self.headers.get("Authorization") != want:
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="x"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{srv.server_address[1]}/app.tar.gz"
        stack = apps_stack(repo)
        stack["deploy"]["plone_instances"]["scm"] = {"scm_type": "archive", "repository": url,
                                                      "user": "ci", "password": "wrong"}
        stack["deploy"]["plone_instances"]["buildout_cache_archives"] = [
            {"url": url.replace("app.tar.gz", "cache.tar.gz"), "path": "shared/downloads/dist"}]
        a, sup = make(stack)
        a.wait_runs(3, timeout=120)
        a.wait_idle(timeout=120)
        r = last_run(a, event="deploy")
        assert r["status"] == "failed" and "HTTP 401" in r["error"], r
        assert os.listdir(os.path.join(a.root, DEPLOY_TO, "releases")) == []

        stack["deploy"]["plone_instances"]["scm"]["password"] = "s3cret"
        a.write_stack(stack)
        # Retries of the failed deploy may run in between: wait for a success.
        wait_for(lambda: any(r["event"] == "deploy" and r["status"] == "success" for r in a.runs()), timeout=120,
                 what="a successful deploy")
        wait_clients([8081, 8082])
        src = open(os.path.join(a.root, DEPLOY_TO, "current", ".agentd-source")).read()
        assert "s3cret" not in src and url in src
        assert not os.path.exists(os.path.join(a.root, DEPLOY_TO, "current", ".agentd-archive.tar.gz"))
        # The cache archive was unpacked once, whatever ran since.
        assert os.path.isfile(os.path.join(a.root, DEPLOY_TO, "shared/downloads/dist/cached/base.cfg"))
        assert gets.count("/cache.tar.gz") == 1, gets
    finally:
        srv.shutdown()
        srv.server_close()


def test_an_app_whose_name_prefixes_another_leaves_its_programs_alone(apps_env):
    # "plone" is a prefix of "plone-zeo": the program files say whose they are.
    make, repo = apps_env
    app = {"scm": {"scm_type": "git", "repository": repo, "revision": "v1"}, "user": "root", "group": "root"}
    stack = apps_stack(repo, apps={
        "plone": dict(app, deploy_to="/srv/www/plone"),
        "plone-zeo": dict(app, deploy_to="/srv/www/plone-zeo"),
    })
    stack["opsworks"]["layers"]["zeoserver"]["instances"] = {"app1": {"private_ip": "127.0.0.1", "status": "online"}}
    stack["plone_instances"]["app_name"] = "plone"
    stack["plone_zeoserver"] = {"enable_pack": False, "app_name": "plone-zeo"}
    a, sup = make(stack)
    a.wait_runs(4, timeout=180)
    a.wait_idle(timeout=180)
    assert all(r["status"] == "success" for r in a.runs()), [r.get("error") for r in a.runs()]
    confd = os.path.join(a.root, "etc/supervisor/conf.d")
    assert open(os.path.join(confd, "plone-zeo-zeoserver.conf")).readline() == "; agentd app=plone-zeo\n"
    zeo_pid = sup.pids("plone-zeo-")["plone-zeo-zeoserver"]

    p = a.ctl("run", "deploy", "--layer", "plone_instances", "--app", "plone", "--wait")
    assert p.returncode == 0, p.stdout + p.stderr
    p = a.ctl("run", "undeploy", "--layer", "plone_instances", "--app", "plone", "--wait")
    assert p.returncode == 0, p.stdout + p.stderr
    assert sorted(os.listdir(confd)) == ["plone-zeo-zeoserver.conf"]
    assert set(sup.info()) == {"plone-zeo-zeoserver"}
    assert sup.pids("plone-zeo-")["plone-zeo-zeoserver"] == zeo_pid
    assert answers(8001)["part"] == "zeoserver"


def test_cache_archive_for_an_app_user_that_is_not_root(apps_env, tmpdir_agent):
    # agentd downloads as root (0600); tar runs as the app user: the file is given to that user first.
    import http.server
    import pwd
    import tarfile
    import threading
    make, repo = apps_env
    nobody = pwd.getpwnam("nobody")
    cache = os.path.join(tmpdir_agent, "cache.tar.gz")
    with tarfile.open(cache, "w:gz") as t:
        t.add(os.path.join(repo, "cfg", "base.cfg"), arcname="cached/base.cfg")
    data = open(cache, "rb").read()

    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        stack = apps_stack(repo)
        stack["deploy"]["plone_instances"].update(user="nobody", group="nogroup", buildout_cache_archives=[
            {"url": f"http://127.0.0.1:{srv.server_address[1]}/cache.tar.gz", "path": "shared/downloads/dist"}])
        a, sup = make(stack)
        wait_for(lambda: last_run(a, event="setup") and last_run(a, event="setup")["status"] in ("success", "failed"),
                 timeout=120, what="the setup run")
        r = last_run(a, event="setup")
        assert r["status"] == "success", (r, run_steps(a, r["id"]))
        dist = os.path.join(a.root, DEPLOY_TO, "shared/downloads/dist")
        assert os.stat(os.path.join(dist, "cached/base.cfg")).st_uid == nobody.pw_uid
        assert not os.path.exists(os.path.join(dist, ".agentd-fetch.tar.gz"))
    finally:
        srv.shutdown()
        srv.server_close()
