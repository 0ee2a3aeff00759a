"""The `ImageEngine` seam: what the registry service needs of a container engine. The one
implementation is the common Docker adapter, `services.common.docker.engine.DockerEngine`;
`PushEvent` is that adapter's."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Protocol

from services.common.docker.types import PushEvent

__all__ = ["ImageEngine", "PushEvent"]


class ImageEngine(Protocol):
    """Tags, pushes, pulls, saves and loads local images. Implementations raise
    `client.kernel.errors` exceptions: NotFound for an unknown image, Unavailable when the engine or
    registry cannot be reached, InvalidArgument for an image archive the engine rejects."""

    def tag(self, image: str, repository: str, tag: str) -> None:
        """Gives the local `image` the name `repository:tag` (repository includes the host)."""
        ...

    def push(
        self, repository: str, tag: str, auth: Mapping[str, str] | None = None
    ) -> Iterator[PushEvent]:
        """Pushes `repository:tag`, yielding its progress; a failed push raises."""
        ...

    def image_id(self, image: str) -> str | None:
        """The id (`sha256:…`) of a local image named or identified by `image`, else None."""
        ...

    def pull_events(
        self, repository: str, tag: str, auth: Mapping[str, str] | None = None
    ) -> Iterator[PushEvent]:
        """Pulls `repository:tag` (`tag` may be a `sha256:` digest), yielding its progress
        as `PushEvent`s. A failed pull raises with the engine's text: NotFound when the
        registry has no such image, Unavailable when it cannot be reached."""
        ...

    def entrypoint(self, image: str) -> tuple[str, ...]:
        """The entrypoint of the local `image` (empty when it has none); NotFound when the
        engine does not know it."""
        ...

    def save(self, images: Sequence[str]) -> Iterator[bytes]:
        """`docker save` of every image in one tar (shared layers stored once), as a stream."""
        ...

    def load(self, tar: Iterable[bytes]) -> None:
        """`docker load` of a `docker save` tar streamed in; InvalidArgument when the engine
        rejects it (a layer whose content does not match its digest, say)."""
        ...

    def load_oci(self, archive: Path, name: str) -> None:
        """Loads a one-image OCI-archive tar as the local image `name` (`repository:tag`),
        verifying every blob's digest; InvalidArgument when the archive is bad."""
        ...

    def remove(self, image: str) -> None:
        """Removes the name `image` (or the untagged image of that id); the image itself goes
        when no other name holds it. Nothing happens when it is not there."""
        ...
