from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Ack(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ACK_UNSPECIFIED: _ClassVar[Ack]
    ACK_LOCAL: _ClassVar[Ack]
    ACK_QUORUM: _ClassVar[Ack]
ACK_UNSPECIFIED: Ack
ACK_LOCAL: Ack
ACK_QUORUM: Ack

class Value(_message.Message):
    __slots__ = ("int_value", "real_value", "text_value", "blob_value", "bool_value")
    INT_VALUE_FIELD_NUMBER: _ClassVar[int]
    REAL_VALUE_FIELD_NUMBER: _ClassVar[int]
    TEXT_VALUE_FIELD_NUMBER: _ClassVar[int]
    BLOB_VALUE_FIELD_NUMBER: _ClassVar[int]
    BOOL_VALUE_FIELD_NUMBER: _ClassVar[int]
    int_value: int
    real_value: float
    text_value: str
    blob_value: bytes
    bool_value: bool
    def __init__(self, int_value: _Optional[int] = ..., real_value: _Optional[float] = ..., text_value: _Optional[str] = ..., blob_value: _Optional[bytes] = ..., bool_value: _Optional[bool] = ...) -> None: ...

class Row(_message.Message):
    __slots__ = ("table", "key", "values")
    class ValuesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Value
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Value, _Mapping]] = ...) -> None: ...
    TABLE_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    table: str
    key: _containers.RepeatedCompositeFieldContainer[Value]
    values: _containers.MessageMap[str, Value]
    def __init__(self, table: _Optional[str] = ..., key: _Optional[_Iterable[_Union[Value, _Mapping]]] = ..., values: _Optional[_Mapping[str, Value]] = ...) -> None: ...

class GetStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Status(_message.Message):
    __slots__ = ("node_id", "cluster_id", "cluster_name", "synod_version", "version_vector", "state_digest", "op_digest", "ops", "members", "peers_up", "counters", "uptime_s", "schema_reads", "schema_decided")
    class VersionVectorEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class CountersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_NAME_FIELD_NUMBER: _ClassVar[int]
    SYNOD_VERSION_FIELD_NUMBER: _ClassVar[int]
    VERSION_VECTOR_FIELD_NUMBER: _ClassVar[int]
    STATE_DIGEST_FIELD_NUMBER: _ClassVar[int]
    OP_DIGEST_FIELD_NUMBER: _ClassVar[int]
    OPS_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    PEERS_UP_FIELD_NUMBER: _ClassVar[int]
    COUNTERS_FIELD_NUMBER: _ClassVar[int]
    UPTIME_S_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_READS_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_DECIDED_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    cluster_id: str
    cluster_name: str
    synod_version: str
    version_vector: _containers.ScalarMap[str, int]
    state_digest: bytes
    op_digest: bytes
    ops: int
    members: int
    peers_up: int
    counters: _containers.ScalarMap[str, int]
    uptime_s: float
    schema_reads: int
    schema_decided: int
    def __init__(self, node_id: _Optional[str] = ..., cluster_id: _Optional[str] = ..., cluster_name: _Optional[str] = ..., synod_version: _Optional[str] = ..., version_vector: _Optional[_Mapping[str, int]] = ..., state_digest: _Optional[bytes] = ..., op_digest: _Optional[bytes] = ..., ops: _Optional[int] = ..., members: _Optional[int] = ..., peers_up: _Optional[int] = ..., counters: _Optional[_Mapping[str, int]] = ..., uptime_s: _Optional[float] = ..., schema_reads: _Optional[int] = ..., schema_decided: _Optional[int] = ...) -> None: ...

class ListMembersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Member(_message.Message):
    __slots__ = ("node_id", "address", "up", "self", "version_vector", "last_seen_ms_ago")
    class VersionVectorEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    UP_FIELD_NUMBER: _ClassVar[int]
    SELF_FIELD_NUMBER: _ClassVar[int]
    VERSION_VECTOR_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_MS_AGO_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    address: str
    up: bool
    self: bool
    version_vector: _containers.ScalarMap[str, int]
    last_seen_ms_ago: int
    def __init__(self_, node_id: _Optional[str] = ..., address: _Optional[str] = ..., up: _Optional[bool] = ..., self: _Optional[bool] = ..., version_vector: _Optional[_Mapping[str, int]] = ..., last_seen_ms_ago: _Optional[int] = ...) -> None: ...

