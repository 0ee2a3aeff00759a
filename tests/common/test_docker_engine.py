"""services.common.docker.engine against the real Docker engine (classic builder, seeded
busybox): builds, pulls and cancels as the builder uses them. BuildKit builds are in
test_docker_buildkit.py."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path
from typing import Any

import pytest

from client.kernel.errors import Cancelled, NotFound, Unavailable
from services.builder.seams import CancelScope
from services.common.docker.engine import LEGACY, DockerEngine
from services.common.docker.streams import LineSplitter
from services.common.docker.types import BuildSpec, EngineError
from tests.helpers import eventually

pytestmark = pytest.mark.docker


@pytest.fixture
def engine_host() -> str:
    from client.cli.localrack.engine import docker_host

    return docker_host()


def _context(tmp_path: Path, dockerfile: str) -> str:
    (tmp_path / "Dockerfile").write_text(dockerfile)
    return str(tmp_path)


def test_build_streams_lines_and_returns_the_image(
    docker_client: Any, engine_host: str, tmp_path: Path
) -> None:
    engine = DockerEngine(engine_host, builder=LEGACY)
    marker = uuid.uuid4().hex
    context = _context(
        tmp_path, 'FROM busybox\nARG WORD\nENTRYPOINT ["echo", "a b"]\nRUN echo "said $WORD"\n'
    )
    lines: list[str] = []
    image = engine.build(
        BuildSpec(context, buildargs={"WORD": marker}, nocache=True), lines.append, CancelScope()
    )
    try:
        assert lines[0] == "Step 1/4 : FROM busybox"
        assert f"said {marker}" in lines
        assert all("\n" not in line for line in lines)
        info = engine.inspect(image)
        assert info.id == image and info.entrypoint == ("echo", "a b")
    finally:
        engine.remove(image)
        engine.close()
    with pytest.raises(NotFound):
        DockerEngine(engine_host).inspect(image)


def test_a_failing_run_raises_the_engine_text(
    docker_client: Any, engine_host: str, tmp_path: Path
) -> None:
    engine = DockerEngine(engine_host, builder=LEGACY)
    context = _context(tmp_path, "FROM busybox\nRUN echo about to fail && exit 3\n")
    lines: list[str] = []
    with pytest.raises(EngineError) as err:
        engine.build(BuildSpec(context, nocache=True), lines.append, CancelScope())
    assert str(err.value) == (
        "The command '/bin/sh -c echo about to fail && exit 3' returned a non-zero code: 3"
    )
    assert "about to fail" in lines
    engine.close()


def test_cancel_stops_the_build_and_its_container(
    docker_client: Any, engine_host: str, tmp_path: Path
) -> None:
    engine = DockerEngine(engine_host, builder=LEGACY)
    context = _context(tmp_path, "FROM busybox\nRUN echo sleeping && sleep 300\n")
    scope = CancelScope()
    lines: list[str] = []
    running = threading.Event()

    def on_line(line: str) -> None:
        lines.append(line)
        if line == "sleeping":
            running.set()

    errors: list[BaseException] = []

    def run() -> None:
        try:
            engine.build(BuildSpec(context, nocache=True), on_line, scope)
        except BaseException as err:  # noqa: BLE001 - checked below
            errors.append(err)

    thread = threading.Thread(target=run)
    thread.start()
    assert running.wait(60)
    container = next(line.split()[-1] for line in lines if "Running in" in line)
    scope.cancel()
    thread.join(30)
    assert not thread.is_alive() and isinstance(errors[0], Cancelled)

    def gone() -> bool:
        return not docker_client.containers.list(all=True, filters={"id": container})

    eventually(gone, timeout=30)
    engine.close()


def test_pull_failure_is_an_engine_error(docker_client: Any, engine_host: str) -> None:
    engine = DockerEngine(engine_host)
    with pytest.raises(EngineError):
        engine.pull("127.0.0.1:1/nosuch:latest", lambda _: None, CancelScope())
    engine.close()


def test_unreachable_engine_is_unavailable(tmp_path: Path) -> None:
    host = f"unix://{tmp_path}/nothing.sock"
    with pytest.raises(Unavailable, match=f"^Docker engine unreachable at {host}$"):
        DockerEngine(host).inspect("busybox")


def test_line_splitter_joins_pieces_the_engine_cuts() -> None:
    lines: list[str] = []
    split = LineSplitter(lines.append)
    for piece in ("Step 1/2 : FROM busybox", "\n", " ---> abc\n\nRUN", " out\r\n", "partial"):
        split.feed(piece)
    split.flush()
    assert lines == ["Step 1/2 : FROM busybox", " ---> abc", "", "RUN out", "partial"]
