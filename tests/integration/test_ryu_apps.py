"""Ryu 4.34's own sample apps, unmodified, under `ryu-manager` (Synod's launcher) in Mininet.

The apps are Ryu's files as released, fetched from PyPI into a cache by
scripts/fetch_ryu_apps.py (Synod does not carry Ryu's code): the first run downloads
about 1 MB, later runs reuse .cache/ryu-4.34 in the checkout.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

import pytest

from topologies.classic import make_topo
from topologies.emulate import (
    controller_process,
    converge,
    ensure_ovs,
    free_port,
    ping_pairs,
    running_network,
)

pytestmark = pytest.mark.mininet
ROOT = pathlib.Path(__file__).resolve().parents[2]
FETCH_TIMEOUT_S = 600
CONVERGE_S = 20  # learning switch: the first flood and the flows it installs
# STP: ports go listening -> learning -> forwarding, 2 x forward delay (15 s, stplib's
# default, which the unmodified app keeps), after a few hello times to elect the root.
STP_CONVERGE_S = 90
LINKS_S = 20  # LLDP discovery by os_ken.topology.switches (probes every few seconds)
HTTP_TIMEOUT_S = 10


@pytest.fixture(scope="module")
def ryu_apps() -> pathlib.Path:
    """Ryu 4.34's ryu/app folder, fetched once into the cache."""
    try:
        done = subprocess.run([sys.executable, str(ROOT / "scripts" / "fetch_ryu_apps.py")],
                              capture_output=True, text=True, timeout=FETCH_TIMEOUT_S,
                              check=False)
    except subprocess.TimeoutExpired:
        pytest.fail(f"fetching Ryu's apps took over {FETCH_TIMEOUT_S}s", pytrace=False)
    if done.returncode != 0:
        pytest.fail(f"cannot fetch Ryu's sample apps: {done.stderr.strip()}", pytrace=False)
    return pathlib.Path(done.stdout.strip())


@pytest.fixture(scope="module")
def ovs():
    ensure_ovs(lambda _msg: None)


def _bridges() -> set[str]:
    out = subprocess.run(["ovs-vsctl", "--timeout=5", "list-br"], capture_output=True,
                         text=True, timeout=10, check=True).stdout
    return set(out.split())


def _all_pairs(net) -> list[tuple[str, str]]:
    names = [h.name for h in net.hosts]
    return [(a, b) for a in names for b in names if a != b]


def _clean_log(log: pathlib.Path) -> str:
    text = log.read_text(errors="replace")
    assert "Traceback" not in text, text[-3000:]
    return text


@dataclass
class RestStack:
    net: object
    wsapi_port: int
    log: pathlib.Path

    def get(self, path: str):
        url = f"http://127.0.0.1:{self.wsapi_port}{path}"
        with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT_S) as reply:
            return json.loads(reply.read())

    def post(self, path: str, body: dict) -> int:
        request = urllib.request.Request(f"http://127.0.0.1:{self.wsapi_port}{path}",
                                         data=json.dumps(body).encode(), method="POST")
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as reply:
            return reply.status


@pytest.fixture(scope="class")
def rest_stack(ovs, ryu_apps, tmp_path_factory):
    """linear,3 under one ryu-manager: simple_switch_13 forwards, ofctl_rest and
    rest_topology answer REST (the carried ryu.app.wsgi), os_ken.topology.switches
    (named as os-ken calls it; rest_topology also requires it) discovers links."""
    log = tmp_path_factory.mktemp("ryu-rest") / "ryu-manager.log"
    topo = make_topo("linear", 3)
    port, wsapi_port = free_port(), free_port()
    apps = tuple(str(ryu_apps / f) for f in ("simple_switch_13.py", "ofctl_rest.py",
                                             "rest_topology.py")) + ("os_ken.topology.switches",)
    with controller_process(port, str(log), command="ryu-manager", apps=apps,
                            extra_args=("--observe-links", "--wsapi-host", "127.0.0.1",
                                        "--wsapi-port", str(wsapi_port))), \
            running_network(topo, port, lambda _msg: None) as net:
        yield RestStack(net, wsapi_port, log)
    assert not set(topo.switches()) & _bridges(), "bridges left behind"
    _clean_log(log)


