"""Schema versions decided in slots (controller/agreement/upgrade.py, decision 0037): a
voter proposes `schema/<v>` once every member reads v; an acceptor that does not read v,
or is asked out of order or for other tables, refuses."""

from __future__ import annotations

import dataclasses

import pytest

from controller.agreement import Refused
from controller.agreement.errors import Reason
from controller.agreement.upgrade import (
    MEMBERS_NAMED_MAX,
    check_schema,
    members_behind,
    schema_slot,
    schema_value,
)
from controller.replication.schema import DEFAULT_SCHEMA, SCHEMA_VERSION, TABLES_SINCE

from .conftest import Net


def test_every_table_added_after_version_1_is_in_the_schema_and_named_by_its_version():
    assert SCHEMA_VERSION >= 2
    for table, version in TABLES_SINCE.items():
        assert table in DEFAULT_SCHEMA.names and 2 <= version <= SCHEMA_VERSION
        assert table in schema_value(version)["tables"]


A, B, C = "a" * 64, "b" * 64, "c" * 64  # other members' ids


@pytest.mark.parametrize("slot, value, reads, decided, others, reason", [
    ("schema/2", schema_value(2), 2, 1, {}, None),  # a sole member
    ("schema/2", schema_value(2), 2, 1, {A: 2, B: 3}, None),
    ("schema/2", schema_value(2), 1, 1, {A: 2}, Reason.SCHEMA_AHEAD),
    ("schema/3", schema_value(3), 3, 1, {A: 3}, Reason.BAD_SCHEMA),  # schema/2 first
    ("schema/2", schema_value(2), 2, 2, {A: 2}, Reason.BAD_SCHEMA),  # decided already
    ("schema/2", {"version": 2, "tables": ["kv"]}, 2, 1, {A: 2}, Reason.BAD_SCHEMA),
    ("schema/1", schema_value(1), 2, 1, {A: 2}, Reason.BAD_SCHEMA),
    ("schema/02", schema_value(2), 2, 1, {A: 2}, Reason.BAD_SCHEMA),
    # Every member heard must have said that it reads the version.
    ("schema/2", schema_value(2), 2, 1, {A: 2, B: 1}, Reason.MEMBER_BEHIND),
    ("schema/2", schema_value(2), 2, 1, {A: 2, B: 0}, Reason.MEMBER_BEHIND),  # older code
    ("schema/2", schema_value(2), 2, 1, {A: 1, B: 1, C: 0}, Reason.MEMBER_BEHIND),
])
def test_check_schema(slot, value, reads, decided, others, reason):
    if reason is None:
        check_schema(slot, value, reads, decided, others)
        return
    with pytest.raises(Refused) as exc:
        check_schema(slot, value, reads, decided, others)
    assert exc.value.reason == reason


def test_a_member_behind_is_named_in_the_refusal():
    others = {A: 2, B: 1, C: 0}
    with pytest.raises(Refused) as exc:
        check_schema("schema/2", schema_value(2), 2, 1, others)
    assert exc.value.detail == (
        "schema/2: not read by member(s) bbbbbbbb (reads 1), "
        "cccccccc (older code or not heard)"
    )
    many = {f"{i:02d}" + "0" * 62: 1 for i in range(MEMBERS_NAMED_MAX + 2)}
    with pytest.raises(Refused, match="and 2 more$"):
        check_schema("schema/2", schema_value(2), 2, 1, many)
    assert members_behind(2, others) == [B, C]
    assert members_behind(1, others) == [C]


def _reads_of_others(net: Net, node, reads: int, **extra: int) -> dict[str, int]:
    return {**{n.id: reads for n in net.nodes if n is not node}, **extra}


def _set_reads(net: Net, reads: int, wanted: int = 2) -> None:
    for node in net.nodes:
        said = _reads_of_others(net, node, reads)
        node.agreement.members_read = lambda said=said: said
        node.agreement.upgrade_wanted = wanted


