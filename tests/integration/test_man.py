# The man pages match the code (issue 14): the keys documented in
# agentd.conf(5) are exactly those `agentd --check-config` prints (every key
# config.c accepts, family keys included, cross-checked with config.c's two
# tables); the verbs of agentctl(1) are exactly those of agentctl's verbs
# table; every built-in recipe name is in agentd-stack(5); and every page
# renders without a warning through groff -ww and man -l.
import json
import os
import re
import subprocess

import pytest

from conftest import AGENTD

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.abspath(os.path.join(HERE, "..", ".."))
MAN = os.path.join(SRC, "man")
PAGES = ["agentd.8", "agentctl.1", "agentd.conf.5", "agentd-stack.5"]


def read(*parts):
    with open(os.path.join(SRC, *parts)) as f:
        return f.read()


def section(page, name):
    """The roff source of section .SH NAME of a page, up to the next .SH."""
    m = re.search(r"^\.SH \"?%s\"?\n(.*?)(?=^\.SH |\Z)" % re.escape(name), read("man", page), re.S | re.M)
    assert m, f"{page} has a section {name}"
    return m.group(1)


def tagged(src):
    """The first word of each .TP tag in roff source, font escapes removed."""
    out = []
    lines = src.split("\n")
    for i, line in enumerate(lines[:-1]):
        if line.strip() != ".TP":
            continue
        tag = re.sub(r"\\f[BIRP]", "", lines[i + 1])
        tag = re.sub(r"^\.(B|BR|BI|I|IR|IB|RB)\s+", "", tag).replace("\\-", "-").replace('"', "")
        out.append(tag.split()[0] if tag.split() else "")
    return out


def page_keys():
    keys = tagged(section("agentd.conf.5", "KEYS"))
    # Nested tags of the source key (file://PATH, ...) are not keys.
    keys = [k for k in keys if re.fullmatch(r"[a-z][a-z0-9_]*", k)]
    dup = {k for k in keys if keys.count(k) > 1}
    assert not dup, f"documented twice in agentd.conf(5): {sorted(dup)}"
    return set(keys)


def code_keys():
    """The keys of config.c's tables: keys[] (S, SN, PN, I, T, NV macros)
    and family_keys[]."""
    text = read("agent", "config.c")
    top = re.search(r"static const struct key keys\[\] = \{(.*?)\n\};", text, re.S).group(1)
    fam = re.search(r"static const struct family_key family_keys\[\] = \{(.*?)\n\};", text, re.S).group(1)
    keys = set(re.findall(r"^\t(?:S|SN|PN|I|T|NV)\(([a-z_0-9]+)", top, re.M))
    keys |= set(re.findall(r'^\t\{ "([a-z_0-9]+)",', fam, re.M))
    assert {"source", "root", "haproxy_command", "apt_conf_dir"} <= keys
    return keys


def test_agentd_conf_5_documents_every_key_and_no_other(tmp_path):
    conf = tmp_path / "agentd.conf"
    conf.write_text("{}")
    p = subprocess.run([AGENTD, "--check-config", "--config", str(conf)], capture_output=True, text=True,
                       timeout=10)
    assert p.returncode == 0, p.stderr
    binary = set(json.loads(p.stdout))
    # The binary prints every key config.c accepts, the families' too.
    assert binary == code_keys()
    documented = page_keys()
    assert not binary - documented, f"keys agentd accepts that agentd.conf(5) lacks: {sorted(binary - documented)}"
    assert not documented - binary, f"keys in agentd.conf(5) that agentd refuses: {sorted(documented - binary)}"


def code_verbs():
    text = read("agent", "agentctl", "main.c")
    table = re.search(r"static const struct verb verbs\[\] = \{(.*?)\n\};", text, re.S)
    assert table, "the verbs table of agent/agentctl/main.c"
    verbs = set(re.findall(r'^\t\{ "([a-z-]+)", "', table.group(1), re.M))
    assert {"status", "run", "log"} <= verbs
    if 'strcmp(rest[0], "help")' in text:
        verbs.add("help")
    return verbs


def test_agentctl_1_documents_every_verb_and_no_other():
    documented = set(tagged(section("agentctl.1", "VERBS")))
    verbs = code_verbs()
    assert not verbs - documented, f"verbs agentctl has that agentctl(1) lacks: {sorted(verbs - documented)}"
    assert not documented - verbs, f"verbs in agentctl(1) that agentctl lacks: {sorted(documented - verbs)}"
    # The exit codes of design.md §5.
    codes = tagged(section("agentctl.1", "EXIT STATUS"))
    assert codes == ["0", "1", "2", "3", "4"]


def test_agentd_stack_5_names_every_built_in_recipe():
    text = read("agent", "recipes", "names.c")
    names = re.search(r"builtin_names\[\] = \{(.*?)NULL", text, re.S).group(1)
    names = set(re.findall(r'"([a-z_-]+)"', names))
    assert "haproxy" in names and "zeopack" in names
    page = read("man", "agentd-stack.5").replace("\\-", "-")
    missing = {n for n in names if not re.search(r"\\fB%s\\fR|^\.BR? %s\b" % (re.escape(n), re.escape(n)), page,
                                                 re.M)}
    assert not missing, f"built-in recipes agentd-stack(5) does not name: {sorted(missing)}"


@pytest.mark.parametrize("page", PAGES)
def test_page_renders_without_warnings(page):
    path = os.path.join(MAN, page)
    p = subprocess.run(["groff", "-ww", "-man", "-Tutf8", path], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0 and p.stderr == "", p.stderr
    assert len(p.stdout) > 1000
    env = dict(os.environ, MANWIDTH="80", MANPAGER="cat", PAGER="cat", LC_ALL="C.UTF-8")
    p = subprocess.run(["man", "--warnings", "-l", path], capture_output=True, text=True, timeout=30, env=env)
    assert p.returncode == 0 and p.stderr == "", p.stderr
    name = page.rsplit(".", 1)[0].upper()
    assert p.stdout.lstrip().startswith(name + "(")
    assert "NAME" in p.stdout and "SEE ALSO" in p.stdout
