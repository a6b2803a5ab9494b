from synod.v1 import northbound_pb2 as _northbound_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class WatchFlowsRequest(_message.Message):
    __slots__ = ("dpids",)
    DPIDS_FIELD_NUMBER: _ClassVar[int]
    dpids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, dpids: _Optional[_Iterable[str]] = ...) -> None: ...

class FlowEvent(_message.Message):
    __slots__ = ("flow", "deleted", "snapshot")
    FLOW_FIELD_NUMBER: _ClassVar[int]
    DELETED_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    flow: _northbound_pb2.Row
    deleted: bool
    snapshot: bool
    def __init__(self, flow: _Optional[_Union[_northbound_pb2.Row, _Mapping]] = ..., deleted: _Optional[bool] = ..., snapshot: _Optional[bool] = ...) -> None: ...

class TopologyReport(_message.Message):
    __slots__ = ("rows", "gone")
    ROWS_FIELD_NUMBER: _ClassVar[int]
    GONE_FIELD_NUMBER: _ClassVar[int]
    rows: _containers.RepeatedCompositeFieldContainer[_northbound_pb2.Row]
    gone: _containers.RepeatedCompositeFieldContainer[_northbound_pb2.Row]
    def __init__(self, rows: _Optional[_Iterable[_Union[_northbound_pb2.Row, _Mapping]]] = ..., gone: _Optional[_Iterable[_Union[_northbound_pb2.Row, _Mapping]]] = ...) -> None: ...

class ReportResponse(_message.Message):
    __slots__ = ("op_id", "rows")
    OP_ID_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    op_id: str
    rows: int
    def __init__(self, op_id: _Optional[str] = ..., rows: _Optional[int] = ...) -> None: ...

class FlowStatsReport(_message.Message):
    __slots__ = ("dpid", "flows_installed", "flows_missing", "flows_unexpected", "details")
    DPID_FIELD_NUMBER: _ClassVar[int]
    FLOWS_INSTALLED_FIELD_NUMBER: _ClassVar[int]
    FLOWS_MISSING_FIELD_NUMBER: _ClassVar[int]
    FLOWS_UNEXPECTED_FIELD_NUMBER: _ClassVar[int]
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    dpid: str
    flows_installed: int
    flows_missing: int
    flows_unexpected: int
    details: bytes
    def __init__(self, dpid: _Optional[str] = ..., flows_installed: _Optional[int] = ..., flows_missing: _Optional[int] = ..., flows_unexpected: _Optional[int] = ..., details: _Optional[bytes] = ...) -> None: ...

class WatchServicesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ServiceEvent(_message.Message):
    __slots__ = ("service", "deleted", "snapshot", "placement", "snapshot_done")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    DELETED_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    PLACEMENT_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_DONE_FIELD_NUMBER: _ClassVar[int]
    service: _northbound_pb2.Row
    deleted: bool
    snapshot: bool
    placement: _northbound_pb2.Row
    snapshot_done: bool
    def __init__(self, service: _Optional[_Union[_northbound_pb2.Row, _Mapping]] = ..., deleted: _Optional[bool] = ..., snapshot: _Optional[bool] = ..., placement: _Optional[_Union[_northbound_pb2.Row, _Mapping]] = ..., snapshot_done: _Optional[bool] = ...) -> None: ...

class ServiceStateReport(_message.Message):
    __slots__ = ("service", "state", "generation")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    service: str
    state: str
    generation: int
    def __init__(self, service: _Optional[str] = ..., state: _Optional[str] = ..., generation: _Optional[int] = ...) -> None: ...
