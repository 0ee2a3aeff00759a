"""Registry messages from domain values; the only module here that knows the protos."""

from __future__ import annotations

from collections.abc import Iterator

from slipway.common.v1 import common_pb2
from slipway.registry.v1 import registry_pb2 as pb

from client import convert
from client.errors import InvalidArgument
from client.types import Build, PushProgress, PushResult, Release


def push_response(event: PushProgress | PushResult) -> pb.PushResponse:
    if isinstance(event, PushResult):
        return pb.PushResponse(result=pb.PushResult(reference=event.reference, digest=event.digest))
    return pb.PushResponse(
        progress=pb.PushProgress(
            layer=event.layer,
            status=event.status,
            current=event.current,
            total=event.total,
            text=event.text,
        )
    )


def registry_response(host: str) -> pb.GetRegistryResponse:
    return pb.GetRegistryResponse(host=host)


def export_response(data: bytes) -> pb.ExportBuildResponse:
    return pb.ExportBuildResponse(chunk=common_pb2.Chunk(data=data))


def import_request(requests: Iterator[pb.ImportBuildRequest]) -> tuple[str, Iterator[bytes]]:
    """The app of an ImportBuild stream's header, and the archive bytes of the chunks after
    it; InvalidArgument when the header is not first and alone."""
    first = next(requests, None)
    if first is None or not first.HasField("header"):
        raise InvalidArgument("an import starts with its header")

    def chunks() -> Iterator[bytes]:
        for request in requests:
            if not request.HasField("chunk"):
                raise InvalidArgument("an import sends one header, then chunks")
            yield request.chunk.data

    return first.header.app, chunks()


def import_response(build: Build, release: Release) -> pb.ImportBuildResponse:
    return pb.ImportBuildResponse(
        build=convert.build_to_pb(build), release=convert.release_to_pb(release)
    )
