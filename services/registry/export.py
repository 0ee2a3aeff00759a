"""Exporting a build (SPEC §5): its record from metadata, its images from the registry
through the engine, streamed out as one gzip'd tar in flat memory."""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, cast

from client.kernel import types
from client.kernel.errors import FailedPrecondition
from client.kernel.streams import iter_chunks, write_stream_to
from client.kernel.types import SERVICE_NAME
from services.common.oci import Registry
from services.registry.blobsave import save_from_blobs
from services.registry.buildarchive import encode_build, write_archive
from services.registry.engine import ImageEngine
from services.registry.imagetar import retag
from services.registry.records import BuildRecords

log = logging.getLogger(__name__)


def services_of(tags: list[str], build_id: str) -> list[str]:
    """The services a build pushed, from its repository's tags `{service}.{buildId}`."""
    suffix = f".{build_id}"
    services = (tag.removesuffix(suffix) for tag in tags if tag.endswith(suffix))
    return sorted(s for s in services if SERVICE_NAME.match(s))


class Exporter:
    """Streams builds out of the rack."""

    def __init__(
        self, engine: ImageEngine, registry: Registry, records: BuildRecords, scratch: Path
    ) -> None:
        self.engine = engine
        self.registry = registry
        self.records = records
        self.scratch = scratch

    def export(self, app: str, build_id: str) -> Iterator[bytes]:
        """The archive's chunks. The build is checked at once (NotFound, FailedPrecondition);
        the images are gathered on the first chunk's demand."""
        types.check_app_name(app)
        build = self.records.get_build(build_id, app)
        if build.status != types.COMPLETE:
            raise FailedPrecondition(
                f"build {build.id} is not complete ({build.status}): "
                "only a complete build can be exported"
            )
        services = services_of(self.registry.tags(app), build.id)
        if not services:
            raise FailedPrecondition(
                f"build {build.id} has no images in the registry at {self.registry.host}"
            )
        lines = list(self.records.log_lines(build.id))
        logs = "".join(f"{line}\n" for line in lines)
        return self._stream(build, services, encode_build(build, logs))

    def _stream(self, build: types.Build, services: list[str], record: bytes) -> Iterator[bytes]:
        name = f"{build.app}.{build.id}.tar"
        tags = {f"{s}.{build.id}": f"{build.app}:{s}.{build.id}" for s in services}
        saved = save_from_blobs(self.registry, build.app, tags, build.ended or time.time())
        if saved is not None:
            # The registry's compressed layers as they are, streamed: no engine, no spool.
            log.info(
                "exporting %s/%s from registry blobs: %d services, %d image bytes",
                build.app,
                build.id,
                len(services),
                saved.size,
            )
            yield from write_archive(record, name, saved.chunks(), saved.size, build.ended, 0)
            return
        # Images the engine must save: the outer tar needs the image tar's size before its
        # bytes, so spool it on disk first.
        self.scratch.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(prefix="slipway-export-", dir=self.scratch) as spool:
            size = self._save(build, services, cast(BinaryIO, spool))
            spool.seek(0)
            log.info(
                "exporting %s/%s: %d services, %d image bytes",
                build.app,
                build.id,
                len(services),
                size,
            )
            yield from write_archive(record, name, iter_chunks(spool), size, build.ended)

    def _save(self, build: types.Build, services: list[str], spool: BinaryIO) -> int:
        """Writes one `docker save` tar of every service image to `spool`, its images named
        `<app>:<service>.<buildId>`; returns its size. Pulls what the engine lacks and
        removes it again afterwards."""
        remote = f"{self.registry.host}/{build.app}"
        names = {f"{remote}:{s}.{build.id}": f"{build.app}:{s}.{build.id}" for s in services}
        pulled: list[str] = []
        try:
            for reference in names:
                if self.engine.image_id(reference) is None:
                    _, _, tag = reference.rpartition(":")
                    for _event in self.engine.pull_events(remote, tag, self.registry.auth()):
                        pass
                    pulled.append(reference)
            # Saved under their registry names, renamed in the stream: no local tag of the
            # engine is touched, however many exports run at once.
            saved = retag(self.engine.save(list(names)), lambda name: names.get(name))
            return write_stream_to(spool, saved)
        finally:
            for reference in pulled:
                self.engine.remove(reference)
