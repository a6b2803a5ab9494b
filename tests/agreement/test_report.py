"""The conflict report a node computes from the two lineages it holds after a merge must
equal the reunion simulator's oracle (what each side wrote and decided, as recorded by the
simulator), on every node that holds both lineages."""

from __future__ import annotations

import pytest

from controller.agreement.messages import value_key
from controller.agreement.report import reunion_report
from controller.sim.reunion import ReunionSim, ReunionSimConfig


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
