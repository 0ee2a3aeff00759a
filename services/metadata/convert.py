"""Translation between metadata requests/responses and the store's arguments and results."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from slipway.common.v1 import common_pb2
from slipway.metadata.v1 import metadata_pb2 as pb

from client.api import convert
from client.kernel.errors import InvalidArgument
from client.kernel.streams import batched
from client.kernel.types import Build, LogLine

_BUILD_FIELDS = frozenset(common_pb2.Build.DESCRIPTOR.fields_by_name)


def build_changes(request: pb.UpdateBuildRequest) -> dict[str, Any]:
    """The values of the fields named in an UpdateBuild request, by field name."""
    changes: dict[str, Any] = {}
    for name in request.fields:
        if name not in _BUILD_FIELDS:
            raise InvalidArgument(f"unknown build field: {name!r}")
        if name == "status":
            changes[name] = convert.status_from_pb(request.build.status)
        else:
            changes[name] = getattr(request.build, name)
    return changes


def env_changes(request: pb.UpdateEnvRequest) -> dict[str, str]:
    """The variables an UpdateEnv request sets, in request order (a repeated key keeps its
    first place and takes its last value)."""
    values: dict[str, str] = {}
    for var in request.set:
        values[var.key] = var.value
    return values


def log_batches(lines: Iterable[LogLine]) -> Iterator[pb.StreamLogsResponse]:
    """StreamLogs responses carrying `lines`, each small enough for one message."""
    for batch in batched(lines, lambda line: len(line.text.encode()) + 32):
        yield pb.StreamLogsResponse(lines=[convert.line_to_pb(line) for line in batch])


def recorded_build(
    requests: Iterator[pb.RecordBuildRequest],
) -> tuple[Build, Iterator[list[str]]]:
    """A RecordBuild stream: the build from the first message, then its log batches."""
    first = next(requests, None)
    if first is None or not first.HasField("build"):
        raise InvalidArgument("RecordBuild must start with the build")

    def batches() -> Iterator[list[str]]:
        for request in requests:
            if not request.HasField("logs"):
                raise InvalidArgument("RecordBuild: only log lines may follow the build")
            yield list(request.logs.lines)

    return convert.build_from_pb(first.build), batches()
