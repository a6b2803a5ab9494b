from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class GetInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class NodeInfo(_message.Message):
    __slots__ = ("synod_version", "os_ken_version", "node_id", "cluster_id", "site")
    SYNOD_VERSION_FIELD_NUMBER: _ClassVar[int]
    OS_KEN_VERSION_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    SITE_FIELD_NUMBER: _ClassVar[int]
    synod_version: str
    os_ken_version: str
    node_id: str
    cluster_id: str
    site: str
    def __init__(self, synod_version: _Optional[str] = ..., os_ken_version: _Optional[str] = ..., node_id: _Optional[str] = ..., cluster_id: _Optional[str] = ..., site: _Optional[str] = ...) -> None: ...
