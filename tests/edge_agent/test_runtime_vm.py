"""The QEMU runtime on its own, with bad input: a kernel that panics, a tap name taken by
another program, a bridge that does not exist. Each leaves no process, tap or folder.
Root, OVS and QEMU (markers netns and vm); about 15 s."""

from __future__ import annotations

import subprocess
import time
from dataclasses import replace
from pathlib import Path

import pytest

from edge_agent.microvm import build
from edge_agent.qemu import Runtime, RuntimeError_, tap_name
from edge_agent.spec import parse_spec

pytestmark = [pytest.mark.netns, pytest.mark.vm]
BRIDGE = "synrtbr0"


def sh(*cmd: str) -> None:
    subprocess.run(cmd, capture_output=True, timeout=20, check=False)


@pytest.fixture
def bridge():
    from topologies.emulate import ensure_ovs

    ensure_ovs(lambda _msg: None)
    sh("ovs-vsctl", "--may-exist", "add-br", BRIDGE, "--", "set", "bridge", BRIDGE,
       "datapath_type=netdev")
    yield BRIDGE
    sh("ovs-vsctl", "--if-exists", "del-br", BRIDGE)


def spec(name: str, switch: str = BRIDGE):
    return parse_spec({"name": name, "nics": [
        {"switch": switch, "mac": "52:54:00:00:0e:01", "ipv4": "10.99.0.5/24"}]})


def _nothing_left(rt: Runtime, name: str) -> None:
    assert rt.scan() == {}
    assert not Path(f"/sys/class/net/{tap_name(name, 0, 'owner-1')}").exists()
    assert not rt.folder(name).exists()


def test_kernel_panic_is_reported_with_its_reason(bridge, tmp_path):
    image = build()
    broken = tmp_path / "initrd.img"
    broken.write_bytes(b"not an initramfs")
    rt = Runtime(tmp_path / "state", "owner-1")
    try:
        rt.start(spec("panics"), replace(image, initrd=broken), "h", 0)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            found = rt.scan()["panics"]
            if not found.alive:
                break
            time.sleep(0.2)
        assert not found.alive
        assert found.exit_reason.startswith("kernel panic: "), found.exit_reason
        rt.stop("panics")
        _nothing_left(rt, "panics")
    finally:
        rt.stop("panics")


def test_a_taken_tap_or_a_missing_bridge_starts_nothing(bridge, tmp_path):
    image = build()
    rt = Runtime(tmp_path / "state", "owner-1")
    tap = tap_name("taken", 0, "owner-1")
    sh("ip", "tuntap", "add", "dev", tap, "mode", "tap")
    try:
        with pytest.raises(RuntimeError_, match=f"tap {tap} exists and is not this VM's"):
            rt.start(spec("taken"), image, "h", 0)
        assert Path(f"/sys/class/net/{tap}").exists()  # another program's: left alone
        assert rt.scan() == {} and not rt.folder("taken").exists()
    finally:
        sh("ip", "link", "del", tap)
    with pytest.raises(RuntimeError_, match="bridge 'nosuchbr' does not exist"):
        rt.start(spec("nobridge", "nosuchbr"), image, "h", 0)
    _nothing_left(rt, "nobridge")
