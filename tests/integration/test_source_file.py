# The file:// source: editors that rename, a file missing for a while, the
# directory itself replaced.
import json
import os
import shutil

from conftest import simple_stack, wait_for


def dir_agent(make_agent):
    """An agent whose stack lives in its own directory, so it can be replaced."""
    a = make_agent(None)
    d = os.path.join(a.tmp, "stackdir")
    os.makedirs(d)
    a.stack_path = os.path.join(d, "stack.json")
    a.conf["source"] = "file://" + a.stack_path
    with open(a.conf_path, "w") as f:
        json.dump(a.conf, f)
    return a, d


def test_missing_file_is_reported_then_picked_up(make_agent):
    a, d = dir_agent(make_agent)
    a.start()
    st = wait_for(lambda: a.status()["source"]["error"] and a.status(), what="the missing-file error")
    assert a.stack_path in st["source"]["error"] and "No such file" in st["source"]["error"]
    assert a.runs() == []
    a.write_stack(simple_stack())
    a.wait_runs(3)
    assert a.status()["source"]["error"] is None


def test_in_place_write_and_rename_are_both_seen(make_agent):
    stack = simple_stack()
    a = make_agent(stack).start()
    a.wait_runs(3)
    a.wait_idle()
    # An editor that rewrites the file in place (truncate + write).
    stack["x"] = 1
    with open(a.stack_path, "w") as f:
        json.dump(stack, f)
    a.wait_runs(4)
    a.wait_idle()
    # One that writes a temporary file and renames it over.
    stack["x"] = 2
    a.write_stack(stack)
    a.wait_runs(5)


def test_file_removed_for_a_while(make_agent):
    stack = simple_stack()
    a = make_agent(stack).start()
    a.wait_runs(3)
    a.wait_idle()
    rev = a.status()["source"]["stack_revision"]
    os.unlink(a.stack_path)
    wait_for(lambda: a.status()["source"]["error"], what="the error for the removed file")
    # The last good stack stays in force and nothing runs.
    assert a.status()["source"]["stack_revision"] == rev and len(a.runs()) == 3
    stack["opsworks"]["layers"]["web"]["instances"]["app2"] = {"private_ip": "10.0.0.2", "status": "online"}
    a.write_stack(stack)
    a.wait_runs(4)
    assert a.status()["source"]["error"] is None


def test_directory_replaced(make_agent):
    a, d = dir_agent(make_agent)
    stack = simple_stack()
    a.write_stack(stack)
    a.start()
    a.wait_runs(3)
    a.wait_idle()
    # Replace the whole directory, as a config-management tool or a
    # `mv new old` deployment would.
    new = d + ".new"
    os.makedirs(new)
    stack["opsworks"]["layers"]["web"]["instances"]["app2"] = {"private_ip": "10.0.0.2", "status": "online"}
    with open(os.path.join(new, "stack.json"), "w") as f:
        json.dump(stack, f)
    shutil.rmtree(d)
    os.rename(new, d)
    a.wait_runs(4)
    assert a.runs()[0]["event"] == "configure"
    # And the new directory is watched: a further edit is seen.
    stack["y"] = 1
    a.write_stack(stack)
    a.wait_runs(5)


# ---- issue 11, kind 4: sources that real endpoints produce (design.md §4) ----
# With poll_interval 3600 only the watch can see a change: every wait below
# has a deadline far under that.

import gzip  # noqa: E402
import subprocess  # noqa: E402

HOUR = {"poll_interval": 3600}


def set_source(a, stack_path):
    """The agent's source becomes stack_path (under its tmp)."""
    a.conf["source"] = "file://" + stack_path
    with open(a.conf_path, "w") as f:
        json.dump(a.conf, f)


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if not isinstance(data, bytes):
        data = json.dumps(data, indent=1).encode()
    with open(path, "wb") as f:
        f.write(data)


def swap_link(target, link):
    """Replaces link atomically, as `ln -s T tmp && mv -T tmp link` (ConfigMaps do this)."""
    tmp = link + ".tmp"
    os.symlink(target, tmp)
    os.rename(tmp, link)


def changed(stack, n):
    stack["opsworks"]["layers"]["web"]["instances"]["app%d" % n] = {"private_ip": "10.0.0.%d" % n,
                                                                   "status": "online"}
    return stack


def test_symlinked_file_swapped_with_ln_sfn(make_agent):
    """Capistrano: stack.json -> releases/N/stack.json, swapped by `ln -sfn`."""
    stack = simple_stack()
    a = make_agent(None, conf_extra=HOUR)
    base = os.path.join(a.tmp, "app")
    write(os.path.join(base, "releases", "1", "stack.json"), stack)
    write(os.path.join(base, "releases", "2", "stack.json"), changed(stack, 2))
    link = os.path.join(base, "current")
    os.symlink("releases/1", link)
    set_source(a, os.path.join(link, "stack.json"))
    a.start()
    a.wait_runs(3)
    a.wait_idle()
    subprocess.run(["ln", "-sfn", "releases/2", link], check=True)
    a.wait_runs(4)
    assert a.runs()[0]["event"] == "configure"
    # And the link's new target is watched: an edit behind it is seen.
    a.wait_idle()
    write(os.path.join(base, "releases", "2", "stack.json"), changed(stack, 3))
    a.wait_runs(5)


