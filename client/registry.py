"""Typed client of the registry service."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
from slipway.registry.v1 import registry_pb2 as pb
from slipway.registry.v1 import registry_pb2_grpc as pb_grpc

from client import types
from client.grpcerrors import iter_rpc, rpc_errors


class RegistryClient:
    """Pushing images into the rack's registry."""

    service = "registry"

    def __init__(self, channel: grpc.Channel, address: str = "") -> None:
        self._stub = pb_grpc.RegistryServiceStub(channel)
        self.address = address

    def registry_host(self) -> str:
        with rpc_errors(self.address, self.service):
            return str(self._stub.GetRegistry(pb.GetRegistryRequest()).host)

    def push(
        self, image: str, repository: str, tag: str
    ) -> Iterator[types.PushProgress | types.PushResult]:
        """Progress updates, then one PushResult; a failed push raises."""
        stream = self._stub.Push(pb.PushRequest(image=image, repository=repository, tag=tag))
        for resp in iter_rpc(stream, self.address, self.service):
            if resp.HasField("result"):
                yield types.PushResult(reference=resp.result.reference, digest=resp.result.digest)
            else:
                p = resp.progress
                yield types.PushProgress(
                    text=p.text, layer=p.layer, status=p.status, current=p.current, total=p.total
                )
