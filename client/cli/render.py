"""How the CLI shows things: plain tables and key lists, humanised times, progress.

Progress is drawn on a terminal only (rich, transient); elsewhere each step is one plain
`label... OK` line, no bars, no escape sequences (SPEC §3)."""

from __future__ import annotations

import contextlib
import errno
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import IO

from rich.console import Console, RenderableType
from rich.filesize import decimal
from rich.live import Live
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)
from rich.spinner import Spinner
from rich.text import Text

from client.kernel import types


class _Console(Console):
    def on_broken_pipe(self) -> None:
        """A reader that went away (`| head -1`) ends the command as a closed pipe does
        elsewhere (`main` exits 0), where rich's own handler exits 1."""
        self.quiet = True
        raise BrokenPipeError(errno.EPIPE, os.strerror(errno.EPIPE))


def make_console(file: IO[str]) -> Console:
    """A console that prints text as given: no markup, highlighting, emoji or re-wrapping,
    so output piped elsewhere is exactly the text. It is a terminal only when its file is
    one: FORCE_COLOR or TTY_COMPATIBLE in the environment may colour it, but never make
    a pipe take status lines and progress bars, or refuse an export."""
    isatty = getattr(file, "isatty", None)
    terminal = bool(isatty()) if callable(isatty) else False
    return _Console(
        file=file,
        highlight=False,
        markup=False,
        emoji=False,
        soft_wrap=True,
        force_terminal=terminal,
    )


