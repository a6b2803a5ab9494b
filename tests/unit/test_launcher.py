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
                     "--node-token-file", "--node-ca", "--node-insecure", "--audit-interval-ms",
                     "--app-lists", "--pid-file", "--user-flags", "--enable-debugger",
                     "--observe-links", "--wsapi-host", "--wsapi-port", "--use-syslog",
                     "--log-dir", "--log-config-file"]
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


# --- options registered by the apps, ryu-manager's commands (issue 15) -----------------

RYU_MANAGER = [sys.executable, "-c",
               "from controller.openflow.launcher import ryu_manager; ryu_manager()"]
APP_WITH_OPTION = """
from os_ken import cfg
from os_ken.base import app_manager

cfg.CONF.register_cli_opts([cfg.IntOpt("knob-size", default=1, help="an app's own option")])


class Knobbed(app_manager.OSKenApp):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.logger.info("knob-size is %d", cfg.CONF.knob_size)
"""


def _run_until_listening(cmd: list[str], port: int) -> str:
    """Start, wait until it listens, stop with SIGTERM; its output (it must exit 0)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_listening(proc, port)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.returncode == 0, out
    assert "Traceback" not in out, out
    return out


def test_topology_switches_loads_with_observe_links_and_wsapi_flags():
    """The ArgsAlreadyParsedError of issue 15: os-ken's own topology app registers options."""
    port = _free_port()
    out = _run_until_listening(
        LAUNCHER + ["--ofp-listen-host", "127.0.0.1", "--ofp-tcp-listen-port", str(port),
                    "--observe-links", "--wsapi-host", "127.0.0.1", "--wsapi-port",
                    str(_free_port()), "os_ken.topology.switches"], port)
    assert "instantiating app os_ken.topology.switches of Switches" in out


@pytest.mark.parametrize("spelling", [["--knob-size=7", "APP"], ["APP", "--knob-size", "7"],
                                      ["--knob-size", "7", "APP"]])
def test_an_apps_own_option_is_read_after_the_app_is_imported(tmp_path, spelling):
    app = tmp_path / "knobbed.py"
    app.write_text(APP_WITH_OPTION)
    port = _free_port()
    args = [str(app) if a == "APP" else a for a in spelling]
    cmd = LAUNCHER + ["--ofp-listen-host", "127.0.0.1", "--ofp-tcp-listen-port", str(port)]
    if spelling[0] == "--knob-size" and spelling[1] == "7":
        # Before the app is imported nothing says --knob-size takes a value: "7" looks
        # like an app. The error says how to write it.
        done = subprocess.run(cmd + args, capture_output=True, text=True, timeout=30)
        assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
        assert "if it is the value of --knob-size, write --knob-size=VALUE" in done.stderr
        return
    assert "knob-size is 7" in _run_until_listening(cmd + args, port)


def test_an_apps_option_is_checked_and_listed_in_help(tmp_path):
    app = tmp_path / "knobbed.py"
    app.write_text(APP_WITH_OPTION)
    done = _run("--knob-size=big", str(app))
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "--knob-size" in done.stderr and "big" in done.stderr
    done = _run("--help", str(app))
    assert done.returncode == 0 and "an app's own option" in done.stdout
    assert "--observe-links" in done.stdout and "--wsapi-port" in done.stdout


RYU_APP_MISSING = {
    "wants_websocket.py": ("from ryu.app.wsgi import websocket\n",
                           "ryu.app.wsgi.websocket has no os-ken counterpart"),
    "wants_cmd.py": ("from ryu.cmd import manager\n", "ryu.cmd has no os-ken counterpart"),
    "wants_attr.py": ("from ryu.base import app_manager\n"
                      "class A(app_manager.RyuApp):\n"
                      "    X = app_manager.NoSuchThing\n",
                      "ryu.base.app_manager.NoSuchThing has no os-ken counterpart"),
    "wants_package.py": ("import networkx_not_here\n",
                         "it imports networkx_not_here, which is not installed"),
}


@pytest.mark.parametrize("name", sorted(RYU_APP_MISSING))
def test_a_ryu_app_using_what_os_ken_lacks_is_one_line_naming_app_and_name(tmp_path, name):
    source, needle = RYU_APP_MISSING[name]
    app = tmp_path / name
    app.write_text(source)
    done = subprocess.run(RYU_MANAGER + ["--ofp-tcp-listen-port", str(_free_port()), str(app)],
                          capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith(f"ryu-manager: error: cannot load app {app}: {needle}")


def test_ryu_manager_command_is_named_for_mn_c_and_writes_its_pid(tmp_path):
    """`mn -c` stops controllers with `killall ryu-manager`: the process must bear that name."""
    script = os.path.join(os.path.dirname(sys.executable), "ryu-manager")
    if not os.path.exists(script):
        pytest.fail("no ryu-manager console script: reinstall with pip install -e .",
                    pytrace=False)
    port, pid_file = _free_port(), tmp_path / "ryu.pid"
    proc = subprocess.Popen([script, "--ofp-listen-host", "127.0.0.1", "--ofp-tcp-listen-port",
                             str(port), "--pid-file", str(pid_file)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_listening(proc, port)
        with open(f"/proc/{proc.pid}/comm") as f:
            assert f.read().strip() == "ryu-manager"
        assert pid_file.read_text().strip() == str(proc.pid)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.returncode == 0, out
    # No app given: only os-ken's OpenFlow handler, as ryu-manager did.
    assert "apps: os_ken.controller.ofp_handler" in out
    assert not pid_file.exists()


def test_ryu_manager_version_names_the_ryu_interface():
    done = subprocess.run(RYU_MANAGER + ["--version"], capture_output=True, text=True,
                          timeout=30, check=False)
    assert done.returncode == 0 and "ryu-manager" in done.stdout
    assert "Ryu 4.34 app interface" in done.stdout
