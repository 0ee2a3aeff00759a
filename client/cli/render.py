"""How the CLI shows things: plain tables and key lists, humanised times, progress."""

from __future__ import annotations

import contextlib
import errno
import os
import time
from collections.abc import Callable, Iterator, Sequence
from typing import IO

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from client.kernel import types


class _Console(Console):
    def on_broken_pipe(self) -> None:
        """A reader that went away (`| head -1`) ends the command as a closed pipe does
        elsewhere (`main` exits 0), where rich's own handler exits 1."""
        self.quiet = True
        raise BrokenPipeError(errno.EPIPE, os.strerror(errno.EPIPE))


def make_console(file: IO[str]) -> Console:
    """A console that prints text as given: no markup, highlighting, emoji or re-wrapping,
    so output piped elsewhere is exactly the text."""
    return _Console(file=file, highlight=False, markup=False, emoji=False, soft_wrap=True)


def write_line(console: Console, text: str) -> None:
    """Writes one line verbatim (tabs and escape sequences of build logs included)."""
    console.file.write(text + "\n")
    console.file.flush()


def humanize_since(when: float, now: float | None = None) -> str:
    """`now`, `1 minute ago`, `5 hours ago`, `2 days ago`; empty for an unset time."""
    if not when:
        return ""
    seconds = (time.time() if now is None else now) - when
    if seconds < 60:
        return "now"
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            count = int(seconds // size)
            return f"{count} {unit}{'' if count == 1 else 's'} ago"
    return "now"  # unreachable


def format_duration(seconds: float) -> str:
    """`41s` under a minute, `3m7s` above."""
    whole = max(0, int(seconds + 0.5))
    if whole < 60:
        return f"{whole}s"
    return f"{whole // 60}m{whole % 60}s"


def app_status(app: types.App) -> str:
    """`running` for an app with a promoted release, `new` for one without."""
    return "running" if app.release else "new"


def build_started(build: types.Build) -> float:
    return build.started or build.created


def build_elapsed(build: types.Build) -> str:
    """How long a finished build ran; empty while it runs or when it never started."""
    if not build.terminal or not build.started or not build.ended:
        return ""
    return format_duration(build.ended - build.started)


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Columns two spaces apart, each padded to its widest cell but the last, no trailing
    spaces."""
    everything = [list(headers), *[list(r) for r in rows]]
    widths = [max(len(r[i]) for r in everything) for i in range(len(headers) - 1)]
    lines = []
    for row in everything:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])] + [row[-1]]
        lines.append("  ".join(cells).rstrip())
    return lines


def key_values(pairs: Sequence[tuple[str, str]]) -> list[str]:
    """`Key  value` lines, keys padded to the longest plus two spaces."""
    width = max((len(k) for k, _ in pairs), default=0) + 2
    return [f"{k.ljust(width)}{v}".rstrip() for k, v in pairs]


def key_blocks(pairs: Sequence[tuple[str, Sequence[str]]]) -> list[str]:
    """Like `key_values`, but each value is several lines: the first on the key's line, the
    rest indented to the value column; a key with no lines stands alone."""
    width = max((len(k) for k, _ in pairs), default=0) + 2
    lines: list[str] = []
    for key, values in pairs:
        for i, value in enumerate(values or [""]):
            lines.append(f"{(key if i == 0 else '').ljust(width)}{value}".rstrip())
    return lines


def builds_table(builds: Sequence[types.Build], now: float | None = None) -> list[str]:
    """The `slipway builds` table."""
    rows = [
        [
            b.id,
            b.status,
            b.release,
            humanize_since(build_started(b), now),
            build_elapsed(b),
            b.description,
        ]
        for b in builds
    ]
    return table(["ID", "STATUS", "RELEASE", "STARTED", "ELAPSED", "DESCRIPTION"], rows)


def build_info(build: types.Build, now: float | None = None) -> list[str]:
    """The `slipway builds info` key list."""
    pairs = [
        ("Id", build.id),
        ("Status", build.status),
        ("Release", build.release),
        ("Description", build.description),
        ("Started", humanize_since(build_started(build), now)),
        ("Elapsed", build_elapsed(build)),
    ]
    if build.status == types.FAILED:
        pairs.append(("Reason", build.reason))
    if build.git_sha:
        pairs.append(("Git Sha", build.git_sha))
    return key_values(pairs)


@contextlib.contextmanager
def step(console: Console, label: str, after: Callable[[], str] = str) -> Iterator[None]:
    """`label... OK` around a block, then what `after()` gives (e.g. `, RXXXXXXXXXX`); a
    failing block just ends the line (the error is reported on its own)."""
    console.print(f"{label}... ", end="")
    try:
        yield
    except BaseException:
        console.print()
        raise
    console.print(f"OK{after()}")


class Meter:
    """What a `metered` block reports: each number of bytes moved, and words to put after
    `OK` when it ends (e.g. `, RXXXXXXXXXX`)."""

    def __init__(self) -> None:
        self.advance: Callable[[int], None] = lambda _n: None
        self.result = ""


@contextlib.contextmanager
def metered(console: Console, label: str, total: int | None = None) -> Iterator[Meter]:
    """`label... OK<result>` around a byte stream whose size may be unknown; on a terminal a
    bar shows bytes and rate meanwhile (and progress and ETA when `total` is known)."""
    meter = Meter()
    if not console.is_terminal:
        with step(console, label, lambda: meter.result):
            yield meter
        return
    columns = (
        TextColumn(f"{label}..."),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task(label, total=total)
        meter.advance = lambda n: progress.advance(task, n)
        yield meter
    console.print(f"{label}... OK{meter.result}")


@contextlib.contextmanager
def transfer(console: Console, label: str, total: int) -> Iterator[Callable[[int], None]]:
    """`metered` for a transfer of known size: yields the function to call with each
    number of bytes sent."""
    with metered(console, label, total) as meter:
        yield meter.advance
