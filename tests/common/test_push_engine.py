"""Pushing through the common Pusher and the one Docker adapter, as the builder does: the
real Docker engine and a real Distribution registry."""

from __future__ import annotations

import hashlib
import io
import json
import re
import secrets
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from client.cli.localrack.engine import docker_host
from client.kernel.errors import InvalidArgument, NotFound, Unavailable
from client.kernel.types import PushProgress, PushResult
from services.common.docker.engine import DockerEngine
from services.common.push import Destination, Pusher
from tests.helpers import free_port

pytestmark = pytest.mark.docker

MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"


@pytest.fixture
def pusher(registry_host: str) -> Iterator[Pusher]:
    engine = DockerEngine(docker_host())
    yield Pusher(engine, Destination(registry_host))
    engine.close()


@dataclass
class Built:
    id: str
    value: str


@pytest.fixture
def image(docker_client: Any) -> Iterator[Built]:
    """A fresh image from busybox whose /value holds a random string."""
    value = secrets.token_hex(8)
    dockerfile = f"FROM busybox\nRUN echo {value} > /value\n"
    built, _ = docker_client.images.build(
        fileobj=io.BytesIO(dockerfile.encode()), rm=True, tag=f"slipway-test-{value}:latest"
    )
    yield Built(id=built.id, value=value)
    remove_image(docker_client, built.id)


def remove_image(docker_client: Any, ref: str) -> None:
    import docker.errors

    try:
        docker_client.images.remove(ref, force=True)
    except docker.errors.ImageNotFound:
        pass


def repo_name() -> str:
    return f"app{secrets.token_hex(4)}"


def test_push_lands_in_the_registry(
    pusher: Pusher, image: Built, registry_host: str, docker_client: Any
) -> None:
    repo, tag = repo_name(), "web.BABCDEFGHIJ"
    ref = f"{registry_host}/{repo}:{tag}"
    events = list(pusher.push(image.id, repo, tag))

    assert events[0] == PushProgress(text=f"Running: docker tag {image.id} {ref}")
    assert events[1] == PushProgress(text=f"Running: docker push {ref}")
    result = events[-1]
    assert isinstance(result, PushResult) and result.reference == ref
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", result.digest)
    layers = [e for e in events[2:-1] if isinstance(e, PushProgress) and e.layer]
    assert any(e.status == "Pushed" for e in layers)
    for e in layers:
        assert e.text.startswith(f"{e.layer}: {e.status}")

    # The registry serves that manifest under the tag, with that digest.
    req = urllib.request.Request(
        f"http://{registry_host}/v2/{repo}/manifests/{tag}", headers={"Accept": MANIFEST_V2}
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        body = resp.read()
        assert resp.headers["Docker-Content-Digest"] == result.digest
    assert "sha256:" + hashlib.sha256(body).hexdigest() == result.digest
    assert json.loads(body)["mediaType"] == MANIFEST_V2

    # Gone from the engine, pulled back from the registry, it still holds the value.
    remove_image(docker_client, image.id)
    try:
        docker_client.images.pull(f"{registry_host}/{repo}", tag=tag)
        out = docker_client.containers.run(ref, ["cat", "/value"], remove=True)
        assert out.decode().strip() == image.value
    finally:
        remove_image(docker_client, ref)


def test_unknown_image_is_not_found(pusher: Pusher) -> None:
    name = f"slipway-missing-{secrets.token_hex(4)}:latest"
    with pytest.raises(NotFound, match=f"image not found: {name}"):
        list(pusher.push(name, repo_name(), "t"))


def test_bad_names_are_invalid(pusher: Pusher) -> None:
    with pytest.raises(InvalidArgument, match="invalid repository"):
        list(pusher.push("busybox:latest", "Bad/Repo", "t"))
    with pytest.raises(InvalidArgument, match="invalid tag"):
        list(pusher.push("busybox:latest", "app", "bad:tag"))


def test_unreachable_registry_is_unavailable(docker_client: Any) -> None:
    dead = f"127.0.0.1:{free_port()}"
    repo = repo_name()
    engine = DockerEngine(docker_host())
    try:
        with pytest.raises(Unavailable, match=f"^registry unreachable at {re.escape(dead)}$"):
            list(Pusher(engine, Destination(dead)).push("busybox:latest", repo, "t"))
    finally:
        engine.close()
        remove_image(docker_client, f"{dead}/{repo}:t")


def test_unreachable_engine_is_unavailable(registry_host: str) -> None:
    host = "unix:///nonexistent/slipway/docker.sock"
    pusher = Pusher(DockerEngine(host), Destination(registry_host))
    with pytest.raises(Unavailable, match=f"^Docker engine unreachable at {host}$"):
        list(pusher.push("busybox:latest", repo_name(), "t"))
