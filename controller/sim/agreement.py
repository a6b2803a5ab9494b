"""The agreement simulator: seeded nodes voting over a lossy, partitioned, crashing network."""

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
    Proposal,
    Refused,
    Status,
    membership_version_of,
    verify_certificate,
)
from controller.agreement.checkpoint import Checkpoint, checkpoint_number_of, covers
from controller.agreement.membership import DECOMMISSIONED, EQUIVOCATION
from controller.agreement.messages import value_key
from controller.replication import (
    Config,
    Ecmh,
    Identity,
    NodeId,
    OpBatch,
    OpId,
    RowMutation,
    RowsBody,
    Upsert,
    make_genesis,
    point_of,
    row_version_bytes,
    sign_op,
)
from controller.replication.crdt import Tables

from .net import SimNet, SimNode

__all__ = [
    "AgreementSimConfig",
    "AgreementSim",
    "AgreementSimResult",
    "AgreementSimFailure",
    "run_agreement_seed",
    "agreement_replay_command",
    "replay_command",
    "main",
]


@dataclass(frozen=True)
class AgreementSimConfig:
    """Everything a run depends on; from_seed derives it all from one integer."""

    seed: int
    nodes: int = 3  # founding voters
    spares: int = 1  # nodes that start outside and ask to join
    slots: int = 4  # ordinary slots, each proposed by `duelers` nodes at once
    duelers: int = 2
    joins: int = 1
    leaves: int = 1
    lagging: bool = True  # one founder is cut off for most of the chaos
    chaos_ms: int = 6_000
    quiet_ms_max: int = 20_000
    drop: float = 0.05
    duplicate: float = 0.05
    delay_ms_max: int = 60
    partitions: int = 1
    crashes: int = 1
    # Founders that fork their chain once during the chaos (two ops, one seq) and go
    # offline: the others must expel each one, by a decided leave their engines propose
    # (decision 0017). Not derived from the seed: test_sim runs its own seeds with it.
    equivocators: int = 0
    equivocator_online: bool = False  # it keeps voting after its fork (else taken offline)
    # Voters propose `checkpoint/<n>` by themselves every this many ops (0: never); each
    # decided one is checked against a replica rebuilt from the ops inside its cut.
    checkpoint_ops: int = 0
    compact: bool = False  # and prune the ops below a stable one (decision 0070)
    # A voter removed with no reason for good is released later by a decided release
    # (decision 0070, "Releasing a departed voter's pin"), 1.5 s after its removal.
    releases: bool = False
    tick_ms: int = 50

    @classmethod
    def from_seed(cls, seed: int, **overrides: Any) -> AgreementSimConfig:
        rng = random.Random(f"agreement-config-{seed}")
        derived = dict(
            nodes=rng.choice([3, 3, 4, 5]),
            spares=rng.randint(0, 2),
            slots=rng.randint(1, 5),
            duelers=rng.randint(1, 3),
            leaves=rng.randint(0, 1),
            lagging=rng.random() < 0.5,
            drop=rng.choice([0.0, 0.05, 0.2]),
            duplicate=rng.choice([0.0, 0.1]),
            delay_ms_max=rng.choice([5, 40, 120]),
            partitions=rng.randint(0, 2),
            crashes=rng.randint(0, 2),
        )
        derived["joins"] = derived["spares"]
        derived["checkpoint_ops"] = rng.choice([0, 0, 12, 40])
        derived["compact"] = derived["checkpoint_ops"] > 0 and rng.random() < 0.5
        derived["releases"] = rng.random() < 0.5  # drawn last: the other fields stay as they were
        derived.update(overrides)
        return cls(seed=seed, **derived)


def replay_command(config: Any, module: str, config_cls: Any) -> str:
    """The one command that replays a run: its seed, plus each field not derived from it."""
    defaults = config_cls.from_seed(config.seed)
    extra = "".join(
        f" --set {name}={getattr(config, name)}"
        for name in config.__dataclass_fields__
        if getattr(config, name) != getattr(defaults, name)
    )
    return f".venv/bin/python -m {module} --seed {config.seed}{extra}"


