"""BuilderService: a thin translator between gRPC and the builder core."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import grpc
from slipway.builder.v1 import builder_pb2 as pb
from slipway.builder.v1 import builder_pb2_grpc as pb_grpc

from client.api import convert as common
from client.kernel.errors import InvalidArgument, SlipwayError
from services.builder import convert
from services.builder.core import Builder

log = logging.getLogger(__name__)


class BuilderServicer(pb_grpc.BuilderServiceServicer):
    """Requests in, core calls, responses out."""

    def __init__(self, builder: Builder) -> None:
        self._builder = builder

    def GetRack(
        self, request: pb.GetRackRequest, context: grpc.ServicerContext
    ) -> pb.GetRackResponse:
        return convert.rack_to_pb(self._builder.rack())

    def CollectGarbage(  # noqa: N802 - gRPC method name
        self, request: pb.CollectGarbageRequest, context: grpc.ServicerContext
    ) -> pb.CollectGarbageResponse:
        grace = request.grace_seconds if request.HasField("grace_seconds") else None
        done = self._builder.collect_garbage(grace)
        return pb.CollectGarbageResponse(
            removed=done.removed,
            removed_bytes=done.removed_bytes,
            kept=done.kept,
            kept_bytes=done.kept_bytes,
        )

    def StartBuild(
        self, request: pb.StartBuildRequest, context: grpc.ServicerContext
    ) -> pb.StartBuildResponse:
        build = self._builder.start(convert.build_request_from_pb(request))
        return pb.StartBuildResponse(build=common.build_to_pb(build))

    def CancelBuild(
        self, request: pb.CancelBuildRequest, context: grpc.ServicerContext
    ) -> pb.CancelBuildResponse:
        build = self._builder.cancel(request.build, request.app)
        return pb.CancelBuildResponse(build=common.build_to_pb(build))

    def FollowBuild(
        self, request_iterator: Iterator[pb.FollowBuildRequest], context: grpc.ServicerContext
    ) -> Iterator[pb.FollowBuildResponse]:
        first = next(request_iterator, None)
        if first is None or not first.HasField("start"):
            raise InvalidArgument("the first message of FollowBuild must be start")
        build_id = first.start.build
        events = self._builder.follow(build_id, first.start.offset, context.is_active)
        yield convert.follow_event_to_pb(next(events))  # the record, or NotFound
        threading.Thread(
            target=self._read_requests,
            args=(request_iterator, build_id),
            name=f"follow-requests-{build_id}",
            daemon=True,
        ).start()
        for event in events:
            yield convert.follow_event_to_pb(event)

    def _read_requests(self, requests: Iterator[pb.FollowBuildRequest], build_id: str) -> None:
        """Handles `cancel` and `ack` messages until the client stops sending."""
        try:
            for msg in requests:
                if msg.HasField("cancel"):
                    try:
                        self._builder.cancel(build_id)
                    except SlipwayError as err:
                        log.info("[%s] cancel from a follower: %s", build_id, err)
                elif msg.HasField("ack"):
                    log.debug("[%s] follower shown up to %d", build_id, msg.ack.offset)
        except Exception:  # noqa: BLE001 - the stream ends with the call, however it ends
            return