class TestRestStack:
    """One network and one ryu-manager for the three (torn down before the STP ring,
    which reuses the switch names)."""

    def test_simple_switch_13_passes_pingall(self, rest_stack):
        net = rest_stack.net
        assert converge(net, _all_pairs(net), CONVERGE_S) is not None, _clean_log(rest_stack.log)
        assert net.pingAll(timeout=2) == 0.0


    def test_ofctl_rest_reads_and_writes_flows_through_the_carried_wsgi(self, rest_stack):
        assert sorted(rest_stack.get("/stats/switches")) == [1, 2, 3]
        assert rest_stack.get("/stats/desc/1")["1"]["dp_desc"] == "s1"
        # simple_switch_13's table-miss flow, as the switch reports it.
        flows = rest_stack.get("/stats/flow/1")["1"]
        assert any(f["priority"] == 0 and f["actions"] == ["OUTPUT:CONTROLLER"] for f in flows), \
            flows
        status = rest_stack.post("/stats/flowentry/add", {
            "dpid": 1, "priority": 4321, "match": {"eth_type": 2048, "ipv4_dst": "10.9.9.9"},
            "actions": [{"type": "OUTPUT", "port": 1}]})
        assert status == 200
        deadline = time.monotonic() + CONVERGE_S
        while "nw_dst=10.9.9.9" not in (dump := _dump_flows("s1")):
            assert time.monotonic() < deadline, dump
            time.sleep(0.2)
        assert "priority=4321" in dump
        with pytest.raises(urllib.error.HTTPError) as missing:
            rest_stack.get("/stats/flow/99")
        assert missing.value.code == 404


    def test_switches_app_reports_the_links_mininet_built(self, rest_stack):
        net = rest_stack.net
        expected = set()
        for link in net.links:
            a, b = link.intf1, link.intf2
            if a.node in net.switches and b.node in net.switches:
                ends = [(int(x.node.dpid, 16), x.node.ports[x]) for x in (a, b)]
                expected |= {(*ends[0], *ends[1]), (*ends[1], *ends[0])}
        assert len(expected) == 4  # s1<->s2, s2<->s3, both directions
        deadline = time.monotonic() + LINKS_S
        while True:
            found = {(int(lk["src"]["dpid"], 16), int(lk["src"]["port_no"], 16),
                      int(lk["dst"]["dpid"], 16), int(lk["dst"]["port_no"], 16))
                     for lk in rest_stack.get("/v1.0/topology/links")}
            if found == expected or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert found == expected
        switches = rest_stack.get("/v1.0/topology/switches")
        assert sorted(int(s["dpid"], 16) for s in switches) == [1, 2, 3]


def _dump_flows(bridge: str) -> str:
    return subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", "dump-flows", bridge],
                          capture_output=True, text=True, timeout=10, check=True).stdout


def _stp_ring(ryu_apps, tmp_path):
    topo = make_topo("ring", 3)  # s1-s2-s3-s1: flooding without STP would storm
    port = free_port()
    log = tmp_path / "ryu-manager.log"
    return topo, log, controller_process(port, str(log), command="ryu-manager",
                                         apps=(str(ryu_apps / "simple_switch_stp_13.py"),)), \
        port


def _no_storm(net) -> None:
    for switch in net.switches:
        counts = [int(x) for x in re.findall(r"n_packets=(\d+)", _dump_flows(switch.name))]
        assert max(counts, default=0) < 1_000, f"{switch.name}: {counts}"


def test_simple_switch_stp_13_passes_pingall_on_a_loop_once_stp_converged(ovs, ryu_apps,
                                                                          tmp_path):
    topo, log, controller, port = _stp_ring(ryu_apps, tmp_path)
    with controller, running_network(topo, port, lambda _msg: None) as net:
        took = converge(net, _all_pairs(net), STP_CONVERGE_S)
        assert took is not None, f"no full reachability within {STP_CONVERGE_S}s"
        print(f"STP converged, every pair answered after {took:.1f} s")
        assert net.pingAll(timeout=2) == 0.0
        _no_storm(net)
        text = _clean_log(log)
        assert "/ BLOCK" in text, "no port was blocked: the loop was not broken by STP"
    assert not set(topo.switches()) & _bridges(), "bridges left behind"


@pytest.mark.slow
def test_simple_switch_stp_13_reconverges_after_a_link_of_the_loop_fails(ovs, ryu_apps,
                                                                         tmp_path):
    topo, log, controller, port = _stp_ring(ryu_apps, tmp_path)
    with controller, running_network(topo, port, lambda _msg: None) as net:
        pairs = _all_pairs(net)
        assert converge(net, pairs, STP_CONVERGE_S) is not None
        net.configLinkStatus("s1", "s2", "down")
        took = converge(net, pairs, STP_CONVERGE_S)
        assert took is not None, f"no detour within {STP_CONVERGE_S}s of the cut"
        print(f"STP re-converged after the cut in {took:.1f} s")
        after = ping_pairs(net, pairs)
        assert all(after.values()), [p for p, ok in after.items() if not ok]
        _no_storm(net)
        _clean_log(log)
    assert not set(topo.switches()) & _bridges(), "bridges left behind"


def test_fetched_apps_are_ryus_own(ryu_apps):
    """The samples run as released: the pinned archive's files, not edited copies."""
    assert (ryu_apps / "simple_switch_13.py").read_text().count("app_manager.RyuApp") == 1
    license_file = ryu_apps.parent.parent / "LICENSE"
    assert "Apache License" in license_file.read_text()
    assert os.access(ryu_apps / "simple_switch_stp_13.py", os.R_OK)
