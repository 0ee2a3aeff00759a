"""Finishing a moved build: the one path imports, image imports and copies end on.

A build moved into an app gets a new id first; every image lands under
`{app}:{service}.{newId}`; then metadata records the build, its log and an unpromoted
release in one transaction (`BuildRecords.record_import`, RecordBuild on the wire). A
failure at any step untags what was pushed or put and removes what the move made in the
engine, so no record exists unless every image is in, and nothing is left behind.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from client.kernel import types
from client.kernel.errors import SlipwayError
from services.common.oci import Registry
from services.registry.engine import ImageEngine
from services.registry.records import BuildRecords, ImportedBuild

log = logging.getLogger(__name__)


@dataclass
class Leftovers:
    """What a move made along the way, and when each is undone."""

    #: Tags of the app's repository: untagged on failure (a tag never pushed is a no-op).
    published: list[str] = field(default_factory=list)
    #: Local image names: removed at the end, success or not.
    names: list[str] = field(default_factory=list)
    #: Local images loaded from an archive: removed at the end, after the names.
    loaded: list[str] = field(default_factory=list)
    #: Images pulled that the engine lacked: removed on failure; on success they stay, as
    #: the builder's pulls do.
    pulled: list[str] = field(default_factory=list)


class MovedBuild:
    """A build arriving in `app` under a new id, and what its arrival made so far."""

    def __init__(self, registry: Registry, records: BuildRecords, app: str) -> None:
        self.registry = registry
        self.records = records
        self.app = app
        self.id = types.new_id("B")
        self.made = Leftovers()

    def tag(self, service: str, local: bool = True) -> str:
        """The new tag of `service`'s image, remembered for undoing; with `local`, the
        engine's name for it too (an engine push names the image `{registry}/{app}:{tag}`)."""
        tag = f"{service}.{self.id}"
        if local:
            self.made.names.append(f"{self.registry.host}/{self.app}:{tag}")
        self.made.published.append(tag)
        return tag

    def record(self, build: ImportedBuild) -> tuple[types.Build, types.Release]:
        """Records the build, its log and its release in one metadata transaction."""
        return self.records.record_import(self.app, self.id, build)


@dataclass(frozen=True)
class Destination:
    """This rack as moved builds land in it: its registry and its records. Imports bring
    their images through an engine, copies go registry to registry."""

    registry: Registry
    records: BuildRecords

    def moving(
        self, app: str, what: str, engine: ImageEngine | None = None
    ) -> contextlib.AbstractContextManager[MovedBuild]:
        """See `moving`."""
        return moving(self.registry, self.records, app, what, engine)


@contextlib.contextmanager
def moving(
    registry: Registry,
    records: BuildRecords,
    app: str,
    what: str,
    engine: ImageEngine | None = None,
) -> Iterator[MovedBuild]:
    """A `MovedBuild` of `app` whose leftovers are cleaned when the block ends, and undone
    when it raises (`what`, e.g. `copy`, names the move in the log)."""
    records.check_app(app)  # before anything moves: nothing creates an app
    build = MovedBuild(registry, records, app)
    made = build.made
    try:
        yield build
    except BaseException:
        untag_all(registry, app, made.published, what)
        if engine is not None:
            remove_local(engine, made.pulled)
        raise
    finally:
        if engine is not None:
            remove_local(engine, [*made.names, *made.loaded])


def untag_all(registry: Registry, repository: str, tags: Iterable[str], what: str) -> None:
    """Removes every `repository:tag` after a failed `what`; a tag never pushed is no-op."""
    for tag in tags:
        try:
            registry.untag(repository, tag)
        except SlipwayError as err:
            log.warning("cannot remove %s:%s after a failed %s: %s", repository, tag, what, err)


def remove_local(engine: ImageEngine, references: Iterable[str]) -> None:
    """Removes local image names; what cannot be removed is logged, not raised."""
    for reference in references:
        try:
            engine.remove(reference)
        except SlipwayError as err:
            log.warning("cannot remove the local image %s: %s", reference, err)
