"""Agreed checkpoints (issue 12, decision 0070): the state at a cut, decided like any slot.

A checkpoint `checkpoint/<n>` names a cut (a version vector of this lineage's DAG), the
ECMH digest of the rows made by the ops inside it, the ECMH digest of those ops' ids, how
many ops that is, and the hash of checkpoint n-1's value (a chain, like memberships). An
acceptor votes for it only when it holds every op inside the cut and computes the same
two digests itself (`Checkpoints.check`); so a decided checkpoint's certificate proves, to
anyone who can check the membership chain, the state of the lineage at that cut.

The state at a cut is computed here from the replica's log, incrementally: `CutState` is
the rows and digests at one cut, and `extend` adds the ops between it and a later cut,
copying only the rows those ops touch. `Checkpoints` keeps the state at the latest decided
checkpoint it verified (the base) and the last few computed, so an acceptor answering
many Accepts for one value computes it once.

Only this lineage's own ops count (a joined lineage is another DAG with its own
checkpoints), and an op of a proven equivocator from its fork on counts in no digest and
not in `count` (the replica's tables leave it out too; nodes may hold different branches
of the fork, so neither its rows nor its id can be agreed on): fork knowledge is part of
the state, and a proposer cuts a forked author's chain before its fork. Decision 0070 says
what a fork found below a decided checkpoint means.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from controller.replication import NodeId, Op, RowsBody, RowState, row_version_bytes
from controller.replication.crdt import RowKey
from controller.replication.digest import Ecmh, point_of
from controller.replication.encoding import encode
from controller.replication.identity import hash32

from .errors import Reason, Refused
from .messages import slot_number

__all__ = [
    "CHECKPOINT",
    "Checkpoint",
    "Checkpoints",
    "CutState",
    "checkpoint_number_of",
    "checkpoint_slot",
]

CHECKPOINT = "checkpoint"  # the slot kind; proposed by voters, never through the API
NO_PREVIOUS = bytes(32)  # checkpoint 1's `prev`
_OPSET = b"synod-opset"  # the person of an op id's point, as Replica.op_digest


def checkpoint_slot(n: int) -> str:
    return f"{CHECKPOINT}/{n}"


def checkpoint_number_of(slot: str) -> int | None:
    return slot_number(slot, CHECKPOINT)


def covers(a: Mapping[NodeId, int], b: Mapping[NodeId, int]) -> bool:
    """Does vector a hold every op of vector b?"""
    return all(a.get(n, 0) >= s for n, s in b.items())


@dataclass(frozen=True)
class Checkpoint:
    """The value decided in `checkpoint/<n>`."""

    n: int
    cut: Mapping[NodeId, int]
    state: bytes  # ECMH of the row versions made by the ops inside the cut
    ops: bytes  # ECMH of the ids of the ops inside the cut
    count: int  # ops inside the cut
    prev: bytes  # hash of checkpoint n-1's value; NO_PREVIOUS for n = 1

    def to_value(self) -> dict[str, Any]:
        return {
            "cut": dict(sorted(self.cut.items())),
            "state": self.state,
            "ops": self.ops,
            "count": self.count,
            "prev": self.prev,
        }

    def hash(self) -> bytes:
        """What checkpoint n+1's `prev` names."""
        return hash32(encode([self.n, self.to_value()]), person=b"synod-checkpoint")

    @classmethod
    def from_value(cls, n: int, value: Any) -> Checkpoint:
        """Validate the shape (not the digests: Checkpoints.check does that)."""
        where = checkpoint_slot(n)

        def bad(why: str) -> Refused:
            return Refused(Reason.BAD_CHECKPOINT, f"{where}: {why}")

        if not isinstance(value, dict) or set(value) != {"cut", "state", "ops", "count", "prev"}:
            raise bad("a map of cut, state, ops, count and prev")
        cut = value["cut"]
        if not isinstance(cut, dict) or not cut:
            raise bad("cut: a non-empty map of node id to seq")
        for node, seq in cut.items():
            if not isinstance(node, str) or type(seq) is not int or seq < 1:
                raise bad(f"cut: {node!r}: {seq!r} is not a node id and a seq >= 1")
        for name in ("state", "ops", "prev"):
            if not isinstance(value[name], bytes) or len(value[name]) != 32:
                raise bad(f"{name}: 32 bytes")
        count = value["count"]
        if type(count) is not int or count < 1:
            raise bad("count: an int >= 1")
        return cls(n, dict(cut), value["state"], value["ops"], count, value["prev"])


