"""MetadataService: a thin translator between gRPC messages and the metadata store."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import TypeAlias

import grpc
from slipway.metadata.v1 import metadata_pb2 as pb
from slipway.metadata.v1 import metadata_pb2_grpc as pb_grpc

from client.api import convert
from client.kernel import types
from services.metadata.convert import build_changes, env_changes, log_batches, recorded_build
from services.metadata.store import MetadataStore

Context: TypeAlias = grpc.ServicerContext

#: Archive ids in one ListArchives message.
ARCHIVE_BATCH = 5000


class MetadataServicer(pb_grpc.MetadataServiceServicer):
    """Every RPC maps onto one store call; errors are mapped by the interceptor."""

    def __init__(self, store: MetadataStore) -> None:
        self._store = store

    def CreateApp(self, request: pb.CreateAppRequest, context: Context) -> pb.CreateAppResponse:
        app = self._store.create_app(request.name, exist_ok=request.exist_ok)
        return pb.CreateAppResponse(app=convert.app_to_pb(app))

    def GetApp(self, request: pb.GetAppRequest, context: Context) -> pb.GetAppResponse:
        return pb.GetAppResponse(app=convert.app_to_pb(self._store.get_app(request.name)))

    def ListApps(self, request: pb.ListAppsRequest, context: Context) -> pb.ListAppsResponse:
        return pb.ListAppsResponse(apps=[convert.app_to_pb(a) for a in self._store.list_apps()])

    def DeleteApp(self, request: pb.DeleteAppRequest, context: Context) -> pb.DeleteAppResponse:
        return pb.DeleteAppResponse(app=convert.app_to_pb(self._store.delete_app(request.name)))

    def CreateBuild(
        self, request: pb.CreateBuildRequest, context: Context
    ) -> pb.CreateBuildResponse:
        build = self._store.create_build(
            request.app,
            description=request.description,
            manifest=request.manifest,
            git_sha=request.git_sha,
            archive=request.archive,
            request=request.request,
            timeout=request.timeout,
            pinned=request.pinned,
        )
        return pb.CreateBuildResponse(build=convert.build_to_pb(build))

    def GetBuild(self, request: pb.GetBuildRequest, context: Context) -> pb.GetBuildResponse:
        build = self._store.get_build(request.id, app=request.app)
        return pb.GetBuildResponse(build=convert.build_to_pb(build))

    def ListBuilds(self, request: pb.ListBuildsRequest, context: Context) -> pb.ListBuildsResponse:
        builds = self._store.list_builds(request.app, limit=request.limit)
        return pb.ListBuildsResponse(builds=[convert.build_to_pb(b) for b in builds])

    def UpdateBuild(
        self, request: pb.UpdateBuildRequest, context: Context
    ) -> pb.UpdateBuildResponse:
        build = self._store.update_build(
            request.build.id, build_changes(request), lease=_lease(request)
        )
        return pb.UpdateBuildResponse(build=convert.build_to_pb(build))

    def ClaimBuild(self, request: pb.ClaimBuildRequest, context: Context) -> pb.ClaimBuildResponse:
        claim = self._store.claim_build(request.builder)
        if claim is None:
            return pb.ClaimBuildResponse(found=False)
        return pb.ClaimBuildResponse(
            found=True,
            build=convert.build_to_pb(claim.build),
            request=types.request_json(
                dataclasses.replace(claim.request, secrets=dict.fromkeys(claim.secrets, b""))
            ),
            lease=pb.Lease(owner=claim.lease.owner, attempt=claim.lease.attempt),
            timeout=claim.timeout,
        )

    def RenewLease(self, request: pb.RenewLeaseRequest, context: Context) -> pb.RenewLeaseResponse:
        lease = types.Lease(request.lease.owner, request.lease.attempt)
        held, build = self._store.renew_lease(request.build, lease)
        return pb.RenewLeaseResponse(held=held, build=convert.build_to_pb(build))

    def ExpireBuilds(
        self, request: pb.ExpireBuildsRequest, context: Context
    ) -> pb.ExpireBuildsResponse:
        if request.owner:
            return pb.ExpireBuildsResponse(ids=self._store.fail_owned_builds(request.owner))
        return pb.ExpireBuildsResponse(ids=[i for i, _ in self._store.expire_builds()])

    def RecordBuild(
        self, request_iterator: Iterator[pb.RecordBuildRequest], context: Context
    ) -> pb.RecordBuildResponse:
        build, batches = recorded_build(request_iterator)
        recorded, release = self._store.record_build(build, batches)
        return pb.RecordBuildResponse(
            build=convert.build_to_pb(recorded), release=convert.release_to_pb(release)
        )

    def CreateRelease(
        self, request: pb.CreateReleaseRequest, context: Context
    ) -> pb.CreateReleaseResponse:
        release = self._store.create_release(
            request.app,
            build=request.build,
            env=dict(request.env),
            manifest=request.manifest,
            description=request.description,
            inherit_env=request.inherit_env,
            lease=_lease(request),
            complete=(
                types.Completion(request.complete.entrypoint, request.complete.ended)
                if request.HasField("complete")
                else None
            ),
        )
        return pb.CreateReleaseResponse(release=convert.release_to_pb(release))

    def GetRelease(self, request: pb.GetReleaseRequest, context: Context) -> pb.GetReleaseResponse:
        release = self._store.get_release(request.id, app=request.app)
        return pb.GetReleaseResponse(release=convert.release_to_pb(release))

    def ListReleases(
        self, request: pb.ListReleasesRequest, context: Context
    ) -> pb.ListReleasesResponse:
        releases = self._store.list_releases(request.app, limit=request.limit)
        return pb.ListReleasesResponse(releases=[convert.release_to_pb(r) for r in releases])

    def PromoteRelease(
        self, request: pb.PromoteReleaseRequest, context: Context
    ) -> pb.PromoteReleaseResponse:
        app = self._store.promote_release(request.app, request.id)
        return pb.PromoteReleaseResponse(app=convert.app_to_pb(app))

    def UpdateEnv(self, request: pb.UpdateEnvRequest, context: Context) -> pb.UpdateEnvResponse:
        release = self._store.update_env(request.app, env_changes(request), list(request.unset))
        return pb.UpdateEnvResponse(release=convert.release_to_pb(release))

    def AppendLogs(self, request: pb.AppendLogsRequest, context: Context) -> pb.AppendLogsResponse:
        next_offset = self._store.append_logs(
            request.build, list(request.lines), lease=_lease(request)
        )
        return pb.AppendLogsResponse(next_offset=next_offset)

    def ListArchives(  # noqa: N802 - gRPC method name
        self, request: pb.ListArchivesRequest, context: Context
    ) -> Iterator[pb.ListArchivesResponse]:
        ids = self._store.list_archives()
        for start in range(0, len(ids), ARCHIVE_BATCH):
            yield pb.ListArchivesResponse(ids=ids[start : start + ARCHIVE_BATCH])

    def StreamLogs(
        self, request: pb.StreamLogsRequest, context: Context
    ) -> Iterator[pb.StreamLogsResponse]:
        batches = self._store.stream_logs(
            request.build, offset=request.offset, follow=request.follow, is_active=context.is_active
        )
        for lines in batches:
            yield from log_batches(lines)


def _lease(
    request: pb.UpdateBuildRequest | pb.AppendLogsRequest | pb.CreateReleaseRequest,
) -> types.Lease | None:
    """The request's lease, None when it carries none."""
    if not request.HasField("lease"):
        return None
    return types.Lease(request.lease.owner, request.lease.attempt)
