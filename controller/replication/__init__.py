"""Replicated database core: signed op DAG, CRDT row merge, sync, digests (sans-I/O).

Nothing here does I/O, reads a clock or draws global randomness: time arrives as `now_ms`,
chance as an injected random.Random, and effects leave through Replica.ready().
"""

from .crdt import ColumnVersion, RowState, row_version_bytes
from .digest import IDENTITY_POINT, Ecmh, point_of
from .encoding import decode, encode
from .errors import Reason, Rejected, ReplicationError, UsageError
from .hlc import HybridClock, hlc_pack, hlc_wall_ms
from .identity import Genesis, Identity, NodeId, decode_genesis, make_genesis, node_id_of
from .messages import (
    Message,
    OpBatch,
    Outbound,
    SyncRequest,
    VersionVector,
    decode_message,
    encode_message,
)
from .op import ROWS, CustomBody, Op, OpId, RowMutation, RowsBody, decode_op, sign_op
from .policy import (
    INVITE,
    CausalPast,
    Invitation,
    InvitePolicy,
    ObservingPolicy,
    Policy,
    StaticPolicy,
    invitation_data,
    parse_invitation,
)
from .replica import (
    Behind,
    Compaction,
    Config,
    Delete,
    LogError,
    Mutation,
    RandomSource,
    Ready,
    Replica,
    RowUpdate,
    Upsert,
    Verify,
)
from .schema import DEFAULT_SCHEMA, Column, Schema, Table, Value

__all__ = [
    "CausalPast",
    "Column",
    "ColumnVersion",
    "Config",
    "CustomBody",
    "DEFAULT_SCHEMA",
    "Delete",
    "Ecmh",
    "Genesis",
    "HybridClock",
    "IDENTITY_POINT",
    "INVITE",
    "Identity",
    "Invitation",
    "InvitePolicy",
    "LogError",
    "Message",
    "Mutation",
    "NodeId",
    "ObservingPolicy",
    "Op",
    "OpBatch",
    "OpId",
    "Outbound",
    "Policy",
    "ROWS",
    "RandomSource",
    "Ready",
    "Compaction",
    "Behind",
    "Reason",
    "Rejected",
    "Replica",
    "ReplicationError",
    "RowMutation",
    "RowState",
    "RowUpdate",
    "RowsBody",
    "Schema",
    "StaticPolicy",
    "SyncRequest",
    "Table",
    "Upsert",
    "UsageError",
    "Value",
    "VersionVector",
    "Verify",
    "decode",
    "decode_genesis",
    "decode_message",
    "decode_op",
    "encode",
    "encode_message",
    "hlc_pack",
    "hlc_wall_ms",
    "invitation_data",
    "make_genesis",
    "node_id_of",
    "parse_invitation",
    "point_of",
    "row_version_bytes",
    "sign_op",
]
