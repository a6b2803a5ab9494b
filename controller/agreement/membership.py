"""Memberships: numbered voter sets, changed one voter at a time by deciding `membership/<n>`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from controller.replication import Genesis, NodeId, node_id_of

from .errors import Reason, Refused
from .quorum import majority

__all__ = [
    "DECOMMISSIONED",
    "EQUIVOCATION",
    "LEAVE_REASONS",
    "Membership",
    "membership_slot",
    "membership_version_of",
    "check_change",
]

MEMBERSHIP = "membership"
EQUIVOCATION = "equivocation"  # the voter signed two ops for one (author, seq), or two votes
# The operator says the voter will never come back, not even as a seceded side to reunite
# with: the ops it might need for a reunion report may then be compacted (decision 0070).
DECOMMISSIONED = "decommissioned"
LEAVE_REASONS = (EQUIVOCATION, DECOMMISSIONED)  # why a voter was removed, when one is named
EVIDENCE_OPS_MAX = 4  # op ids a removal may cite (one proof is a pair)
_BASE_KEYS = frozenset({"version", "voters", "roles"})


def membership_slot(version: int) -> str:
    return f"{MEMBERSHIP}/{version}"


def membership_version_of(slot: str) -> int | None:
    """n for 'membership/n', else None."""
    kind, _, rest = slot.partition("/")
    if kind != MEMBERSHIP or not rest.isdigit():
        return None
    return int(rest)


@dataclass(frozen=True)
class Membership:
    """Voters in force from `version` on: node id -> Ed25519 public key, and their roles.

    Version 0 comes from the genesis; version n is the value decided in `membership/n`
    by a majority of the voters of version n-1. A removal may say why (`reason`, one of
    LEAVE_REASONS) and cite the ops that prove it (`evidence`, op ids): a record for
    whoever reads the chain later, not a condition an acceptor checks (decision 0017).
    """

    version: int
    voters: Mapping[NodeId, bytes]
    roles: Mapping[NodeId, str]  # role of each voter when it joined (the policy may override)
    reason: str = ""  # why the change from version-1 was made ("" = not said)
    evidence: tuple[bytes, ...] = ()  # op ids that prove the reason

    @property
    def quorum(self) -> int:
        return majority(len(self.voters))

    @classmethod
    def from_genesis(cls, genesis: Genesis) -> Membership:
        return cls(0, dict(genesis.member_ids), {})

    def joined(self, public_key: bytes, role: str = "node") -> Membership:
        node = node_id_of(public_key)
        return Membership(
            self.version + 1, {**self.voters, node: public_key}, {**self.roles, node: role}
        )

    def left(self, node: NodeId, reason: str = "", evidence: tuple[bytes, ...] = ()) -> Membership:
        voters = {n: k for n, k in self.voters.items() if n != node}
        roles = {n: r for n, r in self.roles.items() if n != node}
        return Membership(self.version + 1, voters, roles, reason, tuple(evidence))

    def to_value(self) -> dict:
        value: dict[str, Any] = {
            "version": self.version,
            "voters": {n: k for n, k in sorted(self.voters.items())},
            "roles": {n: r for n, r in sorted(self.roles.items())},
        }
        if self.reason:  # absent otherwise: a plain change encodes as it always did
            value["reason"] = self.reason
            value["evidence"] = list(self.evidence)
        return value

    @classmethod
    def from_value(cls, value: Any) -> Membership:
        ok = (
            isinstance(value, dict)
            and set(value) in (_BASE_KEYS, _BASE_KEYS | {"reason", "evidence"})
            and type(value["version"]) is int
            and isinstance(value["voters"], dict)
            and isinstance(value["roles"], dict)
            and all(isinstance(k, bytes) and len(k) == 32 for k in value["voters"].values())
            and all(isinstance(r, str) for r in value["roles"].values())
        )
        if not ok:
            raise Refused(
                Reason.BAD_MEMBERSHIP, "membership is {version, voters, roles[, reason, evidence]}"
            )
        voters = dict(value["voters"])
        if any(node_id_of(k) != n for n, k in voters.items()):
            raise Refused(Reason.BAD_MEMBERSHIP, "a voter id does not match its key")
        if not set(value["roles"]) <= set(voters):
            raise Refused(Reason.BAD_MEMBERSHIP, "a role for a non-voter")
        reason, evidence = value.get("reason", ""), value.get("evidence", [])
        if "reason" in value:
            _check_reason(reason, evidence)
        return cls(value["version"], voters, dict(value["roles"]), reason, tuple(evidence))


def _check_reason(reason: Any, evidence: Any) -> None:
    if reason not in LEAVE_REASONS:
        raise Refused(Reason.BAD_MEMBERSHIP, f"reason: one of {', '.join(LEAVE_REASONS)}")
    if reason == DECOMMISSIONED:
        if evidence != []:
            raise Refused(Reason.BAD_MEMBERSHIP, "evidence: none for a decommissioned voter")
        return
    ok = (
        isinstance(evidence, list)
        and 1 <= len(evidence) <= EVIDENCE_OPS_MAX
        and all(isinstance(i, bytes) and len(i) == 32 for i in evidence)
        and len(set(evidence)) == len(evidence)
    )
    if not ok:
        raise Refused(Reason.BAD_MEMBERSHIP, f"evidence: 1 to {EVIDENCE_OPS_MAX} distinct op ids")


def check_change(current: Membership, value: Any) -> Membership:
    """The next membership must add or remove exactly one voter and keep at least one.

    One at a time, so that every majority of the old voters intersects every majority
    of the new ones (DESIGN §3); only a removal may name a reason. Raises
    Refused(BAD_MEMBERSHIP).
    """
    new = Membership.from_value(value)
    if new.version != current.version + 1:
        raise Refused(Reason.BAD_MEMBERSHIP, f"version {new.version} after {current.version}")
    if not new.voters:
        raise Refused(Reason.BAD_MEMBERSHIP, "no voters left")
    old, now = set(current.voters), set(new.voters)
    if len(old ^ now) != 1:
        raise Refused(Reason.BAD_MEMBERSHIP, "exactly one voter joins or leaves")
    if any(current.voters[n] != new.voters[n] for n in old & now):
        raise Refused(Reason.BAD_MEMBERSHIP, "a voter's key changed")
    if new.reason and len(now) > len(old):
        raise Refused(Reason.BAD_MEMBERSHIP, "a reason names why a voter leaves, not joins")
    return new