@dataclass
class CutState:
    """The rows and digests made by the ops inside `cut` (see the module docstring)."""

    cut: dict[NodeId, int] = field(default_factory=dict)
    rows: dict[RowKey, RowState] = field(default_factory=dict)
    points: dict[RowKey, bytes] = field(default_factory=dict)
    state: Ecmh = field(default_factory=Ecmh)
    opset: Ecmh = field(default_factory=Ecmh)
    count: int = 0

    def extend(self, ops: Iterable[Op], excluded: Callable[[Op], bool]) -> CutState:
        """A new state with `ops` (each above this cut, in a causal order) added; this one
        is left as it is."""
        new = CutState(
            dict(self.cut),
            dict(self.rows),
            dict(self.points),
            self.state.copy(),
            self.opset.copy(),
            self.count,
        )
        touched: set[RowKey] = set()
        for op in ops:
            if op.seq != new.cut.get(op.author, 0) + 1:
                raise ValueError(f"op {op.author[:8]}/{op.seq} does not extend the cut")
            new.cut[op.author] = op.seq
            if excluded(op):  # a proven equivocator's, from its fork on: in no digest
                continue
            new.count += 1
            new.opset.add(point_of(op.id, person=_OPSET))
            if not isinstance(op.body, RowsBody):
                continue
            for m in op.body.mutations:
                rk = (m.table, m.key)
                if rk not in touched:
                    touched.add(rk)
                    old = new.rows.get(rk)
                    row = RowState()
                    if old is not None:
                        row.cl, row.cols = old.cl, dict(old.cols)
                    new.rows[rk] = row
                new.rows[rk].merge(m, op.hlc, op.author)
        for rk in touched:
            old_point = new.points.get(rk)
            if old_point is not None:
                new.state.sub(old_point)
            point = new.points[rk] = point_of(row_version_bytes(rk[0], rk[1], new.rows[rk]))
            new.state.add(point)
        return new