class ListMembersResponse(_message.Message):
    __slots__ = ("members",)
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    members: _containers.RepeatedCompositeFieldContainer[Member]
    def __init__(self, members: _Optional[_Iterable[_Union[Member, _Mapping]]] = ...) -> None: ...

class GetDigestRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Digest(_message.Message):
    __slots__ = ("node_id", "state_digest", "op_digest", "ops")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_DIGEST_FIELD_NUMBER: _ClassVar[int]
    OP_DIGEST_FIELD_NUMBER: _ClassVar[int]
    OPS_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    state_digest: bytes
    op_digest: bytes
    ops: int
    def __init__(self, node_id: _Optional[str] = ..., state_digest: _Optional[bytes] = ..., op_digest: _Optional[bytes] = ..., ops: _Optional[int] = ...) -> None: ...

class GetSchemaRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Column(_message.Message):
    __slots__ = ("name", "type", "primary_key")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_KEY_FIELD_NUMBER: _ClassVar[int]
    name: str
    type: str
    primary_key: bool
    def __init__(self, name: _Optional[str] = ..., type: _Optional[str] = ..., primary_key: _Optional[bool] = ...) -> None: ...

class Table(_message.Message):
    __slots__ = ("name", "columns")
    NAME_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    name: str
    columns: _containers.RepeatedCompositeFieldContainer[Column]
    def __init__(self, name: _Optional[str] = ..., columns: _Optional[_Iterable[_Union[Column, _Mapping]]] = ...) -> None: ...

class Schema(_message.Message):
    __slots__ = ("tables",)
    TABLES_FIELD_NUMBER: _ClassVar[int]
    tables: _containers.RepeatedCompositeFieldContainer[Table]
    def __init__(self, tables: _Optional[_Iterable[_Union[Table, _Mapping]]] = ...) -> None: ...

class ListConflictsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Conflict(_message.Message):
    __slots__ = ("kind", "description", "name", "key", "column", "kept", "kept_author", "kept_hlc", "kept_lineage", "lost", "lost_author", "lost_hlc", "lost_lineage")
    KIND_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    COLUMN_FIELD_NUMBER: _ClassVar[int]
    KEPT_FIELD_NUMBER: _ClassVar[int]
    KEPT_AUTHOR_FIELD_NUMBER: _ClassVar[int]
    KEPT_HLC_FIELD_NUMBER: _ClassVar[int]
    KEPT_LINEAGE_FIELD_NUMBER: _ClassVar[int]
    LOST_FIELD_NUMBER: _ClassVar[int]
    LOST_AUTHOR_FIELD_NUMBER: _ClassVar[int]
    LOST_HLC_FIELD_NUMBER: _ClassVar[int]
    LOST_LINEAGE_FIELD_NUMBER: _ClassVar[int]
    kind: str
    description: str
    name: str
    key: str
    column: str
    kept: str
    kept_author: str
    kept_hlc: int
    kept_lineage: str
    lost: str
    lost_author: str
    lost_hlc: int
    lost_lineage: str
    def __init__(self, kind: _Optional[str] = ..., description: _Optional[str] = ..., name: _Optional[str] = ..., key: _Optional[str] = ..., column: _Optional[str] = ..., kept: _Optional[str] = ..., kept_author: _Optional[str] = ..., kept_hlc: _Optional[int] = ..., kept_lineage: _Optional[str] = ..., lost: _Optional[str] = ..., lost_author: _Optional[str] = ..., lost_hlc: _Optional[int] = ..., lost_lineage: _Optional[str] = ...) -> None: ...

class ListConflictsResponse(_message.Message):
    __slots__ = ("conflicts",)
    CONFLICTS_FIELD_NUMBER: _ClassVar[int]
    conflicts: _containers.RepeatedCompositeFieldContainer[Conflict]
    def __init__(self, conflicts: _Optional[_Iterable[_Union[Conflict, _Mapping]]] = ...) -> None: ...

