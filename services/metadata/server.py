"""`create_server`: the metadata service wired to its store, used by `__main__` and tests."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from slipway.metadata.v1 import metadata_pb2 as pb
from slipway.metadata.v1 import metadata_pb2_grpc as pb_grpc

from services.common.server import Server, build_server
from services.metadata.config import Config
from services.metadata.servicer import MetadataServicer
from services.metadata.store import MetadataStore

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["MetadataService"].full_name


@dataclass(frozen=True)
class Deps:
    """What the service runs on; tests swap these."""

    store: MetadataStore


def default_deps(config: Config) -> Deps:
    """The store on the configured database (Unavailable when it cannot be opened)."""
    return Deps(store=MetadataStore.open(config.database_url))


def create_server(config: Config, deps: Deps | None = None, address: str | None = None) -> Server:
    """A started metadata server on `address` (default: the configured one). Stopping it
    ends every log follow and closes the store's connections."""
    deps = deps or default_deps(config)

    def register(server: grpc.Server) -> None:
        pb_grpc.add_MetadataServiceServicer_to_server(MetadataServicer(deps.store), server)

    try:
        return build_server(
            token=config.token,
            tls=config.tls,
            address=address or config.listen,
            register=register,
            service_names=[SERVICE_NAME],
            on_stop=deps.store.close,
        )
    except BaseException:
        deps.store.close()
        raise