def silence_stdout() -> None:
    """Points the process's stdout at /dev/null once its reader has gone (`| head -1`):
    what is still written, and Python's flush at exit, no longer fail."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


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
    """The `slipway builds info` key list; `Builder` once a builder took the build (an
    imported or copied one has none)."""
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
    if build.builder:  # after SPEC's keys, which scripts may read by position
        pairs.append(("Builder", build.builder))
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


@contextlib.contextmanager
def _drawn(
    console: Console, label: str, columns: Sequence[ProgressColumn], after: Callable[[], str] = str
) -> Iterator[Progress | None]:
    """`step` around a block; on a terminal a transient display of `columns` stands in for
    the line meanwhile (yielded to add tasks to; None elsewhere, where nothing is drawn)."""
    if not console.is_terminal:
        with step(console, label, after):
            yield None
        return
    with Progress(*columns, console=console, transient=True) as progress:
        yield progress
    console.print(f"{label}... OK{after()}")


class _Busy(SpinnerColumn):
    """A spinner that turns until the block ends, even once every byte has moved (an import
    then waits for the rack's pushes); none on a line added with `spinner=False`."""

    def render(self, task: Task) -> RenderableType:
        return self.spinner.render(task.get_time()) if task.fields.get("spinner", True) else ""


class _IfTotal(ProgressColumn):
    """`column` for a task whose total is known, nothing for one whose total is not: no bar
    or time left is made up."""

    def __init__(self, column: ProgressColumn) -> None:
        super().__init__()
        self.column = column

    def render(self, task: Task) -> RenderableType:
        return self.column.render(task) if task.total is not None else Text("")


class _Bytes(ProgressColumn):
    """Bytes moved, of the total when it is known, and the rate once there is one:
    `12.3 MB of 45.6 MB  4.1 MB/s`."""

    def render(self, task: Task) -> Text:
        text = decimal(int(task.completed))
        if task.total is not None:
            text += f" of {decimal(int(task.total))}"
        speed = task.finished_speed or task.speed
        return Text(f"{text}  {decimal(int(speed))}/s" if speed else text)


class _Said(ProgressColumn):
    """What a function says, asked at each refresh."""

    def __init__(self, say: Callable[[], str]) -> None:
        super().__init__()
        self.say = say

    def render(self, task: Task) -> Text:
        return Text(self.say())


class Meter:
    """What a `metered` block reports: bytes moved (`advance` by a count, or `update` to a
    count of a total that may change), and words to put after `OK` when it ends (e.g.
    `, RXXXXXXXXXX`). Off a terminal it only keeps the words."""

    def __init__(self) -> None:
        self.result = ""
        self._bar: tuple[Progress, TaskID] | None = None

    def _draw(self, progress: Progress, total: int | None) -> None:
        self._bar = progress, progress.add_task("", total=total)

    def advance(self, count: int) -> None:
        if self._bar is not None:
            self._bar[0].advance(self._bar[1], count)

    def update(self, completed: int, total: int | None) -> None:
        if self._bar is not None:
            self._bar[0].update(self._bar[1], completed=completed, total=total)


@contextlib.contextmanager
def metered(console: Console, label: str, total: int | None = None) -> Iterator[Meter]:
    """`label... OK<result>` around a byte stream; on a terminal the bytes and the rate show
    meanwhile, with a bar and the time left when `total` is known (an export's is not)."""
    meter = Meter()
    columns = (
        _Busy(),
        TextColumn(f"{label}..."),
        _IfTotal(BarColumn()),
        _Bytes(),
        _IfTotal(TimeRemainingColumn()),
    )
    with _drawn(console, label, columns, lambda: meter.result) as progress:
        if progress is not None:
            meter._draw(progress, total)
        yield meter


@contextlib.contextmanager
def transfer(console: Console, label: str, total: int) -> Iterator[Callable[[int], None]]:
    """`metered` for a transfer of known size: yields the function to call with each
    number of bytes sent."""
    with metered(console, label, total) as meter:
        yield meter.advance


@contextlib.contextmanager
def watching(console: Console, label: str, detail: Callable[[], str]) -> Iterator[None]:
    """`label... OK` around a block; on a terminal what `detail()` says (asked at each
    refresh, so a long step shows its counts moving) stands after the label meanwhile."""
    columns = (_Busy(), TextColumn(f"{label}..."), _Said(detail))
    with _drawn(console, label, columns) as progress:
        if progress is not None:
            progress.add_task(label, total=None)
        yield


# Layer statuses of a pull or push after which the layer has no more bytes to move.
_LAYER_DONE = ("Pushed", "Pull complete", "Already exists", "Layer already exists", "Mounted")


@contextlib.contextmanager
def layered(console: Console, label: str) -> Iterator[Callable[[types.PushProgress], None]]:
    """`label... OK` around pulls and pushes; on a terminal meanwhile the latest line, and
    one line per layer with its status and, when the engine reports them, a bar of its
    bytes. Yields the function to call with each progress update."""
    columns = (
        _Busy(),
        TextColumn("{task.description}"),
        _IfTotal(BarColumn()),
        _IfTotal(_Bytes()),
    )
    with _drawn(console, label, columns) as progress:
        if progress is None:
            yield lambda _event: None
        else:
            yield _Layers(progress, label).show


class _Layers:
    """The display of `layered`: a heading line (the latest line without a layer: a new
    pull or push, whose layers then replace the last one's), then a line per layer."""

    def __init__(self, progress: Progress, label: str) -> None:
        self.progress = progress
        self.label = label
        self.heading = progress.add_task(f"{label}...", total=None)
        self.layers: dict[str, tuple[TaskID, int]] = {}

    def show(self, event: types.PushProgress) -> None:
        if not event.layer:
            self.progress.update(self.heading, description=f"{self.label}... {event.text}")
            for task, _total in self.layers.values():
                self.progress.remove_task(task)
            self.layers.clear()
            return
        if event.layer not in self.layers:
            self.layers[event.layer] = self.progress.add_task("", total=None, spinner=False), 0
        task, total = self.layers[event.layer]
        total = event.total or total  # a status without numbers keeps the layer's size
        self.layers[event.layer] = task, total
        done = event.status.startswith(_LAYER_DONE)
        self.progress.update(
            task,
            description=f"  {event.layer}: {event.status}",
            total=total or None,
            completed=event.current if event.total else (total if done else None),
        )


#: Seconds without a new log line before the line under a followed log says so.
QUIET = 5.0


class LogView:
    """Where a followed build log goes: each line as it comes (verbatim off a terminal).
    On a terminal a line under the log shows how long the build has been queued or
    building, and how long the log has been quiet, so a silent step (the engine receiving
    a large context, a layer pushing) still shows the clock."""

    def __init__(
        self, console: Console, build_id: str, clock: Callable[[], float] = time.time
    ) -> None:
        self.console = console
        self.build_id = build_id
        self.clock = clock
        self.status = ""
        self.since = self.last = clock()
        self.heard = False
        self.drawn = False
        self._spinner = Spinner("dots")

    def line(self, text: str) -> None:
        self.last, self.heard = self.clock(), True
        if self.drawn:
            self.console.print(text)  # above the status line
        else:
            write_line(self.console, text)

    def record(self, build: types.Build) -> None:
        """The build's record, as the stream sent it (first, and at each status change)."""
        self.status = build.status
        self.since = build_started(build) or self.since

    def __rich__(self) -> RenderableType:
        now = self.clock()
        doing = "queued" if self.status == types.CREATED and not self.heard else "building"
        text = f"{self.build_id} {doing} {format_duration(now - self.since)}"
        if self.heard and now - self.last >= QUIET:
            text += f", no new line for {format_duration(now - self.last)}"
        self._spinner.update(text=text)
        return self._spinner


@contextlib.contextmanager
def live_log(console: Console, build_id: str) -> Iterator[LogView]:
    """A `LogView` of `build_id` on `console`, its status line drawn on a terminal."""
    view = LogView(console, build_id)
    if not console.is_terminal:
        yield view
        return
    with Live(view, console=console, transient=True, redirect_stdout=False, redirect_stderr=False):
        view.drawn = True
        yield view
