"""`create_server`: the builder's gRPC server, for `__main__` and tests alike."""

from __future__ import annotations

import logging

import grpc
from slipway.builder.v1 import builder_pb2, builder_pb2_grpc

from client.api.archive import ArchiveClient
from client.api.metadata import MetadataClient
from services.builder.config import Config
from services.builder.core import Builder
from services.builder.seams import Deps
from services.builder.servicer import BuilderServicer
from services.common.docker.engine import DockerEngine
from services.common.ecr import EcrRegistry
from services.common.push import Destination, Logins, Pusher, PushTarget
from services.common.server import Server, build_server
from services.common.server import connect as connect_to

log = logging.getLogger(__name__)

SERVICE_NAME = builder_pb2.DESCRIPTOR.services_by_name["BuilderService"].full_name


def connect(config: Config) -> Deps:
    """The real dependencies: the other services of the rack, the Docker engine, and
    pushes through that engine into the rack's registry (no other service's engine):
    Distribution with the rack's credentials, or ECR with its tokens."""
    target: PushTarget
    if config.registry_url:
        target = EcrRegistry.from_url(config.registry_url)
    else:
        auth = config.registry_auth.engine_auth() if config.registry_auth else {}
        target = Destination(config.registry_host, auth)
    engine = DockerEngine(config.docker_host, Logins(target), builder=config.engine_builder)
    return Deps(
        store=MetadataClient(
            connect_to(config.metadata_address, config.token, config.tls), config.metadata_address
        ),
        sources=ArchiveClient(
            connect_to(config.archive_address, config.token, config.tls), config.archive_address
        ),
        pusher=Pusher(engine, target),
        engine=engine,
    )


def create_server(config: Config, deps: Deps | None = None, address: str | None = None) -> Server:
    """Removes leftover scratch folders, ends the builds this builder's id held and those
    other builders lost, starts taking builds from the queue, then serves
    BuilderService on `address` (default `config.listen`; port 0 picks a free one).
    Stopping it stops every build."""
    deps = deps or connect(config)
    builder = Builder(config, deps)
    builder.sweep_scratch()
    builder.recover()
    builder.serve_queue()

    def register(server: grpc.Server) -> None:
        builder_pb2_grpc.add_BuilderServiceServicer_to_server(BuilderServicer(builder), server)

    def on_stop() -> None:
        builder.shutdown()
        close = getattr(deps.engine, "close", None)
        if close is not None:
            close()

    return build_server(
        token=config.token,
        tls=config.tls,
        address=address or config.listen,
        register=register,
        service_names=[SERVICE_NAME],
        on_stop=on_stop,
        on_drain=builder.stop_claiming,
    )
