"""Schema versions decided in slots (decision 0037).

A table added to the replicated schema must not reach a node that does not know it: that
node refuses the op (bad_body) and every op built on it, and replication with it stops.
So a node *reads* every table its code knows, but *writes* a table added in version v only
once `schema/<v>` is decided. A voter proposes `schema/<v>` (v = the decided version + 1)
when every member has said, in its peer hello, that it reads v; an acceptor votes for it
only if it reads v itself, `schema/<v-1>` is decided (v > 2), the value names exactly
the tables its own code added in v, and every member has said to *it* that it reads v (a
faulty proposer must not get a version decided that a non-voting member cannot read).
Version 1 (the tables before any of this) needs no slot.

Sans-I/O: the node tells the engine what the members read (`Agreement.members_read`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from controller.replication.schema import TABLES_SINCE

from .errors import Reason, Refused
from .messages import slot_number

__all__ = [
    "SCHEMA",
    "MEMBERS_NAMED_MAX",
    "schema_slot",
    "schema_version_of",
    "schema_value",
    "check_schema",
    "members_behind",
]

SCHEMA = "schema"  # the slot kind; proposed by voters, never through the API
MEMBERS_NAMED_MAX = 4  # members a refusal names (the count says how many in all)


def schema_slot(version: int) -> str:
    return f"{SCHEMA}/{version}"


def schema_version_of(slot: str) -> int | None:
    return slot_number(slot, SCHEMA, least=2)


def schema_value(version: int) -> dict[str, Any]:
    """What `schema/<version>` decides: the version and the tables it adds."""
    return {"version": version,
            "tables": sorted(t for t, v in TABLES_SINCE.items() if v == version)}


def members_behind(version: int, others: Mapping[str, int]) -> list[str]:
    """The members (by id, sorted) that did not say they read `version`: what each one
    said in its peer hello, 0 for one that has said nothing yet."""
    return sorted(n for n, reads in others.items() if reads < version)


def check_schema(
    slot: str, value: Any, reads: int, decided: int, others: Mapping[str, int]
) -> None:
    """Refused unless this node (reading up to `reads`, with `decided` the highest decided
    version, and `others` what every other member said it reads) may vote for `value` in
    `slot`. An acceptor passes the members it has heard (older code says 0): one heard
    reading less refuses the version; the proposer checked every member (decision 0037)."""
    version = schema_version_of(slot)
    if version is None:
        raise Refused(Reason.BAD_SCHEMA, f"{slot}: not schema/<v>, v >= 2")
    if version > reads:
        raise Refused(Reason.SCHEMA_AHEAD, f"{slot}: this node reads schema up to {reads}")
    if version != decided + 1:
        raise Refused(Reason.BAD_SCHEMA, f"{slot}: schema/{decided + 1} comes first")
    if value != schema_value(version):
        raise Refused(Reason.BAD_SCHEMA, f"{slot}: not the tables this node adds in {version}")
    behind = members_behind(version, others)
    if behind:
        named = ", ".join(
            f"{n[:8]} ({f'reads {others[n]}' if others[n] else 'older code or not heard'})"
            for n in behind[:MEMBERS_NAMED_MAX]
        )
        if len(behind) > MEMBERS_NAMED_MAX:
            named += f" and {len(behind) - MEMBERS_NAMED_MAX} more"
        raise Refused(Reason.MEMBER_BEHIND, f"{slot}: not read by member(s) {named}")
