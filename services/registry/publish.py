"""What imports, image imports and copies share: pushing an image under the new build's
tag, and undoing what they made when a later step fails."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator

from client.kernel.errors import Internal, SlipwayError
from client.kernel.types import PushProgress, PushResult
from services.common.push import Pusher
from services.registry.engine import ImageEngine
from services.registry.registries import Registry

log = logging.getLogger(__name__)


def push_as(
    pusher: Pusher, image: str, repository: str, tag: str, service: str
) -> Iterator[PushProgress]:
    """Pushes `image` as `repository:tag`, yielding its progress; a failure names the
    service, and a push that reports no digest is a failure too."""
    try:
        for event in pusher.push(image, repository, tag):
            if isinstance(event, PushResult):
                return
            yield event
    except SlipwayError as err:
        raise type(err)(f"cannot push {service}: {err}") from None
    raise Internal(f"cannot push {service}: the push gave no digest")


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
