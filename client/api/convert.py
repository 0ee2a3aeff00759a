"""Conversions between the shared protobuf messages and `client.kernel.types` dataclasses."""

from __future__ import annotations

from slipway.archive.v1 import archive_pb2
from slipway.common.v1 import common_pb2 as pb

from client.kernel import entries, types

_STATUS_TO_PB: dict[str, pb.BuildStatus.ValueType] = {
    types.CREATED: pb.BUILD_STATUS_CREATED,
    types.RUNNING: pb.BUILD_STATUS_RUNNING,
    types.COMPLETE: pb.BUILD_STATUS_COMPLETE,
    types.FAILED: pb.BUILD_STATUS_FAILED,
    types.CANCELLED: pb.BUILD_STATUS_CANCELLED,
}
_STATUS_FROM_PB = {v: k for k, v in _STATUS_TO_PB.items()}

# Build fields that travel as-is between the dataclass and the message.
_BUILD_FIELDS = (
    "id",
    "app",
    "description",
    "release",
    "manifest",
    "entrypoint",
    "git_sha",
    "reason",
    "created",
    "started",
    "ended",
    "archive",
    "builder",
)


def status_to_pb(status: str) -> pb.BuildStatus.ValueType:
    return _STATUS_TO_PB.get(status, pb.BUILD_STATUS_UNSPECIFIED)


def status_from_pb(status: pb.BuildStatus.ValueType) -> str:
    return _STATUS_FROM_PB.get(status, "")


def app_to_pb(app: types.App) -> pb.App:
    return pb.App(name=app.name, created=app.created, release=app.release)


def app_from_pb(msg: pb.App) -> types.App:
    return types.App(name=msg.name, created=msg.created, release=msg.release)


def build_to_pb(build: types.Build) -> pb.Build:
    msg = pb.Build(status=status_to_pb(build.status))
    for name in _BUILD_FIELDS:
        setattr(msg, name, getattr(build, name))
    return msg


def build_from_pb(msg: pb.Build) -> types.Build:
    values = {name: getattr(msg, name) for name in _BUILD_FIELDS}
    return types.Build(status=status_from_pb(msg.status), **values)


def release_to_pb(release: types.Release) -> pb.Release:
    return pb.Release(
        id=release.id,
        app=release.app,
        build=release.build,
        env=dict(release.env),
        manifest=release.manifest,
        description=release.description,
        created=release.created,
    )


def release_from_pb(msg: pb.Release) -> types.Release:
    return types.Release(
        id=msg.id,
        app=msg.app,
        build=msg.build,
        env=dict(msg.env),
        manifest=msg.manifest,
        description=msg.description,
        created=msg.created,
    )


def line_to_pb(line: types.LogLine) -> pb.LogLine:
    return pb.LogLine(offset=line.offset, text=line.text, time=line.time)


def line_from_pb(msg: pb.LogLine) -> types.LogLine:
    return types.LogLine(offset=msg.offset, text=msg.text, time=msg.time)


_ENTRY_TYPES = {
    archive_pb2.ENTRY_TYPE_FILE: entries.FILE,
    archive_pb2.ENTRY_TYPE_DIR: entries.DIR,
    archive_pb2.ENTRY_TYPE_SYMLINK: entries.SYMLINK,
}
_ENTRY_TYPES_PB = {kind: number for number, kind in _ENTRY_TYPES.items()}


def entry_to_pb(e: entries.Entry) -> archive_pb2.Entry:
    return archive_pb2.Entry(
        path=e.path,
        type=_ENTRY_TYPES_PB[e.type],
        mode=e.mode,
        size=e.size,
        mtime_ns=e.mtime,
        sha256=e.sha256,
        target=e.target,
    )


def entry_from_pb(msg: archive_pb2.Entry) -> entries.Entry:
    """An entry as sent; an unknown type stays unknown, for the tree's check to refuse."""
    return entries.Entry(
        path=msg.path,
        type=_ENTRY_TYPES.get(msg.type, "unsupported"),
        mode=msg.mode,
        size=msg.size,
        mtime=msg.mtime_ns,
        sha256=msg.sha256,
        target=msg.target,
    )
