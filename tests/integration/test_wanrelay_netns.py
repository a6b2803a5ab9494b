"""The WAN relay for real: two namespaces joined through it, delay and cut measured by ping."""

from __future__ import annotations

import re
import subprocess
import sys
import time
import uuid

import pytest

from topologies import cloud_edge

pytestmark = pytest.mark.netns
HEAL_WAIT_S = 10


def _sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), capture_output=True, text=True, timeout=30, check=check)


@pytest.fixture
def relay_pair():
    """ns A --veth-- ns R (relay) --veth-- ns B, cleaned up even if the test fails."""
    tag = uuid.uuid4().hex[:6]
    ns = {k: f"synt-{k}-{tag}" for k in ("a", "r", "b")}
    relay = None
    try:
        for name in ns.values():
            _sh("ip", "netns", "add", name)
        for side in ("a", "b"):
            outer, inner = f"ra{side}{tag}", f"{side}r{tag}"
            _sh("ip", "link", "add", outer, "netns", ns["r"], "type", "veth",
                "peer", "name", inner, "netns", ns[side])
            addr = "192.0.2.1/24" if side == "a" else "192.0.2.2/24"  # TEST-NET-1, ns only
            _sh("ip", "-n", ns[side], "addr", "add", addr, "dev", inner)
            _sh("ip", "-n", ns[side], "link", "set", inner, "up")
            _sh("ip", "-n", ns["r"], "link", "set", outer, "up")
        relay = subprocess.Popen(
            ["ip", "netns", "exec", ns["r"], sys.executable, cloud_edge._relay_script(),
             "--a", f"raa{tag}", "--b", f"rab{tag}", "--delay-ms", "25"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert relay.stdout.readline().strip() == "ready", relay.stderr.read()
        yield ns, tag
    finally:
        if relay is not None:
            relay.terminate()
            try:
                relay.wait(timeout=5)
            except subprocess.TimeoutExpired:
                relay.kill()
                relay.wait(timeout=5)
        for name in ns.values():
            _sh("ip", "netns", "del", name, check=False)


def _rtts_ms(ns: str, count: int = 3) -> list[float]:
    done = _sh("ip", "netns", "exec", ns, "ping", "-n", "-c", str(count), "-i", "0.2", "-W", "2",
               "192.0.2.2", check=False)
    return [float(x) for x in re.findall(r"time=([\d.]+) ms", done.stdout)]


def test_relay_delays_both_ways_and_stops_when_cut(relay_pair):
    ns, tag = relay_pair
    rtts = _rtts_ms(ns["a"])
    assert len(rtts) == 3, "pings through the relay were lost"
    assert min(rtts) >= 50.0, f"round trip {rtts} is shorter than 2 x 25 ms"
    assert max(rtts) < 500.0
    _sh("ip", "-n", ns["r"], "link", "set", f"raa{tag}", "down")
    assert _rtts_ms(ns["a"], count=2) == []
    _sh("ip", "-n", ns["r"], "link", "set", f"raa{tag}", "up")
    # The kernel takes a moment to report carrier after "up": allow a bounded wait.
    deadline = time.monotonic() + HEAL_WAIT_S
    while not _rtts_ms(ns["a"], count=1):
        assert time.monotonic() < deadline, f"no reply {HEAL_WAIT_S}s after the link came back"
    assert len(_rtts_ms(ns["a"])) == 3
