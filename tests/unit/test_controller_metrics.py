"""The controller's metrics (controller/openflow/metrics.py): the counts alone, then a real
synod-controller process with a hand-made OpenFlow 1.3 switch, its endpoint scraped and
parsed with prometheus_client."""

from __future__ import annotations

import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request

import pytest
from prometheus_client import generate_latest

from controller.openflow.metrics import SwitchCounts, listen_address
from tests.node.test_metrics import check_conventions, families, sample

LAUNCHER = [sys.executable, "-m", "controller.openflow.launcher"]
DPID = 0x0000_0000_0000_0101
OFP_VERSION = 4  # OpenFlow 1.3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_counts_and_their_families():
    c = SwitchCounts(dpids_max=2)
    c.switch_up(1)
    c.switch_up(2)
    c.switch_down(1)
    c.switch_down(1)  # not connected any more: not counted twice
    c.switch_up(3)  # over the bound: switch 1, gone, is forgotten first
    c.packet_in()
    c.error("bad_request")
    c.port_changed("add")
    fams = families(generate_latest(c.registry()).decode())
    check_conventions(fams)
    assert sample(fams, "synod_controller_switches", "synod_controller_switches") == 2
    assert sample(fams, "synod_controller_switch_up", "synod_controller_switch_up",
                  dpid="0000000000000001") is None
    assert sample(fams, "synod_controller_switch_up", "synod_controller_switch_up",
                  dpid="0000000000000003") == 1
    assert sample(fams, "synod_controller_switch_connections",
                  "synod_controller_switch_connections_total") == 3
    assert sample(fams, "synod_controller_switch_disconnections",
                  "synod_controller_switch_disconnections_total") == 1
    assert sample(fams, "synod_controller_errors", "synod_controller_errors_total",
                  type="bad_request") == 1
    assert "process_cpu_seconds" in fams and "synod_build_info" in fams


@pytest.mark.parametrize("text", ["9100", ":9100", "host:port", "h:70000"])
def test_a_bad_listen_address_is_refused_by_name(text):
    with pytest.raises(ValueError, match="synod-metrics-listen"):
        listen_address(text)


