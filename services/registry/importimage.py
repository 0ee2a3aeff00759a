"""Importing images (SPEC §3 `slipway builds import-image`): existing images relayed from
their registries into a new build of an app.

Each service of the manifest takes its own `image:`, else the requested image; without a
manifest there is one service, `web`. Every distinct image is pulled once, then pushed as
`{registry}/{app}:{service}.{newId}` through the `Pusher`; only when every push succeeded
are the build (complete, with the log of what happened) and its unpromoted release
recorded, in one metadata transaction (`services.registry.finish`). A failure at any step
untags what was pushed and removes the local names the import made, so nothing is left
behind.
"""

from __future__ import annotations

import logging
import shlex
import time
from collections.abc import Callable, Generator, Iterator, Mapping
from dataclasses import dataclass

import yaml

from client.kernel import manifest, types
from client.kernel.errors import Internal, InvalidArgument, Unavailable
from client.kernel.types import PushProgress
from services.common.docker.fallback import use_local_copy
from services.common.push import PROGRESS_INTERVAL, Pusher, progress_of, throttle
from services.registry.engine import ImageEngine
from services.registry.finish import Destination, Leftovers
from services.registry.publish import push_as
from services.registry.records import ImportedBuild

log = logging.getLogger(__name__)

#: The one service of an import without a manifest.
DEFAULT_SERVICE = "web"


@dataclass(frozen=True)
class ImageImported:
    """The last event of an import: what was recorded."""

    build: types.Build
    release: types.Release


Event = PushProgress | ImageImported


@dataclass(frozen=True)
class Plan:
    """What an import does: the manifest recorded with the build, and each service's image
    in the manifest's order."""

    manifest: str
    images: dict[str, str]


def plan(image: str, text: str, env: Mapping[str, str]) -> Plan:
    """Each service's image: its own `image:`, else `image`. An empty manifest means one
    service, `web`, recorded as `services: {web: {image: <image>}}`."""
    if not text.strip():
        default = {"services": {DEFAULT_SERVICE: {"image": image}}}
        text = yaml.safe_dump(default, default_flow_style=False, sort_keys=False)
    parsed = manifest.parse(text, env)
    if not parsed.services:
        raise InvalidArgument("the manifest has no services")
    return Plan(parsed.text, {s.name: s.image or image for s in parsed.services})


def split_reference(reference: str) -> tuple[str, str]:
    """`(repository, tag)` of an image reference, the tag being `latest` when it names none
    and the digest when it names one (`repo@sha256:…`, a tag beside it ignored)."""
    name, at, digest = reference.partition("@")
    repository, colon, tag = name.rpartition(":")
    if not colon or "/" in tag:
        repository, tag = name, "latest"
    return repository, digest if at else tag


class ImageImporter:
    """Relays images from any registry the engine can pull from into the rack."""

    def __init__(
        self,
        engine: ImageEngine,
        destination: Destination,
        pusher: Pusher,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        interval: float = PROGRESS_INTERVAL,
    ) -> None:
        self.engine = engine
        self.destination = destination
        self.pusher = pusher
        self._clock = clock
        self._monotonic = monotonic
        self._interval = interval

    def import_image(
        self, app: str, image: str, manifest_text: str = "", description: str = ""
    ) -> Iterator[Event]:
        """Progress, then one ImageImported. Bad input raises at once; a failed pull or push
        raises from the stream, leaving nothing behind."""
        types.check_app_name(app)
        image = image.strip()
        if not image:
            raise InvalidArgument("image is required")
        planned = plan(image, manifest_text, self.destination.records.app_env(app))
        self.destination.records.check_app(app)  # the input is checked; nothing pulled yet
        return self._run(app, planned, description or f"import-image {image}")

    def _run(self, app: str, planned: Plan, description: str) -> Iterator[Event]:
        started = self._clock()
        lines: list[str] = []
        with self.destination.moving(app, "image import", self.engine) as moved:
            ids: dict[str, str] = {}
            for reference in dict.fromkeys(planned.images.values()):
                ids[reference] = yield from self._pull(reference, lines, moved.made)
            for service, reference in planned.images.items():
                tag = moved.tag(service)
                # Tagged by reference, so the log reads as the commands a person would type.
                yield from self._push(reference, app, tag, service, lines)
            first = ids[next(iter(planned.images.values()))]
            imported = ImportedBuild(
                description=description,
                manifest=planned.manifest,
                entrypoint=shlex.join(self.engine.entrypoint(first)),
                log_lines=lines,
                started=started,
                ended=self._clock(),
            )
            build, release = moved.record(imported)
        log.info("imported %s into %s as %s, %s", description, app, build.id, release.id)
        yield ImageImported(build, release)

    def _pull(
        self, reference: str, lines: list[str], made: Leftovers
    ) -> Generator[Event, None, str]:
        """Pulls `reference`, logging what happens; returns the local image id. When its
        registry cannot be reached, a copy the engine already has will do (as in builds)."""
        repository, tag = split_reference(reference)
        yield self._line(lines, f"Running: docker pull {reference}")
        had = self.engine.image_id(reference) is not None
        registry = self.destination.registry
        auth = registry.auth() if repository.startswith(f"{registry.host}/") else None
        try:
            if not had:
                made.pulled.append(reference)
            events = self.engine.pull_events(repository, tag, auth)
            for event in throttle(events, self._monotonic, self._interval):
                progress = progress_of(event)
                if not event.current:
                    lines.append(progress.text)
                yield progress
        except Unavailable as err:
            if not had:
                raise
            said: list[str] = []
            local = use_local_copy(reference, err, self.engine.image_id, said.append)
            for text in said:
                yield self._line(lines, text)
            return local
        image_id = self.engine.image_id(reference)
        if image_id is None:
            raise Internal(f"cannot pull {reference}: the engine has no image after pulling it")
        return image_id

    def _push(
        self, image: str, app: str, tag: str, service: str, lines: list[str]
    ) -> Iterator[Event]:
        for event in push_as(self.pusher, image, app, tag, service):
            if not event.current:
                lines.append(event.text)
            yield event

    @staticmethod
    def _line(lines: list[str], text: str) -> PushProgress:
        lines.append(text)
        return PushProgress(text=text)
