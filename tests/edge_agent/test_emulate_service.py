"""`synod emulate --service`: the emulation runs an edge agent per edge site, deploys one
service on edge1 and its report shows a host of edge2 fetching it. Root, OVS and QEMU; a
few minutes (the whole emulation, then the service)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edge_agent.qemu import qemu_pids

pytestmark = [pytest.mark.mininet, pytest.mark.vm]

SYNOD = [sys.executable, "-c", "from controller.cli import main; main()"]


def _leftovers(root: Path) -> list[str]:
    """QEMU processes of the emulation's agents, and taps of theirs still on a bridge."""
    out = [f"qemu {pid}" for pid in qemu_pids(root)]
    ports = subprocess.run(["ovs-vsctl", "--columns=name", "--format=csv", "--no-headings",
                            "find", "Interface", "external_ids:synod-agent!=\"\""],
                           capture_output=True, text=True, check=False).stdout.split()
    return out + [f"port {p}" for p in ports if p.strip('"').startswith("sv")]


def test_emulate_runs_agents_and_a_service_reachable_from_another_site(tmp_path):
    done = subprocess.run([*SYNOD, "emulate", "--sites", "2", "--hosts-per-site", "1",
                           "--wan-delay-ms", "1", "--service", "--log-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=900, check=False)
    out = done.stdout
    print(out)
    assert done.returncode == 0, out + done.stderr[-3000:]
    assert "[ok] service: web deployed on edge1 is running in" in out, out
    assert "[ok] service: e2h1 (edge2) fetched web's page from its microVM on edge1" in out, out
    assert "result: PASS" in out
    assert "edge agent of edge1 ready" in done.stderr and "edge agent of edge2 ready" in \
        done.stderr
    assert not _leftovers(tmp_path), _leftovers(tmp_path)


def test_service_needs_the_sdn_controllers():
    done = subprocess.run([*SYNOD, "emulate", "--controllers", "single", "--service"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode != 0
    assert "--service needs --topo cloudedge --controllers sdn" in done.stderr
