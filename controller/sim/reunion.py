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
    ConflictEntry,
    Decision,
    Membership,
    Reason,
    Refused,
    Relation,
    Status,
    auto_reunion_value,
    check_reunion,
    conflict_mutations,
    lineage_of,
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
    encode_message,
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

    def __init__(self, config: ReunionSimConfig) -> None:
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
        self.joined = False  # after the merge: every node holds both lineages' DAGs
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
        if self.joined:
            self._join(node)
        self._learn(node)
        self._pump(node)

    def _other(self, node_id: NodeId) -> Genesis:
        mine = self.cluster[node_id].cluster_id
        return self.genesis_b if mine == self.genesis.cluster_id else self.genesis

    def _shadow(self, node: SimNode, genesis: Genesis) -> AgreementReplica:
        """This node's replica of another lineage, from its store of that lineage (a seceded
        node's store of the parent holds the parent's ops up to the split)."""
        store = self.stores.setdefault((node.id, genesis.cluster_id), MemoryStore(node.id, SCHEMA))
        store.init(genesis)
        stored = store.load()
        return AgreementReplica.recover(
            node.identity,
            genesis,
            random.Random(f"{self.config.seed}-{node.id}-{node.incarnation}-joined"),
            stored.log,
            stored.evidence,
            verify="sample",
            config=self.replica_config,
            peers=sorted(self.nodes),
            schema=SCHEMA,
        )

    def _join(self, node: SimNode) -> None:
        """Join the other lineage's DAG (the node's side decided merge; refused otherwise)."""
        assert node.replica is not None
        node.replica.join_lineage(self._shadow(node, self._other(node.id)))

    def _pump(self, node: SimNode) -> None:
        """As the agreement simulator; a joined lineage's effects are committed to the
        node's store of that lineage at once (it authors nothing, so only relays)."""
        super()._pump(node)
        r = node.replica
        if r is None:
            return
        for cluster, joined in r.lineages().items():
            while joined.has_ready():
                rd = joined.ready()
                self.stores[(node.id, cluster)].commit(rd)
                for out in rd.messages:
                    self._send(node.id, out.to, encode_message(out.message))
                joined.advance(rd)

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
        same = self.cluster[a].cluster_id == self.cluster[b].cluster_id or self.joined
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
            if self.cluster[dst].cluster_id == tag or self.joined:
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

    def _agreement(self, node_id: NodeId) -> Agreement:
        a = self.nodes[node_id].agreement
        assert a is not None, "the node is up"
        return a

    def _all_decided(self, side: list[NodeId], slot: str) -> Callable[[], bool]:
        return lambda: (
            self._done_proposals() and all(self._agreement(n).decided(slot) for n in side)
        )

    def run(self) -> ReunionSimResult:  # type: ignore[override]
        """The story, one method per act; each act ends in its checks."""
        self._together()
        self._split()
        self._secede()
        self._apart()
        auto = self._reunite()
        conflicts = self._resolve()
        merged_ms = self._merge(conflicts)
        counters: dict[str, int] = {}
        for n in self.everyone:
            a = self._agreement(n)
            for k, v in (a.ledger.counters + a.counters).items():
                counters[k] = counters.get(k, 0) + v
        slots_n = sum(1 for e in self.expected if e[0] == "slot")
        return ReunionSimResult(
            self.config,
            slots_n,
            len(self.expected) - slots_n,
            merged_ms,
            auto,
            self.messages,
            counters,
        )

    def _together(self) -> None:
        """Rows and slots in one cluster, then quiet until every node holds the same state."""
        self.everyone = sorted(self.nodes)
        self._phase(self.everyone, "pre", [(f"master/{i}", f"pre{i}") for i in range(2)])
        self._advance(self.config.phase_ms)
        self._settle(self.everyone, "the cluster before the split", self._done_proposals)

    def _split(self) -> None:
        """The minority side writes nothing and its proposal must end no_quorum."""
        self.minority = sorted(self.rng.sample(self.everyone, self.config.seceders))
        self.majority = [n for n in self.everyone if n not in self.minority]
        self.groups = [set(self.majority), set(self.minority)]
        p = self.propose(self.minority[0], "alloc/ip/minority", "minority", 1_500)
        self._advance(self.time_ms + 3_000, lambda: p is not None and p.done)
        if p is None or p.outcome is None or p.outcome.status is not Status.NO_QUORUM:
            raise self.fail(f"minority: expected no_quorum, got {p and p.outcome}")
        self.base_a = self._snapshot(self.majority[0])

    def _secede(self) -> None:
        """The operator on the minority side confirms; its rows start from the fork."""
        founder = self.nodes[self.minority[0]]
        assert founder.replica is not None
        fork_rows = [
            Upsert(t, k, v) for t in SCHEMA.names for k, v in founder.replica.rows(t).items()
        ]
        access = {"roles": {n: "admin" for n in self.minority}, "auto_merge": self.auto}
        self.genesis_b = secede(
            founder.identity,
            self.genesis,
            self._agreement(founder.id).membership().voters,
            self.minority,
            founder.replica.version_vector(),
            self.now(),
            confirmed_by="operator@sim",
            access=access,
        )
        self.lin_a, self.lin_b = lineage_of(self.genesis), lineage_of(self.genesis_b)
        if self.lin_b.parent != self.lin_a.cluster_id or list(self.lin_b.left) != self.majority:
            raise self.fail(f"secession: lineage {self.lin_b}")
        for n in self.minority:
            self._move(self.nodes[n], self.genesis_b)
        assert founder.replica is not None
        founder.replica.write(fork_rows, self.now())
        self._pump(founder)
        self.base_b = self._snapshot(founder.id)

    def _apart(self) -> None:
        """Both sides write the same keys and decide contested slots differently, with
        crashes; then, once quiet, a final contested slot must decide on each side."""
        cfg, rng = self.config, self.rng
        # 1 ms after the fork copy, so every write apart has a later hlc than the copy.
        self._advance(self.time_ms + 1)
        contested = [f"alloc/pool/{i}" for i in range(cfg.contested)]
        a_slots = [(s, f"a{i}") for i, s in enumerate(contested)]
        b_slots = [(s, f"b{i}") for i, s in enumerate(contested)]
        for i in range(cfg.one_sided):
            (a_slots if rng.random() < 0.5 else b_slots).append((f"placement/one{i}", f"o{i}"))
        apart = self.time_ms
        self._phase(self.majority, "a", a_slots)
        self._phase(self.minority, "b", b_slots)
        for _ in range(cfg.crashes):
            victim = rng.choice(self.everyone)
            at = apart + rng.randint(100, cfg.phase_ms)
            self._at(at, "crash", victim)
            self._at(min(apart + cfg.phase_ms, at + rng.randint(0, 1_500)), "restart", victim)
        self._advance(apart + cfg.phase_ms)
        for n in self.everyone:
            self._handle("restart", n)
        for side, tag in ((self.majority, "A"), (self.minority, "B")):
            self.propose(side[0], "alloc/final", f"final-{tag}", cfg.quiet_ms_max)
        for side, tag in ((self.majority, "A"), (self.minority, "B")):
            self._settle(side, f"side {tag} apart", self._all_decided(side, "alloc/final"))
        for side, genesis in ((self.majority, self.genesis), (self.minority, self.genesis_b)):
            for n in side:
                self._check_node(n, genesis)

    def _reunite(self) -> bool:
        """Each side relates the lineages and decides merge in its reunion slot, proposed
        by its policy (auto_merge='related') or by an operator. True: by policy on both."""
        sides = ((self.majority, self.lin_a, self.lin_b), (self.minority, self.lin_b, self.lin_a))
        for side, _, _ in sides:  # no decided merge yet: joining the other DAG is refused
            node = self.nodes[side[0]]
            assert node.replica is not None
            try:
                node.replica.join_lineage(self._shadow(node, self._other(node.id)))
            except Refused as exc:
                if exc.reason is not Reason.NO_MERGE:
                    raise self.fail(f"join before the merge: {exc}") from None
            else:
                raise self.fail("join before the merge: accepted")
        auto = True
        for side, mine, other in sides:
            relation = check_reunion(mine, other)
            policy = self._agreement(side[0]).ledger.policy
            value = auto_reunion_value(policy, relation)
            if (value == MERGE) != self.config.auto_merge:
                raise self.fail(f"auto-merge: policy {policy.auto_merge} gave {value!r}")
            auto = auto and value == MERGE
            slot = reunion_slot(other.cluster_id)
            self.propose(side[0], slot, MERGE, self.config.quiet_ms_max)
        for side, mine, other in sides:
            slot = reunion_slot(other.cluster_id)
            self._settle(side, slot, self._all_decided(side, slot))
            d = self._agreement(side[0]).decided(slot)
            if d is None or d.value != MERGE:
                raise self.fail(f"reunion: {mine.cluster_id.hex()[:8]} decided {d}")
        return auto

    def _resolve(self) -> list[ConflictEntry]:
        """The winner checks B's decisions alone (from B's genesis), then the report must
        hold exactly what the simulator's own record predicts."""
        lin_a, lin_b = self.lin_a, self.lin_b
        kept = winner(lin_a, lin_b, len(self.everyone), len(self.minority))
        if kept is not lin_a or relate(lin_a, lin_b) is not Relation.B_FROM_A:
            raise self.fail("resolution: the parent lineage must win")
        decisions_a = self._decisions(self.majority[0])
        decisions_b = self._decisions(self.minority[0])
        for d in decisions_b.values():
            self._verify(d, self.genesis_b, "B's decision checked by A")
        self.snap_a = self._snapshot(self.majority[0])
        self.snap_b = self._snapshot(self.minority[0])
        conflicts = slot_conflicts((lin_a, decisions_a), (lin_b, decisions_b))
        conflicts += row_conflicts(
            (lin_a, self.snap_a, self.base_a), (lin_b, self.snap_b, self.base_b)
        )
        self._expect()
        got = {
            (c.kind, c.name, c.key, c.column, value_key(c.kept), value_key(c.lost))
            for c in conflicts
        }
        if got != self.expected or len(conflicts) != len(self.expected):
            raise self.fail(f"conflict report: got {sorted(got)}, expected {sorted(self.expected)}")
        return conflicts

    def _merge(self, conflicts: list[ConflictEntry]) -> int:
        """Every node joins the other lineage's DAG (each side decided merge), the winner
        writes the report; every node must reach one op set and one state. Returns ms."""
        writer = self.nodes[self.majority[0]]
        assert writer.replica is not None
        if conflicts:
            writer.replica.write(conflict_mutations(conflicts), self.now())
        merged_at = self.time_ms
        self.joined = True
        self.groups = None
        for n in self.everyone:
            node = self.nodes[n]
            self._join(node)
            self._pump(node)
        if self.config.crashes:  # a restart re-joins the other lineage from its store
            victim = self.rng.choice(self.everyone)
            at = self.time_ms + self.rng.randint(10, 500)
            self._at(at, "crash", victim)
            self._at(at + self.rng.randint(0, 1_000), "restart", victim)

        def one_op_set() -> bool:
            reps = [self.nodes[n].replica for n in self.everyone]
            return len({r.op_digest() for r in reps if r}) == 1

        self._settle(self.everyone, "the merged cluster", one_op_set)
        for n in self.everyone:
            self._check_merged(n)
        return self.time_ms - merged_at

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

    def _survivors(self, cluster: bytes, node_id: NodeId, tag: bytes) -> dict[tuple, Write]:
        """Per key, this side's last write since the split (tag) still in its DAG."""
        r = self.nodes[node_id].replica
        assert r is not None
        best: dict[tuple, Write] = {}
        for w in self.writes:
            if w.cluster != cluster or w.value[:1] != tag or not r.dag.holds(w.op.id):
                continue  # the other side's, or lost in a crash before it was durable
            cur = best.get(w.key)
            if cur is None or (w.op.hlc, w.op.author) > (cur.op.hlc, cur.op.author):
                best[w.key] = w
        return best

    def _expect(self) -> None:
        """The conflict report and final rows from the simulator's own record (an oracle
        independent of lineage.py): slots both sides learned with different values; keys
        written on both sides since the split, the later write (hlc, author) kept."""
        a, b = self.lin_a.cluster_id, self.lin_b.cluster_id
        self.expected: set[tuple] = set()
        self.authors: dict[tuple, tuple[NodeId, NodeId]] = {}
        for (cluster, slot), (key, _) in self.learned_in.items():
            other = self.learned_in.get((b, slot))
            if cluster == a and other is not None and other[0] != key:
                self.expected.add(("slot", slot, (), "", key, other[0]))
        after_a = self._survivors(a, self.majority[0], b"a")
        after_b = self._survivors(b, self.minority[0], b"b")
        self.final = {k[1]: r.cols["value"].value for k, r in self.base_a.items() if k[0] == "kv"}
        for key in sorted(set(after_a) | set(after_b)):
            wa, wb = after_a.get(key), after_b.get(key)
            ws = sorted((w for w in (wa, wb) if w), key=lambda w: (w.op.hlc, w.op.author))
            if len(ws) == 2:
                lw, kw = ws
                entry = ("row", "kv", key, "value", value_key(kw.value), value_key(lw.value))
                self.expected.add(entry)
                self.authors[key] = (kw.op.author, lw.op.author)
            self.final[key] = ws[-1].value

    def _check_merged(self, node_id: NodeId) -> None:
        self._check_node(node_id, self.cluster[node_id])
        r = self.nodes[node_id].replica
        assert r is not None
        # Both DAGs, whole: the other lineage's vector here equals its own nodes' vectors.
        for cluster, side in (
            (self.lin_a.cluster_id, self.majority),
            (self.lin_b.cluster_id, self.minority),
        ):
            home = self.nodes[side[0]].replica
            assert home is not None
            held = r if r.cluster_id == cluster else r.lineages().get(cluster)
            if held is None or held.version_vector() != home.version_vector():
                raise self.fail(f"joined DAG at {node_id[:8]}: lineage {cluster.hex()[:8]} differs")
        got = {k: v["value"] for k, v in r.rows("kv").items()}
        if got != self.final:
            raise self.fail(f"merged rows at {node_id[:8]}: {got} != {self.final}")
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
        if report != self.expected:
            raise self.fail(f"conflicts table at {node_id[:8]}: {sorted(report)}")
        for v in r.rows("conflicts").values():
            key = tuple(decode(v["row_key"]))
            if v["kind"] == "row" and (v["kept_author"], v["lost_author"]) != self.authors[key]:
                raise self.fail(f"conflicts table at {node_id[:8]}: authors of {key}")


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
