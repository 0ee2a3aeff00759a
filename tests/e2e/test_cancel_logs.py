"""Cancelling builds and following their logs live, end to end (SPEC §3 builds logs/cancel):
the engine work stops, every follower sees every line once, a follower that re-attaches
resumes where it left off, and Ctrl-C leaves the build running."""

from __future__ import annotations

import re
import secrets
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from client.api.rack import Rack
from client.cli.config import ClientConfig
from client.kernel import types
from tests.e2e.conftest import SLIPWAY, RackHandle
from tests.helpers import eventually, step_output, write_files

pytestmark = pytest.mark.docker

NUMBERED = re.compile(r"^line-\d+$")
EVERY_LINE = [f"line-{i}" for i in range(1, 41)]


def _library(rack: RackHandle) -> Rack:
    config = Path(rack.env["XDG_CONFIG_HOME"]) / "slipway" / "config.json"
    entry = ClientConfig.load(config).resolve(rack.name)
    return Rack.connect(entry.host, entry.token, entry.ca_pem)


def _spawn(rack: RackHandle, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [SLIPWAY, *args],
        env=rack.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _info(rack: RackHandle, app: str, build_id: str) -> dict[str, str]:
    lines = rack.ok("builds", "info", build_id, "-a", app).splitlines()
    pairs = (line.partition("  ") for line in lines)
    return {key: value.strip() for key, _, value in pairs}


def _log(rack: RackHandle, app: str, build_id: str) -> str:
    return rack.ok("builds", "logs", build_id, "-a", app, "--no-follow")


def _running_build(rack: RackHandle, app: str, printed: str) -> str:
    """The id of the app's running build once its log shows `printed`."""

    def check() -> str:
        rows = rack.ok("builds", "-a", app).splitlines()[1:]
        assert rows and rows[0].split()[1] == "running", rows
        build_id = rows[0].split()[0]
        assert printed in step_output(_log(rack, app, build_id).splitlines())
        return build_id

    return eventually(check, timeout=60)


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[str]]]:
    """Processes a test started; any still running at the end are killed."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def _sleep_of(marker: str) -> int:
    """A sleep of 300-799 s that only this test's RUN step runs (to find its process)."""
    return 300 + int(marker, 16) % 500


def _slow_app(tmp_path: Path, marker: str) -> Path:
    return write_files(
        tmp_path / "app",
        {
            "convox.yml": "services:\n  web:\n    build: .\n",
            "Dockerfile": f"FROM busybox\nRUN echo started-{marker} && sleep {_sleep_of(marker)}\n",
        },
    )


def _step_running(marker: str) -> bool:
    """True while the RUN step's `sleep` of `_slow_app(…, marker)` runs on this machine."""
    found = subprocess.run(
        ["pgrep", "-f", f"sleep {_sleep_of(marker)}$"], capture_output=True, timeout=30
    )
    return found.returncode == 0


def _numbered_app(tmp_path: Path, marker: str) -> Path:
    return write_files(
        tmp_path / "app",
        {
            "convox.yml": "services:\n  web:\n    build: .\n",
            "Dockerfile": (
                f"FROM busybox\nRUN echo {marker} && "
                "for i in $(seq 1 40); do echo line-$i; sleep 0.1; done\n"
            ),
        },
    )


def test_ctrl_c_leaves_the_build_running_and_cancel_stops_it(
    rack: RackHandle, tmp_path: Path, procs: list[subprocess.Popen[str]]
) -> None:
    marker = secrets.token_hex(4)
    app = f"cancel-{marker}"
    rack.ok("apps", "create", app)
    build = _spawn(rack, "build", str(_slow_app(tmp_path, marker)), "-a", app)
    procs.append(build)
    build_id = _running_build(rack, app, f"started-{marker}")
    assert eventually(lambda: _step_running(marker), timeout=30)

    build.send_signal(signal.SIGINT)
    out, err = build.communicate(timeout=30)

    assert build.returncode == 130, err
    assert "Traceback" not in err
    assert err.strip().splitlines() == [
        "Packaging source... OK",  # off a terminal the status lines are on stderr
        "Uploading source... OK",
        "Starting build... OK",
        "",
        f"Build {build_id} goes on in the background.",
        f"Follow it with: slipway builds logs {build_id} -a {app}",
        f"Cancel it with: slipway builds cancel {build_id} -a {app}",
    ]
    assert f"started-{marker}" in step_output(out.splitlines())
    assert _info(rack, app, build_id)["Status"] == "running"

    res = rack.slipway("builds", "cancel", build_id, "-a", app)
    assert (res.code, res.out, res.err) == (0, "", "Cancelling build... OK\n")

    # The engine work stopped: the step's process is gone.
    assert eventually(lambda: not _step_running(marker), timeout=30)
    info = _info(rack, app, build_id)
    assert (info["Status"], info["Release"]) == ("cancelled", "")
    assert _library(rack).metadata.list_releases(app) == []
    assert _log(rack, app, build_id).splitlines()[-1] == "Build cancelled"

    # Cancelling again changes nothing and says why.
    res = rack.slipway("builds", "cancel", build_id, "-a", app)
    assert (res.code, res.out, res.err) == (0, "", f"build {build_id} is already cancelled\n")
    assert _info(rack, app, build_id) == info


