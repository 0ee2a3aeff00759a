"""The registry service through an in-process gRPC server, the real Docker engine and a
real Distribution registry."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import secrets
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from client.api.channel import open_channel
from client.api.registry import RegistryClient
from client.cli.localrack.engine import docker_host
from client.kernel.errors import InvalidArgument, NotFound, Unauthenticated, Unavailable
from client.kernel.types import PushProgress, PushResult
from services.common.server import Server
from services.registry.config import Config
from services.registry.server import create_server
from tests.helpers import eventually, free_port

pytestmark = pytest.mark.docker

MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"


def start(token: str, registry: str, engine: str | None = None) -> Server:
    config = Config(
        listen="unused", token=token, registry_host=registry, docker_host=engine or docker_host()
    )
    return create_server(config, address="127.0.0.1:0")


@pytest.fixture
def server(token: str, registry_host: str) -> Iterator[Server]:
    srv = start(token, registry_host)
    yield srv
    srv.stop(0)


@pytest.fixture
def client(server: Server, token: str) -> Iterator[RegistryClient]:
    with open_channel(server.address, token) as channel:
        yield RegistryClient(channel, server.address)


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


def test_get_registry(client: RegistryClient, registry_host: str) -> None:
    assert client.registry_host() == registry_host


def test_push_lands_in_the_registry(
    client: RegistryClient, image: Built, registry_host: str, docker_client: Any
) -> None:
    repo, tag = repo_name(), "web.BABCDEFGHIJ"
    ref = f"{registry_host}/{repo}:{tag}"
    events = list(client.push(image.id, repo, tag))

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


def test_unknown_image_is_not_found(client: RegistryClient) -> None:
    name = f"slipway-missing-{secrets.token_hex(4)}:latest"
    with pytest.raises(NotFound, match=f"image not found: {name}"):
        list(client.push(name, repo_name(), "t"))


def test_bad_names_are_invalid(client: RegistryClient) -> None:
    with pytest.raises(InvalidArgument, match="invalid repository"):
        list(client.push("busybox:latest", "Bad/Repo", "t"))
    with pytest.raises(InvalidArgument, match="invalid tag"):
        list(client.push("busybox:latest", "app", "bad:tag"))


def test_unreachable_registry_is_unavailable(token: str, docker_client: Any) -> None:
    dead = f"127.0.0.1:{free_port()}"
    srv = start(token, dead)
    repo = repo_name()
    try:
        with open_channel(srv.address, token) as channel:
            client = RegistryClient(channel, srv.address)
            with pytest.raises(Unavailable, match=f"^registry unreachable at {re.escape(dead)}$"):
                list(client.push("busybox:latest", repo, "t"))
    finally:
        srv.stop(0)
        remove_image(docker_client, f"{dead}/{repo}:t")


def test_unreachable_engine_is_unavailable(token: str, registry_host: str) -> None:
    engine = "unix:///nonexistent/slipway/docker.sock"
    srv = start(token, registry_host, engine)
    try:
        with open_channel(srv.address, token) as channel:
            client = RegistryClient(channel, srv.address)
            with pytest.raises(Unavailable, match=f"^Docker engine unreachable at {engine}$"):
                list(client.push("busybox:latest", repo_name(), "t"))
            assert client.registry_host() == registry_host
    finally:
        srv.stop(0)


def test_token_is_required(server: Server) -> None:
    for channel in (grpc.insecure_channel(server.address), open_channel(server.address, "wrong")):
        with channel:
            client = RegistryClient(channel, server.address)
            with pytest.raises(Unauthenticated):
                client.registry_host()
            with pytest.raises(Unauthenticated):
                list(client.push("busybox:latest", "app", "t"))


def test_main_serves_until_sigterm(token: str, registry_host: str, tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    env = dict(
        os.environ, SLIPWAY_TOKEN=token, SLIPWAY_LISTEN=address, SLIPWAY_REGISTRY_HOST=registry_host
    )
    with open(tmp_path / "service.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "services.registry"], env=env, stdout=log, stderr=log
        )
    try:
        with open_channel(address, token) as channel:
            client = RegistryClient(channel, address)
            assert eventually(client.registry_host) == registry_host
        proc.terminate()
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
