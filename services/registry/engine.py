"""The `ImageEngine` seam: what the registry service needs of a container engine."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class PushEvent:
    """One update of a push as the engine reports it: a status (for a layer when `layer` is
    set), or, near the end, the manifest digest."""

    status: str = ""
    layer: str = ""
    current: int = 0
    total: int = 0
    digest: str = ""


class ImageEngine(Protocol):
    """Tags and pushes local images. Implementations raise `client.errors` exceptions:
    NotFound for an unknown image, Unavailable when the engine or registry cannot be reached."""

    def tag(self, image: str, repository: str, tag: str) -> None:
        """Gives the local `image` the name `repository:tag` (repository includes the host)."""
        ...

    def push(
        self, repository: str, tag: str, auth: Mapping[str, str] | None = None
    ) -> Iterator[PushEvent]:
        """Pushes `repository:tag`, yielding its progress; a failed push raises."""
        ...
