"""Memberships: numbered voter sets, changed one voter at a time by deciding `membership/<n>`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from controller.replication import Genesis, NodeId, node_id_of

from .errors import Reason, Refused
from .quorum import majority

__all__ = ["Membership", "membership_slot", "membership_version_of", "check_change"]

MEMBERSHIP = "membership"


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
    by a majority of the voters of version n-1.
    """

    version: int
    voters: Mapping[NodeId, bytes]
    roles: Mapping[NodeId, str]  # role of each voter when it joined (the policy may override)

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

    def left(self, node: NodeId) -> Membership:
        voters = {n: k for n, k in self.voters.items() if n != node}
        roles = {n: r for n, r in self.roles.items() if n != node}
        return Membership(self.version + 1, voters, roles)

    def to_value(self) -> dict:
        return {
            "version": self.version,
            "voters": {n: k for n, k in sorted(self.voters.items())},
            "roles": {n: r for n, r in sorted(self.roles.items())},
        }

    @classmethod
    def from_value(cls, value: Any) -> Membership:
        ok = (
            isinstance(value, dict)
            and set(value) == {"version", "voters", "roles"}
            and type(value["version"]) is int
            and isinstance(value["voters"], dict)
            and isinstance(value["roles"], dict)
            and all(isinstance(k, bytes) and len(k) == 32 for k in value["voters"].values())
            and all(isinstance(r, str) for r in value["roles"].values())
        )
        if not ok:
            raise Refused(Reason.BAD_MEMBERSHIP, "membership is {version, voters, roles}")
        voters = dict(value["voters"])
        if any(node_id_of(k) != n for n, k in voters.items()):
            raise Refused(Reason.BAD_MEMBERSHIP, "a voter id does not match its key")
        if not set(value["roles"]) <= set(voters):
            raise Refused(Reason.BAD_MEMBERSHIP, "a role for a non-voter")
        return cls(value["version"], voters, dict(value["roles"]))


def check_change(current: Membership, value: Any) -> Membership:
    """The next membership must add or remove exactly one voter and keep at least one.

    One at a time, so that every majority of the old voters intersects every majority
    of the new ones (DESIGN §3); raises Refused(BAD_MEMBERSHIP).
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
    return new
