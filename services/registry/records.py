"""The `BuildRecords` seam: what exports read from metadata and what imports record there."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from client.kernel import types
from client.kernel.errors import NotFound, Unavailable
from services.registry.buildarchive import BuildRecord

if TYPE_CHECKING:  # the client pulls in gRPC, which the domain cores stay free of
    from client.api.metadata import MetadataClient

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImportedBuild:
    """The parts of an exported build an import keeps."""

    description: str = ""
    manifest: str = ""
    entrypoint: str = ""
    git_sha: str = ""
    log_lines: Sequence[str] = ()
    started: float = 0.0
    ended: float = 0.0

    @classmethod
    def of(cls, build: types.Build | BuildRecord, log_lines: Sequence[str]) -> ImportedBuild:
        """What a move keeps of `build` (another rack's, or an export's), with its log."""
        return cls(
            description=build.description,
            manifest=build.manifest,
            entrypoint=build.entrypoint,
            git_sha=build.git_sha,
            log_lines=log_lines,
            started=build.started,
            ended=build.ended,
        )


class BuildRecords(Protocol):
    """Builds, logs and releases, as exports and imports need them."""

    def get_build(self, build_id: str, app: str) -> types.Build:
        """The build of `app`; NotFound when unknown."""
        ...

    def log_lines(self, build_id: str) -> Iterator[str]:
        """The build's stored log, line by line."""
        ...

    def record_import(
        self, app: str, build_id: str, build: ImportedBuild
    ) -> tuple[types.Build, types.Release]:
        """Records `build` as the complete build `build_id` of `app` (created when missing)
        with its log and an unpromoted release carrying the app's latest environment, all
        or nothing."""
        ...

    def app_env(self, app: str) -> dict[str, str]:
        """The environment of the app's latest release; empty for a new app."""
        ...

    def check_app(self, app: str) -> None:
        """NotFound (with how to create it) unless the app exists: builds move only into
        apps that do."""
        ...


class MetadataRecords:
    """`BuildRecords` on the metadata service."""

    def __init__(self, client: MetadataClient) -> None:
        self._client = client

    def get_build(self, build_id: str, app: str) -> types.Build:
        return self._client.get_build(build_id, app)

    def log_lines(self, build_id: str) -> Iterator[str]:
        for line in self._client.stream_logs(build_id):
            yield line.text

    def record_import(
        self, app: str, build_id: str, build: ImportedBuild
    ) -> tuple[types.Build, types.Release]:
        record = types.Build(
            id=build_id,
            app=app,
            description=build.description,
            manifest=build.manifest,
            entrypoint=build.entrypoint,
            git_sha=build.git_sha,
            started=build.started,
            ended=build.ended,
        )
        return self._client.record_build(record, build.log_lines)

    def check_app(self, app: str) -> None:
        try:
            self._client.get_app(app)
        except NotFound:
            raise NotFound.no_app(app) from None

    def app_env(self, app: str) -> dict[str, str]:
        try:
            releases = self._client.list_releases(app, limit=1)
        except NotFound:
            return {}
        return dict(releases[0].env) if releases else {}


class NoRecords:
    """`BuildRecords` of a registry service started without a metadata address."""

    def _missing(self) -> Unavailable:
        return Unavailable(
            "the registry service has no metadata service: set SLIPWAY_METADATA_ADDRESS"
        )

    def get_build(self, build_id: str, app: str) -> types.Build:
        raise self._missing()

    def log_lines(self, build_id: str) -> Iterator[str]:
        raise self._missing()

    def record_import(
        self, app: str, build_id: str, build: ImportedBuild
    ) -> tuple[types.Build, types.Release]:
        raise self._missing()

    def app_env(self, app: str) -> dict[str, str]:
        raise self._missing()

    def check_app(self, app: str) -> None:
        raise self._missing()
