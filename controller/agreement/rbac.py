"""The access policy: roles, which role writes which table and proposes which slot kind."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import Reason, Refused

__all__ = [
    "AUTO_MERGE",
    "ROLES",
    "AccessPolicy",
    "policy_slot",
    "policy_version_of",
    "check_policy",
]

ROLES = ("admin", "operator", "node", "viewer")  # most to least privileged
# When a cluster meets another lineage, does it propose `merge` in `reunion/<other>` by
# itself? 'never': only when someone proposes it; 'related': when one lineage seceded
# from the other (an ancestor or a descendant; not siblings, not unrelated clusters).
AUTO_MERGE = ("never", "related")
ANY = "*"
_DEFAULT_TABLES = {"admin": [ANY], "operator": [ANY], "node": [ANY], "viewer": []}
_DEFAULT_SLOTS = {
    "admin": [ANY],
    "operator": ["master", "placement", "alloc", "service"],
    "node": ["master", "placement", "alloc", "service", "reunion"],
    "viewer": [],
}


def policy_slot(version: int) -> str:
    return f"policy/v{version}"


def policy_version_of(slot: str) -> int | None:
    kind, _, rest = slot.partition("/")
    if kind != "policy" or not rest.startswith("v") or not rest[1:].isdigit():
        return None
    return int(rest[1:])


@dataclass(frozen=True)
class AccessPolicy:
    """Version n is decided in `policy/v<n>`; version 0 comes from genesis.policy['access'].

    A principal not named in roles has `default_role` (members are nodes by default).
    """

    version: int = 0
    roles: Mapping[str, str] = field(default_factory=dict)
    tables: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: _tuples(_DEFAULT_TABLES))
    slots: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: _tuples(_DEFAULT_SLOTS))
    default_role: str = "node"
    auto_merge: str = "never"  # one of AUTO_MERGE

    def role(self, principal: str) -> str:
        return self.roles.get(principal, self.default_role)

    def can_write(self, principal: str, table: str) -> bool:
        allowed = self.tables.get(self.role(principal), ())
        return ANY in allowed or table in allowed

    def can_propose(self, principal: str, kind: str) -> bool:
        allowed = self.slots.get(self.role(principal), ())
        return ANY in allowed or kind in allowed

    def to_value(self) -> dict:
        return {
            "version": self.version,
            "roles": dict(sorted(self.roles.items())),
            "tables": {r: list(t) for r, t in sorted(self.tables.items())},
            "slots": {r: list(s) for r, s in sorted(self.slots.items())},
            "default_role": self.default_role,
            "auto_merge": self.auto_merge,
        }

    @classmethod
    def from_value(cls, value: Any, path: str = "policy") -> AccessPolicy:
        """Validate declaratively; unknown keys and roles are refused with their path."""
        if not isinstance(value, dict):
            raise Refused(Reason.BAD_POLICY, f"{path}: a map")
        known = {"version", "roles", "tables", "slots", "default_role", "auto_merge"}
        for key in value:
            if key not in known:
                raise Refused(Reason.BAD_POLICY, f"{path}.{key}: unknown key")
        version = value.get("version", 0)
        default_role = value.get("default_role", "node")
        if type(version) is not int or version < 0:
            raise Refused(Reason.BAD_POLICY, f"{path}.version: a non-negative int")
        if default_role not in ROLES:
            raise Refused(Reason.BAD_POLICY, f"{path}.default_role: one of {ROLES}")
        auto_merge = value.get("auto_merge", "never")
        if auto_merge not in AUTO_MERGE:
            raise Refused(Reason.BAD_POLICY, f"{path}.auto_merge: one of {AUTO_MERGE}")
        roles = value.get("roles", {})
        if not isinstance(roles, dict):
            raise Refused(Reason.BAD_POLICY, f"{path}.roles: a map")
        for who, role in roles.items():
            if not isinstance(who, str) or role not in ROLES:
                raise Refused(Reason.BAD_POLICY, f"{path}.roles.{who}: one of {ROLES}")
        tables = _grants(value.get("tables", _DEFAULT_TABLES), f"{path}.tables")
        slots = _grants(value.get("slots", _DEFAULT_SLOTS), f"{path}.slots")
        return cls(version, dict(roles), tables, slots, default_role, auto_merge)


def _tuples(grants: Mapping[str, list[str]]) -> dict[str, tuple[str, ...]]:
    return {r: tuple(v) for r, v in grants.items()}


def _grants(value: Any, path: str) -> dict[str, tuple[str, ...]]:
    if not isinstance(value, dict):
        raise Refused(Reason.BAD_POLICY, f"{path}: a map")
    for role, names in value.items():
        if role not in ROLES:
            raise Refused(Reason.BAD_POLICY, f"{path}.{role}: unknown role")
        if not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
            raise Refused(Reason.BAD_POLICY, f"{path}.{role}: a list of names")
    return _tuples(value)


def check_policy(
    current: AccessPolicy, value: Any, proposer: str, voters: frozenset[str]
) -> AccessPolicy:
    """A policy change: the next version, an admin among the voters, and no self-grant."""
    new = AccessPolicy.from_value(value)
    if new.version != current.version + 1:
        raise Refused(Reason.BAD_POLICY, f"version {new.version} after {current.version}")
    if not any(new.role(v) == "admin" for v in voters):
        raise Refused(Reason.LOCKOUT, "no voter would be an admin")
    if ROLES.index(new.role(proposer)) < ROLES.index(current.role(proposer)):
        raise Refused(Reason.SELF_GRANT, f"{proposer} may not raise its own role")
    return new
