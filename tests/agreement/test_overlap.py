"""A service that ran on both sides of a split lands in the reunion's conflict report, and
the older generation's placement gives way (decision 0081 §4)."""

from __future__ import annotations

import random

import pytest

from controller.agreement import (
    AgreementReplica,
    Status,
    reunion_slot,
    secede,
    with_conflicts_table,
)
from controller.agreement.coordinator import report_mutations
from controller.agreement.report import overlap_fixes, placement_overlaps, reunion_report
from controller.replication import DEFAULT_SCHEMA, RowState, Upsert

from .conftest import Net

SCHEMA = with_conflicts_table(DEFAULT_SCHEMA)


def _decide(net: Net, i: int, slot: str, value) -> None:
    p = net[i].agreement.propose(slot, value, net.now_ms)
    net.run(200, until=lambda: p.done)
    assert p.outcome.status is Status.DECIDED, p.outcome


def _place(net: Net, i: int, values: dict) -> None:
    net[i].replica.write([Upsert("placements", ("web",), values)], net.now_ms)
    net.run(20)


def _split(state_b: str, takeover_state: str):
    """web runs on node 3 (generation 1); a 3 | 2 split, {3, 4} secede; the parent gives
    web to node 1 (generation 2), which reports takeover_state; node 3 reports state_b. Both
    sides decide merge. Returns (parent net, seceded net, B's genesis)."""
    a = Net(5, schema=SCHEMA)
    n3 = a[3].id
    _place(a, 0, {"node": n3, "generation": 1, "state": "running image 1111"})
    a.groups = [{n.id for n in a.nodes[:3]}, {n.id for n in a.nodes[3:]}]
    voters = a[3].agreement.membership().voters
    genesis_b = secede(a[3].identity, a.genesis, voters, [a[3].id, a[4].id],
                       a[3].replica.version_vector(), a.now_ms, confirmed_by="op@edge-3",
                       access={"roles": {a[3].id: "admin", a[4].id: "admin"}})
    a.crash(3)
    a.crash(4)
    b = Net(2, identities=[a[3].identity, a[4].identity], genesis=genesis_b, schema=SCHEMA)
    b.now_ms = a.now_ms
    b[0].replica.write([Upsert(t, k, v) for t in SCHEMA.names
                        for k, v in a[0].replica.rows(t).items()], b.now_ms)
    b.run(20)
    a.now_ms += 5
    _place(a, 1, {"node": a[1].id, "generation": 2, "state": "pending"})
    _place(a, 1, {"state": takeover_state})
    b.now_ms = a.now_ms + 10
    _place(b, 0, {"state": state_b})
    _decide(a, 0, reunion_slot(genesis_b.cluster_id), "merge")
    _decide(b, 0, reunion_slot(a.genesis.cluster_id), "merge")
    return a, b, genesis_b


def _joined(a: Net, b: Net, genesis_b):
    ids = [n.identity.node_id for n in a.nodes]
    shadow = AgreementReplica.recover(a[0].identity, genesis_b, random.Random(1),
                                      b[0].store.load().log, schema=SCHEMA, peers=ids)
    a[0].replica.join_lineage(shadow)
    return shadow


def test_both_sides_running_a_service_is_reported_and_the_newer_generation_stands():
    a, b, genesis_b = _split("running image 3333", "running image 2222")
    shadow = _joined(a, b, genesis_b)
    report = reunion_report(a[0].replica, shadow)
    assert report is not None
    (entry,) = [e for e in report.entries if e.kind == "placement"]
    assert entry.name == "placements" and entry.key == ("web",)
    assert entry.kept == {"node": a[1].id, "generation": 2, "state": "running image 2222"}
    assert entry.lost == {"node": a[3].id, "generation": 1, "state": "running image 3333"}
    assert entry.kept_author == a[1].id and entry.lost_author == a[3].id
    assert 0 < entry.kept_hlc < entry.lost_hlc  # both observed times; B's was later
    assert entry.kept_lineage == a.genesis.cluster_id
    assert entry.lost_lineage == genesis_b.cluster_id
    # The same entry from the other side's view; the report's op moves web to generation 2.
    other = reunion_report(shadow, a[0].replica)
    assert [e for e in other.entries if e.kind == "placement"] == [entry]
    fixes = overlap_fixes(report.entries)
    assert fixes == [Upsert("placements", ("web",), {"node": a[1].id, "generation": 2})]
    mutations = report_mutations(genesis_b.cluster_id, report)
    assert fixes[0] in mutations
    a[0].replica.write(mutations, a.now_ms)
    row = a[0].replica.row("placements", ("web",))
    assert (row["node"], row["generation"]) == (a[1].id, 2)


@pytest.mark.parametrize("state_b,takeover", [
    ("stopped", "running image 2222"),  # the old owner reported its stop: one copy
    ("running image 3333", "pending"),  # the new owner never started it
    ("failed: kernel panic", "running image 2222"),
])
def test_no_overlap_when_one_side_did_not_run_it(state_b, takeover):
    a, b, genesis_b = _split(state_b, takeover)
    report = reunion_report(a[0].replica, _joined(a, b, genesis_b))
    assert report is not None
    assert [e for e in report.entries if e.kind == "placement"] == []
    assert overlap_fixes(report.entries) == []


def _row(node, generation, state, hlc=5):
    return RowState.from_plain([1, [["generation", generation, 1, hlc, "w"],
                                    ["node", node, 1, hlc, "w"], ["state", state, 1, hlc, node]]])


def test_overlaps_as_a_table():
    from controller.agreement import Lineage

    la = Lineage(b"A" * 32, b"A" * 32, (), {}, ())
    lb = Lineage(b"B" * 32, b"A" * 32, (b"A" * 32,), {}, ())
    same = placement_overlaps((la, {"w": _row("x", 1, "running")}),
                              (lb, {"w": _row("x", 1, "unhealthy image 1")}))
    assert same == []  # one copy, seen on both sides
    tie = placement_overlaps((la, {"w": _row("x", 2, "starting")}),
                             (lb, {"w": _row("y", 2, "running image 2")}))
    assert [(e.kept["node"], e.lost["node"]) for e in tie] == [("x", "y")]  # the kept lineage's
    older_kept = placement_overlaps((la, {"w": _row("x", 1, "running")}),
                                    (lb, {"w": _row("y", 3, "running")}))
    assert [(e.kept["node"], e.kept_lineage) for e in older_kept] == [("y", b"B" * 32)]
    assert placement_overlaps((la, {"w": _row("x", 1, "running")}), (lb, {})) == []