def test_the_next_version_is_decided_once_wanted_and_every_member_reads_it():
    net = Net(3)
    _set_reads(net, 1)  # wanted, but a member reads only 1
    net.run(rounds=30)
    _set_reads(net, 2, wanted=1)  # everyone reads 2, but no write waits for it
    net.run(rounds=30)
    assert all(n.agreement.decided_schema() == 1 for n in net.nodes)
    assert all(n.agreement.counters["schema_proposals"] == 0 for n in net.nodes)
    _set_reads(net, 2)
    net.run(rounds=100, until=lambda: all(n.agreement.decided_schema() == 2 for n in net.nodes))
    assert net[0].agreement.decided(schema_slot(2)).value == schema_value(2)
    # Nothing more is proposed: the code reads no newer version.
    before = sum(n.agreement.counters["schema_proposals"] for n in net.nodes)
    net.run(rounds=30)
    assert sum(n.agreement.counters["schema_proposals"] for n in net.nodes) == before


def test_acceptors_that_do_not_read_the_version_refuse_it():
    """A voter told wrongly that every member reads 2 proposes it; the two that read only
    1 refuse, and nothing is decided."""
    net = Net(3)
    for node in net.nodes[1:]:
        node.agreement.config = dataclasses.replace(node.agreement.config, schema_version=1)
    said = _reads_of_others(net, net[0], 2)
    net[0].agreement.members_read = lambda: said
    net[0].agreement.upgrade_wanted = 2
    net.run(rounds=60)
    assert all(n.agreement.decided_schema() == 1 for n in net.nodes)
    assert all(n.agreement.counters[Reason.SCHEMA_AHEAD] > 0 for n in net.nodes[1:])
    assert net[0].agreement.counters["schema_proposals"] == 1  # not a loop: one per timeout


INVITED = "f" * 64  # a member that is not a voter (an invited node), as the node names it


def test_acceptors_refuse_a_version_a_non_voting_member_does_not_read():
    """A faulty voter, told that every member reads 2, proposes it; the acceptors heard the
    invited member say it reads 1 and refuse (member_behind): nothing is decided. Once
    that member says it reads 2, the same proposal is decided."""
    net = Net(3, timeout_ms=2_000)
    told = _reads_of_others(net, net[0], 2, **{INVITED: 2})  # the faulty voter's belief
    net[0].agreement.members_read = lambda: told
    net[0].agreement.upgrade_wanted = 2
    heard = {n.id: _reads_of_others(net, n, 2, **{INVITED: 1}) for n in net.nodes[1:]}
    for node in net.nodes[1:]:
        node.agreement.members_read = lambda said=heard[node.id]: said
    net.run(rounds=60)
    assert all(n.agreement.decided_schema() == 1 for n in net.nodes)
    assert all(n.agreement.counters[Reason.MEMBER_BEHIND] > 0 for n in net.nodes[1:])
    assert all(n.agreement.counters["schema_proposals"] == 0 for n in net.nodes[1:])
    for said in heard.values():
        said[INVITED] = 2  # its hello reached the acceptors
    net.run(rounds=150, until=lambda: all(n.agreement.decided_schema() == 2 for n in net.nodes))
    assert net[0].agreement.counters["schema_proposals"] == 1  # the first one, retried


def test_a_member_not_heard_by_the_acceptors_does_not_block_them():
    """A star of sites (decision 0097): an edge hears only the hub, never the other edges.
    Nodes 0 and 1 have not heard node 2, so neither proposes (a proposer waits to hear
    every member read the version); node 2 heard everyone and proposes, and the acceptors
    take it: a member they have not heard does not block them (one heard reading less
    would, test above)."""
    net = Net(3, timeout_ms=2_000)
    _set_reads(net, 2)
    silent = net[2].id
    for node in net.nodes[:2]:
        said = {n: r for n, r in _reads_of_others(net, node, 2).items() if n != silent}
        node.agreement.members_read = lambda said=said: said
    net.run(rounds=150, until=lambda: all(n.agreement.decided_schema() == 2 for n in net.nodes))
    assert net[0].agreement.counters["schema_proposals"] == 0  # it has not heard node 2
    assert net[1].agreement.counters["schema_proposals"] == 0
    assert net[2].agreement.counters["schema_proposals"] > 0  # net[2] heard everyone
    assert all(n.agreement.counters[Reason.MEMBER_BEHIND] == 0 for n in net.nodes)