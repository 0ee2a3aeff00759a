from slipway.common.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetRegistryRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetRegistryResponse(_message.Message):
    __slots__ = ("host",)
    HOST_FIELD_NUMBER: _ClassVar[int]
    host: str
    def __init__(self, host: _Optional[str] = ...) -> None: ...

class PushProgress(_message.Message):
    __slots__ = ("layer", "status", "current", "total", "text")
    LAYER_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CURRENT_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    layer: str
    status: str
    current: int
    total: int
    text: str
    def __init__(self, layer: _Optional[str] = ..., status: _Optional[str] = ..., current: _Optional[int] = ..., total: _Optional[int] = ..., text: _Optional[str] = ...) -> None: ...

class ExportBuildRequest(_message.Message):
    __slots__ = ("app", "build")
    APP_FIELD_NUMBER: _ClassVar[int]
    BUILD_FIELD_NUMBER: _ClassVar[int]
    app: str
    build: str
    def __init__(self, app: _Optional[str] = ..., build: _Optional[str] = ...) -> None: ...

class ExportBuildResponse(_message.Message):
    __slots__ = ("chunk",)
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    chunk: _common_pb2.Chunk
    def __init__(self, chunk: _Optional[_Union[_common_pb2.Chunk, _Mapping]] = ...) -> None: ...

class ImportBuildRequest(_message.Message):
    __slots__ = ("header", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: ImportHeader
    chunk: _common_pb2.Chunk
    def __init__(self, header: _Optional[_Union[ImportHeader, _Mapping]] = ..., chunk: _Optional[_Union[_common_pb2.Chunk, _Mapping]] = ...) -> None: ...

class ImportHeader(_message.Message):
    __slots__ = ("app",)
    APP_FIELD_NUMBER: _ClassVar[int]
    app: str
    def __init__(self, app: _Optional[str] = ...) -> None: ...

class ImportBuildResponse(_message.Message):
    __slots__ = ("build", "release")
    BUILD_FIELD_NUMBER: _ClassVar[int]
    RELEASE_FIELD_NUMBER: _ClassVar[int]
    build: _common_pb2.Build
    release: _common_pb2.Release
    def __init__(self, build: _Optional[_Union[_common_pb2.Build, _Mapping]] = ..., release: _Optional[_Union[_common_pb2.Release, _Mapping]] = ...) -> None: ...

class ImportImageRequest(_message.Message):
    __slots__ = ("app", "image", "manifest", "description")
    APP_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    app: str
    image: str
    manifest: str
    description: str
    def __init__(self, app: _Optional[str] = ..., image: _Optional[str] = ..., manifest: _Optional[str] = ..., description: _Optional[str] = ...) -> None: ...

class ImportImageResponse(_message.Message):
    __slots__ = ("progress", "result")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    progress: PushProgress
    result: ImportImageResult
    def __init__(self, progress: _Optional[_Union[PushProgress, _Mapping]] = ..., result: _Optional[_Union[ImportImageResult, _Mapping]] = ...) -> None: ...

class ImportImageResult(_message.Message):
    __slots__ = ("build", "release")
    BUILD_FIELD_NUMBER: _ClassVar[int]
    RELEASE_FIELD_NUMBER: _ClassVar[int]
    build: _common_pb2.Build
    release: _common_pb2.Release
    def __init__(self, build: _Optional[_Union[_common_pb2.Build, _Mapping]] = ..., release: _Optional[_Union[_common_pb2.Release, _Mapping]] = ...) -> None: ...

class GetManifestsRequest(_message.Message):
    __slots__ = ("app", "build")
    APP_FIELD_NUMBER: _ClassVar[int]
    BUILD_FIELD_NUMBER: _ClassVar[int]
    app: str
    build: str
    def __init__(self, app: _Optional[str] = ..., build: _Optional[str] = ...) -> None: ...

class GetManifestsResponse(_message.Message):
    __slots__ = ("images",)
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    images: _containers.RepeatedCompositeFieldContainer[ImageManifest]
    def __init__(self, images: _Optional[_Iterable[_Union[ImageManifest, _Mapping]]] = ...) -> None: ...

class ImageManifest(_message.Message):
    __slots__ = ("service", "media_type", "manifest", "digest", "config_digest")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    MEDIA_TYPE_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    CONFIG_DIGEST_FIELD_NUMBER: _ClassVar[int]
    service: str
    media_type: str
    manifest: bytes
    digest: str
    config_digest: str
    def __init__(self, service: _Optional[str] = ..., media_type: _Optional[str] = ..., manifest: _Optional[bytes] = ..., digest: _Optional[str] = ..., config_digest: _Optional[str] = ...) -> None: ...

class ReadBlobRequest(_message.Message):
    __slots__ = ("app", "digest")
    APP_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    app: str
    digest: str
    def __init__(self, app: _Optional[str] = ..., digest: _Optional[str] = ...) -> None: ...

class ReadBlobResponse(_message.Message):
    __slots__ = ("chunk",)
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    chunk: _common_pb2.Chunk
    def __init__(self, chunk: _Optional[_Union[_common_pb2.Chunk, _Mapping]] = ...) -> None: ...

class CopyBuildRequest(_message.Message):
    __slots__ = ("source_host", "source_token", "source_name", "app", "build", "to_app")
    SOURCE_HOST_FIELD_NUMBER: _ClassVar[int]
    SOURCE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    SOURCE_NAME_FIELD_NUMBER: _ClassVar[int]
    APP_FIELD_NUMBER: _ClassVar[int]
    BUILD_FIELD_NUMBER: _ClassVar[int]
    TO_APP_FIELD_NUMBER: _ClassVar[int]
    source_host: str
    source_token: str
    source_name: str
    app: str
    build: str
    to_app: str
    def __init__(self, source_host: _Optional[str] = ..., source_token: _Optional[str] = ..., source_name: _Optional[str] = ..., app: _Optional[str] = ..., build: _Optional[str] = ..., to_app: _Optional[str] = ...) -> None: ...

class CopyBuildResponse(_message.Message):
    __slots__ = ("progress", "result")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    progress: CopyProgress
    result: CopyResult
    def __init__(self, progress: _Optional[_Union[CopyProgress, _Mapping]] = ..., result: _Optional[_Union[CopyResult, _Mapping]] = ...) -> None: ...

class CopyProgress(_message.Message):
    __slots__ = ("text", "current", "total")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    CURRENT_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    text: str
    current: int
    total: int
    def __init__(self, text: _Optional[str] = ..., current: _Optional[int] = ..., total: _Optional[int] = ...) -> None: ...

class CopyResult(_message.Message):
    __slots__ = ("build", "release", "blobs", "moved", "mounted", "bytes", "moved_blobs")
    BUILD_FIELD_NUMBER: _ClassVar[int]
    RELEASE_FIELD_NUMBER: _ClassVar[int]
    BLOBS_FIELD_NUMBER: _ClassVar[int]
    MOVED_FIELD_NUMBER: _ClassVar[int]
    MOUNTED_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    MOVED_BLOBS_FIELD_NUMBER: _ClassVar[int]
    build: _common_pb2.Build
    release: _common_pb2.Release
    blobs: int
    moved: int
    mounted: int
    bytes: int
    moved_blobs: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, build: _Optional[_Union[_common_pb2.Build, _Mapping]] = ..., release: _Optional[_Union[_common_pb2.Release, _Mapping]] = ..., blobs: _Optional[int] = ..., moved: _Optional[int] = ..., mounted: _Optional[int] = ..., bytes: _Optional[int] = ..., moved_blobs: _Optional[_Iterable[str]] = ...) -> None: ...