class PutRequest(_message.Message):
    __slots__ = ("rows", "ack", "timeout_ms")
    ROWS_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    rows: _containers.RepeatedCompositeFieldContainer[Row]
    ack: Ack
    timeout_ms: int
    def __init__(self, rows: _Optional[_Iterable[_Union[Row, _Mapping]]] = ..., ack: _Optional[_Union[Ack, str]] = ..., timeout_ms: _Optional[int] = ...) -> None: ...

class DeleteRequest(_message.Message):
    __slots__ = ("table", "keys", "ack", "timeout_ms")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    table: str
    keys: _containers.RepeatedCompositeFieldContainer[KeyList]
    ack: Ack
    timeout_ms: int
    def __init__(self, table: _Optional[str] = ..., keys: _Optional[_Iterable[_Union[KeyList, _Mapping]]] = ..., ack: _Optional[_Union[Ack, str]] = ..., timeout_ms: _Optional[int] = ...) -> None: ...

class KeyList(_message.Message):
    __slots__ = ("key",)
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: _containers.RepeatedCompositeFieldContainer[Value]
    def __init__(self, key: _Optional[_Iterable[_Union[Value, _Mapping]]] = ...) -> None: ...

class WriteResponse(_message.Message):
    __slots__ = ("op_id", "seq", "ack", "holders")
    OP_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    HOLDERS_FIELD_NUMBER: _ClassVar[int]
    op_id: str
    seq: int
    ack: Ack
    holders: int
    def __init__(self, op_id: _Optional[str] = ..., seq: _Optional[int] = ..., ack: _Optional[_Union[Ack, str]] = ..., holders: _Optional[int] = ...) -> None: ...

class GetRequest(_message.Message):
    __slots__ = ("table", "key")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    table: str
    key: _containers.RepeatedCompositeFieldContainer[Value]
    def __init__(self, table: _Optional[str] = ..., key: _Optional[_Iterable[_Union[Value, _Mapping]]] = ...) -> None: ...

class GetResponse(_message.Message):
    __slots__ = ("found", "row")
    FOUND_FIELD_NUMBER: _ClassVar[int]
    ROW_FIELD_NUMBER: _ClassVar[int]
    found: bool
    row: Row
    def __init__(self, found: _Optional[bool] = ..., row: _Optional[_Union[Row, _Mapping]] = ...) -> None: ...

class ListRequest(_message.Message):
    __slots__ = ("table", "key_prefix", "limit")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    KEY_PREFIX_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    table: str
    key_prefix: _containers.RepeatedCompositeFieldContainer[Value]
    limit: int
    def __init__(self, table: _Optional[str] = ..., key_prefix: _Optional[_Iterable[_Union[Value, _Mapping]]] = ..., limit: _Optional[int] = ...) -> None: ...

class ListResponse(_message.Message):
    __slots__ = ("rows", "truncated")
    ROWS_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    rows: _containers.RepeatedCompositeFieldContainer[Row]
    truncated: bool
    def __init__(self, rows: _Optional[_Iterable[_Union[Row, _Mapping]]] = ..., truncated: _Optional[bool] = ...) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ("table", "changes_only")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    CHANGES_ONLY_FIELD_NUMBER: _ClassVar[int]
    table: str
    changes_only: bool
    def __init__(self, table: _Optional[str] = ..., changes_only: _Optional[bool] = ...) -> None: ...

class RowEvent(_message.Message):
    __slots__ = ("row", "deleted", "snapshot")
    ROW_FIELD_NUMBER: _ClassVar[int]
    DELETED_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    row: Row
    deleted: bool
    snapshot: bool
    def __init__(self, row: _Optional[_Union[Row, _Mapping]] = ..., deleted: _Optional[bool] = ..., snapshot: _Optional[bool] = ...) -> None: ...

class QueryRequest(_message.Message):
    __slots__ = ("sql", "params", "row_limit")
    SQL_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    ROW_LIMIT_FIELD_NUMBER: _ClassVar[int]
    sql: str
    params: _containers.RepeatedCompositeFieldContainer[Value]
    row_limit: int
    def __init__(self, sql: _Optional[str] = ..., params: _Optional[_Iterable[_Union[Value, _Mapping]]] = ..., row_limit: _Optional[int] = ...) -> None: ...

