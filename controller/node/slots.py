"""The agreement layer inside the node: the replica it needs, opened from the store.

`NodeReplica` is an `AgreementReplica` (membership and policy from decided slots) whose
permission hook also honours the invitations of decision 0030 (`member.invite` ops), so
clusters whose nodes joined by invitation keep working: an invited node replicates and
writes rows but is not a voter until a `membership/<n>` slot makes it one.
"""

from __future__ import annotations

from typing import Any

from controller.agreement import AgreementReplica, Certificate, Decision
from controller.agreement import certificate_voters as agreement_certificate_voters
from controller.replication import (
    CausalPast,
    Genesis,
    Identity,
    InvitePolicy,
    NodeId,
    Op,
    RandomSource,
    encode,
)
from controller.store import Store
from controller.store.recovery import open_replica

__all__ = ["VotesAndInvitesPolicy", "NodeReplica", "open_node_replica", "certificate_voters",
           "decision_summary"]


class VotesAndInvitesPolicy:
    """Members: the voters decided in the op's causal past, or nodes invited in it.

    Both answers depend only on the author and the op's causal past, so their union does too.
    Rights (tables, vote kinds) are the agreement policy's; per-table writer lists from the
    genesis (InvitePolicy's) still apply.
    """

    def __init__(self, votes: Any, invites: InvitePolicy) -> None:
        self.votes = votes
        self.invites = invites

    def members(self) -> dict[NodeId, bytes]:
        """Everyone who may author ops now: invited nodes and the current voters (a founder
        removed by a decided membership change is neither)."""
        founders = self.invites.founders
        out = {n: k for n, k in self.invites.members().items() if n not in founders}
        out.update(self.votes.ledger.membership.voters)
        return out

    def addresses(self) -> dict[NodeId, str]:
        return self.invites.addresses()

    @property
    def invitations(self):
        return self.invites.invitations

    def observe(self, op: Op) -> None:
        self.invites.observe(op)

    def public_key(self, author: NodeId) -> bytes | None:
        return self.votes.public_key(author) or self.invites.public_key(author)

    def is_member(self, author: NodeId, past: CausalPast) -> bool:
        return self.votes.is_member(author, past) or self.invites.is_member(author, past)

    def can_write(self, author: NodeId, table: str, past: CausalPast) -> bool:
        return self.votes.can_write(author, table, past) and self.invites.can_write(
            author, table, past
        )

    def can_emit(self, author: NodeId, kind: str, past: CausalPast) -> bool:
        return self.votes.can_emit(author, kind, past)


class NodeReplica(AgreementReplica):
    """AgreementReplica plus invitations (see the module docstring)."""

    def __init__(
        self, identity: Identity, genesis: Genesis, rng: RandomSource, **kwargs: Any
    ) -> None:
        kwargs.pop("policy", None)
        super().__init__(identity, genesis, rng, **kwargs)
        # Installed before any op is applied (recover() applies the log after __init__).
        self.policy = VotesAndInvitesPolicy(self.policy, InvitePolicy.from_genesis(genesis))
        self._observe = self.policy.observe
        # Vector deltas only to peers whose hello said they take them (decision 0101).
        self.delta_peers = set()


def open_node_replica(
    store: Store, identity: Identity, rng: RandomSource, genesis: Genesis, *, verify: Any,
    **kwargs: Any,
) -> NodeReplica:
    """controller.store.open_replica, building a NodeReplica."""
    replica = open_replica(store, identity, rng, genesis, verify=verify,
                           replica_cls=NodeReplica, **kwargs)
    assert isinstance(replica, NodeReplica)
    return replica


def certificate_voters(cert: Certificate) -> list[NodeId]:
    """The authors of a certificate's accepted ops, sorted."""
    return sorted(agreement_certificate_voters(cert))


def decision_summary(decision: Decision) -> dict[str, Any]:
    """The fields of a decided Slot message (value and certificate CBOR-encoded)."""
    cert = decision.certificate
    return {
        "slot": decision.slot,
        "decided": True,
        "value": encode(decision.value),
        "ballot": str(cert.ballot),
        "membership_version": cert.ballot.mv,
        "voters": certificate_voters(cert),
        "certificate": encode(cert.to_plain()),
    }
