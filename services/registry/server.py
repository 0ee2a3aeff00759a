"""`create_server`: the registry service wired to its engine and registry, used by
`__main__` and tests."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import grpc
from slipway.registry.v1 import registry_pb2 as pb
from slipway.registry.v1 import registry_pb2_grpc as pb_grpc

from services.common.server import Server, build_server
from services.registry.config import Config
from services.registry.core import Pusher
from services.registry.dockerengine import DockerEngine
from services.registry.engine import ImageEngine
from services.registry.registries import DistributionRegistry, Registry
from services.registry.servicer import RegistryServicer

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["RegistryService"].full_name


@dataclass(frozen=True)
class Deps:
    """What the service runs on; tests swap these."""

    engine: ImageEngine
    registry: Registry
    close: Callable[[], None] | None = None


def default_deps(config: Config) -> Deps:
    """The Docker engine at DOCKER_HOST and the configured Distribution registry."""
    engine = DockerEngine(config.docker_host)
    return Deps(
        engine=engine, registry=DistributionRegistry(config.registry_host), close=engine.close
    )


def create_server(config: Config, deps: Deps | None = None, address: str | None = None) -> Server:
    """A started registry server on `address` (default: the configured one)."""
    deps = deps or default_deps(config)
    pusher = Pusher(deps.engine, deps.registry)

    def register(server: grpc.Server) -> None:
        pb_grpc.add_RegistryServiceServicer_to_server(RegistryServicer(pusher), server)

    return build_server(
        token=config.token,
        address=address or config.listen,
        register=register,
        service_names=[SERVICE_NAME],
        on_stop=deps.close,
    )
