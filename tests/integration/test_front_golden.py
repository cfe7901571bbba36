# The golden configs (tests/golden/front/, from the example stacks) are
# accepted by the real haproxy, varnishd and nginx of this machine.
import glob
import os
import subprocess
import tempfile

import pytest

GOLDEN = os.path.join(os.path.dirname(__file__), "..", "golden", "front")


def goldens(ext):
    files = sorted(glob.glob(os.path.join(GOLDEN, "*." + ext)))
    assert files, f"no golden *.{ext}"
    return files


@pytest.mark.parametrize("path", goldens("haproxy.cfg"), ids=os.path.basename)
def test_golden_haproxy_passes_haproxy_c(path):
    p = subprocess.run(["haproxy", "-c", "-f", path], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr


@pytest.mark.parametrize("path", goldens("vcl"), ids=os.path.basename)
def test_golden_vcl_passes_varnishd_C(path):
    with tempfile.TemporaryDirectory(prefix="agentd-vcl-") as d:
        os.chmod(d, 0o755)  # varnishd compiles as its own unprivileged user
        p = subprocess.run(["varnishd", "-C", "-n", os.path.join(d, "w"), "-f", os.path.abspath(path)], capture_output=True,
                           text=True, timeout=60)
    assert p.returncode == 0, p.stderr[-2000:]


@pytest.mark.parametrize("path", goldens("nginx"), ids=os.path.basename)
def test_golden_nginx_passes_nginx_t(path):
    with tempfile.TemporaryDirectory(prefix="agentd-nginx-") as d:
        conf = os.path.join(d, "nginx.conf")
        with open(conf, "w") as f:
            f.write(f"error_log stderr;\npid {d}/nginx.pid;\nevents {{\n}}\nhttp {{\n access_log off;\n"
                    f" client_body_temp_path {d}/b;\n proxy_temp_path {d}/p;\n fastcgi_temp_path {d}/f;\n"
                    f" uwsgi_temp_path {d}/u;\n scgi_temp_path {d}/s;\n include {os.path.abspath(path)};\n}}\n")
        p = subprocess.run(["nginx", "-t", "-q", "-e", "stderr", "-p", d, "-c", conf], capture_output=True,
                           text=True, timeout=60)
    assert p.returncode == 0, p.stderr
