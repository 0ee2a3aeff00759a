"""Progress on a terminal, drawn by rich on its own test console: every long step shows its
numbers moving, and no bar or total is made up when the size is unknown."""

from __future__ import annotations

import io
import re

from rich.console import Console

from client.cli.render import LogView, layered, live_log, metered, transfer, watching
from client.kernel import types

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _terminal() -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    console = Console(
        file=buf, force_terminal=True, width=120, highlight=False, markup=False, soft_wrap=True
    )
    return console, buf


def _frames(buf: io.StringIO) -> str:
    """What was drawn, escape sequences dropped."""
    return ANSI.sub("", buf.getvalue())


def test_an_export_of_unknown_size_shows_bytes_without_a_bar() -> None:
    console, buf = _terminal()
    with metered(console, "Exporting build") as meter:
        meter.advance(1_500_000)
        meter.advance(500_000)
    drawn = _frames(buf)
    assert "\x1b[" in buf.getvalue()  # drawn, and cleared afterwards
    assert "Exporting build...  2.0 MB" in drawn
    assert "━" not in drawn and "?" not in drawn and " of " not in drawn
    assert drawn.endswith("Exporting build... OK\n")


def test_a_transfer_of_known_size_has_a_bar_and_its_total() -> None:
    console, buf = _terminal()
    with transfer(console, "Uploading source", 4_000_000) as sent:
        sent(1_000_000)
    drawn = _frames(buf)
    assert "━" in drawn and "1.0 MB of 4.0 MB" in drawn
    assert drawn.endswith("Uploading source... OK\n")


def test_a_copy_updates_its_total_as_it_learns_it() -> None:
    console, buf = _terminal()
    with metered(console, "Copying build") as meter:
        meter.update(3_000_000, 6_000_000)
        meter.result = ", RABCDEFGHIJ"
    drawn = _frames(buf)
    assert "3.0 MB of 6.0 MB" in drawn
    assert drawn.endswith("Copying build... OK, RABCDEFGHIJ\n")


def test_packing_shows_its_counts_as_they_grow() -> None:
    console, buf = _terminal()
    counts = {"files": 0}
    with watching(console, "Packaging source", lambda: f"{counts['files']:,} files"):
        counts["files"] = 1204
    drawn = _frames(buf)
    assert "Packaging source... 1,204 files" in drawn
    assert drawn.endswith("Packaging source... OK\n")


def _push(layer: str, status: str, current: int = 0, total: int = 0) -> types.PushProgress:
    return types.PushProgress(f"{layer}: {status}", layer, status, current, total)


def test_a_push_shows_bytes_per_layer() -> None:
    console, buf = _terminal()
    with layered(console, "Importing image") as show:
        show(types.PushProgress("Running: docker pull x"))
        show(_push("aaa111", "Downloading", 5_000_000, 10_000_000))
        show(types.PushProgress("Running: docker push y"))  # a new phase: new layers
        show(_push("bbb222", "Preparing"))
        show(_push("ccc333", "Pushing", 2_000_000, 8_000_000))
        show(_push("ddd444", "Pushing", 1_000_000, 3_000_000))
        show(_push("ddd444", "Pushed"))
    last = _frames(buf).split("Importing image... Running: docker push y")[-1]
    assert "aaa111" not in last
    assert "bbb222: Preparing" in last
    assert re.search(r"ccc333: Pushing +━+.* 2\.0 MB of 8\.0 MB", last)
    assert re.search(r"ddd444: Pushed +━+ 3\.0 MB of 3\.0 MB", last)  # done: all of it
    assert _frames(buf).endswith("Importing image... OK\n")


def test_a_followed_log_has_a_clock_under_it() -> None:
    console, buf = _terminal()
    with live_log(console, "BNEWBUILDAA") as view:
        view.record(types.Build(id="BNEWBUILDAA", app="a", status="created"))
        view.line("Building: .")
        view.line("#5 [internal] load build context")
    # Each line is printed above the status line, which is drawn again under it.
    lines = [line.rsplit("\r", 1)[-1] for line in _frames(buf).split("\n")]
    assert lines[:2] == ["Building: .", "#5 [internal] load build context"]
    assert "⠋ BNEWBUILDAA building 0s" in _frames(buf)


def test_the_clock_says_when_the_log_went_quiet() -> None:
    now = [1000.0]
    console, buf = _terminal()
    view = LogView(console, "BNEWBUILDAA", clock=lambda: now[0])
    view.record(types.Build(id="BNEWBUILDAA", app="a", status="created", created=995.0))
    console.print(view)
    view.record(types.Build(id="BNEWBUILDAA", app="a", status="running", started=1001.0))
    view.line("#5 [internal] load build context")
    now[0] = 1019.0
    console.print(view)
    frames = [line[2:] for line in _frames(buf).splitlines() if line.startswith("⠋")]
    assert frames == ["BNEWBUILDAA queued 5s", "BNEWBUILDAA building 18s, no new line for 19s"]
