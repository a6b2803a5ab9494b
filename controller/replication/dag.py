"""The op DAG held by a replica: the log, per-author chains, heads, buffers and evidence."""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Iterator
from itertools import islice

from .identity import NodeId
from .op import Op, OpId

__all__ = ["Dag", "Past"]


class Past:
    """The causal past of an op about to be applied (CausalPast for policies)."""

    def __init__(self, dag: Dag, parents: tuple[OpId, ...]) -> None:
        self._dag = dag
        self.parents = parents

    def includes(self, op_id: OpId) -> bool:
        dag = self._dag
        if op_id in dag.retained:
            # Pruned below a stable checkpoint (an invitation kept for the policy): every
            # op still applied here has the whole pruned cut in its past (decision 0070).
            return True
        target = dag.ops.get(op_id)
        # A logged op's hlc is never below its parents' (validation), so no logged op with
        # an hlc below the target's can have it as an ancestor: the walk stops there.
        floor = target.hlc if target is not None else -1
        seen: set[OpId] = set()
        stack = list(self.parents)
        while stack:
            current = stack.pop()
            if current == op_id:
                return True
            if current in seen:
                continue
            seen.add(current)
            op = dag.ops.get(current)
            if op is not None:
                if op.hlc >= floor:
                    stack.extend(op.parents)
                continue
            op = dag.evidence.get(current)  # evidence was not hlc-checked: never prune it
            if op is not None:
                stack.extend(op.parents)
        return False


