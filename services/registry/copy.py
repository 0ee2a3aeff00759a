"""Copying a build from one rack to another, registry service to registry service.

The source side (`BuildImages`) serves a complete build's manifests and blobs. The
destination side (`Copier`) reads the build from the source rack with the source's token,
asks its own registry which blobs (layers and image configs) it already holds, mounts those
another repository of its registry holds, and streams only the rest from the source straight
into its registry, a few blobs at a time, 512 KiB at a time. Then it puts the manifests
under a new build id and records the build, its log and an unpromoted release in one
transaction. A failure untags what was put; no record exists unless every manifest is in.
Blobs already uploaded stay, unreferenced, for the registry's garbage collection (and for a
retry to skip).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Protocol

from client.kernel import types
from client.kernel.errors import Cancelled, FailedPrecondition, InvalidArgument
from services.common.oci import Manifest, Registry, check_digest
from services.common.push import human_size
from services.registry.export import services_of
from services.registry.finish import Destination
from services.registry.records import BuildRecords, ImportedBuild

log = logging.getLogger(__name__)

# Blobs moving at once: enough to keep both registries busy, few enough to stay gentle.
PARALLEL_BLOBS = 3
# At most one byte-count update per interval while blobs move.
PROGRESS_INTERVAL = 0.5

Event = types.CopyProgress | types.CopyResult


class SourceRack(Protocol):
    """The rack a build is copied from, reached with its own token."""

    @property
    def name(self) -> str:
        """How messages name it."""
        ...

    def get_build(self, app: str, build_id: str) -> types.Build:
        """The build of `app`; NotFound when unknown."""
        ...

    def log_lines(self, build_id: str) -> Iterator[str]:
        """The build's stored log, line by line."""
        ...

    def manifests(self, app: str, build_id: str) -> list[types.ImageManifest]:
        """The manifest of every service image of a complete build."""
        ...

    def read_blob(self, app: str, digest: str) -> Iterator[bytes]:
        """The bytes of one blob of `app`'s repository, in pieces."""
        ...

    def close(self) -> None:
        """Lets go of the connections."""
        ...


ConnectSource = Callable[[str, str, str, "bytes | None"], SourceRack]
"""Opens a source rack from its front door `host:port`, its token, a name for messages and
the CA its certificates are verified against (PEM; None: the system's trusted roots)."""


@dataclass(frozen=True)
class CopyRequest:
    """Which build to copy, from where, and into which app."""

    source_host: str
    source_token: str = field(repr=False)
    app: str
    build: str
    to_app: str = ""
    source_name: str = ""
    source_ca: bytes | None = field(default=None, repr=False)


def check_ca(ca: bytes) -> None:
    """InvalidArgument unless `ca` is empty or PEM certificates of at most 256 KiB."""
    if ca and types.ca_problem(ca):
        raise InvalidArgument("the source rack's CA must be PEM certificates, at most 256 KiB")


def config_digest(manifest: Manifest) -> str:
    """The config blob's digest of an image manifest; empty for an index."""
    config = json.loads(manifest.body).get("config") or {}
    return str(config.get("digest", ""))


class BuildImages:
    """The source side: a complete build's image manifests and blobs, for another rack."""

    def __init__(self, registry: Registry, records: BuildRecords) -> None:
        self.registry = registry
        self.records = records

    def manifests(self, app: str, build_id: str) -> list[types.ImageManifest]:
        """One manifest per service, by service name. NotFound for an unknown app or build,
        FailedPrecondition for a build that is not complete or has no images."""
        types.check_app_name(app)
        build = self.records.get_build(build_id, app)
        if build.status != types.COMPLETE:
            raise FailedPrecondition(
                f"build {build.id} is {build.status}: only a complete build can be copied"
            )
        images = []
        for service in services_of(self.registry.tags(app), build.id):
            manifest = self.registry.manifest(app, f"{service}.{build.id}")
            if manifest is None:
                continue  # untagged between the listing and now
            images.append(
                types.ImageManifest(
                    service=service,
                    media_type=manifest.media_type,
                    body=manifest.body,
                    digest=manifest.digest,
                    config_digest=config_digest(manifest),
                )
            )
        if not images:
            raise FailedPrecondition(
                f"build {build.id} has no images in the registry at {self.registry.host}"
            )
        return images

    def read_blob(self, app: str, digest: str) -> Iterator[bytes]:
        """The blob's bytes in pieces of at most 512 KiB; NotFound at once when the app's
        repository does not hold it."""
        types.check_app_name(app)
        return self.registry.read_blob(app, check_digest(digest))


def blob_sizes(images: list[types.ImageManifest], source: str) -> dict[str, int]:
    """Every distinct blob the images reference (config first, then layers), with its size.
    Raises for what a copy cannot carry: an index, a manifest that is not its digest's."""
    sizes: dict[str, int] = {}
    for image in images:
        if image.digest and image.digest != f"sha256:{hashlib.sha256(image.body).hexdigest()}":
            raise InvalidArgument(
                f"source rack {source}: the manifest of {image.service} does not match its digest"
            )
        data = json.loads(image.body)
        if "manifests" in data or not data.get("config"):
            raise FailedPrecondition(
                f"the image of {image.service} is a multi-platform index: "
                "only single-platform images can be copied"
            )
        for ref in [data["config"], *(data.get("layers") or [])]:
            if ref.get("urls"):
                continue  # a foreign layer: the engine fetches it from its URLs
            sizes[check_digest(str(ref.get("digest", "")))] = int(ref.get("size", 0))
    return sizes


