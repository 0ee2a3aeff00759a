"""What the Docker adapter takes and gives: plain dataclasses and two tiny protocols, so
service cores and fakes can use them without importing docker-py."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from client.kernel.entries import Source
from client.kernel.errors import Internal

#: Receives one line of output, without its newline.
LineSink = Callable[[str], None]


class EngineError(Internal):
    """The engine refused or failed the work; the message is the engine's own text."""


@dataclass(frozen=True)
class BuildSpec:
    """One image build: a context and what to build from it."""

    #: The context: a folder on disk, or (with `source`) a path inside `source`.
    context: str
    #: The Dockerfile, relative to `context` (it may lie outside it, within the source).
    dockerfile: str = "Dockerfile"
    buildargs: Mapping[str, str] = field(default_factory=dict)
    target: str = ""
    nocache: bool = False
    #: Images whose inline layer cache the build may reuse (BuildKit), local references.
    cache_from: tuple[str, ...] = ()
    #: Secrets the Dockerfile may mount (`RUN --mount=type=secret,id=ID`), id -> value;
    #: held in memory for the build alone, never printed (BuildKit).
    secrets: Mapping[str, bytes] = field(default_factory=dict, repr=False)
    #: The build's source (entries and their bytes, wherever they are); None when
    #: `context` is a folder on disk.
    source: Source | None = field(default=None, compare=False)


@dataclass(frozen=True)
class ImageInfo:
    """What the builder reads of a local image."""

    id: str
    entrypoint: tuple[str, ...] = ()


@dataclass(frozen=True)
class PushEvent:
    """One update of a push or pull as the engine reports it: a status (for a layer when
    `layer` is set), or, near the end of a push, the manifest digest."""

    status: str = ""
    layer: str = ""
    current: int = 0
    total: int = 0
    digest: str = ""


class Cancellable(Protocol):
    """A cancellation scope (the builder's `CancelScope`): work registers how to stop."""

    @property
    def cancelled(self) -> bool: ...

    def on_cancel(self, hook: Callable[[], None]) -> Callable[[], None]:
        """Registers `hook` (called at once when already cancelled); returns an unregister."""
        ...
