# A file mode is an octal string (design.md §8): "mode": 644, a JSON number,
# is refused at validation with its path (it used to be read as decimal, and
# the file got mode 01204, --w----r-T); "0644" and "644" give 0644.
import os
import stat

import pytest

from conftest import simple_stack, wait_for


def files_stack(files):
    stack = simple_stack()
    stack["agent"]["layers"]["web"]["configure"] = ["files"]
    stack["agent"]["files"] = {"web": files}
    return stack


def test_octal_strings_give_their_mode(make_agent):
    a = make_agent(files_stack([
        {"path": "/etc/app/a.conf", "content": "a\n", "mode": "0644"},
        {"path": "/etc/app/b.conf", "content": "b\n", "mode": "640"},
        {"path": "/etc/app/c.conf", "content": "c\n", "mode": "0600"},
    ])).start()
    a.wait_idle()
    runs = [r for r in a.runs() if r["event"] == "configure"]
    assert runs and runs[0]["status"] == "success", runs
    modes = {n: stat.S_IMODE(os.stat(os.path.join(a.root, "etc/app", n)).st_mode)
             for n in ("a.conf", "b.conf", "c.conf")}
    assert modes == {"a.conf": 0o644, "b.conf": 0o640, "c.conf": 0o600}, modes


@pytest.mark.parametrize("mode", [644, 420, 0, 6.44, " 644", "+644", "0x1a4", "rw-r--r--", "0648", "06444", "",
                                  True], ids=repr)
def test_a_mode_that_is_not_an_octal_string_is_refused_with_its_path(make_agent, mode):
    a = make_agent(files_stack([{"path": "/etc/app/ok.conf", "content": "x\n"},
                                {"path": "/etc/app/a.conf", "content": "a\n", "mode": mode}])).start()
    st = wait_for(lambda: a.status()["source"]["error_path"] and a.status(), what="the error in status")
    assert st["source"]["error_path"] == "$.agent.files.web[1].mode", st["source"]
    assert "octal string" in st["source"]["error"], st["source"]
    assert st["source"]["stack_revision"] is None
    assert a.runs() == []
    assert not os.path.exists(os.path.join(a.root, "etc/app/a.conf"))