@dataclass
class Tally:
    """What moving the missing blobs did, updated by the workers."""

    moved: list[str] = field(default_factory=list)
    mounted: int = 0
    bytes: int = 0
    settled: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class Copier:
    """The destination side: copies builds of other racks into this one."""

    def __init__(
        self,
        destination: Destination,
        connect: ConnectSource,
        parallel: int = PARALLEL_BLOBS,
        interval: float = PROGRESS_INTERVAL,
    ) -> None:
        self.destination = destination
        self.registry = destination.registry
        self.connect = connect
        self.parallel = parallel
        self.interval = interval

    def copy(self, request: CopyRequest) -> Iterator[Event]:
        """Progress, then one CopyResult. Bad names raise at once; the rest as it goes."""
        types.check_app_name(request.app)
        types.check_app_name(request.to_app or request.app)
        if not request.source_host:
            raise InvalidArgument("the source rack's host is required")
        if not request.build:
            raise InvalidArgument("the build is required")
        check_ca(request.source_ca or b"")
        # Before anything moves: nothing creates an app, and no blob lands for nothing.
        self.destination.records.check_app(request.to_app or request.app)
        return self._copy(request)

    def _copy(self, request: CopyRequest) -> Iterator[Event]:
        app, to_app = request.app, request.to_app or request.app
        name = request.source_name or request.source_host
        yield types.CopyProgress(f"Reading build {request.build} of {app} from {name}")
        source = self.connect(request.source_host, request.source_token, name, request.source_ca)
        try:
            build = source.get_build(app, request.build)
            if build.status != types.COMPLETE:
                raise FailedPrecondition(
                    f"build {build.id} is {build.status}: only a complete build can be copied"
                )
            images = source.manifests(app, build.id)
            sizes = blob_sizes(images, source.name)
            self.registry.prepare(to_app)
            missing = [d for d in sizes if not self.registry.has_blob(to_app, d)]
            total = sum(sizes[d] for d in missing)
            yield types.CopyProgress(
                f"{len(missing)} of {len(sizes)} blobs to move ({human_size(total)})", 0, total
            )
            tally = yield from self._move(source, app, to_app, missing, sizes, total)
            lines = list(source.log_lines(build.id))
            new_build, release = self._publish(to_app, build, images, lines)
        finally:
            source.close()
        log.info(
            "copied %s/%s from %s as %s/%s: moved %d of %d blobs (%d bytes), mounted %d",
            app,
            build.id,
            name,
            to_app,
            new_build.id,
            len(tally.moved),
            len(sizes),
            tally.bytes,
            tally.mounted,
        )
        yield types.CopyResult(
            build=new_build,
            release=release,
            blobs=len(sizes),
            moved=len(tally.moved),
            mounted=tally.mounted,
            bytes=tally.bytes,
            moved_blobs=tuple(tally.moved),
        )

    def _move(
        self,
        source: SourceRack,
        app: str,
        to_app: str,
        missing: list[str],
        sizes: dict[str, int],
        total: int,
    ) -> Generator[types.CopyProgress, None, Tally]:
        """Mounts or moves every missing blob, `parallel` at a time, yielding progress."""
        tally = Tally()
        stop = threading.Event()

        def one(digest: str) -> str:
            # A repository named after the source app may hold it already: mount, no bytes.
            if to_app != app and self.registry.mount_blob(to_app, digest, app):
                with tally.lock:
                    tally.mounted += 1
                    tally.settled += sizes[digest]
                return f"{digest[7:19]}: Mounted from {app}"

            def counted() -> Iterator[bytes]:
                for data in source.read_blob(app, digest):
                    if stop.is_set():
                        raise Cancelled("the copy stopped")
                    with tally.lock:
                        tally.bytes += len(data)
                        tally.settled += len(data)
                    yield data

            size = self.registry.upload_blob(to_app, digest, counted())
            with tally.lock:
                tally.moved.append(digest)
            return f"{digest[7:19]}: Moved {human_size(size)}"

        if not missing:
            return tally
        pool = ThreadPoolExecutor(self.parallel, thread_name_prefix="copy")
        try:
            pending: set[Future[str]] = {pool.submit(one, digest) for digest in missing}
            while pending:
                done, pending = wait(pending, timeout=self.interval, return_when=FIRST_COMPLETED)
                texts = [future.result() for future in done]  # the first failure raises
                for text in texts or [f"Moving {human_size(tally.settled)}/{human_size(total)}"]:
                    yield types.CopyProgress(text, tally.settled, total)
        finally:
            stop.set()
            pool.shutdown(wait=True, cancel_futures=True)
        return tally

    def _publish(
        self,
        to_app: str,
        build: types.Build,
        images: list[types.ImageManifest],
        lines: list[str],
    ) -> tuple[types.Build, types.Release]:
        """Puts every manifest under a new build id, then records the build; all or nothing."""
        with self.destination.moving(to_app, "copy") as moved:
            for image in images:
                tag = moved.tag(image.service, local=False)
                manifest = Manifest(image.digest, image.media_type, image.body)
                self.registry.put_manifest(to_app, tag, manifest)
            return moved.record(ImportedBuild.of(build, lines))
