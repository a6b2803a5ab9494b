"""Cloud-edge topology construction, naming and validation (no network is started)."""

from __future__ import annotations

import random

import pytest

from topologies.classic import TOPOLOGIES, TopologyError, make_topo
from topologies.cloud_edge import CloudEdgeTopo, WanRelay, site_of, topos
from topologies.wanrelay import Schedule


def test_mininet_custom_table_names_cloudedge():
    assert topos["cloudedge"] is CloudEdgeTopo


@pytest.mark.parametrize("sites, hosts, switches", [(1, 1, 1), (3, 2, 1), (4, 3, 2)])
def test_cloud_edge_shape(sites, hosts, switches):
    topo = CloudEdgeTopo(sites=sites, hosts_per_site=hosts, switches_per_site=switches)
    n_sites = sites + 1
    assert len(topo.hosts()) == n_sites * hosts
    relays = [s for s in topo.switches() if topo.nodeInfo(s).get("cls") is WanRelay]
    assert len(relays) == sites
    assert len(topo.switches()) == n_sites * switches + sites
    # hosts + intra-site chains + two links per WAN relay
    assert len(topo.links()) == n_sites * hosts + n_sites * (switches - 1) + 2 * sites


def test_names_dpids_addresses_encode_the_site():
    topo = CloudEdgeTopo(sites=2, hosts_per_site=2)
    assert topo.nodeInfo("cs1")["dpid"] == f"{1:016x}"
    assert topo.nodeInfo("e2s1")["dpid"] == f"{0x201:016x}"
    assert topo.nodeInfo("e2h1")["ip"] == "10.2.0.1/8"
    assert topo.nodeInfo("e1h2")["mac"] == "02:00:00:00:01:02"
    assert {site_of(h) for h in topo.hosts()} == {"cloud", "edge1", "edge2"}
    # every edge gateway reaches the cloud only through its relay
    assert sorted(n for link in topo.links() if "w1" in link for n in link if n != "w1") \
        == ["cs1", "e1s1"]


def test_wan_parameters_reach_the_relays():
    topo = CloudEdgeTopo(sites=1, wan_delay_ms=35, wan_rate_mbit=10, wan_loss_pct=1.5)
    info = topo.nodeInfo("w1")
    assert (info["delay_ms"], info["rate_mbit"], info["loss_pct"]) == (35, 10, 1.5)


@pytest.mark.parametrize("kwargs, message", [
    ({"sites": 0}, "sites must be between 1"),
    ({"sites": -2}, "sites must be between 1"),
    ({"sites": "x"}, "sites must be a whole number"),
    ({"hosts_per_site": 0}, "hosts_per_site"),
    ({"wan_delay_ms": -1}, "wan_delay_ms must be >= 0"),
    ({"wan_loss_pct": 101}, "wan_loss_pct must be at most 100"),
])
def test_cloud_edge_rejects_bad_sizes(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CloudEdgeTopo(**kwargs)


def test_registry_has_classics_and_rejects_unknown_names():
    assert set(TOPOLOGIES) == {"cloudedge", "single", "linear", "tree", "ring"}
    assert len(make_topo("ring", 5).links()) == 10  # 5 host links + 5 ring links
    assert len(make_topo("single", 3).hosts()) == 3
    assert len(make_topo("linear", 4).switches()) == 4
    assert len(make_topo("tree", 2).hosts()) == 4
    with pytest.raises(TopologyError, match="unknown topology 'mesh': choose one of"):
        make_topo("mesh", 3)
    with pytest.raises(TopologyError, match="size must be at least 1"):
        make_topo("linear", -1)


def test_wan_schedule_adds_delay_and_serialisation_time():
    s = Schedule(delay_ms=20, rate_mbit=8, loss_pct=0, queue_ms_max=100, rng=random.Random(1))
    # 1000 bytes at 8 Mbit/s take 1 ms on the wire, then 20 ms of propagation.
    assert s.offer(0.0, 1000) == pytest.approx(0.021)
    assert s.offer(0.0, 1000) == pytest.approx(0.022)  # queued behind the first
    assert s.offer(1.0, 1000) == pytest.approx(1.021)  # the queue drained meanwhile


def test_wan_schedule_tail_drops_when_queue_is_full():
    s = Schedule(delay_ms=0, rate_mbit=8, loss_pct=0, queue_ms_max=5, rng=random.Random(1))
    departures = [s.offer(0.0, 1000) for _ in range(10)]
    assert departures[:6] == pytest.approx([0.001 * i for i in range(1, 7)])
    assert departures[6:] == [None] * 4 and s.dropped_queue == 4


def test_wan_schedule_loss_is_seeded_and_near_the_rate():
    def run(seed):
        s = Schedule(0, 0, 10, 100, random.Random(seed))
        return [s.offer(0.0, 100) is None for _ in range(5000)]
    first = run(7)
    assert first == run(7)
    assert 400 < sum(first) < 600


def test_wan_schedule_rejects_bad_parameters():
    with pytest.raises(ValueError):
        Schedule(-1, 0, 0, 100, random.Random(1))
    with pytest.raises(ValueError):
        Schedule(0, 0, 150, 100, random.Random(1))


def test_edge_ring_adds_redundant_wan_links():
    topo = CloudEdgeTopo(sites=3, edge_ring=True)
    ring = sorted(s for s in topo.switches() if s.startswith("x"))
    assert ring == ["x1", "x2", "x3"]  # e1-e2, e2-e3, e3-e1
    assert len(topo.links()) == len(CloudEdgeTopo(sites=3).links()) + 2 * 3
    assert sorted(n for link in topo.links() if "x3" in link for n in link if n != "x3") \
        == ["e1s1", "e3s1"]
