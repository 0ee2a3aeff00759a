"""A real local rack for end-to-end tests, started the way `make up` does: through the
`slipway` command, on the real Docker engine, a real registry and SQLite."""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SLIPWAY = str(Path(sys.executable).parent / "slipway")


@dataclass
class Result:
    code: int
    out: str
    err: str


@dataclass
class RackHandle:
    """A running test rack and a way to drive it with the `slipway` command."""

    name: str
    port: int
    data: Path
    env: dict[str, str]

    @property
    def registry(self) -> str:
        return f"127.0.0.1:{self.port + 4}"

    def slipway(
        self, *args: str, cwd: Path | None = None, timeout: float = 300, input: str | None = None
    ) -> Result:
        proc = subprocess.run(
            [SLIPWAY, *args],
            cwd=cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
        )
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def ok(self, *args: str, cwd: Path | None = None) -> str:
        res = self.slipway(*args, cwd=cwd)
        assert res.code == 0, f"slipway {' '.join(args)} failed ({res.code}):\n{res.out}\n{res.err}"
        assert "Traceback" not in res.err
        return res.out


def _free_block(size: int = 5) -> int:
    """A base port whose `size` consecutive ports are all free."""
    for _ in range(200):
        base = random.randint(20000, 40000)
        try:
            for port in range(base, base + size):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
    raise RuntimeError("no free port block")


@pytest.fixture(scope="session")
def rack(docker_client, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RackHandle]:  # type: ignore[no-untyped-def]
    home = tmp_path_factory.mktemp("home")
    env = dict(os.environ)
    env.update(XDG_CONFIG_HOME=str(home / "config"), XDG_DATA_HOME=str(home / "data"))
    for var in ("SLIPWAY_RACK", "SLIPWAY_HOST", "SLIPWAY_TOKEN"):
        env.pop(var, None)
    name = f"e2e{random.randint(1000, 9999)}"
    handle = RackHandle(name, _free_block(), home / "rack", env)
    started = handle.slipway(
        "rack",
        "start",
        "--name",
        name,
        "--port",
        str(handle.port),
        "--data",
        str(handle.data),
        timeout=180,
    )
    assert started.code == 0, f"rack start failed:\n{started.out}\n{started.err}"
    try:
        yield handle
    finally:
        handle.slipway("rack", "stop", "--name", name, timeout=60)
