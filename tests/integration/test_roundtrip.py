# Values that must survive their file (design.md §8): every value a recipe
# writes into a rendered file either reads back exactly through that file's
# own parser, or the stack is refused at validation with the value's JSON
# path. The files are rendered by the real agentd (`agentctl plan`, whose
# diff of a new file is its whole content) and read back by the real
# parsers: supervisor's own config reader (Debian's supervisor package) and
# zc.buildout's (python3-zc.buildout), run by /usr/bin/python3 where Debian
# installed them.
import json
import os
import subprocess

import pytest

from apps_fixtures import apps_stack
from conftest import wait_for

SYSTEM_PYTHON = "/usr/bin/python3"
CONF_DIR = "/etc/supervisor/conf.d"

# Reads a supervisor program file the way supervisord does (its
# UnhosedConfigParser, %(ENV_x)s expansions, processes_from_section), and a
# deploy.cfg the way buildout does (zc.buildout.configparser.parse); prints
# what they read as JSON.
READER = r"""
import json, sys
kind, path = sys.argv[1], sys.argv[2]
if kind == "supervisor":
    from supervisor.options import ServerOptions, UnhosedConfigParser
    o = ServerOptions()
    p = UnhosedConfigParser()
    p.expansions = o.environ_expansions
    p.read([path])
    out = {}
    for sect in p.sections():
        name = sect.split(":", 1)[1]
        try:
            pc = o.processes_from_section(p, sect, name)[0]
            out[name] = {"environment": pc.environment, "command": pc.command, "directory": pc.directory}
        except Exception as e:
            out[name] = {"error": str(e)}
    print(json.dumps(out))
else:
    import zc.buildout.configparser
    with open(path) as f:
        print(json.dumps(zc.buildout.configparser.parse(f, path)))
"""


