"""Registry messages from domain values; the only module here that knows the protos."""

from __future__ import annotations

from collections.abc import Iterator

from slipway.registry.v1 import registry_pb2 as pb

from client.api import convert
from client.kernel.errors import InvalidArgument
from client.kernel.types import (
    Build,
    CopyProgress,
    CopyResult,
    ImageManifest,
    PushProgress,
    Release,
)
from services.registry.copy import CopyRequest
from services.registry.importimage import ImageImported


def progress_to_pb(event: PushProgress) -> pb.PushProgress:
    return pb.PushProgress(
        layer=event.layer,
        status=event.status,
        current=event.current,
        total=event.total,
        text=event.text,
    )


def registry_response(host: str) -> pb.GetRegistryResponse:
    return pb.GetRegistryResponse(host=host)


def export_response(data: bytes) -> pb.ExportBuildResponse:
    response = pb.ExportBuildResponse()
    response.chunk.data = data  # in place: Chunk(...) would copy it again
    return response


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


def import_image_response(event: PushProgress | ImageImported) -> pb.ImportImageResponse:
    if isinstance(event, ImageImported):
        result = pb.ImportImageResult(
            build=convert.build_to_pb(event.build), release=convert.release_to_pb(event.release)
        )
        return pb.ImportImageResponse(result=result)
    return pb.ImportImageResponse(progress=progress_to_pb(event))


def manifests_response(images: list[ImageManifest]) -> pb.GetManifestsResponse:
    return pb.GetManifestsResponse(
        images=[
            pb.ImageManifest(
                service=i.service,
                media_type=i.media_type,
                manifest=i.body,
                digest=i.digest,
                config_digest=i.config_digest,
            )
            for i in images
        ]
    )


def blob_response(data: bytes) -> pb.ReadBlobResponse:
    response = pb.ReadBlobResponse()
    response.chunk.data = data  # in place: Chunk(...) would copy it again
    return response


def copy_request(request: pb.CopyBuildRequest) -> CopyRequest:
    return CopyRequest(
        source_host=request.source_host,
        source_token=request.source_token,
        source_name=request.source_name,
        app=request.app,
        build=request.build,
        to_app=request.to_app,
        source_ca=request.source_ca or None,
    )


def copy_response(event: CopyProgress | CopyResult) -> pb.CopyBuildResponse:
    if isinstance(event, CopyResult):
        return pb.CopyBuildResponse(
            result=pb.CopyResult(
                build=convert.build_to_pb(event.build),
                release=convert.release_to_pb(event.release),
                blobs=event.blobs,
                moved=event.moved,
                mounted=event.mounted,
                bytes=event.bytes,
                moved_blobs=list(event.moved_blobs),
            )
        )
    return pb.CopyBuildResponse(
        progress=pb.CopyProgress(text=event.text, current=event.current, total=event.total)
    )
