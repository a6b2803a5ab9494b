"""The prober for real: raw ICMP sockets opened in two namespaces joined by a veth, and
a third namespace with no route (its pairs never answer, its sends are refused)."""

from __future__ import annotations

import os
import subprocess
import time
import uuid

import pytest

from topologies import reach
from topologies.reach_plan import Deadline

pytestmark = pytest.mark.netns


def _sh(*cmd: str) -> None:
    subprocess.run(list(cmd), capture_output=True, text=True, timeout=30, check=True)


def _inside(name: str, timeout_s: float = 10) -> subprocess.Popen:
    """A process in namespace `name`, once it is there (`ip netns exec` enters it after
    the process starts: a probe before then would open its socket in ours)."""
    proc = subprocess.Popen(["ip", "netns", "exec", name, "sleep", "60"])
    want = os.stat(f"/run/netns/{name}").st_ino
    deadline = time.monotonic() + timeout_s
    while os.stat(f"/proc/{proc.pid}/ns/net").st_ino != want:
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"sleep did not enter {name} within {timeout_s} s")
        time.sleep(0.01)
    return proc


@pytest.fixture
def hosts():
    """a and b (192.0.2.1, .2, TEST-NET-1) on one veth; c alone with no route. Yields
    name -> (pid in its namespace, address); everything removed even if the test fails."""
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces and raw sockets")
    tag = uuid.uuid4().hex[:6]
    ns = {h: f"synt-reach-{h}-{tag}" for h in "abc"}
    sleepers: list[subprocess.Popen] = []
    try:
        for name in ns.values():
            _sh("ip", "netns", "add", name)
            _sh("ip", "-n", name, "link", "set", "lo", "up")
        _sh("ip", "link", "add", f"ra{tag}", "netns", ns["a"], "type", "veth",
            "peer", "name", f"rb{tag}", "netns", ns["b"])
        for h, dev in (("a", f"ra{tag}"), ("b", f"rb{tag}")):
            _sh("ip", "-n", ns[h], "addr", "add", f"192.0.2.{'ab'.index(h) + 1}/24",
                "dev", dev)
            _sh("ip", "-n", ns[h], "link", "set", dev, "up")
        for name in ns.values():
            sleepers.append(_inside(name))
        yield {"a": (sleepers[0].pid, "192.0.2.1"), "b": (sleepers[1].pid, "192.0.2.2"),
               "c": (sleepers[2].pid, "192.0.2.3")}
    finally:
        for p in sleepers:
            p.kill()
            p.wait(timeout=10)
        for name in ns.values():
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)


def test_echoes_from_inside_each_namespace_are_answered(hosts):
    found = reach.probe(hosts, [("a", "b"), ("b", "a")], 10)
    assert found.missing == [] and found.took is not None and found.took < 5
    assert found.echoes == {("a", "b"): 1, ("b", "a"): 1} and not found.send_errors


def test_a_pair_without_a_path_is_named_with_how_often_it_was_asked(hosts):
    pairs = [("a", "b"), ("a", "c"), ("c", "a")]
    found = reach.probe(hosts, pairs, 2.5, try_s=1.0)
    assert set(found.missing) == {("a", "c"), ("c", "a")}
    assert found.echoes[("a", "c")] == 3  # at 0, 1 and 2 s: asked again while unanswered
    assert found.send_errors["ENETUNREACH"] == 3  # c has no route at all
    text, ok = found.check("start: every host reached every other host", Deadline(0, 3),
                           {h: h for h in hosts})
    assert not ok and "2 never answered (echoed 3 times each): c -> a, a -> c" in text
    assert "sends refused: ENETUNREACH x3" in text


def test_a_source_whose_namespace_is_gone_is_named_not_raised(hosts):
    gone = {**hosts, "d": (2**22 + 1, "192.0.2.4")}  # above pid_max's default: no process
    found = reach.probe(gone, [("d", "a"), ("a", "b")], 2)
    assert found.missing == [("d", "a")] and found.echoes[("d", "a")] == 0
    assert found.errors and found.errors[0].startswith("d: its namespace:")
