"""Typed client of the registry service."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import grpc
from slipway.registry.v1 import registry_pb2 as pb
from slipway.registry.v1 import registry_pb2_grpc as pb_grpc

from client.api import convert
from client.api.grpcerrors import from_rpc_error, iter_rpc, rpc_errors
from client.kernel import types
from client.kernel.errors import Internal


class RegistryClient:
    """Where the rack's registry is; exporting, importing and copying builds."""

    service = "registry"

    def __init__(self, channel: grpc.Channel, address: str = "") -> None:
        self._stub = pb_grpc.RegistryServiceStub(channel)
        self.address = address

    def registry_host(self) -> str:
        with rpc_errors(self.address, self.service):
            return str(self._stub.GetRegistry(pb.GetRegistryRequest()).host)

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
                    request = pb.ImportBuildRequest()
                    request.chunk.data = data  # in place: Chunk(...) would copy it again
                    yield request
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

    def import_image(
        self,
        app: str,
        image: str,
        manifest: str = "",
        description: str = "",
        progress: Callable[[types.PushProgress], None] | None = None,
    ) -> tuple[types.Build, types.Release]:
        """Relays `image` (and the `image:`s of the manifest text) into a new build of `app`,
        passing each progress update to `progress`; returns the build and its release."""
        request = pb.ImportImageRequest(
            app=app, image=image, manifest=manifest, description=description
        )
        stream = self._stub.ImportImage(request)
        try:
            for resp in iter_rpc(stream, self.address, self.service):
                if resp.HasField("result"):
                    build = convert.build_from_pb(resp.result.build)
                    return build, convert.release_from_pb(resp.result.release)
                if progress is not None:
                    p = resp.progress
                    progress(
                        types.PushProgress(
                            text=p.text,
                            layer=p.layer,
                            status=p.status,
                            current=p.current,
                            total=p.total,
                        )
                    )
        finally:
            stream.cancel()
        raise Internal("the image import ended without a result")

    def get_manifests(self, app: str, build_id: str) -> list[types.ImageManifest]:
        """The manifest of every service image of a complete build, by service name."""
        with rpc_errors(self.address, self.service):
            resp = self._stub.GetManifests(pb.GetManifestsRequest(app=app, build=build_id))
        return [
            types.ImageManifest(
                service=m.service,
                media_type=m.media_type,
                body=m.manifest,
                digest=m.digest,
                config_digest=m.config_digest,
            )
            for m in resp.images
        ]

    def read_blob(self, app: str, digest: str) -> Iterator[bytes]:
        """The bytes of one blob of the app's repository, chunk by chunk."""
        stream = self._stub.ReadBlob(pb.ReadBlobRequest(app=app, digest=digest))
        try:
            for resp in iter_rpc(stream, self.address, self.service):
                yield resp.chunk.data
        finally:
            stream.cancel()

    def copy_build(
        self,
        source_host: str,
        source_token: str,
        app: str,
        build_id: str,
        to_app: str = "",
        source_name: str = "",
        progress: Callable[[types.CopyProgress], None] | None = None,
        source_ca: bytes | None = None,
    ) -> types.CopyResult:
        """Has this rack copy the build `app`/`build_id` of the rack at `source_host` (reached
        with `source_token`) into `to_app` (default: `app`), moving only the blobs this rack
        lacks; passes each progress update to `progress`; returns the new build, its
        release and what moved. `source_ca` is the CA (PEM) the source rack's certificates
        are verified against (None: the system's trusted roots)."""
        request = pb.CopyBuildRequest(
            source_host=source_host,
            source_token=source_token,
            source_name=source_name,
            app=app,
            build=build_id,
            to_app=to_app,
            source_ca=source_ca or b"",
        )
        stream = self._stub.CopyBuild(request)
        try:
            for resp in iter_rpc(stream, self.address, self.service):
                if resp.HasField("result"):
                    r = resp.result
                    return types.CopyResult(
                        build=convert.build_from_pb(r.build),
                        release=convert.release_from_pb(r.release),
                        blobs=r.blobs,
                        moved=r.moved,
                        mounted=r.mounted,
                        bytes=r.bytes,
                        moved_blobs=tuple(r.moved_blobs),
                    )
                if progress is not None:
                    p = resp.progress
                    progress(types.CopyProgress(text=p.text, current=p.current, total=p.total))
        finally:
            stream.cancel()
        raise Internal("the copy ended without a result")
