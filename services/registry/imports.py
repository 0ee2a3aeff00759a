"""Importing a build (SPEC §5): the archive is spooled to disk as it arrives (compressed
layers checked on the way), its images are pushed (loaded into the engine first unless their
layers are compressed), and only then is the build recorded, under a new id.

The new id is chosen first; each image is pushed as `{app}:{service}.{newId}`, and then
metadata records the build, its log and its release in one transaction under that id
(`services.registry.finish`). A failure at any step removes what the import made (pushed
tags, local names, loaded images), and no record exists unless every push succeeded.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import secrets
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from client.kernel import types
from client.kernel.errors import InvalidArgument, SlipwayError
from client.kernel.streams import iter_chunks
from client.kernel.types import SERVICE_NAME
from services.common.push import Pusher
from services.registry.blobpush import Layout, check_image, compressed_images, push_with_retries
from services.registry.buildarchive import BuildRecord, decode_build, unpack
from services.registry.engine import ImageEngine
from services.registry.finish import Destination, Leftovers
from services.registry.imagetar import DOCKER, OCI, kind_of, retag, saved_images, split_name
from services.registry.layerscan import HeldUploads
from services.registry.publish import push_as
from services.registry.records import ImportedBuild

log = logging.getLogger(__name__)

# Local names of loaded OCI archives: `slipway-import-<token>:<service>`.
LOCAL_NAME = "slipway-import"


@dataclass
class Source:
    """Where one service's image comes from."""

    service: str
    kind: str
    #: The image tar's name in the archive, and where it was spooled.
    name: str
    path: Path
    #: The image id, known from a `docker save` tar's config; for an OCI archive, once loaded.
    image: str = ""


def plan(record: BuildRecord, tars: dict[str, Path]) -> list[Source]:
    """Each service's image source: images of `docker save` tars tagged
    `<repository>:<service>.<buildId>`, and OCI archives named `<service>.<buildId>.tar`."""
    suffix = f".{record.id}"
    found: dict[str, Source] = {}

    def add(source: Source, where: str) -> None:
        if not SERVICE_NAME.match(source.service):
            raise InvalidArgument(f"invalid service name {source.service!r} in {where}")
        if source.service in found:
            raise InvalidArgument(f"the archive holds two images for service {source.service}")
        found[source.service] = source

    for name, path in sorted(tars.items()):
        if kind_of(path) == DOCKER:
            for image in saved_images(path):
                for repo_tag in image.repo_tags:
                    tag = split_name(repo_tag)[1]
                    if tag.endswith(suffix):
                        add(Source(tag.removesuffix(suffix), DOCKER, name, path, image.id), name)
        elif name.endswith(f"{suffix}.tar"):
            add(Source(name.removesuffix(f"{suffix}.tar"), OCI, name, path), name)
        else:
            raise InvalidArgument(f"{name}: an OCI archive must be named <service>{suffix}.tar")
    if not found:
        raise InvalidArgument(f"the archive holds no image tagged <service>{suffix}")
    return sorted(found.values(), key=lambda s: s.service)


