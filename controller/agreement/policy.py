"""The replication permission hook, answered from the membership and policy in an op's past."""

from __future__ import annotations

from typing import Any

from controller.replication import (
    CausalPast,
    Genesis,
    Identity,
    NodeId,
    Op,
    RandomSource,
    Ready,
    Rejected,
    Replica,
    decode,
    decode_op,
)
from controller.replication import Reason as ReplicationReason

from .errors import Reason, Refused
from .ledger import Archive, Ledger
from .lineage import MERGE, ReunionVote, check_reunion, lineage_of, reunion_slot
from .messages import VOTE_KINDS, value_key

__all__ = ["AgreementPolicy", "AgreementReplica"]


class AgreementPolicy:
    """replication.Policy over a Ledger: members and rights are those decided in the past.

    Every answer depends only on the author and the op's causal past (the ledger's version
    vectors), never on arrival order, so every node accepts the same ops.
    """

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self._memo: tuple[tuple[bytes, ...], Any, Any] | None = None

    def _in_force(self, past: CausalPast) -> tuple[Any, Any]:
        parents = tuple(past.parents)
        if self._memo is not None and self._memo[0] == parents:
            return self._memo[1], self._memo[2]
        ledger = self.ledger
        ledger.catch_up()  # the parents are applied; index them before asking about them
        vector = ledger.past_vector(parents)
        found = (ledger.membership_in(vector), ledger.policy_in(vector))
        self._memo = (parents, *found)
        return found

    def public_key(self, author: NodeId) -> bytes | None:
        self.ledger.catch_up()
        return self.ledger.public_key(author)

    def is_member(self, author: NodeId, past: CausalPast) -> bool:
        membership, _ = self._in_force(past)
        return author in membership.voters

    def can_write(self, author: NodeId, table: str, past: CausalPast) -> bool:
        _, policy = self._in_force(past)
        return policy.can_write(author, table)

    def can_emit(self, author: NodeId, kind: str, past: CausalPast) -> bool:
        # Which slot kinds a role may propose is checked by the acceptors (a refusal with
        # a reason); here only: a viewer authors no votes.
        _, policy = self._in_force(past)
        return kind not in VOTE_KINDS or policy.role(author) != "viewer"


class AgreementReplica(Replica):
    """A Replica whose permission checks come from decided slots (composition by subclass).

    Replica.recover() builds it through cls(...), so recovery checks each logged op against
    the membership and policy in its own causal past too. `archive` (the store; open_replica
    passes it, since `archives` is set) is where settled decisions go (decision 0103).
    """

    archives = True  # takes archive=<store> (controller.store.open_replica)

    def __init__(
        self, identity: Identity, genesis: Genesis, rng: RandomSource, *,
        archive: Archive | None = None, **kwargs: Any
    ) -> None:
        self.ledger = Ledger(genesis, identity.node_id)
        self.ledger.archive = archive
        self.restored_checkpoint = 0  # the checkpoint recover() read back (0: none)
        kwargs["policy"] = AgreementPolicy(self.ledger)
        super().__init__(identity, genesis, rng, **kwargs)
        self.ledger.bind(self.dag, self, self.dag.evidence)

    # -------------------------------------------------------------- compaction (0070)
    def _retain(self, op: Op) -> bool:
        return super()._retain(op) or self.ledger.retains(op)

    def advance(self, ready: Ready) -> None:
        super().advance(ready)
        if ready.compaction is not None and ready.compaction.archive:
            self.ledger.stored(ready.compaction.archive)

    def _restore_retained(self, op: Op) -> None:
        self.ledger.restore(op)

    def _restore_extra(self, extra: bytes) -> list[Op]:
        """The checkpoint the store was compacted to, its certificate's votes (indexed;
        returned for recover() to verify) and the kept ops' past vectors (Checkpoints.compact
        writes them; Checkpoints.restore reads restored_checkpoint)."""
        try:
            plain = decode(extra)
            n, vectors, votes = plain["checkpoint"], plain["vectors"], plain["certificate"]
            if type(n) is not int or n < 1 or not isinstance(vectors, list):
                raise ValueError("checkpoint: an int >= 1, vectors: a list")
            if not isinstance(votes, list) or not all(isinstance(v, bytes) for v in votes):
                raise ValueError("certificate: a list of vote ops")
            cfg = self.config
            ops = [decode_op(v, self.schema, cfg.parents_max, cfg.mutations_max) for v in votes]
            parsed = {}
            for op_id, v in vectors:
                if not isinstance(op_id, bytes) or not isinstance(v, dict) or not all(
                    isinstance(a, str) and type(s) is int for a, s in v.items()
                ):
                    raise ValueError("vectors: [op id, {node: seq}] pairs")
                parsed[op_id] = v
        except Exception as exc:
            why = f"compaction extra: {exc!r}"[:200]
            raise Rejected(ReplicationReason.MALFORMED, why) from None
        self.restored_checkpoint = n
        self.ledger.restore_vectors(parsed)
        for op in ops:
            self.ledger.restore(op)
        return ops

    def join_lineage(
        self, other: Replica, votes: tuple[ReunionVote, ReunionVote] | None = None
    ) -> None:
        """Join the op DAG of another lineage, once this side decided to merge with it.

        Refused (with a reason, nothing joined) when the clusters share no genesis and
        `votes` (this side's, the other's) do not carry a decided admin merge on each side
        (`unrelated_cluster`, as check_reunion), or when this side has not decided `merge`
        in `reunion/<other cluster id>` (`no_merge`). The other lineage's ops are then
        verified under its own cluster id and checked against its own membership and
        policy (`other` should itself be an AgreementReplica of that lineage).
        """
        check_reunion(lineage_of(self.genesis), lineage_of(other.genesis), votes)
        self.ledger.catch_up()
        slot = reunion_slot(other.cluster_id)
        d = self.ledger.decided(slot)
        if d is None or value_key(d.value) != value_key(MERGE):
            got = "nothing" if d is None else repr(d.value)
            raise Refused(Reason.NO_MERGE, f"{slot} decided {got}, not {MERGE!r}")
        child = lineage_of(other.genesis)
        pruned = self.dag.base
        if child.parent == self.cluster_id and any(
            child.fork_vector.get(a, 0) < s for a, s in pruned.items()
        ):
            # Compacted past the fork (its voters were released, or removed for good):
            # the report needs this side's ops from the fork on (decision 0070).
            raise Refused(
                Reason.NO_MERGE,
                f"{other.cluster_id.hex()[:16]} seceded at a point this node compacted "
                "past: its voters were released or removed for good; its nodes join "
                "again as new nodes",
            )
        super().join_lineage(other)
