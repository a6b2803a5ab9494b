"""What a client's token role may write and propose: the replicated access policy in force.

With the agreement layer on, every write (rows per table) and every proposal (per slot kind)
is checked against the access policy this node holds now: `genesis.policy["access"]`
(version 0) or the newest decided `policy/v<n>`. The token's role (admin, operator,
viewer) is looked up in the policy's `tables` and `slots` grants. With agreement off the
fixed rules of decision 0020 apply (writes need operator; operators propose master,
placement and alloc slots, admins any kind). Decision 0034.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from .auth import Denied
from .tokens import KV_PREFIX as TOKEN_ROWS
from .tokens import Role

__all__ = ["AccessCheck", "FIXED_OPERATOR_KINDS"]

ANY = "*"  # the policy's wildcard (controller/agreement/rbac.py)
FIXED_OPERATOR_KINDS = frozenset({"master", "placement", "alloc"})


class AccessCheck:
    """policy_of() -> the AccessPolicy in force, or None when agreement is off."""

    def __init__(self, policy_of: Callable[[], Any]) -> None:
        self.policy_of = policy_of

    def write(self, role: Role, tables: Iterable[str], token_rows: bool = False) -> None:
        """Refuse (Denied permission_denied) unless role may write every table.

        token_rows: the write touches kv rows `token/...`, which only admins write (tokens
        are the identities roles hang on; an operator must not mint an admin token).
        """
        policy = self.policy_of()
        for table in sorted(set(tables)):
            if table == "conflicts":
                raise Denied(
                    "permission_denied",
                    "table 'conflicts' is the reunion's report, written by the nodes alone",
                )
            if policy is None:
                if role < Role.OPERATOR:
                    raise Denied(
                        "permission_denied",
                        f"role {role.label} may not write table {table!r} "
                        "(fixed rule, agreement off: writes need operator)",
                    )
                continue
            allowed = policy.tables.get(role.label, ())
            if ANY not in allowed and table not in allowed:
                raise Denied(
                    "permission_denied",
                    f"role {role.label} may not write table {table!r} "
                    f"(access policy v{policy.version})",
                )
        if token_rows and role < Role.ADMIN:
            raise Denied(
                "permission_denied",
                f"role {role.label} may not write kv rows {TOKEN_ROWS}*: tokens are created "
                "and revoked by admins (AdminService)",
            )

    def propose(self, role: Role, kind: str) -> None:
        """Refuse (Denied permission_denied) unless role may propose slots of this kind."""
        policy = self.policy_of()
        if policy is None:
            needed = Role.OPERATOR if kind in FIXED_OPERATOR_KINDS else Role.ADMIN
            if role < needed:
                raise Denied(
                    "permission_denied",
                    f"role {role.label} may not propose {kind!r} slots "
                    f"(fixed rule, agreement off: this needs {needed.label})",
                )
            return
        allowed = policy.slots.get(role.label, ())
        if ANY not in allowed and kind not in allowed:
            raise Denied(
                "permission_denied",
                f"role {role.label} may not propose {kind!r} slots "
                f"(access policy v{policy.version})",
            )

    def version(self) -> int | None:
        policy = self.policy_of()
        return None if policy is None else policy.version


def touches_token_rows(mutations: Iterable[Any]) -> bool:
    """Does any mutation write a kv row `token/...`?"""
    return any(
        m.table == "kv" and isinstance(m.key[0], str) and m.key[0].startswith(TOKEN_ROWS)
        for m in mutations
    )


__all__ += ["touches_token_rows"]