class FakeSwitch:
    """Just enough of an OpenFlow 1.3 switch for os-ken to reach the main state: hello,
    features reply, an empty port description; echo answered."""

    def __init__(self, port: int) -> None:
        # The metrics endpoint may answer before os-ken's OpenFlow listener is bound.
        deadline = time.monotonic() + 10
        while True:
            try:
                self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
                break
            except ConnectionRefusedError:
                assert time.monotonic() < deadline, f"no OpenFlow listener on {port} in 10 s"
                time.sleep(0.05)
        self.sock.sendall(self._header(0, 8, 1))  # HELLO
        self.reader = threading.Thread(target=self._serve, daemon=True)
        self.reader.start()

    @staticmethod
    def _header(kind: int, length: int, xid: int) -> bytes:
        return struct.pack("!BBHI", OFP_VERSION, kind, length, xid)

    def _read(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("controller closed")
            data += chunk
        return data

    def _serve(self) -> None:
        try:
            while True:
                _, kind, length, xid = struct.unpack("!BBHI", self._read(8))
                body = self._read(length - 8)
                if kind == 5:  # FEATURES_REQUEST
                    self.sock.sendall(self._header(6, 32, xid) + struct.pack(
                        "!QIBB2xII", DPID, 0, 254, 0, 0, 0))
                elif kind == 18 and struct.unpack("!H", body[:2])[0] == 13:  # PORT_DESC
                    self.sock.sendall(self._header(19, 16, xid) + struct.pack("!HH4x", 13, 0))
                elif kind == 2:  # ECHO_REQUEST
                    self.sock.sendall(self._header(3, length, xid) + body)
        except (OSError, ConnectionError, struct.error):
            pass

    def packet_in(self) -> None:
        frame = bytes.fromhex("ffffffffffff" "020000000001" "0800") + bytes(46)
        match = struct.pack("!HHII4x", 1, 12, 0x80000004, 1)  # OXM in_port=1, padded to 16
        body = struct.pack("!IHBBQ", 0xFFFFFFFF, len(frame), 0, 0, 0) + match + bytes(2)
        self.sock.sendall(self._header(10, 8 + len(body) + len(frame), 7) + body + frame)

    def error(self) -> None:
        body = struct.pack("!HH", 1, 0) + self._header(0, 8, 9)  # BAD_REQUEST, BAD_VERSION
        self.sock.sendall(self._header(1, 8 + len(body), 9) + body)

    def close(self) -> None:
        self.sock.close()


def _scrape(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        return families(answer.read().decode())


def _until(port: int, family: str, name: str, want: float, **labels) -> dict:
    deadline = time.monotonic() + 15
    while True:
        fams = _scrape(port)
        if sample(fams, family, name, **labels) == want or time.monotonic() > deadline:
            assert sample(fams, family, name, **labels) == want, (family, labels)
            return fams
        time.sleep(0.05)


@pytest.mark.parametrize("how", ["flag", "config file, app named"])
def test_a_controller_process_serves_its_metrics(tmp_path, how):
    of_port, metrics_port = _free_port(), _free_port()
    args = ["--ofp-listen-host", "127.0.0.1", "--ofp-tcp-listen-port", str(of_port)]
    if how == "flag":  # the launcher loads the app itself
        args += [f"--synod-metrics-listen=127.0.0.1:{metrics_port}",
                 "controller.openflow.l2_switch"]
    else:
        conf = tmp_path / "controller.conf"
        conf.write_text(f"[DEFAULT]\nsynod_metrics_listen = 127.0.0.1:{metrics_port}\n")
        args += ["--config-file", str(conf), "controller.openflow.metrics"]
    proc = subprocess.Popen([*LAUNCHER, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    switch = None
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                fams = _scrape(metrics_port)
                break
            except OSError:
                assert time.monotonic() < deadline, "no metrics endpoint within 20 s"
                time.sleep(0.1)
        check_conventions(fams)
        assert sample(fams, "synod_controller_switches", "synod_controller_switches") == 0

        switch = FakeSwitch(of_port)
        dpid = f"{DPID:016x}"
        _until(metrics_port, "synod_controller_switch_up", "synod_controller_switch_up", 1,
               dpid=dpid)
        switch.packet_in()
        switch.error()
        _until(metrics_port, "synod_controller_packet_ins", "synod_controller_packet_ins_total",
               1)
        fams = _until(metrics_port, "synod_controller_errors", "synod_controller_errors_total",
                      1, type="bad_request")
        assert sample(fams, "synod_controller_switches", "synod_controller_switches") == 1
        check_conventions(fams)
        # A disconnection is counted when os-ken reports the switch dead; with the native
        # hub that report does not come yet (issue 15, topology), so it is checked on the
        # counts alone (test_counts_and_their_families).
    finally:
        if switch is not None:
            switch.close()
        proc.terminate()
        try:
            out, _ = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate(timeout=10)
    assert "Traceback" not in out, out


def test_off_unless_an_address_is_set():
    """Without the option the app is not even loaded: no port, nothing in the log."""
    of_port = _free_port()
    proc = subprocess.Popen([*LAUNCHER, "--ofp-listen-host", "127.0.0.1", "--ofp-tcp-listen-port",
                             str(of_port), "--verbose", "controller.openflow.l2_switch"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                socket.create_connection(("127.0.0.1", of_port), timeout=0.5).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "controller did not listen within 20 s"
                time.sleep(0.1)
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=15)
    assert "controller.openflow.metrics" not in out and "metrics on http" not in out


def test_a_busy_address_stops_the_launch_in_one_line_naming_the_option():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        done = subprocess.run(
            [*LAUNCHER, "--ofp-listen-host", "127.0.0.1", "--ofp-tcp-listen-port",
             str(_free_port()), f"--synod-metrics-listen=127.0.0.1:{taken}",
             "controller.openflow.l2_switch"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert f"synod-metrics-listen 127.0.0.1:{taken}: Address already in use" in last
    assert "Traceback" not in done.stderr
