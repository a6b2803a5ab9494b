"""The conflict report a node computes from the two lineages it holds after a merge must
equal the reunion simulator's oracle (what each side wrote and decided, as recorded by the
simulator), on every node that holds both lineages."""

from __future__ import annotations

import random

import pytest

from controller.agreement import AgreementReplica, secede, with_conflicts_table
from controller.agreement.messages import value_key
from controller.agreement.report import fork_copy_end, fork_copy_writes, reunion_report
from controller.replication import DEFAULT_SCHEMA, Config, Identity, Upsert, make_genesis
from controller.replication.reserved import FORK_COPY_KEY, INTERNAL
from controller.sim.reunion import ReunionSim, ReunionSimConfig, run_reunion_seed


def _entries(report):
    return {
        (e.kind, e.name, e.key, e.column, value_key(e.kept), value_key(e.lost))
        for e in report.entries
    }


@pytest.mark.parametrize("seed", range(12))
def test_report_from_the_logs_equals_the_oracle(seed):
    sim = ReunionSim(ReunionSimConfig.from_seed(seed))
    sim.run()
    a = sim.net.genesis.cluster_id
    for node_id in sim.everyone:
        host = sim.net.nodes[node_id].replica
        (joined,) = host.lineages().values()
        report = reunion_report(host, joined)
        assert report is not None, "both sides decided merge: the report is computable"
        assert report.kept == a  # the parent lineage's decisions stand
        assert _entries(report) == sim.expected
        assert len(report.entries) == len(sim.expected)
        # The same report whichever side the node is on (arguments swapped).
        assert _entries(reunion_report(joined, host)) == sim.expected


def test_no_report_before_both_sides_decided():
    sim = ReunionSim(ReunionSimConfig.from_seed(2))
    sim._together()
    sim._split()
    sim._secede()
    sim._apart()
    a = sim.sides["A"].nodes[0]
    shadow = sim.net.shadow(sim.net.nodes[a], sim.sides["B"].genesis)
    assert reunion_report(sim.net.nodes[a].replica, shadow) is None


def test_a_slot_the_parent_decides_after_the_merge_is_added_to_the_report():
    """A slot only the seceded side decided apart, decided otherwise by the parent after
    the merge: late_slot_conflicts names it (kept: the parent's value), once."""
    from controller.agreement.report import late_slot_conflicts

    for seed in range(40):
        sim = ReunionSim(ReunionSimConfig.from_seed(seed))
        sim.run()
        x, y = sim.pair
        if x is not sim.sides["A"]:
            continue
        host = sim.net.nodes[x.nodes[0]].replica
        joined = host.lineages()[y.cluster]
        mine = {s for s, r in host.ledger.slots.items() if r.decided}
        only_b = sorted(s for s, r in joined.ledger.slots.items()
                        if r.decided and s not in mine and not s.startswith("reunion/"))
        if not only_b:
            continue
        assert late_slot_conflicts(host, joined) == []
        slot = only_b[0]
        p = sim.net.propose(x.nodes[0], slot, "decided-late", 5_000)
        sim.net.advance(sim.net.time_ms + 6_000, lambda p=p: p.done)
        assert p.outcome is not None and p.outcome.value == "decided-late"
        late = late_slot_conflicts(host, joined)
        assert [(e.name, e.kept) for e in late] == [(slot, "decided-late")]
        assert late[0].lost == joined.ledger.decided(slot).value
        return
    raise AssertionError("no seed in 0..39 with a slot only the seceded side decided")


def _seceded_founder(mutations_max: int) -> AgreementReplica:
    ids = [Identity.from_seed(bytes([i + 1]) * 32) for i in range(3)]
    parent = make_genesis(ids[0], "p", [i.public_key for i in ids], 0)
    keys = {i.node_id: i.public_key for i in ids}
    child = secede(ids[2], parent, keys, [ids[2].node_id], {}, 1, confirmed_by="op")
    schema = with_conflicts_table(DEFAULT_SCHEMA)
    config = Config(mutations_max=mutations_max)
    return AgreementReplica.recover(ids[2], child, random.Random(0), [], schema=schema,
                                    config=config)


def test_the_fork_copy_ends_at_its_marker():
    """The node's and the simulator's fork copy (fork_copy_writes): chunks, the marker with
    the parent's id last, and the copy ends there (fork_copy_end) however many ops it took."""
    parent = b"p" * 32
    marker = Upsert(INTERNAL, (FORK_COPY_KEY,), {"value": parent})
    assert fork_copy_writes([], parent, 3) == [[marker]]  # no rows: the marker alone
    rows = [Upsert("kv", (f"k{i}",), {"value": b"v"}) for i in range(5)]
    grand = Upsert(INTERNAL, (FORK_COPY_KEY,), {"value": b"g" * 32})  # the parent seceded too
    chunks = fork_copy_writes([grand, *rows], parent, 3)
    assert chunks == [rows[0:2], rows[2:4], [rows[4], marker]]
    r = _seceded_founder(mutations_max=3)
    for writes in chunks:
        r.write(writes, 1)
    r.write([Upsert("kv", ("k0",), {"value": b"apart"})], 2)
    assert fork_copy_end(r) == 3


def test_no_marker_no_fork_copy():
    """A founder whose first op is a write apart (no marker) copied nothing: the report must
    not take that write for a copy (it did: 'its op 1', seed 11474)."""
    r = _seceded_founder(mutations_max=100)
    r.write([Upsert("kv", ("k0",), {"value": b"apart"})], 2)
    assert fork_copy_end(r) == 0


def test_a_founder_that_held_no_rows_still_writes_its_fork_copy():
    """Seed 11474: the seceded founder held no row at the fork. The node writes its copy
    anyway (one op: the marker); the simulator wrote none, and the report took the
    founder's first write apart (op 1) for the copy, leaving out the row entry (k1: the
    seceded side's b0 over the parent's pre-late) the oracle expects."""
    result = run_reunion_seed(11474)
    assert result.row_conflicts == 1 and not result.findings
