"""Registry messages from domain values; the only module here that knows the protos."""

from __future__ import annotations

from slipway.registry.v1 import registry_pb2 as pb

from client.types import PushProgress, PushResult


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
