"""The `label... OK` lines of steps and transfers when no terminal shows a bar."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from client.cli.render import layered, live_log, metered, step, transfer, watching
from client.kernel import types


def _console() -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, force_terminal=False, highlight=False, soft_wrap=True), buf


def test_metered_puts_its_result_after_ok() -> None:
    console, buf = _console()
    with metered(console, "Importing build") as meter:
        meter.advance(10)
        meter.result = ", RABCDEFGHIJ"
    assert buf.getvalue() == "Importing build... OK, RABCDEFGHIJ\n"


def test_transfer_and_step_say_ok() -> None:
    console, buf = _console()
    with transfer(console, "Uploading source", 100) as sent:
        sent(100)
    with step(console, "Starting build"):
        pass
    assert buf.getvalue() == "Uploading source... OK\nStarting build... OK\n"


def test_a_failing_step_ends_its_line_without_ok() -> None:
    console, buf = _console()
    with pytest.raises(RuntimeError), step(console, "Packaging source"):
        raise RuntimeError("no")
    assert buf.getvalue() == "Packaging source... \n"


def test_off_a_terminal_nothing_is_drawn() -> None:
    """Plain lines only: no escape sequence, bar, spinner or clock."""
    console, buf = _console()
    with metered(console, "Exporting build") as meter:
        meter.advance(10)
        meter.update(20, 40)
    with watching(console, "Packaging source", lambda: "3 files"):
        pass
    with layered(console, "Importing image") as show:
        show(types.PushProgress("aaa: Pushing 1B/2B", "aaa", "Pushing", 1, 2))
    with live_log(console, "BNEWBUILDAA") as view:
        view.record(types.Build(id="BNEWBUILDAA", app="a", status="running"))
        view.line("Building: .\tx")
    assert buf.getvalue() == (
        "Exporting build... OK\n"
        "Packaging source... OK\n"
        "Importing image... OK\n"
        "Building: .\tx\n"  # verbatim
    )
