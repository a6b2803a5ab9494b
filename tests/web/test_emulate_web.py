"""`synod emulate --web`: prints the page's address, keeps running with it live until Ctrl-C,
then tears everything down."""

from __future__ import annotations

import http.client
import json
import re
import signal
import ssl
import subprocess
import sys
import threading
import time

import pytest

SYNOD = [sys.executable, "-c", "from controller.cli import main; main()"]
RUN_TIMEOUT_S = 240


def test_web_needs_a_node_per_site():
    done = subprocess.run([*SYNOD, "emulate", "--web", "--controllers", "single"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "--web needs the cloudedge topology" in done.stderr


def _get(url: str, ca: str, token: str) -> tuple[int, bytes]:
    m = re.match(r"https://127\.0\.0\.1:(\d+)/", url)
    assert m, url
    conn = http.client.HTTPSConnection("127.0.0.1", int(m.group(1)), timeout=10,
                                       context=ssl.create_default_context(cafile=ca))
    try:
        conn.request("GET", "/api/snapshot", headers={"Authorization": f"Bearer {token}"})
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


@pytest.mark.mininet
def test_emulate_web_stays_live_until_ctrl_c(tmp_path):
    from topologies.emulate import ensure_ovs

    ensure_ovs(lambda _m: None)
    proc = subprocess.Popen([*SYNOD, "emulate", "--sites", "2", "--wan-delay-ms", "5", "--web",
                             "--web-pause-s", "1", "--log-dir", str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
    reader.start()
    try:
        def seen(pattern: str, timeout_s: float) -> re.Match:
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                for line in list(lines):
                    if m := re.search(pattern, line):
                        return m
                assert proc.poll() is None, "".join(lines)[-3000:]
                time.sleep(0.2)
            raise AssertionError(f"{pattern!r} not printed: {''.join(lines)[-3000:]}")

        url = seen(r"web view of the cloud node: (https://\S+)#token=(\S+)", 120)
        status, body = _get(url.group(1), str(tmp_path / "cloud" / "ca.crt"), url.group(2))
        assert status == 200
        assert json.loads(body)["node"]["cluster"] == "emulation"
        seen(r"cutting the WAN of edge1 in 1 s \(watch the web view\)", RUN_TIMEOUT_S)
        seen(r"the emulation keeps running; web view: https://", RUN_TIMEOUT_S)
        time.sleep(1)
        assert proc.poll() is None  # held, the page still live
        deadline = time.monotonic() + 30  # controllers still write now and then: bounded
        while True:
            status, body = _get(url.group(1), str(tmp_path / "cloud" / "ca.crt"),
                                url.group(2))
            view = json.loads(body)
            assert status == 200 and len(view["topology"]["switches"]) == 3
            if view["cluster"]["all_equal"] and view["cluster"]["reachable"] == 3:
                break
            assert time.monotonic() < deadline, view["cluster"]
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:  # a failure above: let it tear down as Ctrl-C does
            proc.send_signal(signal.SIGINT)
            try:
                proc.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate(timeout=30)
                subprocess.run([*SYNOD, "emulate", "--cleanup"], capture_output=True,
                               timeout=120, check=False)
    assert proc.returncode == 0, out + "".join(lines)[-3000:]
    assert "result: PASS" in out and "web view: cloud https://127.0.0.1:" in out
    assert out.count("result: PASS") == 1  # printed once, before the hold
    from topologies.cloud_edge import CloudEdgeTopo
    from topologies.netctl import _existing_bridges

    assert not set(CloudEdgeTopo(sites=2).switches()) & _existing_bridges()
    assert subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True,
                          check=False).returncode != 0, "node or controller left running"
