"""Which controllers a controller probes (controller/forwarding/ranking.py sites_to_probe,
Liveness.forget): only those ranked above it for a switch connected to it, so that an
edge's cost does not grow with the number of sites (decision 0097)."""

from __future__ import annotations

from controller.forwarding.ranking import (
    PROBE_FAILURES_DEAD,
    Liveness,
    better_alive,
    controller_order,
    sites_to_probe,
)

SITES = ["cloud", *(f"edge{i}" for i in range(1, 11))]


def _probed_by(site: str, homes: list[str]) -> frozenset[str]:
    return sites_to_probe([controller_order(h, SITES, site) for h in homes], site)


def test_the_cloud_probes_the_edges_it_backs_up_and_an_edge_only_its_backups_home():
    edges = SITES[1:]
    # The cloud: its own switch, and every edge's as their backup.
    assert _probed_by("cloud", ["cloud", *edges]) == frozenset(edges)
    # edge1: its own switch, and the cloud's as its backup.
    assert _probed_by("edge1", ["edge1", "cloud"]) == {"cloud"}
    # Any other edge: only its own switch, nobody ranks above it there.
    assert _probed_by("edge7", ["edge7"]) == frozenset()
    # A switch that names no home: ranked by the configured list.
    assert _probed_by("edge2", [None]) == {"cloud", "edge1"}  # type: ignore[list-item]


def test_what_is_not_probed_counts_alive_again_and_must_fail_probes_anew():
    live = Liveness(SITES[1:])
    for _ in range(PROBE_FAILURES_DEAD):
        live.probed({"edge1": False})
    assert live.alive()["edge1"] is False
    assert live.forget(["edge1", "mars"]) is True  # changed; unknown sites are ignored
    assert live.alive()["edge1"] is True
    assert live.forget(["edge1"]) is False
    # edge1's switch connects to the cloud again: the cloud does not claim it at once.
    order = controller_order("edge1", SITES, "cloud")
    assert better_alive(order, "cloud", live.alive()) is True
    for _ in range(PROBE_FAILURES_DEAD):
        live.probed({"edge1": False})
    assert better_alive(order, "cloud", live.alive()) is False
