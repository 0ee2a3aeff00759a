"""`create_server`: the registry service wired to its engine and registry, used by
`__main__` and tests."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from dataclasses import dataclass

import grpc
from slipway.registry.v1 import registry_pb2 as pb
from slipway.registry.v1 import registry_pb2_grpc as pb_grpc

from client.api.metadata import MetadataClient
from client.kernel.errors import Unavailable
from services.common.docker.engine import DockerEngine
from services.common.ecr import EcrRegistry
from services.common.oci import DistributionRegistry, Registry
from services.common.push import Logins, Pusher
from services.common.server import Server, build_server
from services.common.server import connect as connect_to
from services.registry.config import Config
from services.registry.copy import BuildImages, ConnectSource, Copier
from services.registry.engine import ImageEngine
from services.registry.export import Exporter
from services.registry.finish import Destination
from services.registry.importimage import ImageImporter
from services.registry.imports import Importer
from services.registry.records import BuildRecords, MetadataRecords, NoRecords
from services.registry.servicer import RegistryServicer
from services.registry.sourcerack import RemoteSource

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["RegistryService"].full_name


@dataclass(frozen=True)
class Deps:
    """What the service runs on; tests swap these."""

    engine: ImageEngine
    registry: Registry
    records: BuildRecords = NoRecords()
    close: Callable[[], None] | None = None
    connect_source: ConnectSource = RemoteSource.connect
    """How a copy reaches the rack it copies from."""


def registry_tls(config: Config) -> ssl.SSLContext | None:
    """How the registry's certificate is verified: against SLIPWAY_REGISTRY_CA (HTTPS);
    None for plain HTTP. An unreadable CA stops the service at start."""
    if config.registry_ca is None:
        return None
    try:
        return ssl.create_default_context(cafile=str(config.registry_ca))
    except (OSError, ssl.SSLError) as err:
        raise Unavailable(f"cannot read the registry's CA (SLIPWAY_REGISTRY_CA): {err}") from None


def default_deps(config: Config) -> Deps:
    """The Docker engine at DOCKER_HOST, the configured Distribution registry, and the
    metadata service when its address is configured."""
    registry: Registry
    if config.registry_url:
        registry = EcrRegistry.from_url(config.registry_url)
    else:
        registry = DistributionRegistry(
            config.registry_host, config.registry_auth, tls=registry_tls(config)
        )
    engine = DockerEngine(config.docker_host, Logins(registry))
    records: BuildRecords = NoRecords()
    closers: list[Callable[[], None]] = [engine.close]
    if config.metadata_address:
        channel = connect_to(config.metadata_address, config.token, config.tls)
        records = MetadataRecords(MetadataClient(channel, config.metadata_address))
        closers.append(channel.close)

    def close() -> None:
        for closer in closers:
            closer()

    return Deps(
        engine=engine,
        registry=registry,
        records=records,
        close=close,
    )


def create_server(config: Config, deps: Deps | None = None, address: str | None = None) -> Server:
    """A started registry server on `address` (default: the configured one)."""
    deps = deps or default_deps(config)
    pusher = Pusher(deps.engine, deps.registry)
    scratch = config.scratch_dir
    exporter = Exporter(deps.engine, deps.registry, deps.records, scratch)
    destination = Destination(deps.registry, deps.records)
    importer = Importer(deps.engine, destination, pusher, scratch)
    image_importer = ImageImporter(deps.engine, destination, pusher)
    images = BuildImages(deps.registry, deps.records)
    copier = Copier(destination, deps.connect_source)

    def register(server: grpc.Server) -> None:
        servicer = RegistryServicer(pusher, exporter, importer, image_importer, images, copier)
        pb_grpc.add_RegistryServiceServicer_to_server(servicer, server)

    return build_server(
        token=config.token,
        tls=config.tls,
        address=address or config.listen,
        register=register,
        service_names=[SERVICE_NAME],
        on_stop=deps.close,
    )