class Checkpoints:
    """One node's checkpoints: computes states at cuts from its replica, checks proposed
    values, and builds the next one to propose. Sans-I/O; the ledger says what is decided."""

    def __init__(self, replica: Any, ledger: Any, memo_max: int = 4) -> None:
        self.replica = replica
        self.ledger = ledger
        self.base = CutState()  # the state at the latest decided checkpoint verified here
        self.base_n = 0
        # The state at the checkpoint the replica was compacted to: final (a fork found
        # later below it does not change it), and the floor of every later computation.
        self.final = CutState()
        self.final_n = 0
        self.memo_max = memo_max
        self._memo: dict[bytes, CutState] = {}
        self._forks: dict[NodeId, int] = {}  # the forks known when base and memo were made
        self._decided: dict[int, Checkpoint] = {}

    # -------------------------------------------------------------- decided
    def decided(self, n: int) -> Checkpoint | None:
        """checkpoint/<n>'s value once decided (parsed once: a decision is final; the
        engine asks every step)."""
        cp = self._decided.get(n)
        if cp is None:
            d = self.ledger.decided(checkpoint_slot(n))
            if d is None:
                return None
            cp = self._decided[n] = Checkpoint.from_value(n, d.value)
        return cp

    def latest(self) -> int:
        """The highest n with checkpoint/<n> decided (they are decided in order)."""
        n = self.base_n
        while self.ledger.decided(checkpoint_slot(n + 1)) is not None:
            n += 1
        return n

    # -------------------------------------------------------------- the state at a cut
    def at(self, cut: Mapping[NodeId, int]) -> CutState | None:
        """The state at `cut`, or None while this replica does not hold all of it."""
        if not covers(self.replica.version_vector(), cut):
            return None
        forks = self.replica.forks()
        if forks != self._forks:  # a fork found: states made without knowing it are wrong
            self._forks = forks
            self._memo.clear()
            self.base, self.base_n = self.final, self.final_n
        if not covers(cut, self.final.cut):
            return None  # below the compacted checkpoint: its ops are gone
        key = encode(dict(sorted(cut.items())))
        hit = self._memo.get(key)
        if hit is not None:
            return hit
        base = self.base if covers(cut, self.base.cut) else self.final
        dag = self.replica.dag
        ops = [op for op in dag.missing_for(base.cut) if op.seq <= cut.get(op.author, 0)]
        state = base.extend(ops, dag.excluded)
        if len(self._memo) >= self.memo_max:
            self._memo.pop(next(iter(self._memo)))
        self._memo[key] = state
        return state

    def advance(self) -> None:
        """Move the base to the latest decided checkpoint this replica holds."""
        n = self.latest()
        while n > self.base_n:
            cp = self.decided(n)
            assert cp is not None
            state = self.at(cp.cut)
            if state is not None:
                self.base, self.base_n = state, n
                self._memo.clear()
                return
            n -= 1

    # -------------------------------------------------------------- compaction
    def stable(self, cut: Mapping[NodeId, int]) -> bool:
        """May the ops inside cut be pruned here (decision 0070)? This replica holds the
        cut; every other voter authored an op whose causal past covers it — it holds the
        cut durably (its op was stored after everything in its past), and every op it
        will author names only ops above the cut or an author's last one inside it; and
        every other peer (authoring no ops) reported a vector covering it."""
        replica, ledger = self.replica, self.ledger
        if not covers(replica.version_vector(), cut):
            return False
        voters = set(ledger.membership.voters)
        dag = replica.dag
        for voter in voters - {replica.node_id}:
            tip = dag.at(voter, dag.last_seq(voter))
            if tip is None or not covers(ledger.vector(tip.id), cut):
                return False
        for peer in set(replica.peers) - voters:
            reported = replica.peer_vectors.get(peer)
            if reported is None or not covers(reported, cut):
                return False
        # A voter removed without saying it is gone for good may be a seceded side that
        # comes back to reunite; the reunion report needs this lineage's ops from its fork
        # on, and its fork holds at least what its last op covers: never prune past that.
        for departed in self.departed():
            tip = dag.at(departed, dag.last_seq(departed))  # None: it never wrote here
            if tip is not None and not covers(ledger.vector(tip.id), cut):
                return False
        return True

    def departed(self) -> set[NodeId]:
        """Voters removed by a decided membership change that named no reason for good
        (neither equivocation nor decommissioned), not released by a later decided
        release and not voters again (Membership.departed, derived by the ledger)."""
        return set(self.ledger.membership.departed)

    def compact(self) -> int:
        """Prune the replica to the base checkpoint if it is stable; returns ops pruned."""
        if self.base_n <= self.final_n or not self.stable(self.base.cut):
            return 0
        self.ledger.catch_up()  # every op is indexed before it goes
        dag, cut = self.replica.dag, self.base.cut
        # The pruned ops that stay (the new frontier, and those held ops name): their
        # causal pasts, computed while whole, are what a ledger needs of the pruned part
        # (besides the votes the replica retains), here and rebuilt from the store.
        kept = dict(dag.frontier)
        for author, seq in cut.items():
            last = dag.at(author, seq)
            if last is not None:
                kept[author] = last
        stay = {op.id: op for op in kept.values()}
        stay.update(dag.named_inside(dict(cut)))
        vectors = [[i, dict(sorted(self.ledger.vector(i).items()))] for i in sorted(stay)]
        # The certificate of the checkpoint itself: its votes came after its cut, so they
        # are in no compaction's retained ops, and a node that gets this checkpoint as a
        # snapshot (without the tail) needs them to see it decided.
        decision = self.ledger.decided(checkpoint_slot(self.base_n))
        assert decision is not None
        extra = encode({"checkpoint": self.base_n, "vectors": vectors,
                        "certificate": list(decision.certificate.ops)})
        # Settled decisions leave memory with it, for the store's archive (decision 0103):
        # before compact(), so their votes are not retained in the record either.
        # (Only with a compaction to carry them: Replica.compact emits none when the cut
        # prunes nothing.)
        pruned = dag.base
        prunes = any(s > pruned.get(a, 0) for a, s in cut.items())
        archive = self.ledger.archive_settled(cut) if prunes else ()
        try:
            gone = self.replica.compact(cut, self.base.rows, points=self.base.points,
                                        extra=extra, archive=archive)
        except BaseException:
            if archive:
                self.ledger.unarchive()  # no compaction carries them: they stay held
            raise
        self.ledger.archive_carried()
        self.ledger.forget(gone, keep=stay)
        self.final, self.final_n = self.base, self.base_n
        return len(gone)

    def restore(self) -> None:
        """After recover() read a compacted store back: the rows of the checkpoint it was
        compacted to are the base and the floor (final) again, once they are checked
        against that checkpoint's certified digest and cut. Refused (BAD_CHECKPOINT, with
        the reason) when they do not match: the store is not what was compacted."""
        replica = self.replica
        n = getattr(replica, "restored_checkpoint", 0)
        if not n:
            return
        where = f"the store was compacted to checkpoint/{n}"
        cp = self.decided(n)
        if cp is None:
            raise Refused(Reason.BAD_CHECKPOINT, f"{where}, which its retained votes do not decide")
        if dict(replica.dag.base) != dict(cp.cut):
            raise Refused(Reason.BAD_CHECKPOINT, f"{where}, whose cut is not the pruned one")
        points = replica._base_points or {}
        state = Ecmh()
        for point in points.values():
            state.add(point)
        if state.value != cp.state:
            raise Refused(
                Reason.BAD_CHECKPOINT,
                f"{where}: its {len(points)} stored rows do not add up to the certified digest",
            )
        if not replica.forks() and (replica.dag.pruned, replica._pruned_opset.value) != (
                cp.count, cp.ops):
            raise Refused(
                Reason.BAD_CHECKPOINT,
                f"{where}: the record's pruned ops ({replica.dag.pruned}) or their op-set "
                f"digest differ from the certified ones ({cp.count})",
            )
        final = CutState(
            dict(cp.cut), replica._base_rows, dict(points), state, Ecmh(cp.ops), cp.count
        )
        replica._base_points = None
        self.final = self.base = final
        self.final_n = self.base_n = n
        self._memo.clear()

    # -------------------------------------------------------------- proposing and checking
    def check(self, n: int, value: Any) -> Checkpoint:
        """Refused unless `value` is what this node computes for checkpoint n: the chain
        (n-1 decided here, prev its hash, the cut above its cut) and both digests."""
        cp = Checkpoint.from_value(n, value)
        prev_cut: Mapping[NodeId, int] = {}
        prev_hash = NO_PREVIOUS
        if n > 1:
            prev = self.decided(n - 1)
            if prev is None:
                raise Refused(Reason.CHECKPOINT_AHEAD, f"checkpoint/{n - 1} is not decided here")
            prev_cut, prev_hash = prev.cut, prev.hash()
        if cp.prev != prev_hash:
            raise Refused(Reason.BAD_CHECKPOINT, f"checkpoint/{n}: prev is not checkpoint/{n - 1}")
        if not covers(cp.cut, prev_cut) or dict(cp.cut) == dict(prev_cut):
            raise Refused(Reason.BAD_CHECKPOINT, f"checkpoint/{n}: cut not above the previous")
        state = self.at(cp.cut)
        if state is None:
            raise Refused(Reason.CHECKPOINT_AHEAD, f"checkpoint/{n}: ops of the cut not held")
        got = (state.state.value, state.opset.value, state.count)
        if got != (cp.state, cp.ops, cp.count):
            raise Refused(
                Reason.BAD_CHECKPOINT,
                f"checkpoint/{n}: digests differ from this node's at that cut "
                f"({state.count} ops here, {cp.count} named)",
            )
        return cp

    def next(self, ops_max: int = 0) -> Checkpoint | None:
        """The checkpoint to propose now: n = latest decided + 1, cut = everything held, or
        with ops_max the first ops_max ops above n-1's cut (the empty cut for the first) in
        log order (a prefix of a causal order is a cut); None when nothing but checkpoint
        votes was added since the latest one.

        Why ops_max: the proposer and every acceptor compute the state at the cut from the
        previous one, about 0.2 ms an op on the node's loop. Unbounded, a tail of 100k ops
        (issue 12's soak, node 2 rejoining) cost 20 s per proposal, longer than a
        proposal's timeout, and each retry named a new cut to compute again: no
        checkpoint was decided any more and the tail grew. Bounded, a retry names the same
        cut (the log's order does not change), a memo hit, and the tail is taken in steps."""
        n = self.latest()
        prev = self.decided(n) if n else None
        cut = self.replica.version_vector()
        if ops_max and (prev is None or covers(cut, prev.cut)):
            # The first one counts from the empty cut: a node that ran long without
            # checkpoints (older code, or compaction off) is taken in steps too.
            cut = self._prefix(cut, dict(prev.cut) if prev is not None else {}, ops_max)
        for author, fork in self.replica.forks().items():  # beyond a fork: branches differ
            if author in cut:  # (but what a compacted checkpoint holds is final)
                cut[author] = max(min(cut[author], fork - 1), self.final.cut.get(author, 0))
        cut = {a: s for a, s in cut.items() if s > 0}
        if not cut or (prev is not None and (self.ops_since() == 0 or cut == dict(prev.cut))):
            return None
        state = self.at(cut)
        assert state is not None
        return Checkpoint(
            n + 1,
            dict(cut),
            state.state.value,
            state.opset.value,
            state.count,
            prev.hash() if prev is not None else NO_PREVIOUS,
        )

    def _prefix(self, held: dict[NodeId, int], floor: dict[NodeId, int],
                ops_max: int) -> dict[NodeId, int]:
        """floor plus the first ops_max ops above it in log order; held when fewer."""
        cut = dict(floor)
        for i, op in enumerate(self.replica.dag.missing_for(floor)):
            if i == ops_max:
                return cut
            cut[op.author] = op.seq
        return held

    def ops_since(self) -> int:
        """Ops held above the latest decided checkpoint, less the votes on checkpoint slots
        themselves (deciding one adds votes: an idle cluster must not checkpoint for ever)."""
        n = self.latest()
        prev = self.decided(n) if n else None
        held = sum(self.replica.version_vector().values())
        since = held - (prev.count if prev is not None else 0)
        return max(0, since - self._votes(n) - self._votes(n + 1))

    def _votes(self, n: int) -> int:
        """Vote ops seen on checkpoint/<n> (0 for n = 0)."""
        rec = self.ledger.slots.get(checkpoint_slot(n)) if n else None
        if rec is None:
            return 0
        return (
            len(rec.prepares)
            + sum(len(p) for p in rec.promises.values())
            + len(rec.accepts)
            + sum(len(a) for by_value in rec.accepted.values() for a in by_value.values())
            + sum(len(r) for r in rec.refusals.values())
        )