def test_a_follower_can_cancel_the_build(
    rack: RackHandle, tmp_path: Path, procs: list[subprocess.Popen[str]]
) -> None:
    marker = secrets.token_hex(4)
    app = f"stream-cancel-{marker}"
    rack.ok("apps", "create", app)
    procs.append(_spawn(rack, "build", str(_slow_app(tmp_path, marker)), "-a", app))
    build_id = _running_build(rack, app, f"started-{marker}")

    follower = _library(rack).builder.follow(build_id)
    try:
        follower.cancel()
        final = next(item for item in follower if isinstance(item, types.Build) and item.terminal)
    finally:
        follower.close()

    assert (final.status, final.release) == ("cancelled", "")
    out, err = procs[0].communicate(timeout=30)
    assert (procs[0].returncode, err.strip().splitlines()[-1]) == (1, "ERROR: build cancelled")
    assert out.splitlines()[-1] == "Build cancelled"


def test_concurrent_followers_see_every_line_once_in_order(
    rack: RackHandle, tmp_path: Path, procs: list[subprocess.Popen[str]]
) -> None:
    marker = secrets.token_hex(4)
    app = f"follow-{marker}"
    rack.ok("apps", "create", app)
    procs.append(_spawn(rack, "build", str(_numbered_app(tmp_path, marker)), "-a", app))
    build_id = _running_build(rack, app, "line-3")
    procs.extend(_spawn(rack, "builds", "logs", build_id, "-a", app) for _ in range(2))

    for proc in procs:  # the build's own output, then two late followers
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert [
            line for line in step_output(out.splitlines()) if NUMBERED.match(line)
        ] == EVERY_LINE

    info = _info(rack, app, build_id)
    assert info["Status"] == "complete"
    res = rack.slipway("builds", "cancel", build_id, "-a", app)
    assert (res.code, res.err) == (0, f"build {build_id} is already complete\n")
    assert _info(rack, app, build_id) == info


def test_a_follower_resumes_from_the_offset_it_acknowledged(
    rack: RackHandle, tmp_path: Path, procs: list[subprocess.Popen[str]]
) -> None:
    marker = secrets.token_hex(4)
    app = f"resume-{marker}"
    rack.ok("apps", "create", app)
    procs.append(_spawn(rack, "build", str(_numbered_app(tmp_path, marker)), "-a", app))
    build_id = _running_build(rack, app, "line-1")
    builder = _library(rack).builder

    shown: list[types.LogLine] = []
    follower = builder.follow(build_id)
    try:
        for item in follower:
            if isinstance(item, types.LogLine):
                shown.append(item)
                follower.ack(item.offset + 1)
                if step_output([item.text]) == ["line-10"]:
                    break
    finally:
        follower.close()  # as a dropped connection would
    # line-10 comes ~1 s into a ~4 s loop: the re-attach below happens mid-build.
    assert _library(rack).metadata.get_build(build_id).status == "running"

    final: types.Build | None = None
    follower = builder.follow(build_id, shown[-1].offset + 1)
    try:
        for item in follower:
            if isinstance(item, types.LogLine):
                shown.append(item)
            elif item.terminal:
                final = item
                break
    finally:
        follower.close()

    assert final is not None and final.status == "complete"
    assert [line.offset for line in shown] == list(range(len(shown)))
    stored = [line.text for line in _library(rack).metadata.stream_logs(build_id)]
    assert [line.text for line in shown] == stored
    assert [text for text in step_output(stored) if NUMBERED.match(text)] == EVERY_LINE