class Importer:
    """Brings exported builds into the rack."""

    def __init__(
        self,
        engine: ImageEngine,
        destination: Destination,
        pusher: Pusher,
        scratch: Path,
    ) -> None:
        self.engine = engine
        self.destination = destination
        self.pusher = pusher
        self.scratch = scratch

    def import_build(self, app: str, chunks: Iterable[bytes]) -> tuple[types.Build, types.Release]:
        """Reads the whole archive from `chunks`, then pushes and records the build."""
        types.check_app_name(app)
        self.destination.records.check_app(app)  # before the archive is read
        self.scratch.mkdir(parents=True, exist_ok=True)
        times = [time.monotonic()]
        registry = self.destination.registry
        registry.prepare(app)
        with (
            tempfile.TemporaryDirectory(prefix="slipway-import-", dir=self.scratch) as work,
            HeldUploads(registry, app) as held,
        ):
            unpacked = unpack(chunks, Path(work), held)
            times.append(time.monotonic())
            if unpacked.build_json is None:
                raise InvalidArgument("invalid archive: it holds no build.json")
            record = decode_build(unpacked.build_json)
            sources = plan(record, unpacked.tars)
            with self.destination.moving(app, "import", self.engine) as moved:
                # Compressed layers (an export's) are checked whole before any blob is
                # committed: a lying layer leaves no blob behind.
                direct = {
                    source.service: check_image(source.path, layout, unpacked.layers[source.name])
                    for source, layout in _from_blobs(sources)
                }
                through_engine = [s for s in sources if s.service not in direct]
                self._load(through_engine, secrets.token_hex(6), moved.made)
                times.append(time.monotonic())
                for source in sources:
                    if source.service in direct:
                        # Compressed layers (an export's): their blobs go up as they are.
                        tag = moved.tag(source.service, local=False)
                        with _pushing(source.service):
                            push_with_retries(
                                registry, app, tag, source.path, direct[source.service], held=held
                            )
                        continue
                    tag = moved.tag(source.service)
                    for _progress in push_as(self.pusher, source.image, app, tag, source.service):
                        pass
                times.append(time.monotonic())
                build, release = moved.record(ImportedBuild.of(record, record.log_lines))
        received, checked, pushed = (after - before for before, after in itertools.pairwise(times))
        log.info(
            "imported %s/%s as %s/%s, %s: received in %.2f s, checked or loaded in %.2f s, "
            "pushed in %.2f s",
            record.app, record.id, app, build.id, release.id, received, checked, pushed,
        )  # fmt: skip
        return build, release

    def _load(self, sources: list[Source], token: str, made: Leftovers) -> None:
        """Loads every image into the engine, `docker save` tars unnamed (their names are
        the source rack's), OCI archives under a name of this import's own."""
        for path in dict.fromkeys(s.path for s in sources if s.kind == DOCKER):
            tar_name = next(s.name for s in sources if s.path == path)
            ids = sorted({s.image for s in sources if s.path == path})
            made.loaded.extend(i for i in ids if self.engine.image_id(i) is None)
            with _named(tar_name), open(path, "rb") as tar:
                self.engine.load(retag(iter_chunks(tar), lambda _name: None))
            for image in ids:
                if self.engine.image_id(image) is None:
                    raise InvalidArgument(f"{tar_name}: image {image} is missing after loading")
        for source in sources:
            if source.kind != DOCKER:
                name = f"{LOCAL_NAME}-{token}:{source.service}"
                made.names.append(name)
                with _named(f"invalid OCI archive {source.name}"):
                    self.engine.load_oci(source.path, name)
                source.image = self.engine.image_id(name) or ""
                if not source.image:
                    raise InvalidArgument(f"{source.name}: no image after loading it")


def _from_blobs(sources: list[Source]) -> list[tuple[Source, Layout]]:
    """The sources whose `docker save` tar has compressed layers, pushed blob by blob;
    the others go through the engine."""
    direct: list[tuple[Source, Layout]] = []
    for path in dict.fromkeys(s.path for s in sources if s.kind == DOCKER):
        images = compressed_images(path)
        ours = [s for s in sources if s.path == path]
        if images is not None and all(s.image in images for s in ours):
            direct.extend((s, images[s.image]) for s in ours)
    return direct


@contextlib.contextmanager
def _pushing(service: str) -> Iterator[None]:
    """Names the service in a failed push, as an engine push's failure does."""
    try:
        yield
    except SlipwayError as err:
        raise type(err)(f"cannot push {service}: {err}") from None


@contextlib.contextmanager
def _named(what: str) -> Iterator[None]:
    """Puts `what` (the image tar's name in the archive) in front of an InvalidArgument."""
    try:
        yield
    except InvalidArgument as err:
        raise InvalidArgument(f"{what}: {err}") from None
