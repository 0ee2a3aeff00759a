"""Typed client of the metadata service."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import grpc
from slipway.common.v1 import common_pb2
from slipway.metadata.v1 import metadata_pb2 as pb
from slipway.metadata.v1 import metadata_pb2_grpc as pb_grpc

from client.api import convert
from client.api.grpcerrors import iter_rpc, rpc_errors
from client.kernel import types
from client.kernel.streams import batched


class MetadataClient:
    """Apps, builds, releases and logs of a rack, as dataclasses."""

    service = "metadata"

    def __init__(self, channel: grpc.Channel, address: str = "") -> None:
        self._stub = pb_grpc.MetadataServiceStub(channel)
        self.address = address

    def _errors(self):  # type: ignore[no-untyped-def]
        return rpc_errors(self.address, self.service)

    def create_app(self, name: str, exist_ok: bool = False) -> types.App:
        with self._errors():
            resp = self._stub.CreateApp(pb.CreateAppRequest(name=name, exist_ok=exist_ok))
        return convert.app_from_pb(resp.app)

    def get_app(self, name: str) -> types.App:
        with self._errors():
            resp = self._stub.GetApp(pb.GetAppRequest(name=name))
        return convert.app_from_pb(resp.app)

    def list_apps(self) -> list[types.App]:
        with self._errors():
            resp = self._stub.ListApps(pb.ListAppsRequest())
        return [convert.app_from_pb(a) for a in resp.apps]

    def delete_app(self, name: str) -> types.App:
        """Removes the app with its builds, releases and logs."""
        with self._errors():
            resp = self._stub.DeleteApp(pb.DeleteAppRequest(name=name))
        return convert.app_from_pb(resp.app)

    def create_build(
        self,
        app: str,
        description: str = "",
        manifest: str = "",
        git_sha: str = "",
        archive: str = "",
        request: str = "",
        timeout: float = 0.0,
        pinned: str = "",
    ) -> types.Build:
        """Records a build; with `request` (types.request_json) it is queued for a builder
        (only `pinned`, when set) to claim."""
        req = pb.CreateBuildRequest(
            app=app,
            description=description,
            manifest=manifest,
            git_sha=git_sha,
            archive=archive,
            request=request,
            timeout=timeout,
            pinned=pinned,
        )
        with self._errors():
            resp = self._stub.CreateBuild(req)
        return convert.build_from_pb(resp.build)

    def get_build(self, build_id: str, app: str = "") -> types.Build:
        with self._errors():
            resp = self._stub.GetBuild(pb.GetBuildRequest(id=build_id, app=app))
        return convert.build_from_pb(resp.build)

    def list_builds(self, app: str, limit: int = 10) -> list[types.Build]:
        with self._errors():
            resp = self._stub.ListBuilds(pb.ListBuildsRequest(app=app, limit=limit))
        return [convert.build_from_pb(b) for b in resp.builds]

    def list_archives(self) -> Iterator[str]:
        """Every archive id the rack's builds name (what garbage collection keeps)."""
        stream = self._stub.ListArchives(pb.ListArchivesRequest())
        for resp in iter_rpc(stream, self.address, self.service):
            yield from resp.ids

    def update_build(
        self, build_id: str, *, lease: types.Lease | None = None, **fields: object
    ) -> types.Build:
        """Sets the named Build fields, e.g. `update_build(id, status="failed", reason="x")`;
        with `lease`, only while the build still runs under it (FailedPrecondition)."""
        msg = common_pb2.Build(id=build_id)
        for name, value in fields.items():
            if name == "status":
                msg.status = convert.status_to_pb(str(value))  # type: ignore[assignment]
            else:
                setattr(msg, name, value)
        req = pb.UpdateBuildRequest(build=msg, fields=list(fields), lease=_lease(lease))
        with self._errors():
            resp = self._stub.UpdateBuild(req)
        return convert.build_from_pb(resp.build)

    def claim_build(self, builder: str) -> types.Claim | None:
        """The oldest queued build `builder` may run, now running under its lease; None
        when the queue is empty."""
        with self._errors():
            resp = self._stub.ClaimBuild(pb.ClaimBuildRequest(builder=builder))
        if not resp.found:
            return None
        return types.Claim(
            build=convert.build_from_pb(resp.build),
            request=types.request_from_json(resp.request),
            lease=types.Lease(resp.lease.owner, int(resp.lease.attempt)),
            timeout=resp.timeout or types.DEFAULT_TIMEOUT_SECONDS,
            secrets=tuple(types.secret_ids(resp.request)),
        )

    def renew_lease(self, build_id: str, lease: types.Lease) -> tuple[bool, types.Build]:
        """Renews the lease; whether the build still runs under it, and the build."""
        with self._errors():
            resp = self._stub.RenewLease(pb.RenewLeaseRequest(build=build_id, lease=_lease(lease)))
        return resp.held, convert.build_from_pb(resp.build)

    def expire_builds(self, owner: str = "") -> list[str]:
        """Ends the builds whose lease is stale or that waited too long in the queue (with
        `owner`: the running builds leased to that builder); returns their ids."""
        with self._errors():
            resp = self._stub.ExpireBuilds(pb.ExpireBuildsRequest(owner=owner))
        return list(resp.ids)

    def record_build(
        self, build: types.Build, log_lines: Iterable[str]
    ) -> tuple[types.Build, types.Release]:
        """Records a finished build under `build.id` with its log and an unpromoted
        release, all or nothing (see RecordBuild); the log streams in batches."""

        def requests() -> Iterator[pb.RecordBuildRequest]:
            yield pb.RecordBuildRequest(build=convert.build_to_pb(build))
            for batch in log_batches(log_lines):
                yield pb.RecordBuildRequest(logs=pb.LogBatch(lines=batch))

        with self._errors():
            resp = self._stub.RecordBuild(requests())
        return convert.build_from_pb(resp.build), convert.release_from_pb(resp.release)

    def create_release(
        self,
        app: str,
        build: str = "",
        env: Mapping[str, str] | None = None,
        manifest: str = "",
        description: str = "",
        inherit_env: bool = False,
        lease: types.Lease | None = None,
        complete: types.Completion | None = None,
    ) -> types.Release:
        """Records a release; with `inherit_env` its environment is the app's latest
        release's, read atomically with the write (`env` is then ignored); with `lease`,
        only while `build` still runs under it; with `complete`, the build turns complete
        with it in the same write."""
        req = pb.CreateReleaseRequest(
            app=app,
            build=build,
            env=dict(env or {}),
            manifest=manifest,
            description=description,
            inherit_env=inherit_env,
            lease=_lease(lease),
        )
        if complete is not None:
            req.complete.entrypoint = complete.entrypoint
            req.complete.ended = complete.ended
        with self._errors():
            resp = self._stub.CreateRelease(req)
        return convert.release_from_pb(resp.release)

    def get_release(self, release_id: str, app: str = "") -> types.Release:
        with self._errors():
            resp = self._stub.GetRelease(pb.GetReleaseRequest(id=release_id, app=app))
        return convert.release_from_pb(resp.release)

    def list_releases(self, app: str, limit: int = 10) -> list[types.Release]:
        with self._errors():
            resp = self._stub.ListReleases(pb.ListReleasesRequest(app=app, limit=limit))
        return [convert.release_from_pb(r) for r in resp.releases]

    def promote_release(self, app: str, release_id: str = "") -> types.App:
        """Makes the release (the app's latest when empty) the app's active one."""
        with self._errors():
            resp = self._stub.PromoteRelease(pb.PromoteReleaseRequest(app=app, id=release_id))
        return convert.app_from_pb(resp.app)

    def update_env(
        self, app: str, set_vars: Mapping[str, str], unset: Sequence[str] = ()
    ) -> types.Release:
        """One new release of the app with `set_vars` set (in their order) and `unset`
        removed, atomically on top of the latest release; see UpdateEnv in metadata.proto."""
        req = pb.UpdateEnvRequest(
            app=app,
            set=[pb.EnvVar(key=k, value=v) for k, v in set_vars.items()],
            unset=list(unset),
        )
        with self._errors():
            resp = self._stub.UpdateEnv(req)
        return convert.release_from_pb(resp.release)

    def append_logs(
        self, build_id: str, lines: Sequence[str], lease: types.Lease | None = None
    ) -> int:
        """Appends lines; returns the offset the next line will take. With `lease`, only
        while the build still runs under it (FailedPrecondition `lease lost`)."""
        req = pb.AppendLogsRequest(build=build_id, lines=list(lines), lease=_lease(lease))
        with self._errors():
            resp = self._stub.AppendLogs(req)
        return int(resp.next_offset)

    def stream_logs(self, build_id: str, offset: int = 0, follow: bool = False) -> LogLines:
        """The log from `offset`; with `follow`, until the build ends. The result can be
        cancelled from another thread (`cancel()`), which ends the call upstream."""
        stream = self._stub.StreamLogs(
            pb.StreamLogsRequest(build=build_id, offset=offset, follow=follow)
        )
        return LogLines(stream, self.address, self.service)


class LogLines:
    """The lines of one StreamLogs call, as an iterable that can be cancelled."""

    def __init__(self, call: Any, address: str, service: str) -> None:
        self._call = call
        self._address = address
        self._service = service

    def __iter__(self) -> Iterator[types.LogLine]:
        for resp in iter_rpc(self._call, self._address, self._service):
            for line in resp.lines:
                yield convert.line_from_pb(line)

    def cancel(self) -> None:
        """Ends the call: the service stops streaming and iteration stops."""
        self._call.cancel()


def log_batches(lines: Iterable[str]) -> Iterator[list[str]]:
    """Log lines in batches small enough for one message each."""
    return batched(lines, lambda line: len(line.encode()) + 16)


def _lease(lease: types.Lease | None) -> pb.Lease | None:
    return None if lease is None else pb.Lease(owner=lease.owner, attempt=lease.attempt)
