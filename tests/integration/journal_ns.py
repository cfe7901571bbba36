#!/usr/bin/python3
# Runs inside `unshare -m`: puts a private directory over /run so that
# /run/systemd/journal/socket is a datagram socket of ours, starts agentd with
# JOURNAL_STREAM naming its stderr (as systemd does for a service), lets it
# run the boot events of a stack, stops it, and prints every journal datagram
# it sent as JSON (a list of latin-1 strings). Nothing outside the namespace
# is touched.
import json
import os
import socket
import subprocess
import sys
import time

tmp, agentd, agentctl, conf, sock = sys.argv[1:6]
run = os.path.join(tmp, "run")
os.makedirs(run, exist_ok=True)
subprocess.run(["mount", "--make-rprivate", "/"], check=True)
subprocess.run(["mount", "--bind", run, "/run"], check=True)
os.makedirs("/run/systemd/journal", exist_ok=True)
j = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
j.bind("/run/systemd/journal/socket")
j.settimeout(0.05)

err = open(os.path.join(tmp, "agentd.journal-stderr"), "wb")
st = os.fstat(err.fileno())
env = dict(os.environ, JOURNAL_STREAM=f"{st.st_dev}:{st.st_ino}")
env.pop("NOTIFY_SOCKET", None)
p = subprocess.Popen([agentd, "--config", conf], stdout=err, stderr=err, env=env)
msgs = []


def drain():
    try:
        while True:
            msgs.append(j.recv(65536).decode("latin-1"))
    except socket.timeout:
        pass


deadline = time.monotonic() + 30
while time.monotonic() < deadline:
    drain()
    if any("Run 3 (deploy) succeeded" in m for m in msgs):
        break
p.terminate()
p.wait(30)
drain()
print(json.dumps({"messages": msgs, "stderr": open(err.name, "rb").read().decode("latin-1")}))