class QueryResponse(_message.Message):
    __slots__ = ("columns", "rows")
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    columns: _containers.RepeatedScalarFieldContainer[str]
    rows: _containers.RepeatedCompositeFieldContainer[QueryRow]
    def __init__(self, columns: _Optional[_Iterable[str]] = ..., rows: _Optional[_Iterable[_Union[QueryRow, _Mapping]]] = ...) -> None: ...

class QueryRow(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedCompositeFieldContainer[Value]
    def __init__(self, values: _Optional[_Iterable[_Union[Value, _Mapping]]] = ...) -> None: ...

class ProposeRequest(_message.Message):
    __slots__ = ("slot", "value", "timeout_ms")
    SLOT_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    slot: str
    value: bytes
    timeout_ms: int
    def __init__(self, slot: _Optional[str] = ..., value: _Optional[bytes] = ..., timeout_ms: _Optional[int] = ...) -> None: ...

class GetSlotRequest(_message.Message):
    __slots__ = ("slot",)
    SLOT_FIELD_NUMBER: _ClassVar[int]
    slot: str
    def __init__(self, slot: _Optional[str] = ...) -> None: ...

class WatchSlotsRequest(_message.Message):
    __slots__ = ("prefix",)
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    prefix: str
    def __init__(self, prefix: _Optional[str] = ...) -> None: ...

class Slot(_message.Message):
    __slots__ = ("slot", "decided", "value", "ballot", "membership_version", "voters", "certificate")
    SLOT_FIELD_NUMBER: _ClassVar[int]
    DECIDED_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    BALLOT_FIELD_NUMBER: _ClassVar[int]
    MEMBERSHIP_VERSION_FIELD_NUMBER: _ClassVar[int]
    VOTERS_FIELD_NUMBER: _ClassVar[int]
    CERTIFICATE_FIELD_NUMBER: _ClassVar[int]
    slot: str
    decided: bool
    value: bytes
    ballot: str
    membership_version: int
    voters: _containers.RepeatedScalarFieldContainer[str]
    certificate: bytes
    def __init__(self, slot: _Optional[str] = ..., decided: _Optional[bool] = ..., value: _Optional[bytes] = ..., ballot: _Optional[str] = ..., membership_version: _Optional[int] = ..., voters: _Optional[_Iterable[str]] = ..., certificate: _Optional[bytes] = ...) -> None: ...

class GetLineageRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Lineage(_message.Message):
    __slots__ = ("cluster_id", "name", "root", "ancestors", "fork_vector", "left", "confirmed_by", "voters")
    class ForkVectorEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ROOT_FIELD_NUMBER: _ClassVar[int]
    ANCESTORS_FIELD_NUMBER: _ClassVar[int]
    FORK_VECTOR_FIELD_NUMBER: _ClassVar[int]
    LEFT_FIELD_NUMBER: _ClassVar[int]
    CONFIRMED_BY_FIELD_NUMBER: _ClassVar[int]
    VOTERS_FIELD_NUMBER: _ClassVar[int]
    cluster_id: str
    name: str
    root: str
    ancestors: _containers.RepeatedScalarFieldContainer[str]
    fork_vector: _containers.ScalarMap[str, int]
    left: _containers.RepeatedScalarFieldContainer[str]
    confirmed_by: str
    voters: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, cluster_id: _Optional[str] = ..., name: _Optional[str] = ..., root: _Optional[str] = ..., ancestors: _Optional[_Iterable[str]] = ..., fork_vector: _Optional[_Mapping[str, int]] = ..., left: _Optional[_Iterable[str]] = ..., confirmed_by: _Optional[str] = ..., voters: _Optional[_Iterable[str]] = ...) -> None: ...

