"""What a client's token role may write and propose: the replicated access policy in force.

With the agreement layer on, every write (rows per table) and every proposal (per slot kind)
is checked against the access policy this node holds now: `genesis.policy["access"]`
(version 0) or the newest decided `policy/v<n>`. The token's role (admin, operator,
viewer) is looked up in the policy's `tables` and `slots` grants. With agreement off the
fixed rules of decision 0020 apply (writes need operator; operators propose master,
placement, alloc and service slots, admins any kind). Decision 0034.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from controller.replication.schema import FLOW_ERRORS, FLOW_STATE, INTERNAL, RESERVED_TABLES

from .auth import Denied
from .tokens import Role

__all__ = ["AccessCheck", "FIXED_OPERATOR_KINDS"]

ANY = "*"  # the policy's wildcard (controller/agreement/rbac.py)
_RESERVED_WHY = {
    INTERNAL: "table 'internal' is reserved for the nodes (tokens, peer addresses, lineages "
    "met, markers): no client writes it; tokens are managed with AdminService",
    FLOW_ERRORS: "table 'flow_errors' is written by the nodes from their controllers' "
    "reports (LocalService.ReportTopology), not by clients",
    FLOW_STATE: "table 'flow_state' is written by the nodes from their controllers' audits "
    "(LocalService.ReportTopology), not by clients",
    "conflicts": "table 'conflicts' is the reunion's report, written by the nodes alone",
}
assert set(_RESERVED_WHY) == RESERVED_TABLES
FIXED_OPERATOR_KINDS = frozenset({"master", "placement", "alloc", "service"})


class AccessCheck:
    """policy_of() -> the AccessPolicy in force, or None when agreement is off."""

    def __init__(self, policy_of: Callable[[], Any]) -> None:
        self.policy_of = policy_of

    def write(self, role: Role, tables: Iterable[str]) -> None:
        """Refuse (Denied permission_denied) unless role may write every table.

        Reserved tables (controller/replication/reserved.py) are written by nodes alone,
        whatever the role and the policy: a client row must never steer a node.
        """
        policy = self.policy_of()
        for table in sorted(set(tables)):
            if table in RESERVED_TABLES:
                raise Denied("permission_denied", _RESERVED_WHY[table])
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

    def report(self, role: Role, what: str) -> None:
        """A controller's or agent's report the node records in a reserved table (flow
        errors, flow statistics): operators and admins only."""
        if role < Role.OPERATOR:
            raise Denied("permission_denied", f"role {role.label} may not report {what}")

    def tokens(self, role: Role) -> None:
        """Creating and revoking tokens (AdminService): admins only, whatever the policy
        (tokens are the identities roles hang on; an operator must not mint an admin)."""
        if role < Role.ADMIN:
            raise Denied(
                "permission_denied",
                f"role {role.label} may not create or revoke tokens: admins only",
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
