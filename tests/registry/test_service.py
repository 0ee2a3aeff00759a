"""The registry service through an in-process gRPC server, the real Docker engine and a
real Distribution registry."""

from __future__ import annotations

import io
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from client.api.channel import open_channel
from client.api.registry import RegistryClient
from client.cli.localrack.engine import docker_host
from client.kernel.errors import Unauthenticated
from services.common.server import Server
from services.registry.config import Config
from services.registry.server import create_server
from tests.helpers import eventually, free_port
from tests.tls import ca, tls_channel, tls_env, tls_files

pytestmark = pytest.mark.docker

MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"


def start(token: str, registry: str, engine: str | None = None) -> Server:
    config = Config(
        listen="unused",
        token=token,
        registry_host=registry,
        docker_host=engine or docker_host(),
        tls=tls_files(),
    )
    return create_server(config, address="127.0.0.1:0")


@pytest.fixture
def server(token: str, registry_host: str) -> Iterator[Server]:
    srv = start(token, registry_host)
    yield srv
    srv.stop(0)


@pytest.fixture
def client(server: Server, token: str) -> Iterator[RegistryClient]:
    with open_channel(server.address, token, ca=ca()) as channel:
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


def test_registry_answers_without_an_engine(token: str, registry_host: str) -> None:
    engine = "unix:///nonexistent/slipway/docker.sock"
    srv = start(token, registry_host, engine)
    try:
        with open_channel(srv.address, token, ca=ca()) as channel:
            client = RegistryClient(channel, srv.address)
            assert client.registry_host() == registry_host
    finally:
        srv.stop(0)


def test_token_is_required(server: Server) -> None:
    for channel in (tls_channel(server.address), open_channel(server.address, "wrong", ca=ca())):
        with channel:
            client = RegistryClient(channel, server.address)
            with pytest.raises(Unauthenticated):
                client.registry_host()
            with pytest.raises(Unauthenticated):
                list(client.export_build("app", "BABCDEFGHIJ"))


def test_main_serves_until_sigterm(token: str, registry_host: str, tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    env = dict(
        os.environ,
        SLIPWAY_TOKEN=token,
        SLIPWAY_LISTEN=address,
        SLIPWAY_REGISTRY_HOST=registry_host,
        **tls_env(),
    )
    with open(tmp_path / "service.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "services.registry"], env=env, stdout=log, stderr=log
        )
    try:
        with open_channel(address, token, ca=ca()) as channel:
            client = RegistryClient(channel, address)
            assert eventually(client.registry_host) == registry_host
        proc.terminate()
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
