# make demo (conf/demo/run) on a machine where 8081 and 8082, the ports of
# the Plone clients by convention, are taken by another server: the demo's
# clients listen on free ports, and the demo fails loudly (exit 1, naming
# the client) when a client does not answer as itself.
import http.server
import os
import shutil
import socket
import subprocess
import threading

import pytest

from conftest import BUILD

TOP = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
FOREIGN = b"not-the-demo-client\n"

pytestmark = pytest.mark.skipif(not (shutil.which("supervisord") and shutil.which("curl")),
                                reason="the demo needs supervisord and curl")


class Foreign(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(len(FOREIGN)))
        self.end_headers()
        self.wfile.write(FOREIGN)

    def log_message(self, *a):
        pass


def occupy(port):
    """Another server answering on port (0: a free one), or None when
    something else holds the port already (it is taken either way)."""
    try:
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", port), Foreign)
    except OSError:
        return None
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


@pytest.fixture
def foreign_servers():
    servers = []
    yield lambda port: servers.append(occupy(port)) or servers[-1]
    for s in servers:
        if s:
            s.shutdown()
            s.server_close()


def run_demo(env_extra):
    env = dict(os.environ, BUILD=BUILD, **env_extra)
    env.pop("KEEP", None)
    return subprocess.run([os.path.join(TOP, "conf", "demo", "run")], capture_output=True, text=True,
                          env=env, timeout=600)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_demo_uses_free_ports_when_8081_and_8082_are_taken(foreign_servers):
    foreign_servers(8081)
    foreign_servers(8082)
    p = run_demo({})
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    pages = p.stdout.split("# the two Zope stand-ins", 1)[1]
    assert "part=client1" in pages and "part=client2" in pages, pages
    ports = [int(l.split("=", 1)[1]) for l in pages.splitlines() if l.startswith("port=")][:2]
    assert len(ports) == 2 and not {8081, 8082} & set(ports), pages
    assert FOREIGN.decode().strip() not in p.stdout


def test_demo_fails_loudly_when_a_client_does_not_answer_as_itself(foreign_servers):
    srv = foreign_servers(0)
    taken = srv.server_address[1]
    p = run_demo({"DEMO_PORTS": f"{taken} {free_port()}", "DEMO_WAIT": "15"})
    assert p.returncode == 1, p.stdout[-3000:] + p.stderr[-3000:]
    assert f"FAILED: Plone client1 does not answer on 127.0.0.1:{taken}" in p.stderr, p.stderr[-3000:]
    assert FOREIGN.decode().strip() in p.stderr
    assert "FAILED: Plone client2" not in p.stderr
