"""The RegistryService gRPC servicer: translates messages and calls the domain cores."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
from slipway.registry.v1 import registry_pb2 as pb
from slipway.registry.v1 import registry_pb2_grpc as pb_grpc

from services.common.push import Pusher
from services.registry import convert
from services.registry.copy import BuildImages, Copier
from services.registry.export import Exporter
from services.registry.importimage import ImageImporter
from services.registry.imports import Importer


class RegistryServicer(pb_grpc.RegistryServiceServicer):
    """GetRegistry over a `Pusher`; ExportBuild and ImportBuild over an `Exporter`
    and an `Importer`; ImportImage over an `ImageImporter`; GetManifests and ReadBlob (a
    build leaving for another rack) over `BuildImages`; CopyBuild over a `Copier`."""

    def __init__(
        self,
        pusher: Pusher,
        exporter: Exporter,
        importer: Importer,
        image_importer: ImageImporter,
        images: BuildImages,
        copier: Copier,
    ) -> None:
        self.pusher = pusher
        self.exporter = exporter
        self.importer = importer
        self.image_importer = image_importer
        self.images = images
        self.copier = copier

    def GetRegistry(  # noqa: N802 - gRPC method name
        self, request: pb.GetRegistryRequest, context: grpc.ServicerContext
    ) -> pb.GetRegistryResponse:
        return convert.registry_response(self.pusher.registry_host())

    def ExportBuild(  # noqa: N802 - gRPC method name
        self, request: pb.ExportBuildRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.ExportBuildResponse]:
        for data in self.exporter.export(request.app, request.build):
            yield convert.export_response(data)

    def ImportBuild(  # noqa: N802 - gRPC method name
        self, requests: Iterator[pb.ImportBuildRequest], context: grpc.ServicerContext
    ) -> pb.ImportBuildResponse:
        app, chunks = convert.import_request(requests)
        build, release = self.importer.import_build(app, chunks)
        return convert.import_response(build, release)

    def ImportImage(  # noqa: N802 - gRPC method name
        self, request: pb.ImportImageRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.ImportImageResponse]:
        events = self.image_importer.import_image(
            request.app, request.image, request.manifest, request.description
        )
        for event in events:
            yield convert.import_image_response(event)

    def GetManifests(  # noqa: N802 - gRPC method name
        self, request: pb.GetManifestsRequest, context: grpc.ServicerContext
    ) -> pb.GetManifestsResponse:
        return convert.manifests_response(self.images.manifests(request.app, request.build))

    def ReadBlob(  # noqa: N802 - gRPC method name
        self, request: pb.ReadBlobRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.ReadBlobResponse]:
        for data in self.images.read_blob(request.app, request.digest):
            yield convert.blob_response(data)

    def CopyBuild(  # noqa: N802 - gRPC method name
        self, request: pb.CopyBuildRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.CopyBuildResponse]:
        for event in self.copier.copy(convert.copy_request(request)):
            yield convert.copy_response(event)
