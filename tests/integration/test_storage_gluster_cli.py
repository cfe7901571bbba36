# The gluster step against a stand-in CLI (no glusterd needed): how the
# answer of `gluster volume info` is read.
import os

import conftest
from conftest import wait_for
from storage_helpers import step_of

ADDR = "10.213.7.1"
PEER_ADDR = "10.213.7.2"


def gluster_only_stack():
    stack = conftest.simple_stack(layers={
        "shared_blobs": {"name": "Blobs", "instances": {"app1": {"private_ip": ADDR, "status": "online"},
                                                        "app2": {"private_ip": PEER_ADDR, "status": "online"}}},
    })
    stack["agent"]["layers"] = {"shared_blobs": {"setup": ["gluster"], "configure": ["gluster"]}}
    return stack


def stand_in(tmpdir_agent, info_script):
    log = os.path.join(tmpdir_agent, "gluster.log")
    fake = os.path.join(tmpdir_agent, "gluster")
    with open(fake, "w") as f:
        f.write(f'#!/bin/sh\necho "$*" >> {log}\nif [ "$2 $3" = "volume info" ]; then\n{info_script}\nfi\n')
    os.chmod(fake, 0o755)
    return fake, log


def calls(log):
    try:
        return open(log).read().splitlines()
    except FileNotFoundError:
        return []


def test_volume_info_failure_is_not_read_as_absent(make_agent, tmpdir_agent):
    fake, log = stand_in(tmpdir_agent, "echo 'Connection failed. Please check if gluster daemon is operational.'"
                                       "\nexit 1")
    a = make_agent(gluster_only_stack(), conf_extra={"gluster_command": [fake, "--mode=script"]})
    a.start()
    failed = wait_for(lambda: [r for r in a.finished_runs() if r["status"] == "failed"], what="a failed run")
    (g,) = step_of(a, failed[0]["id"], "gluster")
    assert g["status"] == "failed" and "volume info" in g["error"], g
    # Not idle: the boot's configure and deploy wait for setup to succeed
    # (design.md §3 First start). Nothing runs meanwhile but setup's retry.
    wait_for(lambda: a.status()["current_run"] is None, what="no run in progress")
    c = calls(log)
    assert c and all(x == "--mode=script volume info blobs" for x in c), c  # no peer probe, no create


def test_volume_that_does_not_exist_is_created(make_agent, tmpdir_agent):
    fake, log = stand_in(tmpdir_agent, "echo 'volume info: failed: Volume blobs does not exist' >&2\nexit 1")
    a = make_agent(gluster_only_stack(), conf_extra={"gluster_command": [fake, "--mode=script"]})
    brick = os.path.join(a.root, "mnt/gluster-exports/brick")
    a.start()
    wait_for(lambda: len([r for r in a.finished_runs()]) >= 1, what="a finished run")
    wait_for(lambda: any("volume create" in c for c in calls(log)), what="volume create")
    c = calls(log)
    assert c[:3] == ["--mode=script volume info blobs", f"--mode=script peer probe {PEER_ADDR}",
                     f"--mode=script volume create blobs replica 2 {ADDR}:{brick} {PEER_ADDR}:{brick} force"], c
