"""The lineage coordinator (controller/agreement/coordinator.py): tables of events -> actions.

A parent lineage P of nodes n0, n1, n2, and a lineage C that n2 seceded into alone."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from controller.agreement import AccessPolicy, secede
from controller.agreement.coordinator import (
    AnnounceGenesis,
    JoinLineage,
    KeepGenesis,
    LineageCoordinator,
    NotReturning,
    ProposeReunion,
    ReturnHome,
    SecessionRefused,
    View,
    WriteLateEntries,
    WriteReport,
    announce_mutations,
    announced_geneses,
    check_notice,
    fork_copy_due,
    plan_secession,
    report_mutations,
)
from controller.agreement.lineage import lineage_of, reunion_slot
from controller.agreement.membership import Membership
from controller.agreement.report import Report
from controller.replication import Identity, RowUpdate, decode, make_genesis
from controller.replication.reserved import INTERNAL, genesis_key, report_key

IDS = [Identity.from_seed(bytes([i + 1]) * 32) for i in range(3)]
N0, N1, N2 = (i.node_id for i in IDS)
P = make_genesis(IDS[0], "p", [i.public_key for i in IDS], 0)
C = secede(IDS[2], P, {i.node_id: i.public_key for i in IDS}, [N2], {N2: 3}, 1, confirmed_by="ops")
OTHER = make_genesis(IDS[1], "unrelated", [IDS[1].public_key], 0)
MERGING = AccessPolicy(auto_merge="related")
READER = AccessPolicy(auto_merge="related", roles={N0: "reader", N2: "reader"})
RETRY_MS = 5_000


@dataclass(frozen=True)
class FakeReport:
    kept: bytes
    entries: tuple = ()


def in_parent(**kw) -> LineageCoordinator:
    return LineageCoordinator(P, N0, {}, retry_ms=RETRY_MS, **kw)


def in_child() -> LineageCoordinator:
    return LineageCoordinator(C, N2, {P.cluster_id: P}, retry_ms=RETRY_MS)


def view(**kw) -> View:
    kw.setdefault("policy", MERGING)
    kw.setdefault("voter", True)
    kw.setdefault("member_now", True)
    return View(**kw)


# ---------------------------------------------------------------------- meeting
@pytest.mark.parametrize(
    ("make", "genesis", "via", "actions", "met"),
    [
        (in_parent, C, N2, [KeepGenesis(C)], True),  # new: remembered, met
        (in_parent, P, N1, [], False),  # our own lineage
        (in_child, P, N2, [], False),  # our own seceded voter that has not moved yet
        (in_child, P, N0, [], True),  # the parent's side: held already, now met
        (in_child, OTHER, N1, [KeepGenesis(OTHER)], True),
    ],
)
def test_meeting_a_lineage(make, genesis, via, actions, met):
    core = make()
    assert core.meet(genesis, via) == actions
    assert (genesis.cluster_id in core.met) is met
    assert core.meet(genesis, via) == []  # met once


@pytest.mark.parametrize(
    ("v", "announced"),
    [
        (view(), True),
        (view(announced=frozenset({C.cluster_id})), False),  # another node wrote the row
        (view(member_now=False), False),
        (view(policy=READER), False),
    ],
)
def test_a_met_lineage_is_announced_once(v, announced):
    core = in_parent()
    core.meet(C, N2)
    got = [a for a in core.tick(0, v) if isinstance(a, AnnounceGenesis)]
    assert got == ([AnnounceGenesis((C,))] if announced else [])
    assert [a for a in core.tick(1, view()) if isinstance(a, AnnounceGenesis)] == []


# ---------------------------------------------------------------------- proposing
PROPOSE_C = ProposeReunion(C.cluster_id, reunion_slot(C.cluster_id))


@pytest.mark.parametrize(
    ("v", "actions"),
    [
        (view(), [PROPOSE_C]),
        (view(policy=AccessPolicy(auto_merge="never")), []),
        (view(voter=False), []),
        (view(decided={C.cluster_id: True}), [JoinLineage(C)]),
        (view(decided={C.cluster_id: False}), []),  # decided another value: nothing to do
    ],
)
def test_tick_proposes_or_joins(v, actions):
    core = in_parent()
    core.meet(C, N2)
    assert [a for a in core.tick(0, v) if not isinstance(a, AnnounceGenesis)] == actions


def test_unrelated_lineages_are_never_proposed_about():
    core = in_child()
    core.meet(OTHER, N1)
    assert [a for a in core.tick(0, view()) if isinstance(a, ProposeReunion)] == []


@pytest.mark.parametrize(
    ("now_ms", "busy", "refused", "again"),
    [
        (RETRY_MS - 1, False, False, False),  # too soon
        (RETRY_MS, False, False, True),  # done without a decision: tried again
        (RETRY_MS, True, False, False),  # still running
        (RETRY_MS - 1, False, True, False),  # refused: not retried blindly
        (RETRY_MS, False, True, True),
    ],
)
def test_a_proposal_is_retried_after_retry_ms(now_ms, busy, refused, again):
    core = in_parent()
    core.meet(C, N2)
    assert PROPOSE_C in core.tick(0, view())
    if refused:
        assert core.propose_refused(C.cluster_id, "no quorum") is True
        assert core.propose_refused(C.cluster_id, "no quorum") is False  # told once
    busy_set = frozenset({C.cluster_id}) if busy else frozenset()
    assert (PROPOSE_C in core.tick(now_ms, view(busy=busy_set))) is again


# ---------------------------------------------------------------------- joining
def test_a_refused_join_is_not_tried_again():
    core = in_parent()
    core.meet(C, N2)
    decided = view(decided={C.cluster_id: True})
    assert JoinLineage(C) in core.tick(0, decided)
    core.join_refused(C.cluster_id, "join: no merge")
    assert core.tick(1, decided) == []


def test_a_joined_lineage_is_not_joined_again():
    core = in_parent()
    core.meet(C, N2)
    core.joined_lineage(C.cluster_id)
    assert core.tick(0, view(decided={C.cluster_id: True})) == [AnnounceGenesis((C,))]


@pytest.mark.parametrize(
    ("decided", "actions", "met"),
    [
        ({P.cluster_id: True}, [JoinLineage(P)], True),
        ({P.cluster_id: False}, [], True),  # decided about: met, not joined
        ({}, [], False),  # undecided: the sides have not met again yet
    ],
)
def test_restart_joins_again_where_merge_was_decided(decided, actions, met):
    core = in_child()
    assert core.restart(decided) == actions
    assert (P.cluster_id in core.met) is met


# ---------------------------------------------------------------------- the report
@pytest.mark.parametrize(
    ("v", "actions"),
    [
        (view(reports={C.cluster_id: None}), []),  # not computable yet
        (
            view(reports={C.cluster_id: FakeReport(P.cluster_id)}),
            [WriteReport(C.cluster_id, FakeReport(P.cluster_id))],
        ),
        (view(reports={C.cluster_id: FakeReport(C.cluster_id)}), []),  # theirs to write
        (view(reports={C.cluster_id: FakeReport(P.cluster_id)}, member_now=False), []),
        (view(reports={C.cluster_id: FakeReport(P.cluster_id)}, policy=READER), []),
    ],
)
def test_the_kept_side_writes_the_report(v, actions):
    core = in_parent()
    core.meet(C, N2)
    core.joined_lineage(C.cluster_id)
    assert core.tick_joined(v) == actions


def test_late_entries_are_checked_once_per_decision_learned():
    core = in_parent()
    core.meet(C, N2)
    core.joined_lineage(C.cluster_id)
    reported = frozenset({C.cluster_id})
    late = [WriteLateEntries(C.cluster_id)]
    assert core.tick_joined(view(reported=reported, decided_count=4)) == late
    assert core.tick_joined(view(reported=reported, decided_count=4)) == []
    assert core.tick_joined(view(reported=reported, decided_count=5)) == late
    assert core.tick_joined(view(reported=reported, decided_count=6, member_now=False)) == []
    assert core.tick_joined(view(reported=reported, decided_count=6)) == []  # seen at 6


# ---------------------------------------------------------------------- going home
@pytest.mark.parametrize(
    ("v", "actions"),
    [
        (view(), []),  # the report about us is not written yet
        (view(reported=frozenset({C.cluster_id})), []),  # nobody to move the node home
        (
            view(reported=frozenset({C.cluster_id}), homeward=True),
            [NotReturning(P.cluster_id, "not a voter")],
        ),
        (
            view(reported=frozenset({C.cluster_id}), homeward=True, parent_voters=frozenset({N2})),
            [ReturnHome(P)],
        ),
    ],
)
def test_a_seceded_node_returns_home_once_the_report_is_written(v, actions):
    core = in_child()
    core.restart({P.cluster_id: True})
    core.joined_lineage(P.cluster_id)
    assert core.tick_joined(v) == actions
    assert core.tick_joined(v) == []  # once: home is being moved to, or told already


def test_the_parent_never_goes_home():
    core = in_parent()
    core.meet(C, N2)
    core.joined_lineage(C.cluster_id)
    v = view(reported=frozenset({P.cluster_id}), homeward=True, parent_voters=frozenset({N0}))
    assert core.tick_joined(v) == []


# ---------------------------------------------------------------------- shared helpers
# What the node's Keeper and the reunion simulator both call around the coordinator.
@pytest.mark.parametrize(
    ("genesis", "me", "own_seq", "due"),
    [
        (C, IDS[2].public_key, 0, P.cluster_id),  # the founder of a seceded lineage, fresh
        (C, IDS[2].public_key, 1, None),  # copied already
        (C, IDS[1].public_key, 0, None),  # not its founder
        (P, IDS[0].public_key, 0, None),  # not a seceded lineage
    ],
)
def test_fork_copy_due(genesis, me, own_seq, due):
    assert fork_copy_due(genesis, me, own_seq) == due


def test_announced_geneses_are_read_from_internal_rows_only():
    rows = [
        RowUpdate(INTERNAL, (genesis_key(C.cluster_id),), {"value": C.raw}, b""),
        RowUpdate(INTERNAL, (genesis_key(OTHER.cluster_id),), None, b""),  # deleted
        RowUpdate(INTERNAL, ("peer/x",), {"value": b"127.0.0.1:1"}, b""),
        RowUpdate("kv", (genesis_key(P.cluster_id),), {"value": P.raw}, b""),  # a user row
    ]
    assert announced_geneses(rows) == [C.raw]


def test_the_report_and_its_marker_are_one_write():
    mutations = report_mutations(C.cluster_id, Report(P.cluster_id, []))
    assert [(m.table, m.key) for m in mutations] == [(INTERNAL, (report_key(C.cluster_id),))]
    assert decode(mutations[0].values["value"]) == {"entries": 0, "kept": P.cluster_id.hex()}
    assert announce_mutations([C])[0].values == {"value": C.raw}


def test_idle_until_a_lineage_is_met():
    core = in_parent()
    assert core.idle
    core.meet(C, N1)
    assert not core.idle


# ---------------------------------------------------------------------- opening a lineage
M0 = Membership(0, {i.node_id: i.public_key for i in IDS}, {})


@pytest.mark.parametrize(
    ("founder", "voters", "confirmed", "error"),
    [
        (IDS[2], [], "ops", None),  # the founder alone: 1 of 3
        (IDS[2], [N2[:8]], "ops", None),  # itself by prefix
        (IDS[2], [N0], "ops", "majority"),  # 2 of 3 decide without seceding
        (IDS[2], [], "  ", "confirmed"),
        (IDS[2], ["abc"], "ops", "is not one voter"),  # a prefix under 8 characters
        (IDS[2], ["ffffffffff"], "ops", "is not one voter"),
    ],
)
def test_plan_secession(founder, voters, confirmed, error):
    plan = lambda: plan_secession(  # noqa: E731
        founder, P, M0, MERGING, {N0: 2, N2: 3}, voters, confirmed, 7
    )
    if error:
        with pytest.raises(SecessionRefused, match=error):
            plan()
        return
    g = plan()
    lin = lineage_of(g)
    assert lin.parent == P.cluster_id and set(g.member_ids) == {founder.node_id}
    assert lin.fork_vector == {N0: 2, N2: 3} and lin.confirmed_by == "ops"
    check_notice(P, g, founder.node_id, founder.node_id)
    with pytest.raises(SecessionRefused, match="not among the seceding voters"):
        check_notice(P, g, N1, founder.node_id)  # N1 stays in the parent
    with pytest.raises(SecessionRefused, match="did not secede from"):
        check_notice(OTHER, g, founder.node_id, founder.node_id)
