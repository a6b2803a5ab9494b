"""The permission hook: who may sign, be a member, write what, in an op's causal past."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from .identity import Genesis, NodeId, node_id_of
from .op import CustomBody, Op, OpId

__all__ = [
    "INVITE",
    "CausalPast",
    "Invitation",
    "InvitePolicy",
    "ObservingPolicy",
    "Policy",
    "StaticPolicy",
    "invitation_data",
    "parse_invitation",
]

INVITE = "member.invite"  # custom op kind: a member admits a new node (until agreement)


class CausalPast(Protocol):
    """The causal past of the op being validated: everything its parents can reach."""

    @property
    def parents(self) -> tuple[OpId, ...]: ...

    def includes(self, op_id: OpId) -> bool:
        """True when op_id is an ancestor of the op (walks the DAG on demand)."""
        ...


class Policy(Protocol):
    """Replaceable by the agreement layer, which decides policy from replicated slots.

    Every answer must depend only on the author and the op's causal past (never on local
    arrival order), or two nodes could accept different ops and diverge.
    """

    def public_key(self, author: NodeId) -> bytes | None:
        """The author's Ed25519 public key if the author was ever known, else None."""
        ...

    def is_member(self, author: NodeId, past: CausalPast) -> bool: ...

    def can_write(self, author: NodeId, table: str, past: CausalPast) -> bool: ...

    def can_emit(self, author: NodeId, kind: str, past: CausalPast) -> bool:
        """May author emit an op whose body kind is not 'rows' (votes, membership, …)?"""
        ...


class ObservingPolicy(Policy, Protocol):
    """A policy that also wants to see every op the replica applies (optional hook).

    Replica calls observe(op) right after op joins the log, in log order, also while
    recovering from a stored log, so the policy's state is a function of the log alone.
    """

    def observe(self, op: Op) -> None: ...


@dataclass(frozen=True)
class StaticPolicy:
    """Fixed members; optional per-table writer lists (a table not listed: every member)."""

    members: Mapping[NodeId, bytes]
    writers: Mapping[str, frozenset[NodeId]] = field(default_factory=dict)

    @classmethod
    def from_genesis(cls, genesis: Genesis) -> StaticPolicy:
        """Members from the genesis; writers from genesis.policy['writers'] if present."""
        writers: dict[str, frozenset[NodeId]] = {}
        policy = genesis.policy
        if isinstance(policy, dict) and isinstance(policy.get("writers"), dict):
            for table, ids in policy["writers"].items():
                writers[table] = frozenset(ids)
        return cls(genesis.member_ids, writers)

    def public_key(self, author: NodeId) -> bytes | None:
        return self.members.get(author)

    def is_member(self, author: NodeId, past: CausalPast) -> bool:
        return author in self.members

    def can_write(self, author: NodeId, table: str, past: CausalPast) -> bool:
        allowed = self.writers.get(table)
        return allowed is None or author in allowed

    def can_emit(self, author: NodeId, kind: str, past: CausalPast) -> bool:
        return True


@dataclass(frozen=True)
class Invitation:
    """A member's signed admission of a new node: its key and where its peers reach it."""

    key: bytes  # the invited node's Ed25519 public key
    address: str  # its peer address HOST:PORT ("" when not given)
    by: str  # who asked for it (e.g. an admin token id), kept for audit
    op_id: OpId  # the invite op

    @property
    def node_id(self) -> NodeId:
        return node_id_of(self.key)


def invitation_data(key: bytes, address: str, by: str) -> dict:
    """The body data of an INVITE op (emit(INVITE, invitation_data(...)))."""
    return {"key": key, "address": address, "by": by}


def parse_invitation(op: Op) -> Invitation | None:
    """The invitation an op carries, or None (not an INVITE op, or malformed data)."""
    body = op.body
    if not isinstance(body, CustomBody) or body.kind != INVITE:
        return None
    data = body.data
    ok = (
        isinstance(data, dict)
        and set(data) == {"key", "address", "by"}
        and isinstance(data["key"], bytes)
        and len(data["key"]) == 32
        and isinstance(data["address"], str)
        and len(data["address"]) <= 256
        and isinstance(data["by"], str)
        and len(data["by"]) <= 256
    )
    if not ok:
        return None
    return Invitation(data["key"], data["address"], data["by"], op.id)


class InvitePolicy:
    """Genesis members, plus every node invited by an INVITE op in the op's causal past.

    The stand-in for membership until the agreement layer decides `membership/<n>` slots:
    any member may invite (the node daemon lets only admin tokens ask for it); membership
    only grows. Per-table writer lists come from the genesis, as for StaticPolicy.

    is_member walks the causal past only for an invited node's first op: every later op
    of that node has its first op, hence the invitation, in its past (membership grows
    monotonically), so it is answered from `_confirmed`.
    """

    def __init__(
        self,
        members: Mapping[NodeId, bytes],
        writers: Mapping[str, frozenset[NodeId]] | None = None,
    ) -> None:
        self.founders = dict(members)
        self.writers = dict(writers or {})
        self.invitations: dict[NodeId, list[Invitation]] = {}
        self._confirmed: set[NodeId] = set()  # invited nodes with an op in the log

    @classmethod
    def from_genesis(cls, genesis: Genesis) -> InvitePolicy:
        static = StaticPolicy.from_genesis(genesis)
        return cls(static.members, static.writers)

    def members(self) -> dict[NodeId, bytes]:
        """Founders and every node invited by an op in the log (on any branch of the DAG)."""
        out = dict(self.founders)
        for node_id, invites in self.invitations.items():
            out[node_id] = invites[0].key
        return out

    def addresses(self) -> dict[NodeId, str]:
        """The latest peer address an invitation gave for each invited node."""
        return {n: inv[-1].address for n, inv in self.invitations.items() if inv[-1].address}

    def observe(self, op: Op) -> None:
        inv = parse_invitation(op)
        if inv is not None and inv.node_id not in self.founders:
            self.invitations.setdefault(inv.node_id, []).append(inv)
        if op.author in self.invitations:
            self._confirmed.add(op.author)

    def public_key(self, author: NodeId) -> bytes | None:
        key = self.founders.get(author)
        if key is None and author in self.invitations:
            key = self.invitations[author][0].key
        return key

    def is_member(self, author: NodeId, past: CausalPast) -> bool:
        if author in self.founders or author in self._confirmed:
            return True
        return any(past.includes(inv.op_id) for inv in self.invitations.get(author, ()))

    def can_write(self, author: NodeId, table: str, past: CausalPast) -> bool:
        allowed = self.writers.get(table)
        return allowed is None or author in allowed

    def can_emit(self, author: NodeId, kind: str, past: CausalPast) -> bool:
        return True