class Dag:
    """Ops applied in log order, plus ops waiting for parents and ops kept as evidence.

    Invariants: every op in the log has all its parents earlier in the log, in evidence or
    in the frontier; chains[a] lists author a's logged ops by seq with no gap
    (seq = base[a] + index + 1).

    After `prune(cut)` (below an agreed, stable checkpoint: decision 0070) the ops inside
    the cut are gone: per author, base[a] counts them and its last one stays as the
    frontier (a later op may name it as a parent; nothing below it can be named). The log
    keeps absolute positions: log_start counts the entries dropped from its front, and a
    pruned op further in is a None entry.
    """

    def __init__(self, pending_ops_max: int, evidence_ops_max: int) -> None:
        self.pending_ops_max = pending_ops_max
        self.evidence_ops_max = evidence_ops_max
        self.ops: dict[OpId, Op] = {}
        self.pos: dict[OpId, int] = {}  # absolute log position
        self.log: list[OpId | None] = []
        self.log_start = 0  # absolute position of log[0]
        self.chains: dict[NodeId, list[OpId]] = {}
        self.base: dict[NodeId, int] = {}  # per author: seqs pruned (1..base[a])
        self.frontier: dict[NodeId, Op] = {}  # per author, the last op pruned
        self._frontier_ids: dict[OpId, Op] = {}
        self._proofs: dict[OpId, Op] = {}  # pruned ops that are half of a fork proof
        self._named: dict[OpId, Op] = {}  # pruned ops a logged op names as a parent
        self.retained: dict[OpId, Op] = {}  # pruned ops a policy or the ledger still reads
        self.pruned = 0  # ops pruned in all
        self.heads: set[OpId] = set()
        # Waiting for parents: insertion-ordered so the oldest is evicted first when full.
        self.pending: OrderedDict[OpId, Op] = OrderedDict()
        self.waiting: dict[OpId, set[OpId]] = {}  # missing parent -> pending ops needing it
        self.evidence: dict[OpId, Op] = {}  # conflicting ops and ops on a forked branch
        self.forks: dict[NodeId, int] = {}  # equivocating author -> lowest seq with a fork
        self.fork_proof: dict[NodeId, tuple[OpId, OpId]] = {}

    # -- lookups --------------------------------------------------------------------
    def find(self, op_id: OpId) -> Op | None:
        return (
            self.ops.get(op_id)
            or self.evidence.get(op_id)
            or self._frontier_ids.get(op_id)
            or self._named.get(op_id)
            or self._proofs.get(op_id)
        )

    def holds(self, op_id: OpId) -> bool:
        return (
            op_id in self.ops
            or op_id in self.evidence
            or op_id in self._frontier_ids
            or op_id in self._named
        )

    def at(self, author: NodeId, seq: int) -> Op | None:
        """The logged op (author, seq); below the base only the frontier op is known."""
        base = self.base.get(author, 0)
        if seq <= base:
            op = self.frontier.get(author)
            return op if op is not None and op.seq == seq else None
        chain = self.chains.get(author)
        if chain is None or seq > base + len(chain):
            return None
        return self.ops[chain[seq - base - 1]]

    def last_seq(self, author: NodeId) -> int:
        return self.base.get(author, 0) + len(self.chains.get(author, ()))

    def below_base(self, author: NodeId, seq: int) -> bool:
        """Is (author, seq) inside a pruned cut (known only as applied once)?"""
        return seq <= self.base.get(author, 0)

    def vector(self) -> dict[NodeId, int]:
        out = dict(self.base)
        for a, c in self.chains.items():
            out[a] = out.get(a, 0) + len(c)
        return {a: s for a, s in out.items() if s}

    def tail(self) -> Iterator[Op]:
        """The logged ops still held, in log order."""
        ops = self.ops
        for op_id in self.log:
            if op_id is not None:
                yield ops[op_id]

    def log_from(self, position: int) -> Iterator[tuple[int, OpId | None]]:
        """(absolute position, op id or None once pruned) from position on."""
        start = max(position, self.log_start)
        for i in range(start - self.log_start, len(self.log)):
            yield self.log_start + i, self.log[i]

    def log_end(self) -> int:
        return self.log_start + len(self.log)

    def excluded(self, op: Op) -> bool:
        """Ops of an equivocating author from its first fork on never reach the tables."""
        fork = self.forks.get(op.author)
        return fork is not None and op.seq >= fork

    # -- log --------------------------------------------------------------------------
    def append(self, op: Op) -> None:
        self.pos[op.id] = self.log_start + len(self.log)
        self.log.append(op.id)
        self.ops[op.id] = op
        self.chains.setdefault(op.author, []).append(op.id)
        self.heads.difference_update(op.parents)
        self.heads.add(op.id)

    def choose_parents(self, author: NodeId, parents_max: int) -> tuple[OpId, ...]:
        """Parents for a new op: own previous op first, then up to parents_max newest heads."""
        chain = self.chains.get(author)
        prev: OpId | None = chain[-1] if chain else None
        if prev is None and author in self.frontier:
            prev = self.frontier[author].id
        others = [h for h in self.heads if h != prev]
        if len(others) > parents_max:
            find = self.find
            others = heapq.nlargest(parents_max, others, key=lambda h: (find(h).hlc, h))  # type: ignore[union-attr]
        others.sort()
        return ((prev,) if prev else ()) + tuple(others)

    def missing_for(self, vector: dict[NodeId, int]) -> Iterator[Op]:
        """Logged ops not covered by vector, in log (hence causal) order."""
        slices = []
        for author, chain in self.chains.items():
            skip = max(vector.get(author, 0) - self.base.get(author, 0), 0)
            if len(chain) > skip:
                slices.append((self.pos[i], i) for i in islice(chain, skip, None))
        for _, op_id in heapq.merge(*slices):
            yield self.ops[op_id]

    def lacks_pruned(self, vector: dict[NodeId, int]) -> bool:
        """Does a holder of vector lack ops pruned here (it needs a snapshot, not ops)?"""
        return any(vector.get(a, 0) < b for a, b in self.base.items())

    # -- pruning ----------------------------------------------------------------------
    def prune(self, cut: dict[NodeId, int]) -> list[Op]:
        """Forget the logged ops inside cut (see the class docstring); returns them.
        The caller keeps what validation still needs (decision 0070)."""
        gone: list[Op] = []
        named = self.named_inside(cut)
        for author, seq in sorted(cut.items()):
            base = self.base.get(author, 0)
            chain = self.chains.get(author, [])
            k = min(seq, base + len(chain)) - base
            if k <= 0:
                continue
            ids, self.chains[author] = chain[:k], chain[k:]
            old = self.frontier.get(author)
            if old is not None:
                del self._frontier_ids[old.id]
            last = self.ops[ids[-1]]
            self.frontier[author] = self._frontier_ids[last.id] = last
            proofs = {i for pair in self.fork_proof.values() for i in pair}
            for op_id in ids:
                self.log[self.pos.pop(op_id) - self.log_start] = None
                op = self.ops.pop(op_id)
                if op_id in proofs:  # a peer may still need the proof of the fork
                    self._proofs[op_id] = op
                gone.append(op)
            self.base[author] = base + k
        # Ops above the cut that were logged before it was stable may name ops inside it
        # besides the frontier: those stay too (a store reopened from its tail checks the
        # ops that name them again); ops logged from now on name only the frontier.
        self._named = {i: op for i, op in named.items() if i not in self._frontier_ids}
        drop = 0
        while drop < len(self.log) and self.log[drop] is None:
            drop += 1
        if drop:
            del self.log[:drop]
            self.log_start += drop
        self.pruned += len(gone)
        return gone

    def named_inside(self, cut: dict[NodeId, int]) -> dict[OpId, Op]:
        """Logged ops inside cut or the pruned base (held, or kept by an earlier pruning)
        that a logged op above both names as a parent."""
        cut = {a: max(s, cut.get(a, 0)) for a, s in self.base.items()} | {
            a: s for a, s in cut.items() if s > self.base.get(a, 0)
        }
        out: dict[OpId, Op] = {}
        for op in self.ops.values():
            if op.seq <= cut.get(op.author, 0):
                continue
            for p in op.parents:
                parent = self.ops.get(p) or self._named.get(p) or self._frontier_ids.get(p)
                if parent is not None and parent.seq <= cut.get(parent.author, 0):
                    out[p] = parent
        return out

    def adopt_named(self, op: Op) -> None:
        """Keep a pruned op that an op arriving now names as a parent (Replica._adopt_named)."""
        assert op.seq <= self.base.get(op.author, 0) and not self.holds(op.id), op
        self._named[op.id] = op

    def named(self) -> list[Op]:
        """The pruned ops kept because a logged op names them (besides the frontier)."""
        return list(self._named.values())

    def restore(
        self,
        base: dict[NodeId, int],
        frontier: list[Op],
        named: list[Op],
        proofs: list[Op],
        pruned: int,
    ) -> None:
        """Start from a pruned state read back from a store (before any op is logged)."""
        if self.ops or self.base:
            raise ValueError("restore: the DAG is not empty")
        self.base = dict(base)
        for op in frontier:
            self.frontier[op.author] = self._frontier_ids[op.id] = op
        self._named = {op.id: op for op in named}
        for op in proofs:
            self._proofs[op.id] = op
        self.pruned = pruned
        self.heads = {op.id for op in frontier}

    def proofs(self) -> list[Op]:
        """The pruned ops kept as half of a fork proof."""
        return list(self._proofs.values())

    # -- waiting for parents ----------------------------------------------------------
    def buffer(self, op: Op, missing: list[OpId]) -> Op | None:
        """Hold op until its missing parents arrive; returns an evicted op when full."""
        evicted = None
        if len(self.pending) >= self.pending_ops_max:
            evicted = self.unbuffer(next(iter(self.pending)))
        self.pending[op.id] = op
        for parent in missing:
            self.waiting.setdefault(parent, set()).add(op.id)
        return evicted

    def unbuffer(self, op_id: OpId) -> Op:
        op = self.pending.pop(op_id)
        for parent in op.parents:
            waiters = self.waiting.get(parent)
            if waiters is not None:
                waiters.discard(op_id)
                if not waiters:
                    del self.waiting[parent]
        return op

    def woken_by(self, op_id: OpId) -> list[Op]:
        """Pending ops that waited for op_id and now have every parent."""
        ready = []
        for waiter in sorted(self.waiting.pop(op_id, ())):
            op = self.pending.get(waiter)
            if op is not None and all(self.holds(p) for p in op.parents):
                ready.append(self.unbuffer(waiter))
        return ready

    def wanted(self, limit: int) -> list[OpId]:
        """Missing parents of buffered ops that are not themselves buffered."""
        return [p for p in islice(self.waiting, limit * 4) if p not in self.pending][:limit]

    # -- evidence -------------------------------------------------------------------
    def keep_evidence(self, op: Op) -> bool:
        if self.holds(op.id):
            return False
        if len(self.evidence) >= self.evidence_ops_max:
            return False
        self.evidence[op.id] = op
        return True

    def note_fork(self, author: NodeId, seq: int, a: OpId, b: OpId) -> bool:
        """Record an equivocation; True when it lowers the author's fork seq."""
        current = self.forks.get(author)
        if current is not None and current <= seq:
            return False
        self.forks[author] = seq
        self.fork_proof[author] = (a, b) if a < b else (b, a)
        return True
