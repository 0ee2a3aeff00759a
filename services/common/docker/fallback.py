"""The one local-image fallback after a failed pull, for builds and image imports alike:
with no registry reachable (an offline rack), a copy the engine already has will do."""

from __future__ import annotations

from collections.abc import Callable

from client.kernel.errors import SlipwayError
from client.kernel.types import one_line
from services.common.docker.types import LineSink


def use_local_copy(
    image: str, err: SlipwayError, image_id: Callable[[str], str | None], say: LineSink
) -> str:
    """After the pull of `image` failed with `err`: the id of the engine's own `image`
    (`image_id` looks it up), telling `say` `Pull failed (<why>); using the local <image>`;
    re-raises `err` when the engine has none."""
    local = image_id(image)
    if local is None:
        raise err
    say(f"Pull failed ({one_line(str(err))}); using the local {image}")
    return local
