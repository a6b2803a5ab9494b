"""The reunion simulator: a seeded split, secession, work on both sides, reunion and merge."""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from controller.agreement import (
    Agreement,
    AgreementConfig,
    AgreementReplica,
    Decision,
    Membership,
    Refused,
    Relation,
    Status,
    auto_reunion_value,
    check_reunion,
    conflict_mutations,
    lineage_of,
    merge_mutations,
    relate,
    reunion_slot,
    row_conflicts,
    secede,
    slot_conflicts,
    verify_certificate,
    winner,
    with_conflicts_table,
)
from controller.agreement.lineage import MERGE
from controller.agreement.messages import value_key
from controller.replication import (
    DEFAULT_SCHEMA,
    Config,
    Genesis,
    Identity,
    NodeId,
    Op,
    RowState,
    Upsert,
    decode,
    make_genesis,
)
from controller.store import MemoryStore

from .agreement import AgreementSim, SimNode, replay_command

__all__ = ["ReunionSim", "ReunionSimConfig", "ReunionSimResult", "run_reunion_seed"]

SCHEMA = with_conflicts_table(DEFAULT_SCHEMA)
Rows = dict[tuple[str, tuple], RowState]


@dataclass(frozen=True)
class ReunionSimConfig:
    """Everything a run depends on; from_seed derives it all from one integer."""

    seed: int
    nodes: int = 3  # voters of the original cluster
    seceders: int = 1  # the minority side, which secedes (fewer than half)
    keys: int = 4  # row keys both sides write (few, so that writes collide)
    writes: int = 6  # row writes per side per phase
    contested: int = 2  # slots both sides decide, with different values
    one_sided: int = 1  # slots only one side proposes
    duelers: int = 1  # proposers per slot and side
    auto_merge: bool = True  # policy auto_merge='related', else an operator votes merge
    crashes: int = 1  # crashes (and restarts) while apart
    drop: float = 0.05
    duplicate: float = 0.05
    delay_ms_max: int = 40
    phase_ms: int = 2_000
    quiet_ms_max: int = 20_000
    tick_ms: int = 50

    @classmethod
    def from_seed(cls, seed: int, **overrides: Any) -> ReunionSimConfig:
        rng = random.Random(f"reunion-config-{seed}")
        nodes = rng.choice([3, 4, 5])
        derived = dict(
            nodes=nodes,
            seceders=rng.randint(1, (nodes - 1) // 2),
            keys=rng.randint(2, 8),
            writes=rng.randint(1, 10),
            contested=rng.randint(0, 3),
            one_sided=rng.randint(0, 2),
            duelers=rng.randint(1, 2),
            auto_merge=rng.random() < 0.5,
            crashes=rng.randint(0, 2),
            drop=rng.choice([0.0, 0.05, 0.2]),
            duplicate=rng.choice([0.0, 0.1]),
            delay_ms_max=rng.choice([5, 40, 120]),
        )
        derived.update(overrides)
        return cls(seed=seed, **derived)


class ReunionSimFailure(AssertionError):
    """A check failed; the message starts with the seed and the replay command."""


@dataclass
class ReunionSimResult:
    config: ReunionSimConfig
    slot_conflicts: int
    row_conflicts: int
    merged_ms: int  # virtual ms from the merge write until every node's digest is equal
    auto_merged: bool  # both sides proposed merge by policy, no operator vote
    messages: int
    counters: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Write:
    cluster: bytes
    key: tuple
    value: bytes
    op: Op


class ReunionSim(AgreementSim):
    """Nodes of one cluster that split, secede, work apart, meet again and merge.

    Reuses the agreement simulator's network, durability and crash model; every node
    carries its cluster (genesis) and one store per cluster, and a message only reaches a
    node of the cluster it was sent in (a real handshake compares cluster ids).
    """

    def __init__(self, config: ReunionSimConfig) -> None:  # noqa: PLR0915 - one setup
        self.config = config  # type: ignore[assignment]
        self.rng = random.Random(config.seed)
        self.time_ms = 0
        self._events: list[tuple[int, int, str, Any]] = []
        self._seq = 0
        ids = [Identity.from_seed(self.rng.randbytes(32)) for _ in range(config.nodes)]
        self.auto = "related" if config.auto_merge else "never"
        access = {"roles": {i.node_id: "admin" for i in ids}, "auto_merge": self.auto}
        self.genesis = make_genesis(
            ids[0], "reunion", [i.public_key for i in ids], 0, {"access": access}
        )
        self.nodes = {i.node_id: SimNode(i) for i in ids}
        self.founders = [i.node_id for i in ids]
        self.spares = []
        self.replica_config = Config(push_fanout=config.nodes, sync_interval_ms=150)
        self.agreement_config = AgreementConfig(retry_ms=500, timeout_ms=4_000)
        self.groups = None
        self.isolated = None
        self.proposed_in: dict[tuple[bytes, str], set[bytes]] = {}
        self.learned_in: dict[tuple[bytes, str], tuple[bytes, NodeId]] = {}
        self.proposals = []
        self.writes: list[Write] = []
        self.restarts = self.messages = self.no_quorum = self.last_learned_ms = 0
        self.cluster: dict[NodeId, Genesis] = {}
        self.stores: dict[tuple[NodeId, bytes], MemoryStore] = {}
        for node in self.nodes.values():
            self._move(node, self.genesis)
        self._at(0, "tick")

    # -------------------------------------------------------------- plumbing
    def _move(self, node: SimNode, genesis: Genesis) -> None:
        """(Re)start a node in a cluster, on that cluster's store of the node."""
        if node.replica is not None:
            self._crash(node)
        self.cluster[node.id] = genesis
        key = (node.id, genesis.cluster_id)
        node.store = self.stores.setdefault(key, MemoryStore(node.id, SCHEMA))
        self._start(node)

    def _start(self, node: SimNode) -> None:
        node.incarnation += 1
        rng = random.Random(f"{self.config.seed}-{node.id}-{node.incarnation}")
        genesis = self.cluster[node.id]
        node.store.init(genesis)
        stored = node.store.load()
        node.replica = AgreementReplica.recover(
            node.identity,
            genesis,
            rng,
            stored.log,
            stored.evidence,
            verify="sample",
            config=self.replica_config,
            peers=sorted(self.nodes),
            schema=SCHEMA,
        )
        node.agreement = Agreement(node.replica, rng, self.agreement_config)
        node.watch = node.agreement.watch("")
        self._learn(node)
        self._pump(node)

    def _learn(self, node: SimNode) -> None:
        assert node.watch is not None
        cluster = self.cluster[node.id].cluster_id
        for d in node.watch.drain():
            key = value_key(d.value)
            first = self.learned_in.setdefault((cluster, d.slot), (key, node.id))
            if first[0] != key:
                raise self.fail(
                    f"agreement: {d.slot} decided {d.value!r} at {node.id[:8]}, "
                    f"another value at {first[1][:8]} (cluster {cluster.hex()[:8]})"
                )
            if key not in self.proposed_in.get((cluster, d.slot), set()):
                raise self.fail(f"validity: {d.slot} decided {d.value!r}, never proposed")
            self.last_learned_ms = self.time_ms

    def _connected(self, a: NodeId, b: NodeId) -> bool:
        same = self.cluster[a].cluster_id == self.cluster[b].cluster_id
        return same and (self.groups is None or any(a in g and b in g for g in self.groups))

    def _send(self, src: NodeId, dst: NodeId, data: bytes) -> None:
        """As the agreement simulator, but a message is tagged with the sender's cluster."""
        cfg = self.config
        self.messages += 1
        if not self._connected(src, dst) or self.rng.random() < cfg.drop:
            return
        for _ in range(2 if self.rng.random() < cfg.duplicate else 1):
            delay = self.rng.randint(1, cfg.delay_ms_max)
            tag = self.cluster[src].cluster_id
            self._at(self.time_ms + delay, "deliver", (src, dst, data, tag))

    def propose(self, node_id: NodeId, slot: str, value: Any, timeout_ms: int):  # type: ignore[override]
        node = self.nodes[node_id]
        if node.agreement is None:
            return None
        cluster = self.cluster[node_id].cluster_id
        self.proposed_in.setdefault((cluster, slot), set()).add(value_key(value))
        p = node.agreement.propose(slot, value, self.now(), timeout_ms)
        self.proposals.append((node_id, p))
        self._learn(node)
        self._pump(node)
        return p

    def _handle(self, kind: str, payload: Any) -> None:
        if kind == "tick":
            for node in self.nodes.values():
                if node.replica is not None:
                    node.replica.tick(self.now())
                    self._step(node)
            self._at(self.time_ms + self.config.tick_ms, "tick")
        elif kind == "deliver":
            src, dst, data, tag = payload
            if self.cluster[dst].cluster_id == tag:
                self._deliver(src, dst, data)
        elif kind == "durable":
            node = self.nodes[payload[0]]
            if node.incarnation == payload[1] and node.in_flight is not None and node.replica:
                self._durable(node)
        elif kind == "write":
            self._write(*payload)
        elif kind == "propose":
            side, slot, value = payload
            live = [n for n in side if self.nodes[n].agreement is not None]
            if live:
                self.propose(self.rng.choice(live), slot, value, self.rng.randint(1_000, 4_000))
        elif kind == "crash":
            node = self.nodes[payload]
            if node.replica is not None:
                self._crash(node)
        elif kind == "restart":
            node = self.nodes[payload]
            if node.replica is None:
                self.restarts += 1
                self._start(node)

    def _write(self, side: list[NodeId], key: int, value: bytes) -> None:
        live = [n for n in side if self.nodes[n].replica is not None]
        if not live:
            return
        node = self.nodes[self.rng.choice(live)]
        assert node.replica is not None
        op = node.replica.write([Upsert("kv", (f"k{key}",), {"value": value})], self.now())
        self.writes.append(Write(self.cluster[node.id].cluster_id, (f"k{key}",), value, op))
        self._pump(node)

    def _advance(self, until_ms: int, done: Callable[[], bool] | None = None) -> bool:
        """Run events up to until_ms, or until done() holds at a tick."""
        while self._events and self._events[0][0] <= until_ms:
            time_ms, _, kind, payload = heapq.heappop(self._events)
            self.time_ms = time_ms
            self._handle(kind, payload)
            if kind == "tick" and done is not None and done():
                return True
        self.time_ms = max(self.time_ms, until_ms)
        return done() if done is not None else True

    def _settle(
        self, side: list[NodeId], what: str, extra: Callable[[], bool] | None = None
    ) -> None:
        """Wait (bounded) until the side's nodes are up, agree on a digest, and extra()."""

        def done() -> bool:
            reps = [self.nodes[n].replica for n in side]
            if any(r is None for r in reps):
                return False
            return len({r.state_digest() for r in reps if r}) == 1 and (extra is None or extra())

        if not self._advance(self.time_ms + self.config.quiet_ms_max, done):
            raise self.fail(f"termination: {what} not settled in {self.config.quiet_ms_max} ms")

    def _snapshot(self, node_id: NodeId) -> Rows:
        r = self.nodes[node_id].replica
        assert r is not None
        return {(t, k): RowState.from_plain(row.to_plain()) for t, k, row in r.tables.all_rows()}

    # -------------------------------------------------------------- the story
    def _phase(self, side: list[NodeId], tag: str, slots: list[tuple[str, str]]) -> None:
        cfg, rng = self.config, self.rng
        start = self.time_ms
        for i in range(cfg.writes):
            value = f"{tag}{i}".encode()
            self._at(
                start + rng.randint(0, cfg.phase_ms),
                "write",
                (side, rng.randrange(cfg.keys), value),
            )
        for slot, value in slots:
            at = start + rng.randint(0, cfg.phase_ms)
            for d in range(cfg.duelers):
                self._at(at + rng.randint(0, 50), "propose", (side, slot, f"{value}-{d}"))

    def _done_proposals(self) -> bool:
        """Every proposal still owned by a live engine has ended (a crash drops the rest)."""
        live = [(self.nodes[w].agreement, p) for w, p in self.proposals]
        return all(p.done for a, p in live if a is not None and p in a.proposals)

    def run(self) -> ReunionSimResult:  # type: ignore[override]
        cfg, rng = self.config, self.rng
        everyone = sorted(self.nodes)
        # 1. Together: rows and slots, then quiet until every node holds the same state.
        self._phase(everyone, "pre", [(f"master/{i}", f"pre{i}") for i in range(2)])
        self._advance(cfg.phase_ms)
        self._settle(everyone, "the cluster before the split", self._done_proposals)
        # 2. Split: the minority writes nothing and decides nothing.
        minority = sorted(rng.sample(everyone, cfg.seceders))
        majority = [n for n in everyone if n not in minority]
        self.groups = [set(majority), set(minority)]
        p = self.propose(minority[0], "alloc/ip/minority", "minority", 1_500)
        self._advance(self.time_ms + 3_000, lambda: p is not None and p.done)
        if p is None or p.outcome is None or p.outcome.status is not Status.NO_QUORUM:
            raise self.fail(f"minority: expected no_quorum, got {p and p.outcome}")
        base_a = self._snapshot(majority[0])
        # 3. The operator on the minority side confirms a secession.
        founder = self.nodes[minority[0]]
        assert founder.replica is not None and founder.agreement is not None
        voters = founder.agreement.membership().voters
        fork_rows = [
            Upsert(t, k, v) for t in SCHEMA.names for k, v in founder.replica.rows(t).items()
        ]
        access = {"roles": {n: "admin" for n in minority}, "auto_merge": self.auto}
        genesis_b = secede(
            founder.identity,
            self.genesis,
            voters,
            minority,
            founder.replica.version_vector(),
            self.now(),
            confirmed_by="operator@sim",
            access=access,
        )
        lin_a, lin_b = lineage_of(self.genesis), lineage_of(genesis_b)
        if lin_b.parent != lin_a.cluster_id or sorted(lin_b.left) != majority:
            raise self.fail(f"secession: lineage {lin_b}")
        for n in minority:
            self._move(self.nodes[n], genesis_b)
        assert founder.replica is not None
        founder.replica.write(fork_rows, self.now())  # its rows start from the fork
        self._pump(founder)
        base_b = self._snapshot(founder.id)
        # 4. Apart: both sides write the same keys, decide contested slots differently,
        # with crashes; then a final contested slot once quiet (termination on each side).
        contested = [f"alloc/pool/{i}" for i in range(cfg.contested)]
        a_slots = [(s, f"a{i}") for i, s in enumerate(contested)]
        b_slots = [(s, f"b{i}") for i, s in enumerate(contested)]
        for i in range(cfg.one_sided):
            (a_slots if rng.random() < 0.5 else b_slots).append((f"placement/one{i}", f"o{i}"))
        apart = self.time_ms
        self._phase(majority, "a", a_slots)
        self._phase(minority, "b", b_slots)
        for _ in range(cfg.crashes):
            victim = rng.choice(everyone)
            at = apart + rng.randint(100, cfg.phase_ms)
            self._at(at, "crash", victim)
            self._at(min(apart + cfg.phase_ms, at + rng.randint(0, 1_500)), "restart", victim)
        self._advance(apart + cfg.phase_ms)
        for n in everyone:
            self._handle("restart", n)
        finals = [
            self.propose(side[0], "alloc/final", f"final-{tag}", cfg.quiet_ms_max)
            for side, tag in ((majority, "a"), (minority, "b"))
        ]

        def decided_final(side: list[NodeId]) -> Callable[[], bool]:
            return lambda: (
                self._done_proposals()
                and all(
                    self.nodes[n].agreement.decided("alloc/final")
                    for n in side  # type: ignore[union-attr]
                )
            )

        self._settle(majority, "side A apart", decided_final(majority))
        self._settle(minority, "side B apart", decided_final(minority))
        assert all(f is not None for f in finals)
        for side, genesis in ((majority, self.genesis), (minority, genesis_b)):
            for n in side:
                self._check_node(n, genesis)
        # 5. Reunion: each side relates the lineages and decides merge in its slot, by
        # policy (auto_merge='related') or by an operator's vote.
        sides = ((majority, lin_a, lin_b), (minority, lin_b, lin_a))
        auto = True
        for side, mine, other in sides:
            relation = check_reunion(mine, other)
            policy = self.nodes[side[0]].agreement.ledger.policy  # type: ignore[union-attr]
            value = auto_reunion_value(policy, relation)
            if (value == MERGE) != cfg.auto_merge:
                raise self.fail(f"auto-merge: policy {policy.auto_merge} gave {value!r}")
            auto = auto and value == MERGE
            self.propose(side[0], reunion_slot(other.cluster_id), MERGE, cfg.quiet_ms_max)
        for side, _, other in sides:
            slot = reunion_slot(other.cluster_id)
            self._settle(
                side,
                f"{slot}",
                lambda s=side, sl=slot: all(
                    self.nodes[n].agreement.decided(sl)
                    for n in s  # type: ignore[union-attr]
                ),
            )
        # The winner (the lineage B seceded from) checks B's decisions alone, from B's genesis.
        kept = winner(lin_a, lin_b, len(majority) + len(minority), len(minority))
        if kept is not lin_a or relate(lin_a, lin_b) is not Relation.B_FROM_A:
            raise self.fail("resolution: the parent lineage must win")
        decisions_a = self._decisions(majority[0])
        decisions_b = self._decisions(minority[0])
        for d in decisions_b.values():
            self._verify(d, genesis_b, "B's decision checked by A")
        for (_, mine, other), ds in zip(sides, (decisions_a, decisions_b), strict=True):
            d = ds[reunion_slot(other.cluster_id)]
            if d.value != MERGE:
                raise self.fail(f"reunion: {mine.cluster_id.hex()[:8]} decided {d.value!r}")
        snap_a, snap_b = self._snapshot(majority[0]), self._snapshot(minority[0])
        conflicts = slot_conflicts((lin_a, decisions_a), (lin_b, decisions_b))
        conflicts += row_conflicts((lin_a, snap_a, base_a), (lin_b, snap_b, base_b))
        expected, final_rows = self._expected(
            lin_a.cluster_id, lin_b.cluster_id, majority[0], minority[0], base_a
        )
        got = {
            (c.kind, c.name, c.key, c.column, value_key(c.kept), value_key(c.lost))
            for c in conflicts
        }
        if got != expected or len(conflicts) != len(expected):
            raise self.fail(f"conflict report: got {sorted(got)}, expected {sorted(expected)}")
        # 6. Merge into A: B's winning post-fork writes and the report, as A's ops; the
        # seceded nodes come back on their A stores; all must converge.
        writer = self.nodes[majority[0]]
        assert writer.replica is not None
        writer.replica.write(
            merge_mutations(snap_a, (snap_b, base_b)) + conflict_mutations(conflicts), self.now()
        )
        self._pump(writer)
        merged_at = self.time_ms
        self.groups = None
        for n in minority:
            self._move(self.nodes[n], self.genesis)
        self._settle(everyone, "the merged cluster")
        merged_ms = self.time_ms - merged_at
        for n in everyone:
            self._check_merged(n, final_rows, expected)
        counters: dict[str, int] = {}
        for node in self.nodes.values():
            assert node.agreement is not None
            for k, v in (node.agreement.ledger.counters + node.agreement.counters).items():
                counters[k] = counters.get(k, 0) + v
        slots_n = sum(1 for e in expected if e[0] == "slot")
        return ReunionSimResult(
            cfg, slots_n, len(expected) - slots_n, merged_ms, auto, self.messages, counters
        )

    # -------------------------------------------------------------- checks
    def fail(self, what: str) -> ReunionSimFailure:
        cmd = replay_command(self.config, "controller.sim.reunion", ReunionSimConfig)
        return ReunionSimFailure(f"seed {self.config.seed}: {what}\n  replay: {cmd}")

    def _decisions(self, node_id: NodeId) -> dict[str, Decision]:
        a = self.nodes[node_id].agreement
        assert a is not None
        return {s: r.decided for s, r in a.ledger.slots.items() if r.decided}

    def _verify(self, d: Decision, genesis: Genesis, who: str) -> None:
        """No membership changes here: every certificate is checked against the genesis."""
        chain = {0: Membership.from_genesis(genesis)}
        try:
            verify_certificate(d.certificate, genesis.cluster_id, chain.get)
        except Refused as exc:
            raise self.fail(f"certificate of {d.slot} ({who}): {exc}") from None

    def _check_node(self, node_id: NodeId, genesis: Genesis) -> None:
        a = self.nodes[node_id].agreement
        assert a is not None
        if a.ledger.counters["safety_violation"]:
            raise self.fail(f"agreement: two quorums for different values at {node_id[:8]}")
        for d in self._decisions(node_id).values():
            self._verify(d, genesis, node_id[:8])
            learned = self.learned_in.get((genesis.cluster_id, d.slot))
            if learned is None or learned[0] != value_key(d.value):
                raise self.fail(f"agreement: {d.slot} at {node_id[:8]} is {d.value!r}")

    def _survivors(self, cluster: bytes, node_id: NodeId) -> dict[tuple, Write]:
        """Per key, the last write (by the CRDT order) of this side still in its DAG."""
        r = self.nodes[node_id].replica
        assert r is not None
        best: dict[tuple, Write] = {}
        for w in self.writes:
            if w.cluster != cluster or not r.dag.holds(w.op.id):
                continue  # the other side's, or lost in a crash before it was durable
            cur = best.get(w.key)
            if cur is None or (w.op.hlc, w.op.author) > (cur.op.hlc, cur.op.author):
                best[w.key] = w
        return best

    def _expected(
        self, a: bytes, b: bytes, a_node: NodeId, b_node: NodeId, base_a: Rows
    ) -> tuple[set[tuple], dict[tuple, bytes]]:
        """The conflict report and final rows from the simulator's own record (an oracle
        independent of lineage.py): slots both sides learned with different values, keys
        written on both sides since the split; the later write (hlc, author) is kept."""
        expected: set[tuple] = set()
        for (cluster, slot), (key, _) in self.learned_in.items():
            other = self.learned_in.get((b, slot))
            if cluster == a and other is not None and other[0] != key:
                expected.add(("slot", slot, (), "", key, other[0]))
        after = self._survivors(a, a_node)
        after = {k: w for k, w in after.items() if w.value[:1] != b"p"}  # since the split
        after_b = {k: w for k, w in self._survivors(b, b_node).items() if w.value[:1] == b"b"}
        final = {k[1]: r.cols["value"].value for k, r in base_a.items() if k[0] == "kv"}
        for key in sorted(set(after) | set(after_b)):
            wa, wb = after.get(key), after_b.get(key)
            if wa and wb:
                kw, lw = sorted((wa, wb), key=lambda w: (w.op.hlc, w.op.author))[::-1]
                expected.add(("row", "kv", key, "value", value_key(kw.value), value_key(lw.value)))
            final[key] = max(
                (w for w in (wa, wb) if w), key=lambda w: (w.op.hlc, w.op.author)
            ).value
        return expected, final

    def _check_merged(self, node_id: NodeId, rows: dict[tuple, bytes], expected: set) -> None:
        self._check_node(node_id, self.genesis)
        r = self.nodes[node_id].replica
        assert r is not None
        got = {k: v["value"] for k, v in r.rows("kv").items()}
        if got != rows:
            raise self.fail(f"merged rows at {node_id[:8]}: {got} != {rows}")
        report = {
            (
                v["kind"],
                v["name"],
                tuple(decode(v["row_key"])),
                v["column_name"],
                value_key(decode(v["kept"])),
                value_key(decode(v["lost"])),
            )
            for v in r.rows("conflicts").values()
        }
        if report != expected:
            raise self.fail(f"conflicts table at {node_id[:8]}: {sorted(report)}")


def run_reunion_seed(seed: int, **overrides: Any) -> ReunionSimResult:
    """One seeded run; raises ReunionSimFailure (with a replay command) on any finding."""
    return ReunionSim(ReunionSimConfig.from_seed(seed, **overrides)).run()


if __name__ == "__main__":
    from .agreement import main

    raise SystemExit(
        main(
            run=run_reunion_seed,
            config_cls=ReunionSimConfig,
            failure=ReunionSimFailure,
            prog="python -m controller.sim.reunion",
        )
    )
