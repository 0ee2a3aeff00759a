"""Following a build's log live, re-attaching from the last line received when the stream
breaks (a rack restarting, a network hiccup)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

from rich.console import Console

from client.cli.render import live_log
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
    """Where following stopped: the offset after the last line received and the terminal
    build record the stream ended with."""

    offset: int
    build: types.Build | None


class _StreamEnded(Exception):
    """The stream ended before the terminal build record arrived."""


class Shown(Protocol):
    """Where a followed log goes (`client.cli.render.LogView`)."""

    def line(self, text: str) -> None: ...
    def record(self, build: types.Build) -> None: ...


class _FailureHeldBack:
    """Shows a log but holds back the lines that may close the log of a failed build: the
    builder's own `ERROR: <reason>` (unprefixed) and what follows it, as `types.error_lines`
    writes them. They are dropped when the build's record says the build failed for that
    reason, which the caller then reports itself (`ERROR: build failed: <reason>`): each
    error once."""

    PREFIX = "ERROR: "

    def __init__(self, shown: Shown) -> None:
        self.shown = shown
        self.held: list[str] = []

    def line(self, text: str) -> None:
        if text.startswith(self.PREFIX):
            self._show(self.held)
            self.held = [text]
        elif self.held:
            self.held.append(text)
            if len(self.held) > types.MAX_ERROR_LINES:  # more than a failure writes
                self._show(self.held)
                self.held = []
        else:
            self.shown.line(text)

    def record(self, build: types.Build) -> None:
        self.shown.record(build)

    def end(self, build: types.Build | None) -> None:
        """Shows what is still held, unless it is `build`'s failure."""
        held, self.held = self.held, []
        if held and build is not None and build.status == types.FAILED:
            message = "\n".join([held[0].removeprefix(self.PREFIX), *held[1:]])
            if types.one_line(message) == build.reason:
                return
        self._show(held)

    def _show(self, lines: list[str]) -> None:
        for text in lines:
            self.shown.line(text)


def follow_build(
    builder: Followable,
    build_id: str,
    console: Console,
    err: Console,
    offset: int = 0,
    sleep: Callable[[float], None] = lambda _s: None,
    delays: tuple[float, ...] | None = None,
    reports_failure: bool = False,
) -> Followed:
    """Prints the log of `build_id` from `offset` as it comes until the build ends (on a
    terminal with a status line under it). With `reports_failure` (the caller says why the
    build failed), the lines the log closes a failure with are left out.

    Raises the stream's error after `len(delays)` failed re-attaches in a row."""
    with live_log(console, build_id) as view:
        held = _FailureHeldBack(view) if reports_failure else None
        last: types.Build | None = None
        try:
            followed = _follow(builder, build_id, held or view, err, offset, sleep, delays)
            last = followed.build
            return followed
        finally:  # however following ended, what was held back shows unless it was the failure
            if held is not None:
                held.end(last)


def _follow(
    builder: Followable,
    build_id: str,
    shown: Shown,
    err: Console,
    offset: int,
    sleep: Callable[[float], None],
    delays: tuple[float, ...] | None,
) -> Followed:
    delays = RECONNECT_DELAYS if delays is None else delays
    failures = 0
    while True:
        follower = builder.follow(build_id, offset)
        acked = offset
        try:
            for item in follower:
                if isinstance(item, types.LogLine):
                    if item.offset < offset:  # already received before a re-attach
                        continue
                    shown.line(item.text)
                    offset = item.offset + 1
                    if offset - acked >= ACK_EVERY:  # not one upstream message per line
                        follower.ack(offset)
                        acked = offset
                    failures = 0
                elif item.terminal:
                    follower.ack(offset)
                    return Followed(offset, item)
                else:
                    shown.record(item)
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