def read_back(kind, path):
    p = subprocess.run([SYSTEM_PYTHON, "-c", READER, kind, path], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def have_parsers():
    p = subprocess.run([SYSTEM_PYTHON, "-c", "import supervisor.options, zc.buildout.configparser"],
                       capture_output=True, timeout=60)
    return p.returncode == 0


pytestmark = pytest.mark.skipif(not os.path.exists(SYSTEM_PYTHON) or not have_parsers(),
                                reason="needs Debian's supervisor and python3-zc.buildout (tests/deps)")


def new_content(diff):
    """The content of a new file from its unified diff against nothing."""
    lines = []
    for line in diff.split("\n")[2:]:
        if line.startswith("+"):
            lines.append(line[1:])
    return "\n".join(lines) + "\n"


class Renderer:
    """One paused agentd: each stack is either loaded (then `plan deploy`
    renders its files) or refused with a JSON path."""

    def __init__(self, a, tmp, reset=None):
        self.a = a
        self.tmp = tmp
        self.n = 0
        self.reset = reset

    def load(self, stack):
        """None when the stack was loaded, else status' error path."""
        self.n += 1
        # A good stack first, which clears any error: the next outcome is the candidate's.
        prev = self.last
        self.a.write_stack(dict(self.reset or apps_stack("/nonexistent/repo"), roundtrip_reset=self.n))
        good = wait_for(lambda: (lambda src: src["error"] is None and src["stack_revision"] != prev
                                 and src["stack_revision"])(self.a.status()["source"]), what="the reset stack")
        self.a.write_stack(stack)

        def outcome():
            src = self.a.status()["source"]
            if src["error"]:
                return ("refused", src["error_path"])
            if src["stack_revision"] != good:
                return ("loaded", src["stack_revision"])
            return None
        kind, what = wait_for(outcome, what="the candidate stack loaded or refused")
        self.last = what if kind == "loaded" else good
        return None if kind == "loaded" else what

    def files(self, app="plone_instances"):
        """{path on the managed system: content} of the plan's new files."""
        steps = self.a.ctl_json("plan", "deploy", "--app", app)["steps"]
        out = {}
        for s in steps:
            if s["kind"] == "file" and s.get("diff"):
                path = os.path.join(self.tmp, "f%d" % len(out))
                with open(path, "w", encoding="utf-8") as f:
                    f.write(new_content(s["diff"]))
                out[s["target"]] = path
        return out


@pytest.fixture
def renderer(make_agent, tmpdir_agent):
    a = make_agent().start()
    # supervisord checks that the program's log directory exists.
    os.makedirs(os.path.join(a.root, "var/log/supervisor"), exist_ok=True)
    a.ctl("pause", "round-trip: plans only", check=0)
    r = Renderer(a, tmpdir_agent)
    r.last = None
    return r


# Environment values: written as KEY="value" into every supervisor program
# of the app and as "KEY value" into deploy.cfg's environment-vars.
ENV_OK = ["plain", "x;y", "x; y", "a#b", "100%", "%(here)s", "%%", "$HOME", "$$", "{}", "a,b", "a=b", "k=v,z=w",
          "back\\slash", "ünïcødé ✓", "it's", "a b  c", "", "tail'x", "[section]", "x:y"]
ENV_REFUSED = ["x ;y", "x #y", "a\"b", "'quoted'", "\"", "line\nbreak", "tab\there", "cr\rx", " lead", "trail ",
               "${buildout:directory}", "nb\u00a0;sp", "'"]


def env_stack(value):
    s = apps_stack("/nonexistent/repo")
    s["deploy"]["plone_instances"]["environment"] = {"FOO": value, "ZOPE_MODE": "test"}
    return s


@pytest.mark.parametrize("value", ENV_OK, ids=repr)
def test_an_accepted_environment_value_reads_back_through_supervisor_and_buildout(renderer, value):
    assert renderer.load(env_stack(value)) is None
    files = renderer.files()
    programs = {t: p for t, p in files.items() if t.startswith(CONF_DIR + "/")}
    assert len(programs) == 2, files  # client1, client2
    for target, path in programs.items():
        got = read_back("supervisor", path)
        for name, proc in got.items():
            assert "error" not in proc, (target, proc)
            assert proc["environment"]["FOO"] == value, (target, proc["environment"])
            assert proc["environment"]["ZOPE_MODE"] == "test"
    cfg = [p for t, p in files.items() if t.endswith("/deploy.cfg")]
    assert len(cfg) == 1, files
    sections = read_back("buildout", cfg[0])
    env = {}
    for line in sections["client1"]["environment-vars +"].split("\n"):
        k, _, v = line.partition(" ")
        env[k] = v
    assert env["FOO"] == value, env
    assert "${" not in env["FOO"]


@pytest.mark.parametrize("value", ENV_REFUSED, ids=repr)
def test_an_environment_value_that_would_not_read_back_is_refused_with_its_path(renderer, value):
    assert renderer.load(env_stack(value)) == "$.deploy.plone_instances.environment.FOO"


def relstorage_stack(dsn):
    return apps_stack("/nonexistent/repo", pi={"enable_relstorage": True,
                                                "relstorage": {"db": {"dsn": dsn}, "enable_cache": False}})


@pytest.mark.parametrize("dsn", ["dbname='zodb' host='db' password='p;#%$x'", "host=db password=a b",
                                 "ünï=1", "a = b"], ids=repr)
def test_an_accepted_dsn_reads_back_through_buildout(renderer, dsn):
    assert renderer.load(relstorage_stack(dsn)) is None
    cfg = [p for t, p in renderer.files().items() if t.endswith("/deploy.cfg")]
    assert read_back("buildout", cfg[0])["relstorage"]["dsn"] == dsn


@pytest.mark.parametrize("dsn", ["a\nb", " x", "x ", "password=${buildout:x}", "\t"], ids=repr)
def test_a_dsn_that_would_not_read_back_is_refused_with_its_path(renderer, dsn):
    assert renderer.load(relstorage_stack(dsn)) == "$.plone_instances.relstorage.db.dsn"


@pytest.mark.parametrize("field", ["host", "user", "password", "name", "adapter"])
@pytest.mark.parametrize("value", ["x\ny", "${a:b}", " x", "x "], ids=repr)
def test_a_database_field_that_would_not_read_back_is_refused_with_its_path(renderer, field, value):
    s = apps_stack("/nonexistent/repo", pi={"enable_relstorage": True,
                                             "relstorage": {"db": {field: value}, "enable_cache": False}})
    assert renderer.load(s) == f"$.plone_instances.relstorage.db.{field}"


@pytest.mark.parametrize("value", ["/data/${buildout:x}", "/data/blobs "], ids=repr)
def test_a_blob_dir_that_would_not_read_back_is_refused_with_its_path(renderer, value):
    s = apps_stack("/nonexistent/repo")
    s["plone_blobs"] = {"blob_dir": value}
    assert renderer.load(s) == "$.plone_blobs.blob_dir"


# The front end (haproxy.cfg, the VCL, the nginx site): each value is either
# refused with its path, or the real binary accepts the file and its own
# tokenizer reads the value back as one token (haproxy splits arguments at
# blanks and gives meaning to quotes, '\', '#' and '$'; nginx at blanks and
# ';', '{', '}', quotes, '\', '#' and '$').
HAPROXY_SPECIAL = set(" \t\"'\\#$")
NGINX_SPECIAL = set(" \t\"'\\#$;{}")

NASTY = ["/plain", "/a b", "/a#b", "/a;b", "/a\"b", "/a'b", "/a%20b", "/a$b", "/${X}", "/a{b}", "/a\nb", "/a\\b",
         "/ünï", "/a?b=c&d=(e)*!@,:+~", "relative", "", "/" + "x" * 2000]


def front_stack(haproxy=None, pi=None):
    s = {"opsworks": {"stack": {"name": "t"}, "layers": {
        "lb": {"name": "LB", "instances": {"app1": {"private_ip": "127.0.0.1", "status": "online"}}},
        "plone_instances": {"name": "P", "instances": {"web1": {"private_ip": "10.0.0.5", "status": "online"}}}}},
        "deploy": {}, "haproxy": {"enable_stats": True, "stats_password": "secret"}}
    s["haproxy"].update(haproxy or {})
    if pi:
        s["plone_instances"] = pi
    return s


def front_files(renderer):
    steps = renderer.a.ctl_json("plan", "configure", "--layer", "lb")["steps"]
    out = {}
    for s in steps:
        if s["kind"] == "checked-file" and s.get("diff"):
            path = os.path.join(renderer.tmp, os.path.basename(s["target"]) + ".%d" % renderer.n)
            with open(path, "w", encoding="utf-8") as f:
                f.write(new_content(s["diff"]))
            out[os.path.basename(s["target"])] = path
    return out


def haproxy_ok(path):
    p = subprocess.run(["haproxy", "-c", "-f", path], capture_output=True, text=True, timeout=60)
    return p.returncode == 0, p.stdout + p.stderr


def nginx_ok(path):
    d = os.path.dirname(path)
    conf = path + ".main"
    with open(conf, "w") as f:
        f.write(f"error_log stderr;\npid {d}/nginx.pid;\nevents {{\n}}\nhttp {{\n access_log off;\n"
                f" client_body_temp_path {d}/b;\n proxy_temp_path {d}/p;\n fastcgi_temp_path {d}/f;\n"
                f" uwsgi_temp_path {d}/u;\n scgi_temp_path {d}/s;\n include {path};\n}}\n")
    p = subprocess.run(["nginx", "-t", "-q", "-e", "stderr", "-p", d, "-c", conf], capture_output=True, text=True,
                       timeout=60)
    return p.returncode == 0, p.stderr


def vcl_ok(path):
    w = os.path.join(os.path.dirname(path), "varnish-w")
    p = subprocess.run(["varnishd", "-C", "-n", w, "-f", path], capture_output=True, text=True, timeout=60)
    return p.returncode == 0, p.stderr[-2000:]


def lines_with(path, head):
    with open(path, encoding="utf-8") as f:
        return [line.strip().split() for line in f if line.strip().startswith(head)]


@pytest.fixture
def front_renderer(make_agent, tmpdir_agent):
    a = make_agent().start()
    a.ctl("pause", "round-trip: plans only", check=0)
    os.chmod(tmpdir_agent, 0o755)  # varnishd compiles as its own user
    r = Renderer(a, tmpdir_agent, reset=front_stack())
    r.last = None
    return r


@pytest.mark.parametrize("field", ["health_check_url", "stats_url"])
@pytest.mark.parametrize("value", NASTY, ids=repr)
def test_a_front_url_is_refused_or_read_back_by_haproxy_and_nginx(front_renderer, field, value):
    err = front_renderer.load(front_stack({field: value}))
    if err is not None:
        assert err == f"$.haproxy.{field}"
        return
    assert not (set(value) & HAPROXY_SPECIAL), value
    files = front_files(front_renderer)
    ok, out = haproxy_ok(files["haproxy.cfg"])
    assert ok, out
    if field == "stats_url":
        assert ["stats", "uri", value] in lines_with(files["haproxy.cfg"], "stats uri"), value
        ok, out = nginx_ok(files["instances"])
        assert ok, out
        assert not (set(value.split("?")[0]) & NGINX_SPECIAL), value
    else:
        assert ["http-check", "send", "meth", "OPTIONS", "uri", value] in lines_with(files["haproxy.cfg"],
                                                                                    "http-check"), value


@pytest.mark.parametrize("field", ["stats_user", "stats_password"])
@pytest.mark.parametrize("value", ["u", "p:x", "p x", "p#x", "p;x", "p\"x", "p'x", "p%x", "p$x", "p${X}", "p{x}",
                                   "p\nx", "p\\x", "pä", "p-._~!^*+=,/@?&()[]"], ids=repr)
def test_stats_credentials_are_refused_or_read_back_by_haproxy(front_renderer, field, value):
    err = front_renderer.load(front_stack({field: value}))
    if err is not None:
        assert err == f"$.haproxy.{field}"
        return
    assert not (set(value) & HAPROXY_SPECIAL), value
    files = front_files(front_renderer)
    ok, out = haproxy_ok(files["haproxy.cfg"])
    assert ok, out
    auth = lines_with(files["haproxy.cfg"], "stats auth")
    user, _, password = auth[0][2].partition(":")
    assert (user if field == "stats_user" else password) == value, auth


@pytest.mark.parametrize("host,path", [("www.example.com", "Plone/sub"), ("a b", "Plone"), ("x;y", "Plone"),
                                        ("www.example.com", "Plone/a b"), ("www.example.com", "Plone/a;b"),
                                        ("www.example.com", "Plone/${x}"), ("www.example.com", "Plone/ü"),
                                        ("www.example.com", "Plone/\"x"), ("h{x}", "Plone"), ("ü.example", "Plone")],
                         ids=repr)
def test_a_subsite_is_refused_or_read_back_by_nginx_and_varnish(front_renderer, host, path):
    err = front_renderer.load(front_stack(pi={"subsites": {host: path}}))
    if err is not None:
        assert err.startswith("$.plone_instances.subsites"), err
        return
    assert not ((set(host) | set(path)) & NGINX_SPECIAL), (host, path)
    files = front_files(front_renderer)
    ok, out = nginx_ok(files["instances"])
    assert ok, out
    assert ["server_name", host + ";"] in lines_with(files["instances"], "server_name"), host
    ok, out = vcl_ok(files["default.vcl"])
    assert ok, out


# buildout_additional_config is raw buildout text: either zc.buildout reads
# the whole deploy.cfg (and the text's options), or the stack is refused.
EXTRA_OK = [
    ("[versions]\nZope2 = 2.13.30\n", {"versions": {"Zope2": "2.13.30"}}),
    ("# a comment\n; another\n[instance]\neggs +=\n    Products.X\n    Products.Y\n\n[x]\na = b\n",
     {"instance": {"eggs +": "Products.X\nProducts.Y"}, "x": {"a": "b"}}),
    ("[ spaced ]  # why\nk-=v\n=> other\n", {"spaced": {"k-": "v"}}),
    ("newest = false\n", {"buildout": {"newest": "false"}}),
]
EXTRA_BAD = ["    indented first\n", "no separator here\n", "[unclosed\n", "a = b\r\n[x]\n", "ok = 1\n\x01\n",
             "=\n", "[x]\n garbage\n", "[x]\na: b\n", "[a b]\n", "[x] junk\n", "[x:True]\n", "a + = b\n",
             "[x]\n\n  continued\n"]


@pytest.mark.parametrize("text,want", EXTRA_OK, ids=[repr(t) for t, _ in EXTRA_OK])
def test_accepted_additional_config_reads_back_through_buildout(renderer, text, want):
    s = apps_stack("/nonexistent/repo")
    s["deploy"]["plone_instances"]["buildout_additional_config"] = text
    assert renderer.load(s) is None
    cfg = [p for t, p in renderer.files().items() if t.endswith("/deploy.cfg")]
    got = read_back("buildout", cfg[0])
    for sect, opts in want.items():
        for k, v in opts.items():
            assert got[sect][k] == v, (sect, k, got[sect])
    assert "plone_instances-client1" not in got  # the file's own sections are intact
    assert got["client1"]["http-fast-listen"] == "off"


@pytest.mark.parametrize("text", EXTRA_BAD, ids=repr)
def test_additional_config_buildout_cannot_read_is_refused_with_its_path(renderer, text):
    s = apps_stack("/nonexistent/repo")
    s["deploy"]["plone_instances"]["buildout_additional_config"] = text
    assert renderer.load(s) == "$.deploy.plone_instances.buildout_additional_config"
