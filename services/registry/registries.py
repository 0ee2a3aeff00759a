"""The `Registry` seam: the destination images are pushed to (Distribution now, ECR later)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol


class Registry(Protocol):
    """A registry as a push needs it."""

    @property
    def host(self) -> str:
        """The host (and port) image references use for it."""
        ...

    def prepare(self, repository: str) -> None:
        """Makes `repository` ready to receive a push (ECR creates it)."""
        ...

    def auth(self) -> Mapping[str, str] | None:
        """Credentials for the engine's push, or None when it needs none."""
        ...


class DistributionRegistry:
    """A Docker Distribution registry: open, repositories appear on first push."""

    def __init__(self, host: str) -> None:
        self._host = host

    @property
    def host(self) -> str:
        return self._host

    def prepare(self, repository: str) -> None:
        return None

    def auth(self) -> Mapping[str, str] | None:
        return None
