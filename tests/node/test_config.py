"""Node config: one schema, unknown keys named with their path, types checked, frozen."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from controller.node.config import ConfigError, load_config, parse_config

SYNOD = [sys.executable, "-c", "from controller.cli import main; main()"]


def test_defaults_are_valid_and_frozen():
    cfg = parse_config({})
    assert cfg.api.listen == "127.0.0.1:7000" and cfg.peer.queue_max > 0
    assert cfg.api.event_loop == "uvloop"
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.api.listen = "x"  # type: ignore[misc]


@pytest.mark.parametrize("raw, needle", [
    ({"apii": {}}, "apii: unknown key"),
    ({"api": {"listn": "1:2"}}, "api.listn: unknown key"),
    ({"api": {"rate_per_s": "fast"}}, "api.rate_per_s: expected a positive number"),
    ({"api": {"burst": -1}}, "api.burst: expected a non-negative integer"),
    ({"api": {"insecure_loopback": "yes"}}, "api.insecure_loopback: expected true or false"),
    ({"peer": {"peers": ["nohost"]}}, "peer.peers: 'nohost' is not HOST:PORT"),
    ({"peer": {"listen": "h:99999"}}, "peer.listen: 'h:99999' is not HOST:PORT"),
    ({"peer": {"advertise": "h:0"}}, "peer.advertise: 'h:0' is not HOST:PORT (port 0"),
    ({"peer": {"peers": ["h:0"]}}, "peer.peers: 'h:0' is not HOST:PORT (port 0"),
    ({"log": {"format": "xml"}}, "log.format: 'xml' is not one of json, text"),
    ({"api": {"event_loop": "trio"}}, "api.event_loop: 'trio' is not one of uvloop, asyncio"),
    ({"api": "x"}, "api: expected a table"),
    ({"api": {"listen": "0.0.0.0:1", "insecure_loopback": True}}, "only allowed with api.listen"),
])
def test_bad_config_names_the_key(raw, needle):
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        parse_config(raw)


def test_a_listen_address_may_ask_for_any_free_port():
    """Port 0: the system picks one (`synod node run` announces it); nobody dials it."""
    cfg = parse_config({"api": {"listen": "127.0.0.1:0"}, "peer": {"listen": "[::1]:0"},
                        "metrics": {"listen": "127.0.0.1:0"}})
    assert cfg.api.listen.endswith(":0") and cfg.peer.listen == "[::1]:0"


def test_overrides_merge_over_file(tmp_path):
    f = tmp_path / "node.toml"
    f.write_text('[api]\nlisten = "127.0.0.1:1"\nburst = 5\n[peer]\npeers = ["127.0.0.1:2"]\n')
    cfg = load_config(f, {"api": {"listen": "127.0.0.1:3"}})
    assert cfg.api.listen == "127.0.0.1:3" and cfg.api.burst == 5
    assert cfg.peer.peers == ("127.0.0.1:2",)


def test_config_check_command(tmp_path):
    good = tmp_path / "good.toml"
    good.write_text("[metrics]\nlisten = \"127.0.0.1:9100\"\n")
    bad = tmp_path / "bad.toml"
    bad.write_text("[peer]\nqueue_maxx = 3\n")
    broken = tmp_path / "broken.toml"
    broken.write_text("[peer\n")
    done = subprocess.run([*SYNOD, "config", "check", str(good)], capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 0 and "ok" in done.stdout
    for path, needle in ((bad, "peer.queue_maxx: unknown key"), (broken, "not valid TOML")):
        done = subprocess.run([*SYNOD, "config", "check", str(path)], capture_output=True,
                              text=True, timeout=30)
        assert done.returncode == 1 and needle in done.stderr
        assert done.stderr.count("\n") == 1
