"""Fixtures of the CLI tests: a client configuration, a project folder, a fake rack and a
way to run `slipway` against them."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

from client.cli.config import ClientConfig, RackEntry
from client.cli.main import main
from tests.client.cli.fakes import FakeRack


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("client.cli.commands.follow.RECONNECT_DELAYS", (0.0,) * 5)
    for name in ("SLIPWAY_RACK", "SLIPWAY_HOST", "SLIPWAY_TOKEN", "SLIPWAY_DEBUG"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    path = tmp_path / "config" / "config.json"
    config = ClientConfig()
    config.add(RackEntry("remote", "remote.example:443", "t2"), make_current=False)
    config.add(RackEntry("local", "127.0.0.1:7400", "t1", {"port": 7400}), make_current=True)
    config.save(path)
    return path


@pytest.fixture
def project(tmp_path: Path) -> Path:
    folder = tmp_path / "myapp"
    folder.mkdir()
    (folder / "convox.yml").write_text("services:\n  web:\n    build: .\n")
    (folder / "Dockerfile").write_text("FROM busybox\n")
    return folder


class Run:
    """One invocation's result."""

    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err


@pytest.fixture
def rack() -> FakeRack:
    return FakeRack()


@pytest.fixture
def run(rack: FakeRack, config_path: Path, project: Path) -> Any:
    connected: list[tuple[str, str]] = []

    def connect(host: str, token: str, ca: bytes | None = None) -> FakeRack:
        connected.append((host, token))
        return rack

    def invoke(*argv: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> Run:
        out, err = io.StringIO(), io.StringIO()
        code = main(
            list(argv),
            stdout=out,
            stderr=err,
            env={"XDG_CACHE_HOME": str(config_path.parent / "cache"), **(env or {})},
            connect=connect,  # type: ignore[arg-type]
            config_path=config_path,
            cwd=cwd or project,
        )
        return Run(code, out.getvalue(), err.getvalue())

    invoke.connected = connected  # type: ignore[attr-defined]
    return invoke
