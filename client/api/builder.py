"""Typed client of the builder service, the rack's front door."""

from __future__ import annotations

import queue
from collections.abc import Iterator

import grpc
from slipway.builder.v1 import builder_pb2 as pb
from slipway.builder.v1 import builder_pb2_grpc as pb_grpc

from client.api import convert
from client.api.grpcerrors import iter_rpc, rpc_errors
from client.kernel import types


class Follower:
    """A live FollowBuild stream: iterate it for Build records and LogLines; `ack` and
    `cancel` send messages upstream; `close` ends it."""

    _END = object()

    def __init__(self, stub: pb_grpc.BuilderServiceStub, build_id: str, offset: int, address: str):
        self._outbox: queue.Queue[object] = queue.Queue()
        self._outbox.put(pb.FollowBuildRequest(start=pb.FollowStart(build=build_id, offset=offset)))
        self._call = stub.FollowBuild(self._requests())
        self._address = address

    def _requests(self) -> Iterator[pb.FollowBuildRequest]:
        while True:
            msg = self._outbox.get()
            if msg is self._END:
                return
            yield msg  # type: ignore[misc]

    def __iter__(self) -> Iterator[types.Build | types.LogLine]:
        for resp in iter_rpc(self._call, self._address, "builder"):
            if resp.HasField("line"):
                yield convert.line_from_pb(resp.line)
            else:
                yield convert.build_from_pb(resp.build)

    def ack(self, offset: int) -> None:
        self._outbox.put(pb.FollowBuildRequest(ack=pb.FollowAck(offset=offset)))

    def cancel(self) -> None:
        self._outbox.put(pb.FollowBuildRequest(cancel=pb.FollowCancel()))

    def close(self) -> None:
        self._outbox.put(self._END)
        self._call.cancel()


class BuilderClient:
    """Starting, following and cancelling builds; what the rack is."""

    service = "builder"

    def __init__(self, channel: grpc.Channel, address: str = "") -> None:
        self._stub = pb_grpc.BuilderServiceStub(channel)
        self.address = address

    def rack(self, timeout: float | None = None) -> types.RackInfo:
        with rpc_errors(self.address):  # unreachable: "rack unreachable at …"
            r = self._stub.GetRack(pb.GetRackRequest(), timeout=timeout)
        return types.RackInfo(
            name=r.name,
            version=r.version,
            archive_address=r.archive_address,
            metadata_address=r.metadata_address,
            registry_address=r.registry_address,
            registry_host=r.registry_host,
            builder=r.builder,
            engine=r.engine,
            running=tuple(r.running),
        )

    def start_build(self, options: types.BuildRequest) -> types.Build:
        req = pb.StartBuildRequest(
            app=options.app,
            archive=options.archive,
            description=options.description,
            manifest=options.manifest,
            no_cache=options.no_cache,
            development=options.development,
            build_args=dict(options.build_args),
            git_sha=options.git_sha,
            secrets=dict(options.secrets),
            # A timeout under a second is a second: 0 would mean the 60m default.
            timeout_seconds=max(1, round(options.timeout)) if options.timeout > 0 else 0,
        )
        with rpc_errors(self.address, self.service):
            resp = self._stub.StartBuild(req)
        return convert.build_from_pb(resp.build)

    def follow(self, build_id: str, offset: int = 0) -> Follower:
        return Follower(self._stub, build_id, offset, self.address)

    def collect_garbage(self, grace: float | None = None) -> types.Garbage:
        """Removes the rack's archives no build names and blobs no kept archive names,
        older than `grace` seconds (None: the rack's default, a day)."""
        request = pb.CollectGarbageRequest()
        if grace is not None:
            request.grace_seconds = grace
        with rpc_errors(self.address, self.service):
            resp = self._stub.CollectGarbage(request)
        return types.Garbage(
            removed=int(resp.removed),
            removed_bytes=int(resp.removed_bytes),
            kept=int(resp.kept),
            kept_bytes=int(resp.kept_bytes),
        )

    def cancel_build(self, build_id: str, app: str = "") -> types.Build:
        with rpc_errors(self.address, self.service):
            resp = self._stub.CancelBuild(pb.CancelBuildRequest(build=build_id, app=app))
        return convert.build_from_pb(resp.build)
