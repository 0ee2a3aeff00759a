"""The builder core's seams: what it needs of metadata, archives, the registry and the
Docker engine, as small protocols, plus the cancellation scope engine work runs under.

The real implementations are the typed clients (`client.api.metadata.MetadataClient`,
`client.api.archive.ArchiveClient`), the one Docker adapter
(`services.common.docker.engine.DockerEngine`) and the common `services.common.push.Pusher`
pushing through it. The engine's dataclasses (`BuildSpec`, `ImageInfo`) and `EngineError`
are the adapter's, named here as the builder sees them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from client.kernel import types
from client.kernel.errors import Cancelled
from services.common.docker.types import BuildSpec, EngineError, ImageInfo, LineSink

__all__ = [
    "BuildSpec",
    "BuildStore",
    "CancelScope",
    "Deps",
    "EngineError",
    "ImageEngine",
    "ImageInfo",
    "ImagePusher",
    "LineSink",
    "SourceStore",
]


class BuildStore(Protocol):
    """Apps, builds, releases and logs (metadata)."""

    def create_app(self, name: str, exist_ok: bool = False) -> types.App: ...

    def get_app(self, name: str) -> types.App: ...

    def create_build(
        self,
        app: str,
        description: str = "",
        manifest: str = "",
        git_sha: str = "",
        archive: str = "",
        request: str = "",
        timeout: float = 0.0,
        pinned: str = "",
    ) -> types.Build: ...

    def get_build(self, build_id: str, app: str = "") -> types.Build: ...

    def update_build(
        self, build_id: str, *, lease: types.Lease | None = None, **fields: object
    ) -> types.Build: ...

    def claim_build(self, builder: str) -> types.Claim | None: ...

    def list_archives(self) -> Iterable[str]: ...

    def renew_lease(self, build_id: str, lease: types.Lease) -> tuple[bool, types.Build]: ...

    def expire_builds(self, owner: str = "") -> list[str]: ...

    def create_release(
        self,
        app: str,
        build: str = "",
        env: Mapping[str, str] | None = None,
        manifest: str = "",
        description: str = "",
        inherit_env: bool = False,
        lease: types.Lease | None = None,
        complete: types.Completion | None = None,
    ) -> types.Release: ...

    def list_releases(self, app: str, limit: int = 10) -> list[types.Release]: ...

    def append_logs(
        self, build_id: str, lines: Sequence[str], lease: types.Lease | None = None
    ) -> int: ...

    def stream_logs(
        self, build_id: str, offset: int = 0, follow: bool = False
    ) -> Iterable[types.LogLine]:
        """The log from `offset`; with `follow`, until the build ends. The result may also
        have `cancel()`, which ends a following read from another thread."""
        ...


class SourceStore(Protocol):
    """Uploaded source archives (archive)."""

    def stat(self, archive_id: str) -> int: ...

    def download(self, archive_id: str) -> Iterator[bytes]: ...

    def read_blobs(self, digests: Sequence[str]) -> Iterator[tuple[str, Iterator[bytes]]]:
        """The blobs of a context's files, in order: (digest, its chunks)."""
        ...

    def collect_garbage(
        self, keep: Sequence[str], grace: float, automatic: bool = False
    ) -> types.Garbage: ...


class ImagePusher(Protocol):
    """Tagging and pushing into the rack's registry, through this builder's own engine."""

    def registry_host(self) -> str: ...

    def push(
        self, image: str, repository: str, tag: str
    ) -> Iterator[types.PushProgress | types.PushResult]: ...


class ImageEngine(Protocol):
    """The container engine. `build` and `pull` send every output line to `on_line` as it
    arrives, stop promptly when `scope` is cancelled (raising Cancelled), and raise
    EngineError with the engine's text when the work fails."""

    def build(self, spec: BuildSpec, on_line: LineSink, scope: CancelScope) -> str:
        """Builds the image; returns its id."""
        ...

    def pull(self, image: str, on_line: LineSink, scope: CancelScope) -> str:
        """Pulls `image`; returns its id."""
        ...

    def inspect(self, image: str) -> ImageInfo:
        """NotFound when the engine does not have it."""
        ...

    def image_id(self, image: str) -> str | None:
        """The id of the local `image`, None when the engine does not have it."""
        ...

    def answers(self, timeout: float = 5.0) -> bool:
        """Whether the engine answers a ping within `timeout` seconds; never raises."""
        ...

    def remove(self, image: str) -> None:
        """Removes a local image; missing is fine."""
        ...


class CancelScope:
    """A one-way switch that stops work in flight: whoever starts interruptible work
    registers how to interrupt it, and `cancel` calls every registered hook once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._hooks: dict[int, Callable[[], None]] = {}
        self._next = 0
        self._cancelled = False

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def cancel(self) -> None:
        with self._lock:
            if self._cancelled:
                return
            self._cancelled = True
            hooks = list(self._hooks.values())
            self._hooks.clear()
        for hook in hooks:
            hook()

    def check(self) -> None:
        """Raises Cancelled once the scope is cancelled."""
        if self._cancelled:
            raise Cancelled("build cancelled")

    def on_cancel(self, hook: Callable[[], None]) -> Callable[[], None]:
        """Registers `hook` (called at once when already cancelled); returns an unregister."""
        with self._lock:
            if not self._cancelled:
                key = self._next
                self._next += 1
                self._hooks[key] = hook

                def unregister() -> None:
                    with self._lock:
                        self._hooks.pop(key, None)

                return unregister
        hook()
        return lambda: None


@dataclass(frozen=True)
class Deps:
    """Everything the builder core talks to."""

    store: BuildStore
    sources: SourceStore
    pusher: ImagePusher
    engine: ImageEngine
