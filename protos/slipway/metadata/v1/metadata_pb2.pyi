from slipway.common.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CreateAppRequest(_message.Message):
    __slots__ = ("name", "exist_ok")
    NAME_FIELD_NUMBER: _ClassVar[int]
    EXIST_OK_FIELD_NUMBER: _ClassVar[int]
    name: str
    exist_ok: bool
    def __init__(self, name: _Optional[str] = ..., exist_ok: _Optional[bool] = ...) -> None: ...

class CreateAppResponse(_message.Message):
    __slots__ = ("app",)
    APP_FIELD_NUMBER: _ClassVar[int]
    app: _common_pb2.App
    def __init__(self, app: _Optional[_Union[_common_pb2.App, _Mapping]] = ...) -> None: ...

class GetAppRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetAppResponse(_message.Message):
    __slots__ = ("app",)
    APP_FIELD_NUMBER: _ClassVar[int]
    app: _common_pb2.App
    def __init__(self, app: _Optional[_Union[_common_pb2.App, _Mapping]] = ...) -> None: ...

class ListAppsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListAppsResponse(_message.Message):
    __slots__ = ("apps",)
    APPS_FIELD_NUMBER: _ClassVar[int]
    apps: _containers.RepeatedCompositeFieldContainer[_common_pb2.App]
    def __init__(self, apps: _Optional[_Iterable[_Union[_common_pb2.App, _Mapping]]] = ...) -> None: ...

class CreateBuildRequest(_message.Message):
    __slots__ = ("app", "description", "manifest", "git_sha", "archive")
    APP_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    GIT_SHA_FIELD_NUMBER: _ClassVar[int]
    ARCHIVE_FIELD_NUMBER: _ClassVar[int]
    app: str
    description: str
    manifest: str
    git_sha: str
    archive: str
    def __init__(self, app: _Optional[str] = ..., description: _Optional[str] = ..., manifest: _Optional[str] = ..., git_sha: _Optional[str] = ..., archive: _Optional[str] = ...) -> None: ...

class CreateBuildResponse(_message.Message):
    __slots__ = ("build",)
    BUILD_FIELD_NUMBER: _ClassVar[int]
    build: _common_pb2.Build
    def __init__(self, build: _Optional[_Union[_common_pb2.Build, _Mapping]] = ...) -> None: ...

class GetBuildRequest(_message.Message):
    __slots__ = ("id", "app")
    ID_FIELD_NUMBER: _ClassVar[int]
    APP_FIELD_NUMBER: _ClassVar[int]
    id: str
    app: str
    def __init__(self, id: _Optional[str] = ..., app: _Optional[str] = ...) -> None: ...

class GetBuildResponse(_message.Message):
    __slots__ = ("build",)
    BUILD_FIELD_NUMBER: _ClassVar[int]
    build: _common_pb2.Build
    def __init__(self, build: _Optional[_Union[_common_pb2.Build, _Mapping]] = ...) -> None: ...

class ListBuildsRequest(_message.Message):
    __slots__ = ("app", "limit")
    APP_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    app: str
    limit: int
    def __init__(self, app: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class ListBuildsResponse(_message.Message):
    __slots__ = ("builds",)
    BUILDS_FIELD_NUMBER: _ClassVar[int]
    builds: _containers.RepeatedCompositeFieldContainer[_common_pb2.Build]
    def __init__(self, builds: _Optional[_Iterable[_Union[_common_pb2.Build, _Mapping]]] = ...) -> None: ...

class UpdateBuildRequest(_message.Message):
    __slots__ = ("build", "fields")
    BUILD_FIELD_NUMBER: _ClassVar[int]
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    build: _common_pb2.Build
    fields: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, build: _Optional[_Union[_common_pb2.Build, _Mapping]] = ..., fields: _Optional[_Iterable[str]] = ...) -> None: ...

class UpdateBuildResponse(_message.Message):
    __slots__ = ("build",)
    BUILD_FIELD_NUMBER: _ClassVar[int]
    build: _common_pb2.Build
    def __init__(self, build: _Optional[_Union[_common_pb2.Build, _Mapping]] = ...) -> None: ...

class FailRunningBuildsRequest(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: str
    def __init__(self, reason: _Optional[str] = ...) -> None: ...

class FailRunningBuildsResponse(_message.Message):
    __slots__ = ("ids",)
    IDS_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, ids: _Optional[_Iterable[str]] = ...) -> None: ...

class CreateReleaseRequest(_message.Message):
    __slots__ = ("app", "build", "env", "manifest", "description", "inherit_env")
    class EnvEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    APP_FIELD_NUMBER: _ClassVar[int]
    BUILD_FIELD_NUMBER: _ClassVar[int]
    ENV_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    INHERIT_ENV_FIELD_NUMBER: _ClassVar[int]
    app: str
    build: str
    env: _containers.ScalarMap[str, str]
    manifest: str
    description: str
    inherit_env: bool
    def __init__(self, app: _Optional[str] = ..., build: _Optional[str] = ..., env: _Optional[_Mapping[str, str]] = ..., manifest: _Optional[str] = ..., description: _Optional[str] = ..., inherit_env: _Optional[bool] = ...) -> None: ...

class CreateReleaseResponse(_message.Message):
    __slots__ = ("release",)
    RELEASE_FIELD_NUMBER: _ClassVar[int]
    release: _common_pb2.Release
    def __init__(self, release: _Optional[_Union[_common_pb2.Release, _Mapping]] = ...) -> None: ...

