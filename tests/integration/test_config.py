# agentd.conf handling: --check-config, unknown keys, wrong types.
import json
import os
import subprocess

from conftest import AGENTD


def check(tmp_path, conf):
    p = tmp_path / "agentd.conf"
    p.write_text(conf if isinstance(conf, str) else json.dumps(conf))
    return subprocess.run([AGENTD, "--check-config", "--config", str(p)], capture_output=True, text=True)


def test_check_config_prints_normalised_defaults(tmp_path):
    r = check(tmp_path, {"instance": "web1"})
    assert r.returncode == 0, r.stderr
    c = json.loads(r.stdout)
    assert c["instance"] == "web1"
    assert c["source"] == "file:///etc/agentd/stack.json"
    assert c["poll_interval"] == 60 and c["history"] == 50 and c["run_timeout"] == 3600
    assert c["root"] == "/" and c["state_dir"] == "/var/lib/agentd" and c["log_dir"] == "/var/log/agentd"
    assert c["socket"] == "/run/agentd/agentd.sock" and c["admin_group"] == "agentd"
    assert c["supervisor_socket"] == "/var/run/supervisor.sock"
    assert c["supervisor_conf_dir"] == "/etc/supervisor/conf.d"


def test_unknown_key_is_an_error_naming_it(tmp_path):
    r = check(tmp_path, {"pol_interval": 5})
    assert r.returncode == 1 and "pol_interval" in r.stderr


def test_wrong_type_is_an_error_naming_the_key(tmp_path):
    r = check(tmp_path, {"poll_interval": "60"})
    assert r.returncode == 1 and "poll_interval" in r.stderr
    r = check(tmp_path, {"root": "relative/path"})
    assert r.returncode == 1 and "root" in r.stderr
    r = check(tmp_path, "{not json")
    assert r.returncode == 1 and "line 1" in r.stderr


def test_missing_config_file(tmp_path):
    r = subprocess.run([AGENTD, "--check-config", "--config", str(tmp_path / "nope.conf")],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "nope.conf" in r.stderr


def test_daemon_refuses_a_bad_config(tmp_path):
    p = tmp_path / "agentd.conf"
    p.write_text(json.dumps({"bogus": 1}))
    r = subprocess.run([AGENTD, "--config", str(p)], capture_output=True, text=True, timeout=10)
    assert r.returncode == 1 and "bogus" in r.stderr


def test_family_keys_have_defaults_and_are_checked(tmp_path):
    # Keys the recipe families read (commands are argv arrays, never shell text).
    r = check(tmp_path, {"device_timeout": 5, "haproxy_command": ["/opt/haproxy/sbin/haproxy", "-q"]})
    assert r.returncode == 0, r.stderr
    c = json.loads(r.stdout)
    assert c["device_timeout"] == 5
    assert c["haproxy_command"] == ["/opt/haproxy/sbin/haproxy", "-q"]
    assert c["ephemeral_mount_point"] == "/mnt"
    assert c["buildout_command"] is None
    for bad, key in [({"haproxy_command": "haproxy -c"}, "haproxy_command"),
                     ({"haproxy_command": []}, "haproxy_command"),
                     ({"haproxy_command": ["haproxy", ""]}, "haproxy_command"),
                     ({"device_timeout": -1}, "device_timeout"),
                     ({"device_timeout": "5"}, "device_timeout"),
                     ({"ephemeral_mount_point": "mnt"}, "ephemeral_mount_point"),
                     ({"ephemeral_mount_point": "/mnt/../etc"}, "ephemeral_mount_point")]:
        r = check(tmp_path, bad)
        assert r.returncode == 1 and key in r.stderr, (bad, r.stderr)
    r = check(tmp_path, {"buildout_command": ["/usr/local/bin/buildout-py311"]})
    assert r.returncode == 0 and json.loads(r.stdout)["buildout_command"] == ["/usr/local/bin/buildout-py311"]
