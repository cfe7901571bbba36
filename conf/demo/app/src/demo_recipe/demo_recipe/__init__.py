"""A zc.buildout recipe that writes bin/<part>: a stand-in for a Zope client.

`bin/<part> console` serves HTTP on 127.0.0.1:<http-address> and answers
every GET with the part name, its port, the ZEO address it was built with
and its pid, one "key=value" per line.
"""
import os
import sys

SCRIPT = '''#!{python}
import http.server, os, sys
PART, PORT, ZEO = {part!r}, {port}, {zeo!r}
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = ("part=%s\\nport=%d\\nzeo=%s\\npid=%d\\n" % (PART, PORT, ZEO, os.getpid())).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
if len(sys.argv) < 2 or sys.argv[1] not in ("console", "fg"):
    sys.exit("usage: %s console" % sys.argv[0])
http.server.HTTPServer.allow_reuse_address = True
http.server.HTTPServer(("127.0.0.1", PORT), H).serve_forever()
'''


def demo_port(buildout, port):
    """The port a stand-in really listens on. Client N's port is 8080+N by
    the cookbook's convention (deploy.cfg says so); the demo (conf/demo/run)
    maps those ports to free ones in the app's demo-ports file ("8081 41234"
    a line), so that a machine where 8081 is taken still runs the demo."""
    try:
        with open(os.path.join(buildout["buildout"]["directory"], "demo-ports")) as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return port
    for line in lines:
        fields = line.split()
        if len(fields) == 2 and fields[0] == str(port):
            return int(fields[1])
    return port


class Client:
    def __init__(self, buildout, name, options):
        self.name, self.options = name, options
        self.path = os.path.join(buildout["buildout"]["bin-directory"], name)
        port = options["http-address"].rsplit(":", 1)[-1]
        self.port = demo_port(buildout, int(port))

    def install(self):
        with open(self.path, "w") as f:
            f.write(SCRIPT.format(python=sys.executable, part=self.name, port=self.port,
                                  zeo=self.options.get("zeo-address", "")))
        os.chmod(self.path, 0o755)
        return [self.path]

    update = install


class Noop:
    """A part that installs nothing (stands in for backup, cron jobs...)."""

    def __init__(self, buildout, name, options):
        pass

    def install(self):
        return []

    update = install
