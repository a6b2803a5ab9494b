"""synod-controller: flags, errors in one line, clean start and stop (real processes)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from controller.openflow.launcher import build_parser

LAUNCHER = [sys.executable, "-m", "controller.openflow.launcher"]
RYU_MANAGER_FLAGS = ["--ofp-tcp-listen-port", "--ofp-ssl-listen-port", "--ofp-listen-host",
                     "--ctl-privkey", "--ctl-cert", "--ca-certs", "--config-file",
                     "--verbose", "--default-log-level", "--log-file", "--version", "--help",
                     "--site", "--controller-index", "--controllers", "--node",
                     "--node-token-file", "--node-ca", "--node-insecure", "--audit-interval-ms"]
START_TIMEOUT_S = 20


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(LAUNCHER + list(args), capture_output=True, text=True,
                          timeout=timeout, check=False)


def test_parser_accepts_ryu_manager_flags_and_apps():
    args = build_parser().parse_args(["--ofp-tcp-listen-port", "7000", "--ofp-listen-host",
                                      "127.0.0.1", "--config-file", "a.conf", "--config-file",
                                      "b.conf", "--verbose", "my.app", "other.app"])
    assert args.ofp_tcp_listen_port == 7000 and args.ofp_listen_host == "127.0.0.1"
    assert args.config_file == ["a.conf", "b.conf"] and args.verbose
    assert args.apps == ["my.app", "other.app"]


@pytest.mark.parametrize("port", ["0", "65536", "-3", "http"])
def test_parser_rejects_bad_ports(port, capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["--ofp-tcp-listen-port", port])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--ofp-tcp-listen-port" in err


def test_help_describes_every_flag():
    done = _run("--help")
    assert done.returncode == 0
    for flag in RYU_MANAGER_FLAGS:
        assert flag in done.stdout


def test_version():
    done = _run("--version")
    assert done.returncode == 0 and "synod-controller" in done.stdout
    assert "os-ken" in done.stdout


@pytest.mark.parametrize("args, code, needle", [
    (["--no-such-flag"], 2, "unrecognized arguments: --no-such-flag"),
    (["no.such.module"], 1, "cannot load app 'no.such.module'"),
    (["missing_app_file.py"], 1, "no such file"),
    (["--config-file", "/nonexistent/synod.conf"], 1, "config file not found"),
    (["--controllers", "edge1"], 1, "is not SITE=HOST:PORT"),
    (["--controller-index", "300"], 1, "bad Synod controller option"),
])
def test_bad_input_exits_nonzero_with_one_line(args, code, needle):
    done = _run(*args)
    assert done.returncode == code
    assert done.stderr.count("\n") == 1, done.stderr
    assert needle in done.stderr and "Traceback" not in done.stderr


def test_port_in_use_is_one_line_error():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = _run("--ofp-listen-host", "127.0.0.1", "--ofp-tcp-listen-port", str(port))
    assert done.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr
    assert "Traceback" not in done.stderr


def _start(*args: str) -> subprocess.Popen:
    return subprocess.Popen(LAUNCHER + list(args), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _wait_listening(proc: subprocess.Popen, port: int) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read()
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("controller did not start listening")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_starts_listens_and_stops_cleanly_on_signal(sig):
    port = _free_port()
    proc = _start("--ofp-listen-host", "127.0.0.1", "--ofp-tcp-listen-port", str(port))
    try:
        _wait_listening(proc, port)
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.returncode == 0
    assert "Traceback" not in out
    assert f"listening for OpenFlow on 127.0.0.1:{port}" in out
    assert "stopped" in out


def test_config_file_sets_port_and_flag_overrides_it(tmp_path):
    from_file, from_flag = _free_port(), _free_port()
    conf = tmp_path / "synod.conf"
    conf.write_text(f"[DEFAULT]\nofp_listen_host = 127.0.0.1\nofp_tcp_listen_port = {from_file}\n")
    for extra, port in (([], from_file), (["--ofp-tcp-listen-port", str(from_flag)], from_flag)):
        proc = _start("--config-file", str(conf), *extra)
        try:
            _wait_listening(proc, port)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=15)
        assert proc.returncode == 0


def test_refuses_eventlet_hub():
    env = dict(os.environ, OSKEN_HUB_TYPE="eventlet")
    done = subprocess.run(LAUNCHER + ["--ofp-tcp-listen-port", str(_free_port())], env=env,
                          capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
