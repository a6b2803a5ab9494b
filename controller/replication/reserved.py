"""The reserved tables only nodes write, and the key names of the `internal` table.

Node-internal records (tokens, peer addresses, lineage announcements, report markers,
flow statistics, the fork-copy marker) live in the `internal` table, never in a table
users write: a user row must not steer a node (issue 10). `flow_errors` holds what
controllers report through the local API; `conflicts` is the reunion's report. The
node's API refuses every client Put/Delete on a reserved table, whatever the role, and
every receiver checks that an `internal` row has a known key of the right shape
(`check_internal_row`), so a node that signs a malformed one is refused by its peers.

This module is the one place where those names are spelled (docs/node.md lists them).
"""

from __future__ import annotations

from .address import address_problem
from .schema import FLOW_ERRORS, INTERNAL, RESERVED_TABLES, Value

__all__ = [
    "CONFLICTS",
    "FLOW_ERRORS",
    "FORK_COPY_KEY",
    "GENESIS_PREFIX",
    "INTERNAL",
    "PEER_PREFIX",
    "REPORT_PREFIX",
    "RESERVED_TABLES",
    "STATS_PREFIX",
    "TOKEN_PREFIX",
    "check_internal_row",
    "flow_stats_key",
    "genesis_key",
    "peer_key",
    "peer_of_key",
    "report_key",
    "token_key",
]

CONFLICTS = "conflicts"  # the reunion's report (controller/agreement/lineage.py)
assert CONFLICTS in RESERVED_TABLES

TOKEN_PREFIX = "token/"  # token/<id> -> a bearer token's record (role, hash, expiry)
PEER_PREFIX = "peer/"  # peer/<node id> -> the peer address a joined node gave
GENESIS_PREFIX = "genesis/"  # genesis/<cluster id hex> -> another lineage's genesis met
REPORT_PREFIX = "report/"  # report/<cluster id hex> -> the reunion report was written
STATS_PREFIX = "flowstats/"  # flowstats/<dpid> -> a controller's flow statistics
FORK_COPY_KEY = "fork-copy"  # in the last op of a fork copy: the parent's id

_HEX = frozenset("0123456789abcdef")
_TOKEN_ID_CHARS = 16


def token_key(token_id: str) -> str:
    return TOKEN_PREFIX + token_id


def peer_key(node_id: str) -> str:
    return PEER_PREFIX + node_id


def peer_of_key(key: object) -> str | None:
    """The node id an `internal` key "peer/<node id>" names, else None."""
    if isinstance(key, str) and key.startswith(PEER_PREFIX):
        node_id = key[len(PEER_PREFIX):]
        return node_id if _is_hex(node_id, 32) else None
    return None


def genesis_key(cluster_id: bytes) -> str:
    return GENESIS_PREFIX + cluster_id.hex()


def report_key(cluster_id: bytes) -> str:
    return REPORT_PREFIX + cluster_id.hex()


def flow_stats_key(dpid: str) -> str:
    return STATS_PREFIX + dpid


def _is_hex(s: str, n: int) -> bool:
    return len(s) == n and set(s) <= _HEX


def check_internal_row(key: Value, values: dict[str, Value]) -> str | None:
    """Why an `internal` row may not be written (None: it may). Pure: the key's shape and
    the value's size only, so every node answers the same for the same op."""
    if not isinstance(key, str):
        return "internal keys are text"
    value = values.get("value")
    if key == FORK_COPY_KEY:
        return None
    if key.startswith(TOKEN_PREFIX):
        ok = _is_hex(key[len(TOKEN_PREFIX):], _TOKEN_ID_CHARS)
        return None if ok else f"bad token key {key[:80]!r}: token/<16 hex id>"
    if key.startswith(PEER_PREFIX):
        if peer_of_key(key) is None:
            return f"bad peer key {key[:80]!r}: peer/<32 hex node id>"
        if isinstance(value, bytes):
            try:
                problem = address_problem(value.decode())
            except UnicodeDecodeError:
                problem = "not UTF-8"
            if problem is not None:
                return f"bad peer address for {key}: {problem}"
        return None
    if key.startswith((GENESIS_PREFIX, REPORT_PREFIX)):
        rest = key.partition("/")[2]
        return None if _is_hex(rest, 64) else f"bad key {key[:80]!r}: <prefix>/<64 hex id>"
    if key.startswith(STATS_PREFIX):
        return None if _is_hex(key[len(STATS_PREFIX):], 16) else f"bad key {key[:80]!r}"
    return f"unknown internal key {key[:80]!r}"