class GetReleaseRequest(_message.Message):
    __slots__ = ("id", "app")
    ID_FIELD_NUMBER: _ClassVar[int]
    APP_FIELD_NUMBER: _ClassVar[int]
    id: str
    app: str
    def __init__(self, id: _Optional[str] = ..., app: _Optional[str] = ...) -> None: ...

class GetReleaseResponse(_message.Message):
    __slots__ = ("release",)
    RELEASE_FIELD_NUMBER: _ClassVar[int]
    release: _common_pb2.Release
    def __init__(self, release: _Optional[_Union[_common_pb2.Release, _Mapping]] = ...) -> None: ...

class ListReleasesRequest(_message.Message):
    __slots__ = ("app", "limit")
    APP_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    app: str
    limit: int
    def __init__(self, app: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class ListReleasesResponse(_message.Message):
    __slots__ = ("releases",)
    RELEASES_FIELD_NUMBER: _ClassVar[int]
    releases: _containers.RepeatedCompositeFieldContainer[_common_pb2.Release]
    def __init__(self, releases: _Optional[_Iterable[_Union[_common_pb2.Release, _Mapping]]] = ...) -> None: ...

class PromoteReleaseRequest(_message.Message):
    __slots__ = ("app", "id")
    APP_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    app: str
    id: str
    def __init__(self, app: _Optional[str] = ..., id: _Optional[str] = ...) -> None: ...

class PromoteReleaseResponse(_message.Message):
    __slots__ = ("app",)
    APP_FIELD_NUMBER: _ClassVar[int]
    app: _common_pb2.App
    def __init__(self, app: _Optional[_Union[_common_pb2.App, _Mapping]] = ...) -> None: ...

class EnvVar(_message.Message):
    __slots__ = ("key", "value")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    key: str
    value: str
    def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

class UpdateEnvRequest(_message.Message):
    __slots__ = ("app", "set", "unset")
    APP_FIELD_NUMBER: _ClassVar[int]
    SET_FIELD_NUMBER: _ClassVar[int]
    UNSET_FIELD_NUMBER: _ClassVar[int]
    app: str
    set: _containers.RepeatedCompositeFieldContainer[EnvVar]
    unset: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, app: _Optional[str] = ..., set: _Optional[_Iterable[_Union[EnvVar, _Mapping]]] = ..., unset: _Optional[_Iterable[str]] = ...) -> None: ...

class UpdateEnvResponse(_message.Message):
    __slots__ = ("release",)
    RELEASE_FIELD_NUMBER: _ClassVar[int]
    release: _common_pb2.Release
    def __init__(self, release: _Optional[_Union[_common_pb2.Release, _Mapping]] = ...) -> None: ...

class AppendLogsRequest(_message.Message):
    __slots__ = ("build", "lines")
    BUILD_FIELD_NUMBER: _ClassVar[int]
    LINES_FIELD_NUMBER: _ClassVar[int]
    build: str
    lines: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, build: _Optional[str] = ..., lines: _Optional[_Iterable[str]] = ...) -> None: ...

class AppendLogsResponse(_message.Message):
    __slots__ = ("next_offset",)
    NEXT_OFFSET_FIELD_NUMBER: _ClassVar[int]
    next_offset: int
    def __init__(self, next_offset: _Optional[int] = ...) -> None: ...

class StreamLogsRequest(_message.Message):
    __slots__ = ("build", "offset", "follow")
    BUILD_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_FIELD_NUMBER: _ClassVar[int]
    build: str
    offset: int
    follow: bool
    def __init__(self, build: _Optional[str] = ..., offset: _Optional[int] = ..., follow: _Optional[bool] = ...) -> None: ...

class StreamLogsResponse(_message.Message):
    __slots__ = ("lines",)
    LINES_FIELD_NUMBER: _ClassVar[int]
    lines: _containers.RepeatedCompositeFieldContainer[_common_pb2.LogLine]
    def __init__(self, lines: _Optional[_Iterable[_Union[_common_pb2.LogLine, _Mapping]]] = ...) -> None: ...

class RecordBuildRequest(_message.Message):
    __slots__ = ("build", "logs")
    BUILD_FIELD_NUMBER: _ClassVar[int]
    LOGS_FIELD_NUMBER: _ClassVar[int]
    build: _common_pb2.Build
    logs: LogBatch
    def __init__(self, build: _Optional[_Union[_common_pb2.Build, _Mapping]] = ..., logs: _Optional[_Union[LogBatch, _Mapping]] = ...) -> None: ...

class LogBatch(_message.Message):
    __slots__ = ("lines",)
    LINES_FIELD_NUMBER: _ClassVar[int]
    lines: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, lines: _Optional[_Iterable[str]] = ...) -> None: ...

class RecordBuildResponse(_message.Message):
    __slots__ = ("build", "release")
    BUILD_FIELD_NUMBER: _ClassVar[int]
    RELEASE_FIELD_NUMBER: _ClassVar[int]
    build: _common_pb2.Build
    release: _common_pb2.Release
    def __init__(self, build: _Optional[_Union[_common_pb2.Build, _Mapping]] = ..., release: _Optional[_Union[_common_pb2.Release, _Mapping]] = ...) -> None: ...
