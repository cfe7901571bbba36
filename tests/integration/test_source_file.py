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
