"""BuildKit builds through the engine API (`POST /build?version=2`) against the real
Docker engine: plain progress from the trace, the image id, failures with the failing
step, cancel, cache mounts, parallel stages and the contexts BuildKit cannot sniff."""

from __future__ import annotations

import re
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from client.kernel.errors import Cancelled, InvalidArgument
from services.builder.seams import CancelScope
from services.common.docker.engine import LEGACY, DockerEngine
from services.common.docker.types import BuildSpec, EngineError
from tests.helpers import eventually

pytestmark = pytest.mark.docker


@pytest.fixture
def engine(docker_client: Any) -> Any:
    from client.cli.localrack.engine import docker_host

    engine = DockerEngine(docker_host())
    yield engine
    engine.close()


def _context(folder: Path, dockerfile: str, **files: str) -> str:
    (folder / "Dockerfile").write_text(dockerfile)
    for name, text in files.items():
        (folder / name).write_text(text)
    return str(folder)


def _run(image: str, *command: str) -> str:
    done = subprocess.run(
        ["docker", "run", "--rm", image, *command], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_plain_progress_and_the_image(engine: DockerEngine, tmp_path: Path) -> None:
    marker = uuid.uuid4().hex
    context = _context(
        tmp_path,
        'FROM busybox\nARG WORD\nENTRYPOINT ["echo", "a b"]\nRUN echo "said $WORD"\n',
    )
    lines: list[str] = []
    image = engine.build(
        BuildSpec(context, buildargs={"WORD": marker}, nocache=True), lines.append, CancelScope()
    )
    try:
        assert image.startswith("sha256:")
        # BuildKit names the step with the build argument's value in it.
        step = next(line for line in lines if line.endswith(f'RUN echo "said {marker}"'))
        number = step.split()[0]
        assert step == f'{number} [2/2] RUN echo "said {marker}"'
        # The step's output with its offset, then its end.
        output = [line for line in lines if re.match(rf"^{number} \d+\.\d{{3}} ", line)]
        assert len(output) == 1 and float(output[0].split()[1]) >= 0
        assert output[0].endswith(f"said {marker}")
        ends = [line for line in lines if line.startswith(f"{number} DONE ")]
        assert len(ends) == 1 and ends[0].endswith("s")
        assert all("\n" not in line for line in lines)
        assert engine.inspect(image).entrypoint == ("echo", "a b")
        # Built again with the cache: the step is reported CACHED.
        again: list[str] = []
        assert (
            engine.build(
                BuildSpec(context, buildargs={"WORD": marker}), again.append, CancelScope()
            )
            == image
        )
        step = next(line for line in again if line.endswith(f'RUN echo "said {marker}"'))
        assert f"{step.split()[0]} CACHED" in again
    finally:
        engine.remove(image)


def test_a_failing_run_names_the_step(engine: DockerEngine, tmp_path: Path) -> None:
    context = _context(tmp_path, "FROM busybox\nRUN echo about to fail && exit 3\n")
    lines: list[str] = []
    with pytest.raises(EngineError) as err:
        engine.build(BuildSpec(context, nocache=True), lines.append, CancelScope())
    assert "exit code: 3" in str(err.value)
    number = next(line for line in lines if line.endswith("RUN echo about to fail && exit 3"))
    number = number.split()[0]
    assert any(line.startswith(f"{number} ") and line.endswith("about to fail") for line in lines)
    assert any(line.startswith(f"{number} ERROR: ") for line in lines)


def test_cancel_stops_the_engine_work(engine: DockerEngine, tmp_path: Path) -> None:
    seconds = 3000 + uuid.uuid4().int % 900  # a sleep no other process runs
    context = _context(tmp_path, f"FROM busybox\nRUN echo sleeping && sleep {seconds}\n")
    scope = CancelScope()
    running = threading.Event()
    errors: list[BaseException] = []

    def on_line(line: str) -> None:
        if line.endswith(" sleeping"):
            running.set()

    def run() -> None:
        try:
            engine.build(BuildSpec(context, nocache=True), on_line, scope)
        except BaseException as err:  # noqa: BLE001 - checked below
            errors.append(err)

    thread = threading.Thread(target=run)
    thread.start()
    assert running.wait(60)
    scope.cancel()
    thread.join(30)
    assert not thread.is_alive() and isinstance(errors[0], Cancelled)

    def stopped() -> bool:
        found = subprocess.run(["pgrep", "-f", f"sleep {seconds}"], capture_output=True)
        return found.returncode == 1

    eventually(stopped, timeout=30)


def test_a_cache_mount_outlives_the_build(engine: DockerEngine, tmp_path: Path) -> None:
    token = uuid.uuid4().hex
    mount = f"--mount=type=cache,id={token},target=/cache"
    (tmp_path / "one").mkdir()
    first = _context(tmp_path / "one", f"FROM busybox\nRUN {mount} echo {token} > /cache/seen\n")
    # Not --no-cache: BuildKit starts a no-cache build with empty cache mounts.
    image = engine.build(BuildSpec(first), lambda _: None, CancelScope())
    engine.remove(image)
    (tmp_path / "two").mkdir()
    second = _context(tmp_path / "two", f"FROM busybox\nRUN {mount} cp /cache/seen /seen\n")
    image = engine.build(BuildSpec(second), lambda _: None, CancelScope())
    try:
        assert _run(image, "cat", "/seen").strip() == token
    finally:
        engine.remove(image)


def test_independent_stages_run_in_parallel(engine: DockerEngine, tmp_path: Path) -> None:
    context = _context(
        tmp_path,
        "FROM busybox AS a\nRUN sleep 3 && echo a > /a\n"
        "FROM busybox AS b\nRUN sleep 3 && echo b > /b\n"
        "FROM busybox\nCOPY --from=a /a /a\nCOPY --from=b /b /b\n",
    )
    lines: list[str] = []
    began = time.monotonic()
    image = engine.build(BuildSpec(context, nocache=True), lines.append, CancelScope())
    took = time.monotonic() - began
    try:
        assert _run(image, "cat", "/a", "/b").split() == ["a", "b"]
        # Both sleeps started before either ended: the stages overlapped.
        a = next(line.split()[0] for line in lines if line.endswith("RUN sleep 3 && echo a > /a"))
        b = next(line.split()[0] for line in lines if line.endswith("RUN sleep 3 && echo b > /b"))
        starts = [i for i, line in enumerate(lines) if line.split()[0] in (a, b) and "RUN" in line]
        ends = [
            i
            for i, line in enumerate(lines)
            if line in (f"{a} DONE", f"{b} DONE") or line.startswith((f"{a} DONE ", f"{b} DONE "))
        ]
        assert len(starts) == 2 and len(ends) == 2 and max(starts) < min(ends)
        print(f"two 3 s stages built in {took:.1f} s")
    finally:
        engine.remove(image)


def test_a_context_opening_with_a_pax_header_still_builds(
    engine: DockerEngine, tmp_path: Path
) -> None:
    # A first entry whose name needs a pax header (non-ASCII): BuildKit would read an
    # uncompressed tar opening with it as a Dockerfile, so it is sent gzip'd.
    context = _context(tmp_path, "FROM busybox\nCOPY . /src\n", **{"ä-first.txt": "umlaut\n"})
    image = engine.build(BuildSpec(context, nocache=True), lambda _: None, CancelScope())
    try:
        assert _run(image, "cat", "/src/ä-first.txt").strip() == "umlaut"
    finally:
        engine.remove(image)


def test_the_legacy_builder_refuses_secrets(tmp_path: Path) -> None:
    legacy = DockerEngine("unix:///nonexistent.sock", builder=LEGACY)
    spec = BuildSpec(_context(tmp_path, "FROM busybox\n"), secrets={"tok": b"x"})
    with pytest.raises(InvalidArgument, match="secrets need BuildKit"):
        legacy.build(spec, lambda _: None, CancelScope())
    with pytest.raises(InvalidArgument, match="unknown engine builder"):
        DockerEngine("unix:///nonexistent.sock", builder="kaniko")
