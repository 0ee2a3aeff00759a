"""What imports and image imports share: pushing an image under the new build's tag
(undoing what a failed move made is `services.registry.finish`)."""

from __future__ import annotations

from collections.abc import Iterator

from client.kernel.errors import Internal, SlipwayError
from client.kernel.types import PushProgress, PushResult
from services.common.push import Pusher


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
