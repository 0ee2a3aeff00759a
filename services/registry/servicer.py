"""The RegistryService gRPC servicer: translates messages and calls the domain cores."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
from slipway.registry.v1 import registry_pb2 as pb
from slipway.registry.v1 import registry_pb2_grpc as pb_grpc

from services.registry import convert
from services.registry.core import Pusher
from services.registry.export import Exporter
from services.registry.imports import Importer


class RegistryServicer(pb_grpc.RegistryServiceServicer):
    """GetRegistry and Push over a `Pusher`; ExportBuild and ImportBuild over an `Exporter`
    and an `Importer`."""

    def __init__(self, pusher: Pusher, exporter: Exporter, importer: Importer) -> None:
        self.pusher = pusher
        self.exporter = exporter
        self.importer = importer

    def GetRegistry(  # noqa: N802 - gRPC method name
        self, request: pb.GetRegistryRequest, context: grpc.ServicerContext
    ) -> pb.GetRegistryResponse:
        return convert.registry_response(self.pusher.registry_host)

    def Push(  # noqa: N802 - gRPC method name
        self, request: pb.PushRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.PushResponse]:
        for event in self.pusher.push(request.image, request.repository, request.tag):
            yield convert.push_response(event)

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
