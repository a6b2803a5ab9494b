"""The web view's model (controller/web/model.py): tables of rows in, the picture out."""

from __future__ import annotations

import pytest

from controller.web.model import LinkMemory, Member, cluster_view, topology_view

C1, E1, E2 = "0000000000000001", "0000000000000101", "0000000000000201"
SWITCHES = {
    (C1,): {"site": "cloud", "master": "cloud", "generation_id": 0x101, "connected": True},
    (E1,): {"site": "edge1", "master": "edge1", "generation_id": 0x102, "connected": True},
    (E2,): {"site": "edge2", "master": "edge2", "generation_id": 0x103, "connected": False},
}
WAN1 = {(C1, 2, E1, 1): {"up": True}, (E1, 1, C1, 2): {"up": True}}
WAN2 = {(C1, 3, E2, 1): {"up": True}}
NODES = {"cloud": "n-cloud", "edge1": "n-edge1", "edge2": "n-edge2"}
ALL_UP = {"n-cloud": True, "n-edge1": True, "n-edge2": True}


def view(links, reachable=ALL_UP, memory=None, now_ms=1_000, **kw):
    return topology_view(SWITCHES, links, kw.get("hosts", {}), kw.get("services", {}),
                         kw.get("placements", {}), kw.get("flows", {}), NODES, reachable,
                         memory or LinkMemory(), now_ms)


def states(v) -> dict[str, str]:
    return {link["id"]: link["state"] for link in v["links"]}


def test_both_directions_are_one_cable_and_cross_site_links_are_wan():
    v = view({**WAN1, **WAN2})
    assert [(link["id"], link["wan"]) for link in v["links"]] == [
        (f"{C1}/2-{E1}/1", True), (f"{C1}/3-{E2}/1", True)]
    assert set(states(v).values()) == {"up"}
    sw = {s["dpid"]: s for s in v["switches"]}
    assert (sw[E1]["master"], sw[E1]["generation_id"], sw[E2]["connected"]) == (
        "edge1", 0x102, False)


@pytest.mark.parametrize(
    ("links", "reachable", "cut", "why"),
    [
        ({**WAN1, (E1, 1, C1, 2): {"up": False}}, ALL_UP, f"{C1}/2-{E1}/1", "reported down"),
        ({**WAN1, **WAN2}, {**ALL_UP, "n-edge1": False}, f"{C1}/2-{E1}/1",
         "site edge1 is separated"),
    ],
)
def test_a_link_is_cut_when_reported_down_or_its_far_site_is_separated(links, reachable,
                                                                        cut, why):
    v = view(links, reachable)
    link = next(link for link in v["links"] if link["id"] == cut)
    assert (link["state"], link["why"]) == ("cut", why)
    assert [s["name"] for s in v["sites"] if s["separated"]] == (
        ["edge1"] if not reachable["n-edge1"] else [])
    others = [link for link in v["links"] if link["id"] != cut]
    assert all(link["state"] == "up" for link in others)


def test_a_link_gone_from_the_tables_stays_drawn_cut_until_it_returns():
    memory = LinkMemory()
    assert states(view({**WAN1, **WAN2}, memory=memory)) == {
        f"{C1}/2-{E1}/1": "up", f"{C1}/3-{E2}/1": "up"}
    gone = view(WAN2, memory=memory, now_ms=2_000)
    assert states(gone) == {f"{C1}/2-{E1}/1": "cut", f"{C1}/3-{E2}/1": "up"}
    assert next(link["why"] for link in gone["links"] if link["state"] == "cut") == (
        "not seen any more")
    assert set(states(view({**WAN1, **WAN2}, memory=memory, now_ms=3_000)).values()) == {"up"}


def test_link_memory_is_bounded_and_forgets_old_links():
    memory = LinkMemory(max_links=2, forget_ms=100)
    assert memory.update({"a", "b", "c"}, 0) == set()
    assert len(memory.seen) == 2  # the oldest-noted of the three was dropped
    assert memory.update(set(), 50) == set(memory.seen)
    assert memory.update(set(), 151) == set()  # forgotten: a removed cable, not a cut
    assert memory.seen == {}


def test_hosts_and_services_with_their_placement_and_site():
    v = view(WAN1, hosts={("02:00:00:00:00:01",): {"ip": "10.0.0.1", "dpid": E1, "port_no": 3}},
             services={("dns",): {"desired_state": "running", "placement": "edge1"},
                       ("web",): {"desired_state": "running"}},
             placements={("dns",): {"node": "n-edge1", "state": "running"}},
             flows={E1: 7})
    assert v["hosts"] == [{"mac": "02:00:00:00:00:01", "ip": "10.0.0.1", "dpid": E1, "port": 3}]
    assert [(s["name"], s["state"], s["site"]) for s in v["services"]] == [
        ("dns", "running", "edge1"), ("web", "unplaced", "")]
    assert {s["dpid"]: s["flows"] for s in v["switches"]}[E1] == 7
    assert [s["name"] for s in v["sites"]] == ["cloud", "edge1", "edge2"]  # cloud first


def test_members_digest_is_equal_exactly_when_vectors_are():
    own = {"a": 5, "b": 3}
    members = [Member("a", True, True, own), Member("b", False, True, {"a": 5, "b": 3, "c": 0}),
               Member("c", False, False, {"a": 2, "b": 3, "c": 4}),
               Member("d", False, False, None)]
    c = cluster_view("a", members, own, {"cloud": "a", "edge1": "c"}, {"name": "x"}, [], [])
    got = {m["node_id"]: (m["digest"], m["last_known"], m["ops_behind"], m["ops_ahead"],
                          m["sites"]) for m in c["members"]}
    assert got == {"a": ("equal", "equal", 0, 0, ["cloud"]), "b": ("equal", "equal", 0, 0, []),
                   "c": ("unknown", "differs", 3, 4, ["edge1"]),
                   "d": ("unknown", "unknown", 0, 0, [])}
    assert (c["all_equal"], c["reachable"], c["total"]) == (False, 2, 4)
    assert c["members"][0]["self"]  # this node first
    healed = cluster_view("a", members[:2], own, {}, {}, [], [])
    assert healed["all_equal"]
    # Cut off with the same vector as ours: not known to be equal any more.
    cut = cluster_view("a", [members[0], Member("b", False, False, own)], own, {}, {}, [], [])
    assert ([m["digest"] for m in cut["members"]], cut["all_equal"]) == (
        ["equal", "unknown"], False)
