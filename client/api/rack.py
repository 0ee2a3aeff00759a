"""A connection to a whole rack: the front door tells where the other services are."""

from __future__ import annotations

from dataclasses import dataclass

from client.api.archive import ArchiveClient
from client.api.builder import BuilderClient
from client.api.channel import open_channel
from client.api.metadata import MetadataClient
from client.api.registry import RegistryClient
from client.kernel.types import RackInfo


def reach(front: str, address: str) -> str:
    """Services announce `host:port`; when the host is a wildcard, reach it where the front
    door was reached."""
    host, _, port = address.rpartition(":")
    if host in ("", "0.0.0.0", "[::]"):
        return f"{front.rpartition(':')[0]}:{port}"
    return address


@dataclass
class Rack:
    """Typed clients of every service of one rack."""

    info: RackInfo
    builder: BuilderClient
    archive: ArchiveClient
    metadata: MetadataClient
    registry: RegistryClient

    @classmethod
    def connect(cls, address: str, token: str, ca: bytes | None = None) -> Rack:
        """Asks the front door at `address` where everything is and opens a client to each,
        over TLS, every certificate verified against `ca` (PEM; None: the system's
        trusted roots)."""
        builder = BuilderClient(open_channel(address, token, ca=ca), address)
        info = builder.rack()
        a = reach(address, info.archive_address)
        m = reach(address, info.metadata_address)
        r = reach(address, info.registry_address)
        return cls(
            info=info,
            builder=builder,
            archive=ArchiveClient(open_channel(a, token, ca=ca), a),
            metadata=MetadataClient(open_channel(m, token, ca=ca), m),
            registry=RegistryClient(open_channel(r, token, ca=ca), r),
        )
