"""`SourceRack` over gRPC: another rack's front door, metadata and registry services, every
call carrying that rack's token; its errors are reworded to name it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import grpc

from client.api.builder import BuilderClient
from client.api.channel import open_channel
from client.api.metadata import MetadataClient
from client.api.rack import reach
from client.api.registry import RegistryClient
from client.kernel import types
from client.kernel.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    SlipwayError,
    Unauthenticated,
    Unavailable,
    Unverified,
)


class RemoteSource:
    """A source rack reached through its front door (GetRack tells where the rest is)."""

    def __init__(self, name: str, channels: list[grpc.Channel], ca: bytes | None = None) -> None:
        self._name = name
        self._channels = channels
        self._ca = ca
        self._metadata: MetadataClient | None = None
        self._registry: RegistryClient | None = None

    @classmethod
    def connect(
        cls, host: str, token: str, name: str = "", ca: bytes | None = None
    ) -> RemoteSource:
        """Asks the front door at `host` where the metadata and registry services are;
        every connection is TLS, verified against `ca` (None: the system's roots)."""
        source = cls(name or host, [], ca)
        try:
            builder = BuilderClient(source._open(host, token), host)
            try:
                with source._errors():
                    info = builder.rack()
            except Unverified as err:
                raise Unverified(f"source rack {source.name}", host, err.why) from None
            except Unavailable:
                raise Unavailable(f"source rack {source.name} unreachable at {host}") from None
            metadata = reach(host, info.metadata_address)
            registry = reach(host, info.registry_address)
            source._metadata = MetadataClient(source._open(metadata, token), metadata)
            source._registry = RegistryClient(source._open(registry, token), registry)
        except BaseException:
            source.close()
            raise
        return source

    @property
    def name(self) -> str:
        return self._name

    def _open(self, address: str, token: str) -> grpc.Channel:
        channel = open_channel(address, token, ca=self._ca)
        self._channels.append(channel)
        return channel

    def _refused(self) -> InvalidArgument:
        return InvalidArgument(f"source rack {self._name} refused the token")

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """Names the source rack in its errors; what the user asked about (an unknown build,
        an incomplete one, a bad name) keeps its own words."""
        try:
            yield
        except Unauthenticated:
            raise self._refused() from None
        except (NotFound, FailedPrecondition, InvalidArgument):
            raise
        except Unverified as err:
            if not err.address:
                raise Unverified(f"source rack {self._name}: {err}") from None
            raise Unverified(f"source rack {self._name}", err.address, err.why) from None
        except SlipwayError as err:
            raise type(err)(f"source rack {self._name}: {err}") from None

    def _clients(self) -> tuple[MetadataClient, RegistryClient]:
        assert self._metadata is not None and self._registry is not None, "not connected"
        return self._metadata, self._registry

    def get_build(self, app: str, build_id: str) -> types.Build:
        with self._errors():
            return self._clients()[0].get_build(build_id, app)

    def log_lines(self, build_id: str) -> Iterator[str]:
        with self._errors():
            for line in self._clients()[0].stream_logs(build_id):
                yield line.text

    def manifests(self, app: str, build_id: str) -> list[types.ImageManifest]:
        with self._errors():
            return self._clients()[1].get_manifests(app, build_id)

    def read_blob(self, app: str, digest: str) -> Iterator[bytes]:
        with self._errors():
            yield from self._clients()[1].read_blob(app, digest)

    def close(self) -> None:
        for channel in self._channels:
            channel.close()
        self._channels.clear()
