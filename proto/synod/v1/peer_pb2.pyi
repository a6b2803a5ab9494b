from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class HelloRequest(_message.Message):
    __slots__ = ("node_id", "schema_version", "vector_deltas")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    VECTOR_DELTAS_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    schema_version: int
    vector_deltas: bool
    def __init__(self, node_id: _Optional[str] = ..., schema_version: _Optional[int] = ..., vector_deltas: _Optional[bool] = ...) -> None: ...

class HelloResponse(_message.Message):
    __slots__ = ("node_id", "cluster_id", "version_vector", "genesis", "schema_version", "vector_deltas")
    class VersionVectorEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_VECTOR_FIELD_NUMBER: _ClassVar[int]
    GENESIS_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    VECTOR_DELTAS_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    cluster_id: bytes
    version_vector: _containers.ScalarMap[str, int]
    genesis: bytes
    schema_version: int
    vector_deltas: bool
    def __init__(self, node_id: _Optional[str] = ..., cluster_id: _Optional[bytes] = ..., version_vector: _Optional[_Mapping[str, int]] = ..., genesis: _Optional[bytes] = ..., schema_version: _Optional[int] = ..., vector_deltas: _Optional[bool] = ...) -> None: ...

class DeliverRequest(_message.Message):
    __slots__ = ("messages", "vector_changes")
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    VECTOR_CHANGES_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedScalarFieldContainer[bytes]
    vector_changes: bool
    def __init__(self, messages: _Optional[_Iterable[bytes]] = ..., vector_changes: _Optional[bool] = ...) -> None: ...

class DeliverResponse(_message.Message):
    __slots__ = ("version_vector", "rejected", "cluster_id", "vector_changes")
    class VersionVectorEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    VERSION_VECTOR_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    VECTOR_CHANGES_FIELD_NUMBER: _ClassVar[int]
    version_vector: _containers.ScalarMap[str, int]
    rejected: int
    cluster_id: bytes
    vector_changes: bool
    def __init__(self, version_vector: _Optional[_Mapping[str, int]] = ..., rejected: _Optional[int] = ..., cluster_id: _Optional[bytes] = ..., vector_changes: _Optional[bool] = ...) -> None: ...

class SecedeNotice(_message.Message):
    __slots__ = ("genesis",)
    GENESIS_FIELD_NUMBER: _ClassVar[int]
    genesis: bytes
    def __init__(self, genesis: _Optional[bytes] = ...) -> None: ...

class SecedeAck(_message.Message):
    __slots__ = ("cluster_id",)
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    cluster_id: bytes
    def __init__(self, cluster_id: _Optional[bytes] = ...) -> None: ...

class SnapshotRequest(_message.Message):
    __slots__ = ("version_vector",)
    class VersionVectorEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    VERSION_VECTOR_FIELD_NUMBER: _ClassVar[int]
    version_vector: _containers.ScalarMap[str, int]
    def __init__(self, version_vector: _Optional[_Mapping[str, int]] = ...) -> None: ...

class SnapshotRow(_message.Message):
    __slots__ = ("table", "key", "meta", "point")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    META_FIELD_NUMBER: _ClassVar[int]
    POINT_FIELD_NUMBER: _ClassVar[int]
    table: str
    key: bytes
    meta: bytes
    point: bytes
    def __init__(self, table: _Optional[str] = ..., key: _Optional[bytes] = ..., meta: _Optional[bytes] = ..., point: _Optional[bytes] = ...) -> None: ...

class SnapshotChunk(_message.Message):
    __slots__ = ("record", "rows_total", "rows", "last")
    RECORD_FIELD_NUMBER: _ClassVar[int]
    ROWS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    record: bytes
    rows_total: int
    rows: _containers.RepeatedCompositeFieldContainer[SnapshotRow]
    last: bool
    def __init__(self, record: _Optional[bytes] = ..., rows_total: _Optional[int] = ..., rows: _Optional[_Iterable[_Union[SnapshotRow, _Mapping]]] = ..., last: _Optional[bool] = ...) -> None: ...
