"""Following a build's log live, re-attaching from the last line shown when the stream
breaks (a rack restarting, a network hiccup)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

from rich.console import Console

from client.cli.render import write_line
from client.kernel import types
from client.kernel.errors import Cancelled, Internal, Unavailable

log = logging.getLogger(__name__)

# Seconds to wait before each re-attach; the stream is given up after the last.
# Lines shown between two acknowledgements sent upstream (and one more at the end).
ACK_EVERY = 100
RECONNECT_DELAYS = (1.0, 2.0, 4.0, 8.0, 15.0)
# What a broken stream looks like; anything else (not found, unauthorized) is final.
_TRANSIENT = (Unavailable, Internal, Cancelled)


class LogStream(Protocol):
    """A live follow stream (`client.api.builder.Follower`)."""

    def __iter__(self) -> Iterator[types.Build | types.LogLine]: ...
    def ack(self, offset: int) -> None: ...
    def close(self) -> None: ...


class Followable(Protocol):
    """What can open a follow stream (`client.api.builder.BuilderClient`)."""

    def follow(self, build_id: str, offset: int = 0) -> LogStream: ...


@dataclass
class Followed:
    """Where following stopped: the offset after the last line shown and the terminal
    build record the stream ended with."""

    offset: int
    build: types.Build | None


class _StreamEnded(Exception):
    """The stream ended before the terminal build record arrived."""


def follow_build(
    builder: Followable,
    build_id: str,
    console: Console,
    err: Console,
    offset: int = 0,
    sleep: Callable[[float], None] = lambda _s: None,
    delays: tuple[float, ...] | None = None,
) -> Followed:
    """Prints the log of `build_id` from `offset` as it comes until the build ends.

    Raises the stream's error after `len(delays)` failed re-attaches in a row."""
    delays = RECONNECT_DELAYS if delays is None else delays
    failures = 0
    while True:
        follower = builder.follow(build_id, offset)
        acked = offset
        try:
            for item in follower:
                if isinstance(item, types.LogLine):
                    if item.offset < offset:  # already shown before a re-attach
                        continue
                    write_line(console, item.text)
                    offset = item.offset + 1
                    if offset - acked >= ACK_EVERY:  # not one upstream message per line
                        follower.ack(offset)
                        acked = offset
                    failures = 0
                elif item.terminal:
                    follower.ack(offset)
                    return Followed(offset, item)
            raise _StreamEnded()
        except (_StreamEnded, *_TRANSIENT) as error:
            if failures >= len(delays):
                if isinstance(error, _StreamEnded):
                    raise Unavailable(f"the log of build {build_id} ended early") from None
                raise
            log.debug("log stream of %s broke: %s", build_id, error)
            err.print(f"(log stream lost: {error or 'ended early'}; resuming at line {offset + 1})")
            sleep(delays[failures])
            failures += 1
        finally:
            follower.close()
