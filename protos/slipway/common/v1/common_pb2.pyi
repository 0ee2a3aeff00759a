from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class BuildStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BUILD_STATUS_UNSPECIFIED: _ClassVar[BuildStatus]
    BUILD_STATUS_CREATED: _ClassVar[BuildStatus]
    BUILD_STATUS_RUNNING: _ClassVar[BuildStatus]
    BUILD_STATUS_COMPLETE: _ClassVar[BuildStatus]
    BUILD_STATUS_FAILED: _ClassVar[BuildStatus]
    BUILD_STATUS_CANCELLED: _ClassVar[BuildStatus]
BUILD_STATUS_UNSPECIFIED: BuildStatus
BUILD_STATUS_CREATED: BuildStatus
BUILD_STATUS_RUNNING: BuildStatus
BUILD_STATUS_COMPLETE: BuildStatus
BUILD_STATUS_FAILED: BuildStatus
BUILD_STATUS_CANCELLED: BuildStatus

class Chunk(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: _Optional[bytes] = ...) -> None: ...

class App(_message.Message):
    __slots__ = ("name", "created", "release")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    RELEASE_FIELD_NUMBER: _ClassVar[int]
    name: str
    created: float
    release: str
    def __init__(self, name: _Optional[str] = ..., created: _Optional[float] = ..., release: _Optional[str] = ...) -> None: ...

class Build(_message.Message):
    __slots__ = ("id", "app", "status", "description", "release", "manifest", "entrypoint", "git_sha", "reason", "created", "started", "ended", "archive")
    ID_FIELD_NUMBER: _ClassVar[int]
    APP_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    RELEASE_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    ENTRYPOINT_FIELD_NUMBER: _ClassVar[int]
    GIT_SHA_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    STARTED_FIELD_NUMBER: _ClassVar[int]
    ENDED_FIELD_NUMBER: _ClassVar[int]
    ARCHIVE_FIELD_NUMBER: _ClassVar[int]
    id: str
    app: str
    status: BuildStatus
    description: str
    release: str
    manifest: str
    entrypoint: str
    git_sha: str
    reason: str
    created: float
    started: float
    ended: float
    archive: str
    def __init__(self, id: _Optional[str] = ..., app: _Optional[str] = ..., status: _Optional[_Union[BuildStatus, str]] = ..., description: _Optional[str] = ..., release: _Optional[str] = ..., manifest: _Optional[str] = ..., entrypoint: _Optional[str] = ..., git_sha: _Optional[str] = ..., reason: _Optional[str] = ..., created: _Optional[float] = ..., started: _Optional[float] = ..., ended: _Optional[float] = ..., archive: _Optional[str] = ...) -> None: ...

class Release(_message.Message):
    __slots__ = ("id", "app", "build", "env", "manifest", "description", "created")
    class EnvEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    APP_FIELD_NUMBER: _ClassVar[int]
    BUILD_FIELD_NUMBER: _ClassVar[int]
    ENV_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    id: str
    app: str
    build: str
    env: _containers.ScalarMap[str, str]
    manifest: str
    description: str
    created: float
    def __init__(self, id: _Optional[str] = ..., app: _Optional[str] = ..., build: _Optional[str] = ..., env: _Optional[_Mapping[str, str]] = ..., manifest: _Optional[str] = ..., description: _Optional[str] = ..., created: _Optional[float] = ...) -> None: ...

class LogLine(_message.Message):
    __slots__ = ("offset", "text", "time")
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    offset: int
    text: str
    time: float
    def __init__(self, offset: _Optional[int] = ..., text: _Optional[str] = ..., time: _Optional[float] = ...) -> None: ...
