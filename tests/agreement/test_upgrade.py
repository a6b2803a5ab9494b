"""Schema versions decided in slots (controller/agreement/upgrade.py, decision 0037): a
voter proposes `schema/<v>` once every member reads v; an acceptor that does not read v,
or is asked out of order or for other tables, refuses."""

from __future__ import annotations

import dataclasses

import pytest

from controller.agreement import Refused
from controller.agreement.errors import Reason
from controller.agreement.upgrade import check_schema, schema_slot, schema_value
from controller.replication.schema import DEFAULT_SCHEMA, SCHEMA_VERSION, TABLES_SINCE

from .conftest import Net


def test_every_table_added_after_version_1_is_in_the_schema_and_named_by_its_version():
    assert SCHEMA_VERSION >= 2
    for table, version in TABLES_SINCE.items():
        assert table in DEFAULT_SCHEMA.names and 2 <= version <= SCHEMA_VERSION
        assert table in schema_value(version)["tables"]


@pytest.mark.parametrize("slot, value, reads, decided, reason", [
    ("schema/2", schema_value(2), 2, 1, None),
    ("schema/2", schema_value(2), 1, 1, Reason.SCHEMA_AHEAD),
    ("schema/3", schema_value(3), 3, 1, Reason.BAD_SCHEMA),  # schema/2 first
    ("schema/2", schema_value(2), 2, 2, Reason.BAD_SCHEMA),  # decided already
    ("schema/2", {"version": 2, "tables": ["kv"]}, 2, 1, Reason.BAD_SCHEMA),
    ("schema/1", schema_value(1), 2, 1, Reason.BAD_SCHEMA),
    ("schema/02", schema_value(2), 2, 1, Reason.BAD_SCHEMA),
])
def test_check_schema(slot, value, reads, decided, reason):
    if reason is None:
        check_schema(slot, value, reads, decided)
        return
    with pytest.raises(Refused) as exc:
        check_schema(slot, value, reads, decided)
    assert exc.value.reason == reason


def _set_reads(net: Net, reads: int, wanted: int = 2) -> None:
    for node in net.nodes:
        node.agreement.members_read = lambda: reads
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
    net[0].agreement.members_read = lambda: 2
    net[0].agreement.upgrade_wanted = 2
    net.run(rounds=60)
    assert all(n.agreement.decided_schema() == 1 for n in net.nodes)
    assert all(n.agreement.counters[Reason.SCHEMA_AHEAD] > 0 for n in net.nodes[1:])
    assert net[0].agreement.counters["schema_proposals"] == 1  # not a loop: one per timeout
