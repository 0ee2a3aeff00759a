"""A build whose context lives in a blob store (an incremental upload's entry list and its
blobs), on the real engine with both builders: the engine gets the files, modes and links
of the entry list, read from the store as it asks, never from a folder on disk."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from client.kernel.entries import DIR, FILE, SYMLINK, Entry, Limits, Tree, TreeSource
from services.builder.seams import CancelScope
from services.common.docker.engine import BUILDKIT, LEGACY, DockerEngine
from services.common.docker.types import BuildSpec

pytestmark = pytest.mark.docker

LIST = "cd /ctx && find . | sort && cat sub/run.sh && ./sub/run.sh && readlink link"


@pytest.fixture
def engine_host() -> str:
    from client.cli.localrack.engine import docker_host

    return docker_host()


class Blobs:
    """An in-memory blob store that records what is read from it."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.read: list[str] = []

    def add(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        self.data[digest] = data
        return digest

    def fetch(self, digests: Sequence[str]) -> Iterator[tuple[str, Iterator[bytes]]]:
        for digest in digests:
            self.read.append(digest)
            data = self.data[digest]
            yield digest, iter([data[i : i + 1000] for i in range(0, len(data), 1000)] or [b""])


def _tree(blobs: Blobs, marker: str) -> Tree:
    def file(path: str, text: str, mode: int = 0o644) -> Entry:
        data = text.encode()
        return Entry(path, FILE, mode, len(data), 0, blobs.add(data))

    dockerfile = f"FROM busybox\nCOPY . /ctx\nRUN echo {marker} && {LIST}\n"
    return Tree(
        [
            file(".dockerignore", "*.log\n"),
            file("Dockerfile", dockerfile),
            file("convox.yml", "services:\n  web:\n    build: app\n"),
            file("ignored.log", "never copied\n"),
            Entry("sub", DIR, 0o755),
            file("sub/run.sh", "#!/bin/sh\necho ran-from-the-store\n", 0o755),
            file("sub/empty", ""),
            Entry("link", SYMLINK, target="sub/run.sh"),
        ],
        Limits(1 << 20, 100),
    )


@pytest.mark.parametrize("builder", [BUILDKIT, LEGACY])
def test_a_context_from_the_blob_store_builds(
    builder: str, docker_client: Any, engine_host: str
) -> None:
    blobs = Blobs()
    marker = uuid.uuid4().hex
    source = TreeSource(_tree(blobs, marker), blobs.fetch)
    engine = DockerEngine(engine_host, builder=builder)
    lines: list[str] = []
    try:
        image = engine.build(
            BuildSpec(".", "Dockerfile", nocache=True, source=source), lines.append, CancelScope()
        )
        engine.remove(image)
    finally:
        engine.close()
    text = "\n".join(lines)
    assert marker in text and "ran-from-the-store" in text
    for name in ("./sub/run.sh", "./sub/empty", "./link", "./Dockerfile"):
        assert name in text
    assert any(line.split(" ")[-1] == "sub/run.sh" for line in lines)  # `readlink link`
    assert set(blobs.read) <= set(blobs.data)
    if builder == BUILDKIT:
        # BuildKit applies `.dockerignore` itself, and only what the build uses crosses:
        # an ignored file is never read from the store.
        assert "./ignored.log" not in text
        assert blobs.add(b"never copied\n") not in blobs.read
    else:
        # The classic builder gets the tree as the client sent it (the client applied
        # `.dockerignore` already; this entry list says otherwise, and is taken as it is).
        assert "./ignored.log" in text


@pytest.mark.parametrize("builder", [BUILDKIT, LEGACY])
def test_a_store_that_sends_the_wrong_bytes_fails_the_build_clearly(
    builder: str, docker_client: Any, engine_host: str
) -> None:
    blobs = Blobs()
    tree = _tree(blobs, uuid.uuid4().hex)
    run_sh = tree.get("sub/run.sh")
    assert run_sh is not None
    blobs.data[run_sh.sha256] = b"#!/bin/sh\n"  # shorter than the entry says
    engine = DockerEngine(engine_host, builder=builder)
    try:
        with pytest.raises(Exception) as err:
            engine.build(
                BuildSpec(".", "Dockerfile", nocache=True, source=TreeSource(tree, blobs.fetch)),
                lambda _line: None,
                CancelScope(),
            )
    finally:
        engine.close()
    assert "unreachable" not in str(err.value)
    assert "sub/run.sh" in str(err.value) or "context" in str(err.value)
