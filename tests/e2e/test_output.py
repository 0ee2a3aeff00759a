"""What goes where, end to end (SPEC §3's opening): progress drawn on a terminal and plain
lines otherwise; a reader that closes stdout early is a normal end, exit 0 and nothing
said; an error is said once."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import secrets
import select
import struct
import subprocess
import termios
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.conftest import SLIPWAY, RackHandle
from tests.helpers import build_id_of, write_files

pytestmark = pytest.mark.docker


@dataclass(frozen=True)
class Built:
    app: str
    id: str
    src: Path


@pytest.fixture(scope="module")
def built(rack: RackHandle, tmp_path_factory: pytest.TempPathFactory) -> Built:
    """An app with one complete build whose log is a few dozen lines."""
    app = f"out-{secrets.token_hex(3)}"
    src = write_files(
        tmp_path_factory.mktemp("out") / "app",
        {
            "convox.yml": "services:\n  web:\n    build: .\n",
            "Dockerfile": "FROM busybox\nRUN for i in $(seq 1 40); do echo line-$i; done\n",
        },
    )
    rack.ok("apps", "create", app)
    return Built(app, build_id_of(rack.ok("build", str(src), "-a", app)), src)


def on_a_terminal(rack: RackHandle, *args: str, timeout: float = 300) -> tuple[int, str]:
    """Runs `slipway ARGS` with stdout and stderr on a terminal of 120 columns (a pty);
    returns its exit status and everything the terminal received."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen(
        [SLIPWAY, *args],
        env=dict(rack.env, TERM="xterm"),
        stdin=subprocess.DEVNULL,
        stdout=follower,
        stderr=follower,
    )
    os.close(follower)
    received = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if not select.select([leader], [], [], 1.0)[0]:
                continue
            try:
                data = os.read(leader, 65536)
            except OSError:  # EIO: the command closed the terminal
                break
            if not data:
                break
            received += data
    finally:
        os.close(leader)
    return proc.wait(timeout=30), received.decode(errors="replace")


def closed_early(rack: RackHandle, *args: str) -> tuple[int, str]:
    """Runs `slipway ARGS` with its stdout a pipe whose reader left before the first byte;
    returns its exit status and stderr."""
    proc = subprocess.Popen(
        [SLIPWAY, *args], env=rack.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    err = proc.stderr.read()
    return proc.wait(timeout=300), err


def test_a_closed_pipe_is_a_normal_end(rack: RackHandle, built: Built) -> None:
    for args in (
        ["builds"],
        ["builds", "info", built.id],
        ["builds", "logs", built.id],
        ["releases"],
    ):
        assert closed_early(rack, *args, "-a", built.app) == (0, ""), args
    # A build or an export to a closed pipe says nothing but its status lines.
    for args in (["build", str(built.src)], ["builds", "export", built.id]):
        code, err = closed_early(rack, *args, "-a", built.app)
        assert code == 0 and "ERROR" not in err and "Traceback" not in err, (args, err)


def test_head_1_exits_0_every_time(rack: RackHandle, built: Built) -> None:
    script = (
        f'for i in 1 2 3 4 5 6; do "$SLIPWAY" builds -a {built.app} | head -1 >/dev/null;'
        ' echo "${PIPESTATUS[0]}"; done;'
        f' "$SLIPWAY" builds logs {built.id} -a {built.app} | head -1 >/dev/null;'
        ' echo "${PIPESTATUS[0]}"'
    )
    done = subprocess.run(
        ["bash", "-c", script],
        env=dict(rack.env, SLIPWAY=SLIPWAY),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert (done.stdout.split(), done.stderr) == (["0"] * 7, "")


def test_a_failed_build_says_its_error_once(rack: RackHandle, tmp_path: Path) -> None:
    app = f"fails-{secrets.token_hex(3)}"
    src = write_files(
        tmp_path / "app",
        {
            "convox.yml": "services:\n  web:\n    build: .\n",
            "Dockerfile": "FROM busybox\nRUN exit 3\n",
        },
    )
    rack.ok("apps", "create", app)
    done = subprocess.run(
        [SLIPWAY, "build", str(src), "-a", app],
        env=rack.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,  # what a terminal shows, in order
        text=True,
        timeout=300,
    )
    assert done.returncode == 1
    errors = [line for line in done.stdout.splitlines() if line.startswith("ERROR")]
    reason = "executor failed running [/bin/sh -c exit 3]: exit code: 3"
    assert errors == [f"ERROR: build failed: {reason}"], done.stdout
    # The stored log still ends with it, for `builds logs`.
    build_id = rack.ok("builds", "-a", app).splitlines()[1].split()[0]
    assert rack.ok("builds", "logs", build_id, "-a", app).splitlines()[-1] == f"ERROR: {reason}"


ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
DRAWN = ("\x1b", "━", "⠋")  # an escape sequence, a bar, a spinner


def test_progress_is_drawn_on_a_terminal_and_never_when_piped(
    rack: RackHandle, built: Built, tmp_path: Path
) -> None:
    (built.src / "data.bin").write_bytes(os.urandom(2_000_000))  # something to send
    code, shown = on_a_terminal(rack, "build", str(built.src), "-a", built.app)
    assert code == 0, shown
    text = ESCAPE.sub("", shown)
    assert "\x1b[" in shown  # drawn, then cleared
    assert re.search(r"Packaging source\.\.\. [\d,]+ files \(.*\), .* hashed, .* sent", text)
    assert "Uploading source... " in text and "Packaging source... OK" in text
    assert re.search(r"B[A-Z]{10} (queued|building) \d+s", text)  # the clock under the log
    assert re.search(r"\nRelease: R[A-Z]{10}\r\n$", text)

    exported = tmp_path / "build.tgz"
    code, shown = on_a_terminal(
        rack, "builds", "export", built.id, "-a", built.app, "-f", str(exported)
    )
    assert code == 0, shown
    # The size of an export is not known: bytes, no bar, no made-up total.
    assert re.search(r"Exporting build\.\.\.  [\d.]+ (kB|MB|bytes)", ESCAPE.sub("", shown))
    assert "━" not in shown and "/?" not in shown
    code, shown = on_a_terminal(rack, "builds", "import", "-a", built.app, "-f", str(exported))
    assert code == 0, shown
    assert "━" in shown and re.search(r"[\d.]+ (kB|MB) of [\d.]+ (kB|MB)", shown)  # its size is

    (built.src / "data.bin").write_bytes(os.urandom(2_000_000))
    piped = rack.slipway("build", str(built.src), "-a", built.app)
    assert piped.code == 0, piped
    assert not any(mark in piped.out + piped.err for mark in DRAWN)
    assert piped.err == "Packaging source... OK\nUploading source... OK\nStarting build... OK\n"
