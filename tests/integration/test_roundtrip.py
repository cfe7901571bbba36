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

    def __init__(self, a, tmp):
        self.a = a
        self.tmp = tmp
        self.n = 0

    def load(self, stack):
        """None when the stack was loaded, else status' error path."""
        self.n += 1
        # A good stack first, which clears any error: the next outcome is the candidate's.
        prev = self.last
        self.a.write_stack(dict(apps_stack("/nonexistent/repo"), roundtrip_reset=self.n))
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
