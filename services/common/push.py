"""Pushing a local image into a registry, for every service that pushes (the builder its
builds, the registry service its imports): validate the names, tag, push, and turn the
engine's events into progress a person can read, at a pace a terminal can show.

The `Running: docker tag …` and `Running: docker push …` lines are made here once, so a
build log and an import log read the same.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from client.kernel.errors import Internal, InvalidArgument, SlipwayError, Unavailable
from client.kernel.types import PushProgress, PushResult
from services.common.docker.types import PushEvent

log = logging.getLogger(__name__)

# Docker's distribution reference grammar for a repository path: lowercase components
# joined by `.`, `_`, `__` or dashes, separated by `/`.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
REPOSITORY = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*\Z")
TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}\Z")

# At most one progress update per layer per interval, status changes excepted.
PROGRESS_INTERVAL = 0.5
# A push that fails for a passing reason (the registry down, restarting, or answering 5xx;
# a timeout) is tried again: ATTEMPTS in all, waiting RETRY_DELAYS in between (15 s).
ATTEMPTS = 5
RETRY_DELAYS = (1.0, 2.0, 4.0, 8.0)
_TRANSIENT_TEXT = re.compile(
    r"\b5\d\d\b|timeout|timed out|unexpected eof|connection reset|broken pipe|"
    r"service unavailable|bad gateway|too many requests",
    re.I,
)


def transient(err: SlipwayError) -> bool:
    """Whether a failed push may succeed if tried again."""
    if isinstance(err, Unavailable):
        return True
    return not isinstance(err, InvalidArgument) and bool(_TRANSIENT_TEXT.search(str(err)))


Event = PushProgress | PushResult


class PushEngine(Protocol):
    """What a push needs of the engine (`services.common.docker.engine.DockerEngine`)."""

    def tag(self, image: str, repository: str, tag: str) -> None: ...

    def push(
        self, repository: str, tag: str, auth: Mapping[str, str] | None = None
    ) -> Iterator[PushEvent]: ...


class PushTarget(Protocol):
    """Where pushes go: a registry host, how to ready a repository, and credentials."""

    @property
    def host(self) -> str: ...

    def prepare(self, repository: str) -> None:
        """Makes `repository` ready to receive a push (ECR creates it)."""
        ...

    def auth(self) -> Mapping[str, str] | None:
        """Credentials for the engine's push, or None when it needs none."""
        ...


@dataclass(frozen=True)
class Destination:
    """A registry that needs nothing before a push (Distribution): its host and, when it
    asks for them, the credentials (`username`, `password`) the engine sends."""

    host: str
    credentials: Mapping[str, str] = field(default_factory=dict, repr=False)

    def prepare(self, repository: str) -> None:
        return None

    def auth(self) -> Mapping[str, str] | None:
        return dict(self.credentials) or None


class Logins(Mapping[str, Mapping[str, str]]):
    """The engine's logins for one registry, asked of it at each use: ECR's credentials are
    a token that expires, Distribution's never change."""

    def __init__(self, registry: PushTarget) -> None:
        self._registry = registry

    def __getitem__(self, host: str) -> Mapping[str, str]:
        auth = self._registry.auth() if host == self._registry.host else None
        if not auth:
            raise KeyError(host)
        return auth

    def __iter__(self) -> Iterator[str]:
        """The registry's host, which has credentials (asked at each use: an ECR error
        asking for them propagates as it is)."""
        return iter([self._registry.host])

    def __len__(self) -> int:
        return 1


def check_push(image: str, repository: str, tag: str) -> None:
    """Raises InvalidArgument unless image, repository and tag can name a push."""
    if not image:
        raise InvalidArgument("image is required")
    if len(repository) > 255 or not REPOSITORY.match(repository):
        raise InvalidArgument(
            f"invalid repository: {repository!r} (lowercase letters and digits, "
            "separated by '.', '_', '-' or '/')"
        )
    if not TAG.match(tag):
        raise InvalidArgument(
            f"invalid tag: {tag!r} (must match ^[A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}}$)"
        )


