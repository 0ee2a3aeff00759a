"""Conversions between the builder's messages and its domain types."""

from __future__ import annotations

from slipway.builder.v1 import builder_pb2 as pb

from client.api import convert
from client.kernel import types
from client.kernel.types import BuildRequest


def build_request_from_pb(msg: pb.StartBuildRequest) -> BuildRequest:
    return BuildRequest(
        app=msg.app,
        archive=msg.archive,
        description=msg.description,
        manifest=msg.manifest,
        no_cache=msg.no_cache,
        development=msg.development,
        build_args=dict(msg.build_args),
        git_sha=msg.git_sha,
        secrets=dict(msg.secrets),
        timeout=float(msg.timeout_seconds),
    )


def rack_to_pb(info: types.RackInfo) -> pb.GetRackResponse:
    return pb.GetRackResponse(
        name=info.name,
        version=info.version,
        archive_address=info.archive_address,
        metadata_address=info.metadata_address,
        registry_address=info.registry_address,
        registry_host=info.registry_host,
        builder=info.builder,
        engine=info.engine,
        running=list(info.running),
    )


def follow_event_to_pb(event: types.Build | types.LogLine) -> pb.FollowBuildResponse:
    if isinstance(event, types.LogLine):
        return pb.FollowBuildResponse(line=convert.line_to_pb(event))
    return pb.FollowBuildResponse(build=convert.build_to_pb(event))