def test_configmap_data_swap(make_agent):
    """Kubernetes: stack.json -> ..data/stack.json, ..data -> ..<timestamp>; the kubelet swaps ..data."""
    stack = simple_stack()
    a = make_agent(None, conf_extra=HOUR)
    d = os.path.join(a.tmp, "config")
    write(os.path.join(d, "..2024_01_01_00_00_00.1", "stack.json"), stack)
    os.symlink("..2024_01_01_00_00_00.1", os.path.join(d, "..data"))
    os.symlink("..data/stack.json", os.path.join(d, "stack.json"))
    set_source(a, os.path.join(d, "stack.json"))
    a.start()
    a.wait_runs(3)
    a.wait_idle()
    write(os.path.join(d, "..2024_01_01_00_01_00.2", "stack.json"), changed(stack, 2))
    swap_link("..2024_01_01_00_01_00.2", os.path.join(d, "..data"))
    subprocess.run(["rm", "-rf", os.path.join(d, "..2024_01_01_00_00_00.1")], check=True)
    a.wait_runs(4)
    assert a.status()["source"]["error"] is None


def test_parent_directory_link_swapped(make_agent):
    """/etc/agentd linking into /srv: the directory link above the file is swapped."""
    stack = simple_stack()
    a = make_agent(None, conf_extra=HOUR)
    srv = os.path.join(a.tmp, "srv")
    write(os.path.join(srv, "a", "stack.json"), stack)
    write(os.path.join(srv, "b", "stack.json"), changed(stack, 2))
    etc = os.path.join(a.tmp, "etc")
    os.makedirs(etc)
    os.symlink(os.path.join(srv, "a"), os.path.join(etc, "agentd"))
    set_source(a, os.path.join(etc, "agentd", "stack.json"))
    a.start()
    a.wait_runs(3)
    a.wait_idle()
    swap_link(os.path.join(srv, "b"), os.path.join(etc, "agentd"))
    a.wait_runs(4)
    a.wait_idle()
    # Two links deep: the directory link now leads through another link.
    os.symlink("b", os.path.join(srv, "c"))
    write(os.path.join(srv, "b", "stack.json"), changed(stack, 3))
    swap_link(os.path.join(srv, "c"), os.path.join(etc, "agentd"))
    a.wait_runs(5)


def test_target_behind_link_edited_in_place(make_agent):
    """The link stays, the file it names (in another directory) is rewritten in place or renamed over."""
    stack = simple_stack()
    a = make_agent(None, conf_extra=HOUR)
    data = os.path.join(a.tmp, "data", "real.json")
    write(data, stack)
    d = os.path.join(a.tmp, "etc")
    os.makedirs(d)
    os.symlink("../data/real.json", os.path.join(d, "stack.json"))
    set_source(a, os.path.join(d, "stack.json"))
    a.start()
    a.wait_runs(3)
    a.wait_idle()
    with open(data, "w") as f:  # in place: truncate and write
        json.dump(changed(stack, 2), f)
    a.wait_runs(4)
    a.wait_idle()
    write(data + ".tmp", changed(stack, 3))  # an editor's rename over
    os.rename(data + ".tmp", data)
    a.wait_runs(5)


def test_dangling_link_then_target_appears(make_agent):
    stack = simple_stack()
    a = make_agent(None, conf_extra=HOUR)
    d = os.path.join(a.tmp, "etc")
    os.makedirs(d)
    target = os.path.join(a.tmp, "later", "stack.json")
    os.symlink(target, os.path.join(d, "stack.json"))
    set_source(a, os.path.join(d, "stack.json"))
    a.start()
    wait_for(lambda: a.status()["source"]["error"], what="the missing-file error")
    assert a.runs() == []
    os.makedirs(os.path.dirname(target))
    write(target + ".tmp", stack)
    os.rename(target + ".tmp", target)
    a.wait_runs(3)
    assert a.status()["source"]["error"] is None


def test_gzip_file(make_agent):
    stack = simple_stack()
    a = make_agent(None, conf_extra=HOUR)
    path = os.path.join(a.tmp, "stack.json.gz")
    write(path, gzip.compress(json.dumps(stack).encode()))
    set_source(a, path)
    a.start()
    a.wait_runs(3)
    assert a.status()["source"]["error"] is None
    a.wait_idle()
    rev = a.status()["source"]["stack_revision"]
    # A bomb is refused with the path; the last good stack stays.
    write(path + ".tmp", gzip.compress(b"\0" * (20 * 1024 * 1024)))
    os.rename(path + ".tmp", path)
    wait_for(lambda: a.status()["source"]["error"], what="the bomb refused")
    err = a.status()["source"]["error"]
    assert path in err and "larger than" in err
    assert a.status()["source"]["stack_revision"] == rev and len(a.runs()) == 3
    write(path + ".tmp", gzip.compress(json.dumps(changed(stack, 2)).encode()))
    os.rename(path + ".tmp", path)
    a.wait_runs(4)
    wait_for(lambda: a.status()["source"]["error"] is None, what="the error to clear")