def agreement_replay_command(config: AgreementSimConfig) -> str:
    return replay_command(config, "controller.sim.agreement", AgreementSimConfig)


class AgreementSimFailure(AssertionError):
    """A check failed; the message starts with the seed and the replay command."""


@dataclass
class AgreementSimResult:
    config: AgreementSimConfig
    decided: int  # slots decided at the end
    final_decided_ms: int  # virtual ms from the end of chaos to the last decision learned
    membership_version: int
    restarts: int
    messages: int
    no_quorum: int  # proposals that timed out (expected during partitions)
    checkpoints: int = 0  # checkpoint decisions learned and checked against a rebuilt replica
    counters: dict[str, int] = field(default_factory=dict)


class AgreementSim(SimNet[AgreementSimConfig]):
    """Founders and spares of one cluster voting on the shared seeded network."""

    def __init__(self, config: AgreementSimConfig) -> None:
        super().__init__(config)
        total = config.nodes + config.spares
        ids = [Identity.from_seed(self.rng.randbytes(32)) for _ in range(total)]
        founders = ids[: config.nodes]
        access = {"roles": {i.node_id: "admin" for i in founders}}
        self.genesis = make_genesis(
            founders[0], "agree", [i.public_key for i in founders], 0, {"access": access}
        )
        self.nodes = {i.node_id: SimNode(i) for i in ids}
        self.founders = [i.node_id for i in founders]
        self.spares = [i.node_id for i in ids[config.nodes :]]
        self.replica_config = Config(push_fanout=total, sync_interval_ms=150)
        self.agreement_config = AgreementConfig(
            retry_ms=500,
            timeout_ms=4_000,
            checkpoint_ops=config.checkpoint_ops,
            checkpoint_stagger_ms=300,
            compact=config.compact,
        )
        self.checkpoints_checked = 0
        self.checkpoints_unverified = 0  # decided knowing fewer forks than the learner
        self._checkpoints_verified: set[int] = set()
        self.proposed: dict[str, set[bytes]] = {}
        self.learned: dict[str, tuple[bytes, NodeId]] = {}
        self.proposals: list[tuple[NodeId, Proposal]] = []
        self.restarts = 0
        self.no_quorum = 0
        self.last_learned_ms = 0
        self.forged: dict[NodeId, set[OpId]] = {}  # equivocator -> the two ops it signed
        self.released_passed: set[tuple[NodeId, NodeId]] = set()  # (node, released voter)
        self.silenced: set[NodeId] = set()  # equivocators, offline for good
        for node in self.nodes.values():
            self._start(node)

    # -------------------------------------------------------------- plumbing
    def _start(self, node: SimNode) -> None:
        node.incarnation += 1
        rng = random.Random(f"{self.config.seed}-{node.id}-{node.incarnation}")
        node.store.init(self.genesis)
        stored = node.store.load()
        node.replica = AgreementReplica.recover(
            node.identity,
            self.genesis,
            rng,
            stored.log,
            stored.evidence,
            compaction=stored.compaction,
            archive=node.store,  # settled decisions go there with a compaction (0103)
            verify="sample",
            config=self.replica_config,
            peers=sorted(self.nodes),
        )
        node.agreement = Agreement(node.replica, rng, self.agreement_config)
        node.watch = node.agreement.watch("")
        self._learn(node)
        self.pump(node)

    def _learn(self, node: SimNode) -> None:
        assert node.watch is not None
        for d in node.watch.drain():
            key = value_key(d.value)
            first = self.learned.setdefault(d.slot, (key, node.id))
            if first[0] != key:
                raise self.fail(
                    f"agreement: {d.slot} decided {d.value!r} at {node.id[:8]}, "
                    f"another value at {first[1][:8]}"
                )
            n = checkpoint_number_of(d.slot)
            if n is not None:
                self._check_checkpoint(node, n, d.value)
            elif key not in self.proposed.get(d.slot, set()) and not self._expulsion(node, d):
                raise self.fail(f"validity: {d.slot} decided {d.value!r}, never proposed")
            self.last_learned_ms = self.time_ms

    def _check_checkpoint(self, node: SimNode, n: int, value: Any) -> None:
        """A checkpoint an engine proposed by itself: its digests must be those computed
        afresh from the learner's ops inside its cut (it holds them all: they are in the
        causal past of the votes that decided it), leaving out a proven equivocator's ops
        from its fork on. A learner that knows a fork below the cut the deciding quorum may
        not have known computes otherwise: tolerated only then, and counted."""
        r = node.replica
        assert r is not None
        if n in self._checkpoints_verified:  # one value per slot (checked by _learn)
            return
        try:
            cp = Checkpoint.from_value(n, value)
        except Refused as exc:
            raise self.fail(f"checkpoint: {exc}") from None
        tables = Tables(r.schema)
        opset, state, count = Ecmh(), Ecmh(), 0
        # The whole log: what the node made durable (a compacted node holds only the
        # tail), what is on its way to the store (taken in a Ready, or not yet), what it holds.
        whole = dict(node.archive)
        on_the_way = [*(node.in_flight.ops if node.in_flight else ()), *r._out_ops]
        whole.update((op.id, op) for op in [*on_the_way, *r.log()])
        for op in sorted(whole.values(), key=lambda o: (o.hlc, o.author, o.seq)):
            if op.seq > cp.cut.get(op.author, 0) or r.dag.excluded(op):
                continue
            count += 1
            opset.add(point_of(op.id, person=b"synod-opset"))
            if isinstance(op.body, RowsBody):
                for m in op.body.mutations:
                    tables.merge(m, op.hlc, op.author)
        for t, k, row in tables.all_rows():
            state.add(point_of(row_version_bytes(t, k, row)))
        if (state.value, opset.value, count) == (cp.state, cp.ops, cp.count):
            self.checkpoints_checked += 1
            self._checkpoints_verified.add(n)
        elif any(fork <= cp.cut.get(a, 0) for a, fork in r.forks().items()):
            self.checkpoints_unverified += 1
        else:
            raise self.fail(f"checkpoint/{n} at {node.id[:8]}: not the state at its cut")

    def _expulsion(self, node: SimNode, d: Decision) -> bool:
        """Validity of a value an engine proposed by itself: the removal of a voter the
        simulator made equivocate, citing exactly the two ops it signed."""
        version = membership_version_of(d.slot)
        if version is None or node.agreement is None:
            return False
        try:
            m = Membership.from_value(d.value)
        except Refused:
            return False
        previous = node.agreement.ledger.memberships.get(version - 1)
        if previous is None or m.reason != EQUIVOCATION:
            return False
        gone = sorted(set(previous.voters) - set(m.voters))
        return len(gone) == 1 and set(m.evidence) == self.forged.get(gone[0])

    # -------------------------------------------------------------- scenario
    def propose(self, node_id: NodeId, slot: str, value: Any, timeout_ms: int) -> Proposal | None:
        node = self.nodes[node_id]
        if node.agreement is None:
            return None
        self.proposed.setdefault(slot, set()).add(value_key(value))
        p = node.agreement.propose(slot, value, self.now(), timeout_ms)
        self.proposals.append((node_id, p))
        self._learn(node)
        self.pump(node)
        return p

    def _voters(self) -> list[NodeId]:
        """Voters as the most advanced live node knows them."""
        known = [n.agreement for n in self.nodes.values() if n.agreement is not None]
        best = max(known, key=lambda a: a.ledger.mv)
        return sorted(best.membership().voters)

    def _schedule(self) -> None:
        cfg, rng = self.config, self.rng
        for i in range(cfg.slots):
            at = rng.randint(0, cfg.chaos_ms)
            for d in range(cfg.duelers):
                self.at(at + rng.randint(0, 50), "propose", (f"alloc/pool/{i}", f"v{i}-{d}"))
        for i in range(cfg.joins):
            self.at(rng.randint(0, cfg.chaos_ms), "join", self.spares[i])
        for _ in range(cfg.leaves):
            self.at(rng.randint(0, cfg.chaos_ms), "leave")
        for _ in range(cfg.partitions):
            start = rng.randint(0, cfg.chaos_ms)
            self.at(start, "partition")
            self.at(min(cfg.chaos_ms, start + rng.randint(300, 2_500)), "heal")
        for _ in range(cfg.crashes):
            start = rng.randint(0, cfg.chaos_ms)
            victim = rng.choice(sorted(self.nodes))
            self.at(start, "crash", victim)
            self.at(min(cfg.chaos_ms, start + rng.randint(0, 1_500)), "restart", victim)
        if cfg.lagging:
            self.at(rng.randint(0, 500), "isolate", rng.choice(self.founders))
        if cfg.equivocators:  # no draw otherwise: every other seed runs as it always did
            for victim in rng.sample(self.founders, min(cfg.equivocators, len(self.founders))):
                self.at(rng.randint(0, cfg.chaos_ms), "equivocate", victim)
        for t in range(0, cfg.chaos_ms + cfg.quiet_ms_max, cfg.tick_ms):
            self.at(t, "tick")
        self.at(cfg.chaos_ms, "heal")
        self.at(cfg.chaos_ms, "rejoin")
        for victim in sorted(self.nodes):
            self.at(cfg.chaos_ms, "restart", victim)
        self.at(cfg.chaos_ms + 1, "final")

    def _handle(self, kind: str, payload: Any) -> None:
        if self.handle_common(kind, payload):
            return
        cfg, rng = self.config, self.rng
        if kind == "tick":
            for node in self.nodes.values():
                if node.replica is not None:
                    node.replica.tick(self.now())
                    self.step(node)
        elif kind == "propose":
            slot, value = payload
            self.propose(rng.choice(self._voters()), slot, value, rng.randint(1_000, 4_000))
        elif kind == "join":
            self._membership_change(payload, join=True)
        elif kind == "release":
            self._release(*payload)
        elif kind == "leave":
            voters = [v for v in self._voters() if v != self.isolated]
            silent = len(self.silenced & set(self._voters()))
            if len(voters) > 2 + silent:  # an equivocator must stay removable without it
                self._membership_change(rng.choice(voters), join=False)
        elif kind == "partition":
            ids = sorted(self.nodes)
            rng.shuffle(ids)
            cut = rng.randint(1, len(ids) - 1)
            self.groups = [set(ids[:cut]), set(ids[cut:])]
        elif kind == "heal":
            self.groups = None
        elif kind == "restart":
            node = self.nodes[payload]
            if node.replica is None and node.id not in self.silenced:
                self.restarts += 1
                self._start(node)
        elif kind == "equivocate":
            self._equivocate(self.nodes[payload])
        elif kind == "final":  # termination: a fresh slot, dueled, once the network is quiet
            voters = self._voters()
            for d in range(min(cfg.duelers, len(voters))):
                self.propose(voters[d], "alloc/final", f"final-{d}", cfg.quiet_ms_max)

    def _equivocate(self, node: SimNode) -> None:
        """node signs two ops with one seq (as a clone restored from an old backup would),
        each reaching a live voter directly with the node's whole log (so that it applies
        there), then goes silent for good (taken offline). Only where the others are a
        majority without it: otherwise no decided leave can remove it (decision 0017)."""
        if node.replica is None or node.agreement is None:
            return  # crashed: it does not equivocate this run
        voters = node.agreement.membership().voters
        if node.id not in voters or len(voters) < 3:
            return
        others = [v for v in voters if v != node.id and self.nodes[v].replica]
        if not others:
            return
        history = tuple(op.raw for op in node.replica.log())
        real = node.replica.write([Upsert("kv", ("forked",), {"value": b"one"})], self.now())
        assert real is not None
        body = RowsBody((RowMutation("kv", ("forked",), 1, {"value": b"two"}),))
        twin = sign_op(
            node.identity, self.genesis.cluster_id, real.seq, real.hlc, real.parents, body
        )
        self.forged[node.id] = {real.id, twin.id}
        for op in (real, twin):  # one voter each (the same one if there is only one)
            other = self.nodes[self.rng.choice(sorted(others))]
            assert other.replica is not None
            batch = OpBatch(self.genesis.cluster_id, node.id, (*history, op.raw))
            other.replica.receive(batch, self.now())
            self.step(other)
        if not self.config.equivocator_online:
            self.crash(node)
            self.silenced.add(node.id)

    def step(self, node: SimNode) -> None:
        """Step the node; each time it compacts, check the departed voters' pins then."""
        a = node.agreement
        assert a is not None
        before = a.checkpoints.final_n
        super().step(node)
        if node.agreement is a and a.checkpoints.final_n != before:
            self._check_departed(node)

    @staticmethod
    def _departed(a: Agreement) -> tuple[set[NodeId], set[NodeId]]:
        """(departed, released) read afresh from the node's decided membership values, not
        from Membership.departed: voters removed with no reason for good, less those a
        later release names or a later change makes voters again; and the released ones
        that are not voters now."""
        departed: set[NodeId] = set()
        released: set[NodeId] = set()
        chain = a.ledger.memberships
        for version in sorted(chain)[1:]:
            m, previous = chain[version], chain[version - 1]
            if not m.reason:
                departed |= set(previous.voters) - set(m.voters)
            departed -= set(m.released)
            released |= set(m.released)
            departed -= set(m.voters)
            released -= set(m.voters)
        return departed, released

    def _check_departed(self, node: SimNode) -> None:
        """Compaction never passes what a voter removed without a reason for good, and not
        released since, last acknowledged (it may come back as a seceded side to reunite:
        decision 0070). Compactions past a released voter's last op are counted."""
        a, r = node.agreement, node.replica
        assert a is not None and r is not None
        cut = a.checkpoints.final.cut
        departed, released = self._departed(a)
        if departed != a.checkpoints.departed():
            raise self.fail(f"departed voters at {node.id[:8]}: {sorted(departed)} by the "
                            f"chain, {sorted(a.checkpoints.departed())} by the node")
        for gone in departed | released:
            tip = r.dag.at(gone, r.dag.last_seq(gone))
            if tip is None or covers(a.ledger.vector(tip.id), cut):
                continue
            if gone in departed:
                raise self.fail(f"compaction at {node.id[:8]} passed departed voter "
                                f"{gone[:8]}'s last op")
            self.released_passed.add((node.id, gone))

    def _membership_change(self, subject: NodeId, join: bool) -> None:
        voters = [v for v in self._voters() if self.nodes[v].agreement is not None]
        if not voters:
            return
        proposer = self.nodes[self.rng.choice(voters)]
        assert proposer.agreement is not None
        m = proposer.agreement.membership()
        if join and subject in m.voters:
            return
        if join:
            new = m.joined(self.nodes[subject].identity.public_key)
        else:  # half the leaves are for good (by the subject's id: no draw from the seed)
            new = m.left(subject, DECOMMISSIONED if int(subject[-1], 16) % 2 else "")
            if not new.reason and self.config.releases:
                self.at(self.time_ms + 1_500, "release", (subject, 1))
        slot = f"membership/{m.version + 1}"
        self.propose(proposer.id, slot, new.to_value(), 4_000)

    def _release(self, subject: NodeId, attempt: int) -> None:
        """Propose releasing a voter removed with no reason for good, once its removal is
        decided (retried a few times while it is not, or the release was not decided)."""
        voters = [v for v in self._voters() if self.nodes[v].agreement is not None]
        if not voters:
            return
        proposer = self.nodes[voters[0]]
        assert proposer.agreement is not None
        m = proposer.agreement.membership()
        if subject in m.departed:
            slot = f"membership/{m.version + 1}"
            self.propose(proposer.id, slot, m.releasing((subject,)).to_value(), 4_000)
        elif subject not in m.voters:
            return  # released already (or it never left: nothing to do)
        if attempt < 4:
            self.at(self.time_ms + 2_000, "release", (subject, attempt + 1))

    def run(self) -> AgreementSimResult:
        self._schedule()
        cfg = self.config
        end_ms = cfg.chaos_ms + cfg.quiet_ms_max
        while self._events:
            time_ms, _, kind, payload = heapq.heappop(self._events)
            if time_ms > end_ms:
                break
            self.time_ms = time_ms
            self._handle(kind, payload)
            if kind == "tick" and time_ms > cfg.chaos_ms + 1:
                if self._settled():
                    break
                self._retry_final()
        return self.check()

    def _retry_final(self) -> None:
        """A client retries: a final proposer removed or crashed since is replaced."""
        final = [p for _, p in self.proposals if p.slot == "alloc/final"]
        live = [
            p
            for who, p in self.proposals
            if p.slot == "alloc/final"
            and not p.done
            and self.nodes[who].agreement
            and p in self.nodes[who].agreement.proposals
        ]
        up = [v for v in self._voters() if self.nodes[v].agreement is not None]
        if not live and up:
            self.propose(up[0], "alloc/final", f"final-retry-{len(final)}", 5_000)

    def _settled(self) -> bool:
        """The final slot and every membership change are known to every current voter,
        and no voter is an equivocator that some voter holds the proof against."""
        voters = self._voters()
        agreements = [self.nodes[v].agreement for v in voters]
        if any(a is None or a.decided("alloc/final") is None for a in agreements):
            return False
        if self._convicted_voters(voters):
            return False
        return len({a.ledger.mv for a in agreements if a is not None}) == 1

    def _convicted_voters(self, voters: list[NodeId]) -> list[NodeId]:
        known: set[NodeId] = set()
        for v in voters:
            replica = self.nodes[v].replica
            if replica is not None:
                known |= set(replica.forks())
        return sorted(known & set(voters) & set(self.forged))

    # -------------------------------------------------------------- checks
    def fail(self, what: str) -> AgreementSimFailure:
        return AgreementSimFailure(
            f"seed {self.config.seed}: {what}\n  replay: {agreement_replay_command(self.config)}"
        )

    def check(self) -> AgreementSimResult:
        cfg = self.config
        if not self._settled():
            state = {
                v[:8]: (
                    self.nodes[v].agreement.ledger.mv,
                    bool(self.nodes[v].agreement.decided("alloc/final")),
                )
                if self.nodes[v].agreement
                else None
                for v in self._voters()
            }
            convicted = [v[:8] for v in self._convicted_voters(self._voters())]
            raise self.fail(
                f"termination: not decided within {cfg.quiet_ms_max} ms: {state}"
                + (f"; equivocators still voting: {convicted}" if convicted else "")
            )
        counters: dict[str, int] = {}
        for node in self.nodes.values():
            a = node.agreement
            if node.id in self.silenced:
                continue  # offline for good
            assert a is not None
            for k, v in (a.ledger.counters + a.counters).items():
                counters[k] = counters.get(k, 0) + v
            if a.ledger.counters["safety_violation"]:
                raise self.fail(f"agreement: two quorums for different values at {node.id[:8]}")
            self._check_certificates(node.id, a)
            self._check_departed(node)
        counters["sim_released_passed"] = len(self.released_passed)
        self.no_quorum = sum(
            1 for _, p in self.proposals if p.outcome and p.outcome.status is Status.NO_QUORUM
        )
        for who, p in self.proposals:
            o = p.outcome
            if o is not None and o.status is Status.DECIDED:
                if value_key(o.value) != self.learned[p.slot][0]:
                    raise self.fail(f"agreement: {who[:8]} was told another value for {p.slot}")
        a = self.nodes[self._voters()[0]].agreement
        assert a is not None
        return AgreementSimResult(
            cfg,
            len(a.ledger.decided_items()),
            self.last_learned_ms - cfg.chaos_ms,
            a.ledger.mv,
            self.restarts,
            self.messages,
            self.no_quorum,
            self.checkpoints_checked,
            counters,
        )

    def _check_certificates(self, who: NodeId, a: Agreement) -> None:
        """Verify every decision alone: the membership chain first, from the genesis."""
        chain: dict[int, Membership] = {0: Membership.from_genesis(self.genesis)}
        decisions: list[Decision] = a.ledger.decided_items()
        by_version = sorted(
            (membership_version_of(d.slot), d)
            for d in decisions
            if membership_version_of(d.slot) is not None
        )
        for version, d in by_version:
            try:
                verify_certificate(d.certificate, self.genesis.cluster_id, chain.get)
            except Refused as exc:
                raise self.fail(f"certificate of {d.slot} at {who[:8]}: {exc}") from None
            chain[version] = Membership.from_value(d.value)  # type: ignore[index]
        for d in decisions:
            try:
                verify_certificate(d.certificate, self.genesis.cluster_id, chain.get)
            except Refused as exc:
                raise self.fail(f"certificate of {d.slot} at {who[:8]}: {exc}") from None


