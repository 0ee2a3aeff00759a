from slipway.common.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetRackRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetRackResponse(_message.Message):
    __slots__ = ("name", "version", "archive_address", "metadata_address", "registry_address", "registry_host")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ARCHIVE_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    METADATA_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    REGISTRY_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    REGISTRY_HOST_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    archive_address: str
    metadata_address: str
    registry_address: str
    registry_host: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., archive_address: _Optional[str] = ..., metadata_address: _Optional[str] = ..., registry_address: _Optional[str] = ..., registry_host: _Optional[str] = ...) -> None: ...

class StartBuildRequest(_message.Message):
    __slots__ = ("app", "archive", "description", "manifest", "no_cache", "development", "build_args", "git_sha")
    class BuildArgsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    APP_FIELD_NUMBER: _ClassVar[int]
    ARCHIVE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    NO_CACHE_FIELD_NUMBER: _ClassVar[int]
    DEVELOPMENT_FIELD_NUMBER: _ClassVar[int]
    BUILD_ARGS_FIELD_NUMBER: _ClassVar[int]
    GIT_SHA_FIELD_NUMBER: _ClassVar[int]
    app: str
    archive: str
    description: str
    manifest: str
    no_cache: bool
    development: bool
    build_args: _containers.ScalarMap[str, str]
    git_sha: str
    def __init__(self, app: _Optional[str] = ..., archive: _Optional[str] = ..., description: _Optional[str] = ..., manifest: _Optional[str] = ..., no_cache: _Optional[bool] = ..., development: _Optional[bool] = ..., build_args: _Optional[_Mapping[str, str]] = ..., git_sha: _Optional[str] = ...) -> None: ...

class StartBuildResponse(_message.Message):
    __slots__ = ("build",)
    BUILD_FIELD_NUMBER: _ClassVar[int]
    build: _common_pb2.Build
    def __init__(self, build: _Optional[_Union[_common_pb2.Build, _Mapping]] = ...) -> None: ...

class FollowStart(_message.Message):
    __slots__ = ("build", "offset")
    BUILD_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    build: str
    offset: int
    def __init__(self, build: _Optional[str] = ..., offset: _Optional[int] = ...) -> None: ...

class FollowAck(_message.Message):
    __slots__ = ("offset",)
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    offset: int
    def __init__(self, offset: _Optional[int] = ...) -> None: ...

class FollowCancel(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class FollowBuildRequest(_message.Message):
    __slots__ = ("start", "ack", "cancel")
    START_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    CANCEL_FIELD_NUMBER: _ClassVar[int]
    start: FollowStart
    ack: FollowAck
    cancel: FollowCancel
    def __init__(self, start: _Optional[_Union[FollowStart, _Mapping]] = ..., ack: _Optional[_Union[FollowAck, _Mapping]] = ..., cancel: _Optional[_Union[FollowCancel, _Mapping]] = ...) -> None: ...

class FollowBuildResponse(_message.Message):
    __slots__ = ("build", "line")
    BUILD_FIELD_NUMBER: _ClassVar[int]
    LINE_FIELD_NUMBER: _ClassVar[int]
    build: _common_pb2.Build
    line: _common_pb2.LogLine
    def __init__(self, build: _Optional[_Union[_common_pb2.Build, _Mapping]] = ..., line: _Optional[_Union[_common_pb2.LogLine, _Mapping]] = ...) -> None: ...

class CancelBuildRequest(_message.Message):
    __slots__ = ("build", "app")
    BUILD_FIELD_NUMBER: _ClassVar[int]
    APP_FIELD_NUMBER: _ClassVar[int]
    build: str
    app: str
    def __init__(self, build: _Optional[str] = ..., app: _Optional[str] = ...) -> None: ...

class CancelBuildResponse(_message.Message):
    __slots__ = ("build",)
    BUILD_FIELD_NUMBER: _ClassVar[int]
    build: _common_pb2.Build
    def __init__(self, build: _Optional[_Union[_common_pb2.Build, _Mapping]] = ...) -> None: ...
