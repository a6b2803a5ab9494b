"""The permission hook: who may sign, be a member, write what, in an op's causal past."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from .identity import Genesis, NodeId
from .op import OpId

__all__ = ["CausalPast", "Policy", "StaticPolicy"]


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
