"""Where output goes (SPEC §3): status lines and progress on stdout on a terminal, plain
status lines on stderr otherwise; a closed stdout is a normal end (exit 0, nothing said)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

from client.cli.main import main
from client.kernel import types
from tests.client.cli.fakes import FakeRack

B = "BNEWBUILDAA"


class Terminal(io.StringIO):
    """A stdout that is a terminal."""

    def isatty(self) -> bool:
        return True


class ClosedAfter(io.StringIO):
    """A stdout whose reader leaves after `lines` lines (`| head -1`)."""

    def __init__(self, lines: int) -> None:
        super().__init__()
        self.left = lines

    def write(self, text: str) -> int:
        if self.left <= 0:
            raise BrokenPipeError(32, "Broken pipe")
        self.left -= text.count("\n")
        return super().write(text)


@pytest.fixture
def piped(rack: FakeRack, config_path: Path, project: Path) -> Any:
    """Runs `slipway` with `stdout` (default: a pipe closed after one line)."""

    def invoke(
        *argv: str, lines: int = 1, stdout: io.StringIO | None = None
    ) -> tuple[int, str, str]:
        out, err = stdout if stdout is not None else ClosedAfter(lines), io.StringIO()
        code = main(
            list(argv),
            stdout=out,
            stderr=err,
            env={"XDG_CACHE_HOME": str(config_path.parent / "cache")},
            connect=lambda *_a: rack,  # type: ignore[arg-type,return-value]
            config_path=config_path,
            cwd=project,
        )
        return code, out.getvalue(), err.getvalue()

    return invoke


def _log_stream(rack: FakeRack, lines: int) -> types.Build:
    """A follow stream of `lines` lines ending with the build complete; returns that record."""
    log = [types.LogLine(i, f"line {i}") for i in range(lines)]
    done = types.Build(id=B, app="myapp", status="complete", release="RNEWRELEASE")
    rack.builder.streams.append([*log, done])
    return done


@pytest.mark.parametrize("lines", [0, 1])
def test_a_closed_pipe_ends_a_table_quietly(piped: Any, rack: FakeRack, lines: int) -> None:
    for i in range(3):  # rich prints the table: its own broken-pipe handler exits 1
        rack.add(id=f"B{i}", app="myapp", status="complete")
    code, out, err = piped("builds", lines=lines)
    assert (code, err) == (0, "")
    assert out == ("ID  STATUS    RELEASE  STARTED  ELAPSED  DESCRIPTION\n" if lines else "")


def test_a_closed_pipe_ends_a_followed_log_quietly(piped: Any, rack: FakeRack) -> None:
    rack.add(id=B, app="myapp", status="running")
    _log_stream(rack, 5)
    assert piped("builds", "logs", B) == (0, "line 0\n", "")
    assert rack.builder.followers[0].closed  # the stream is let go


def test_a_closed_pipe_ends_a_build_quietly(piped: Any, rack: FakeRack) -> None:
    rack.builds[B] = _log_stream(rack, 5)
    _log_stream(rack, 5)  # the build is seen to its end after the reader left
    code, out, err = piped("build")
    assert (code, out) == (0, "line 0\n")
    # The status lines went to stderr (stdout is not a terminal), and nothing more.
    assert err == "Packaging source... OK\nUploading source... OK\nStarting build... OK\n"
    assert len(rack.builder.followers) == 2


def test_a_build_that_fails_after_the_reader_left_still_fails(piped: Any, rack: FakeRack) -> None:
    log = [types.LogLine(i, f"line {i}") for i in range(5)]
    failed = types.Build(id=B, app="myapp", status="failed", reason="exit code: 3")
    rack.builder.streams.extend([[*log, failed], [*log, failed]])
    rack.builds[B] = failed
    code, out, err = piped("build")
    assert (code, out) == (1, "line 0\n")  # the outcome is the build's, not the pipe's
    assert err.splitlines()[-1] == "ERROR: build failed: exit code: 3"


def test_on_a_terminal_the_status_lines_and_progress_are_on_stdout(
    piped: Any, rack: FakeRack
) -> None:
    rack.builds[B] = _log_stream(rack, 2)
    code, out, err = piped("build", stdout=Terminal())
    assert (code, err) == (0, "")
    for line in ("Packaging source... OK", "Starting build... OK", "line 1", "Build:   " + B):
        assert line + "\n" in out
    # Drawn meanwhile: the files packed, the bytes sent, a clock under the log.
    assert "\x1b[" in out
    assert "Packaging source... 2 files (" in out and "Uploading source..." in out
    assert f"{B} building" in out


def test_piped_nothing_is_drawn(piped: Any, rack: FakeRack) -> None:
    rack.builds[B] = _log_stream(rack, 2)
    code, out, err = piped("build", lines=100)
    assert code == 0
    assert out == f"line 0\nline 1\nBuild:   {B}\nRelease: RNEWRELEASE\n"
    assert err == "Packaging source... OK\nUploading source... OK\nStarting build... OK\n"


@pytest.mark.parametrize("variable", ["FORCE_COLOR", "TTY_COMPATIBLE"])
def test_the_environment_never_makes_a_pipe_a_terminal(
    variable: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import io

    from client.cli.render import make_console

    monkeypatch.setenv(variable, "1")
    assert not make_console(io.StringIO()).is_terminal  # status lines stay off stdout
