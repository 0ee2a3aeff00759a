"""No build stays running forever: a builder that dies mid-build fails the build when it
comes back."""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
from pathlib import Path

import pytest

from tests.e2e.conftest import SLIPWAY, RackHandle
from tests.helpers import eventually

pytestmark = pytest.mark.docker


def _status(rack: RackHandle, app: str, build_id: str) -> str:
    out = rack.ok("builds", "info", build_id, "-a", app)
    return re.search(r"^Status\s+(\S+)", out, re.M).group(1)  # type: ignore[union-attr]


def test_builder_restart_fails_builds_it_left_running(rack: RackHandle, tmp_path: Path) -> None:
    app = f"restart-{secrets.token_hex(3)}"
    rack.ok("apps", "create", app)
    (tmp_path / "convox.yml").write_text("services:\n  web:\n    build: .\n")
    (tmp_path / "Dockerfile").write_text(
        f"FROM busybox\nRUN echo slow-step-{secrets.token_hex(4)} && sleep 120\n"
    )
    proc = subprocess.Popen(
        [SLIPWAY, "build", str(tmp_path), "-a", app],
        env=rack.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:

        def running_build() -> str:
            rows = rack.ok("builds", "-a", app).splitlines()[1:]
            assert rows and rows[0].split()[1] == "running", rows
            return rows[0].split()[0]

        build_id = eventually(running_build, timeout=60)
        eventually(
            lambda: "slow-step" in rack.ok("builds", "logs", build_id, "-a", app, "--no-follow"),
            timeout=60,
        )

        pid = int((rack.data / "run" / "builder.pid").read_text())
        os.kill(pid, signal.SIGKILL)
        rack.ok("rack", "start", "--name", rack.name)

        assert eventually(lambda: _status(rack, app, build_id) == "failed", timeout=30)
        info = rack.ok("builds", "info", build_id, "-a", app)
        reason = "builder lost: builder-1 stopped renewing its lease"
        assert re.search(rf"^Reason\s+{reason}$", info, re.M), info
    finally:
        proc.kill()
        proc.wait(10)