def human_size(n: int) -> str:
    """Bytes the way the docker CLI shows them: decimal units, three significant digits."""
    size = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000:
            return f"{size:.3g}{unit}"
        size /= 1000
    return f"{size:.3g}TB"


def progress_of(event: PushEvent) -> PushProgress:
    """The readable progress line for an engine event, e.g. `abc123: Pushing 1.2MB/3.4MB`."""
    text = f"{event.layer}: {event.status}" if event.layer else event.status
    if event.total > 0:
        text += f" {human_size(event.current)}/{human_size(event.total)}"
    elif event.current > 0:
        text += f" {human_size(event.current)}"
    return PushProgress(
        text=text,
        layer=event.layer,
        status=event.status,
        current=event.current,
        total=event.total,
    )


def throttle(
    events: Iterable[PushEvent], clock: Callable[[], float], interval: float = PROGRESS_INTERVAL
) -> Iterator[PushEvent]:
    """Drops layer updates arriving within `interval` of the last one shown for that layer,
    unless the layer's status changed; everything else passes."""
    shown: dict[str, tuple[str, float]] = {}
    for event in events:
        if event.layer:
            now = clock()
            last = shown.get(event.layer)
            if last is not None and last[0] == event.status and now - last[1] < interval:
                continue
            shown[event.layer] = (event.status, now)
        yield event


class Pusher:
    """Pushes local images of `engine` into the registry `target`."""

    def __init__(
        self,
        engine: PushEngine,
        target: PushTarget,
        clock: Callable[[], float] = time.monotonic,
        interval: float = PROGRESS_INTERVAL,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.engine = engine
        self.registry = target
        self._clock = clock
        self._interval = interval
        self._sleep = sleep

    def registry_host(self) -> str:
        """The host (and port) image references name the registry by."""
        return self.registry.host

    def push(self, image: str, repository: str, tag: str) -> Iterator[Event]:
        """Tags `image` as `{registry}/{repository}:{tag}` and pushes it: progress, then
        one PushResult. Raises on bad names, an unknown image, or a failed push."""
        check_push(image, repository, tag)
        return self._push(image, repository, tag)

    def _push(self, image: str, repository: str, tag: str) -> Iterator[Event]:
        target = f"{self.registry.host}/{repository}"
        reference = f"{target}:{tag}"
        yield PushProgress(text=f"Running: docker tag {image} {reference}")
        self.engine.tag(image, target, tag)
        try:
            self.registry.prepare(repository)
            yield PushProgress(text=f"Running: docker push {reference}")
            for attempt in range(1, ATTEMPTS + 1):
                try:
                    digest = yield from self._attempt(target, tag, reference)
                    break
                except SlipwayError as err:
                    if attempt == ATTEMPTS or not transient(err):
                        raise
                    yield PushProgress(
                        text=f"Retrying push of {reference} "
                        f"(attempt {attempt + 1} of {ATTEMPTS}): {err}"
                    )
                    self._sleep(RETRY_DELAYS[min(attempt - 1, len(RETRY_DELAYS) - 1)])
        except BaseException:
            self._untag(reference)  # nothing of a failed push stays in the engine
            raise
        log.info("pushed %s as %s", reference, digest)
        yield PushResult(reference=reference, digest=digest)

    def _attempt(self, target: str, tag: str, reference: str) -> Generator[Event, None, str]:
        """One push; returns the digest (a generator's return value), progress on the way."""
        digest = ""
        events = self.engine.push(target, tag, self.registry.auth())
        for event in throttle(events, self._clock, self._interval):
            if event.digest:
                digest = event.digest
            elif event.status:
                yield progress_of(event)
        if not digest:
            raise Internal(f"push of {reference} ended without a digest")
        return digest

    def _untag(self, reference: str) -> None:
        remove = getattr(self.engine, "remove", None)
        if remove is None:
            return
        try:
            remove(reference)
        except SlipwayError as err:
            log.warning("cannot remove the local name %s after a failed push: %s", reference, err)
