"""The RegistryService gRPC servicer: translates messages and calls the domain core."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
from slipway.registry.v1 import registry_pb2 as pb
from slipway.registry.v1 import registry_pb2_grpc as pb_grpc

from services.registry import convert
from services.registry.core import Pusher


class RegistryServicer(pb_grpc.RegistryServiceServicer):
    """GetRegistry and Push over a `Pusher` core."""

    def __init__(self, pusher: Pusher) -> None:
        self.pusher = pusher

    def GetRegistry(  # noqa: N802 - gRPC method name
        self, request: pb.GetRegistryRequest, context: grpc.ServicerContext
    ) -> pb.GetRegistryResponse:
        return convert.registry_response(self.pusher.registry_host)

    def Push(  # noqa: N802 - gRPC method name
        self, request: pb.PushRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.PushResponse]:
        for event in self.pusher.push(request.image, request.repository, request.tag):
            yield convert.push_response(event)