class MetLineage(_message.Message):
    __slots__ = ("lineage", "relation", "slot", "decided", "joined", "reported")
    LINEAGE_FIELD_NUMBER: _ClassVar[int]
    RELATION_FIELD_NUMBER: _ClassVar[int]
    SLOT_FIELD_NUMBER: _ClassVar[int]
    DECIDED_FIELD_NUMBER: _ClassVar[int]
    JOINED_FIELD_NUMBER: _ClassVar[int]
    REPORTED_FIELD_NUMBER: _ClassVar[int]
    lineage: Lineage
    relation: str
    slot: str
    decided: str
    joined: bool
    reported: bool
    def __init__(self, lineage: _Optional[_Union[Lineage, _Mapping]] = ..., relation: _Optional[str] = ..., slot: _Optional[str] = ..., decided: _Optional[str] = ..., joined: _Optional[bool] = ..., reported: _Optional[bool] = ...) -> None: ...

class LineageInfo(_message.Message):
    __slots__ = ("lineage", "met")
    LINEAGE_FIELD_NUMBER: _ClassVar[int]
    MET_FIELD_NUMBER: _ClassVar[int]
    lineage: Lineage
    met: _containers.RepeatedCompositeFieldContainer[MetLineage]
    def __init__(self, lineage: _Optional[_Union[Lineage, _Mapping]] = ..., met: _Optional[_Iterable[_Union[MetLineage, _Mapping]]] = ...) -> None: ...

class SecedeRequest(_message.Message):
    __slots__ = ("voters", "confirmed_by")
    VOTERS_FIELD_NUMBER: _ClassVar[int]
    CONFIRMED_BY_FIELD_NUMBER: _ClassVar[int]
    voters: _containers.RepeatedScalarFieldContainer[str]
    confirmed_by: str
    def __init__(self, voters: _Optional[_Iterable[str]] = ..., confirmed_by: _Optional[str] = ...) -> None: ...

class SecedeResponse(_message.Message):
    __slots__ = ("cluster_id", "genesis", "moved", "unreached")
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    GENESIS_FIELD_NUMBER: _ClassVar[int]
    MOVED_FIELD_NUMBER: _ClassVar[int]
    UNREACHED_FIELD_NUMBER: _ClassVar[int]
    cluster_id: str
    genesis: bytes
    moved: _containers.RepeatedScalarFieldContainer[str]
    unreached: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, cluster_id: _Optional[str] = ..., genesis: _Optional[bytes] = ..., moved: _Optional[_Iterable[str]] = ..., unreached: _Optional[_Iterable[str]] = ...) -> None: ...

class CreateTokenRequest(_message.Message):
    __slots__ = ("role", "description", "expires_ms")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_MS_FIELD_NUMBER: _ClassVar[int]
    role: str
    description: str
    expires_ms: int
    def __init__(self, role: _Optional[str] = ..., description: _Optional[str] = ..., expires_ms: _Optional[int] = ...) -> None: ...

class CreateTokenResponse(_message.Message):
    __slots__ = ("token", "info")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    INFO_FIELD_NUMBER: _ClassVar[int]
    token: str
    info: TokenInfo
    def __init__(self, token: _Optional[str] = ..., info: _Optional[_Union[TokenInfo, _Mapping]] = ...) -> None: ...

class ListTokensRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class TokenInfo(_message.Message):
    __slots__ = ("id", "role", "description", "created_ms", "revoked", "expires_ms", "expired")
    ID_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    CREATED_MS_FIELD_NUMBER: _ClassVar[int]
    REVOKED_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_MS_FIELD_NUMBER: _ClassVar[int]
    EXPIRED_FIELD_NUMBER: _ClassVar[int]
    id: str
    role: str
    description: str
    created_ms: int
    revoked: bool
    expires_ms: int
    expired: bool
    def __init__(self, id: _Optional[str] = ..., role: _Optional[str] = ..., description: _Optional[str] = ..., created_ms: _Optional[int] = ..., revoked: _Optional[bool] = ..., expires_ms: _Optional[int] = ..., expired: _Optional[bool] = ...) -> None: ...

class ListTokensResponse(_message.Message):
    __slots__ = ("tokens",)
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    tokens: _containers.RepeatedCompositeFieldContainer[TokenInfo]
    def __init__(self, tokens: _Optional[_Iterable[_Union[TokenInfo, _Mapping]]] = ...) -> None: ...

class RevokeTokenRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...