def run_agreement_seed(seed: int, **overrides: Any) -> AgreementSimResult:
    """One seeded run; raises AgreementSimFailure (with a replay command) on any finding."""
    return AgreementSim(AgreementSimConfig.from_seed(seed, **overrides)).run()


def main(
    argv: list[str] | None = None,
    run: Callable[..., Any] = run_agreement_seed,
    *,
    config_cls: Any = AgreementSimConfig,
    failure: type[AssertionError] = AgreementSimFailure,
    prog: str = "python -m controller.sim.agreement",
) -> int:
    """Run --count seeds from --seed. Each failure, and each finding a run lists (a result's
    `findings`), goes to stderr with its replay command; exit 1 if there was any."""
    import argparse
    import sys
    import time

    parser = argparse.ArgumentParser(prog=prog, description=main.__doc__)
    parser.add_argument("--seed", type=int, default=0, help="first seed")
    parser.add_argument("--count", type=int, default=1, help="number of seeds")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override one config field (as a replay command prints it)",
    )
    args = parser.parse_args(argv)
    overrides: dict[str, Any] = {}
    for item in args.set:
        name, _, value = item.partition("=")
        if name not in config_cls.__dataclass_fields__ or name == "seed":
            parser.error(f"unknown field {name!r}")
        kind = type(getattr(config_cls(seed=0), name))
        overrides[name] = (value == "True") if kind is bool else kind(value)
    failed = with_findings = 0
    started = time.perf_counter()
    for seed in range(args.seed, args.seed + args.count):
        try:
            result = run(seed, **overrides)
        except failure as exc:
            failed += 1
            print(exc, file=sys.stderr)
            continue
        findings = getattr(result, "findings", [])
        for finding in findings:
            print(f"finding: {finding}", file=sys.stderr)
        if findings:
            with_findings += 1
        if args.count == 1:
            print(result)
    passed = args.count - failed - with_findings
    print(
        f"{passed} passed, {failed} failed, {with_findings} with findings in "
        f"{time.perf_counter() - started:.1f} s"
    )
    return 1 if failed or with_findings else 0


if __name__ == "__main__":
    raise SystemExit(main())
