"""Typed client of the registry service."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import grpc
from slipway.common.v1 import common_pb2
from slipway.registry.v1 import registry_pb2 as pb
from slipway.registry.v1 import registry_pb2_grpc as pb_grpc

from client import convert, types
from client.grpcerrors import from_rpc_error, iter_rpc, rpc_errors


class RegistryClient:
    """Pushing images into the rack's registry; exporting and importing builds."""

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

    def export_build(self, app: str, build_id: str) -> Iterator[bytes]:
        """The export archive of a complete build (a gzip'd tar), chunk by chunk. It can feed
        `import_build` of another rack directly."""
        stream = self._stub.ExportBuild(pb.ExportBuildRequest(app=app, build=build_id))
        for resp in iter_rpc(stream, self.address, self.service):
            yield resp.chunk.data

    def import_build(self, app: str, chunks: Iterable[bytes]) -> tuple[types.Build, types.Release]:
        """Streams an export archive up; returns the new build and its release once every
        image is pushed and recorded. When `chunks` itself fails (a broken pipe, a failed
        export), the call is cancelled, so the rack creates nothing, and that error is raised."""
        failure: list[BaseException] = []
        calls: list[grpc.Future] = []

        def requests() -> Iterator[pb.ImportBuildRequest]:
            yield pb.ImportBuildRequest(header=pb.ImportHeader(app=app))
            try:
                for data in chunks:
                    yield pb.ImportBuildRequest(chunk=common_pb2.Chunk(data=data))
            except Exception as err:  # noqa: BLE001 - re-raised by the caller below
                failure.append(err)
                for call in calls:
                    call.cancel()

        call = self._stub.ImportBuild.future(requests())
        calls.append(call)
        try:
            resp = call.result()
        except grpc.FutureCancelledError:
            if failure:
                raise failure[0] from None
            raise
        except grpc.RpcError as err:
            if failure:
                raise failure[0] from None
            raise from_rpc_error(err, self.address, self.service) from None
        except BaseException:
            call.cancel()
            raise
        return convert.build_from_pb(resp.build), convert.release_from_pb(resp.release)
