"""Fixtures shared by every test layer: the real Docker engine, a throwaway registry,
PostgreSQL, and a rack token."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import eventually, free_port, remove_images_of

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _unavailable(what: str) -> None:
    """In CI a missing real part is a failure, never a silent skip; elsewhere a skip."""
    if IN_CI:
        pytest.fail(f"{what} is required in CI (make setup starts it)")
    pytest.skip(f"{what} not available here")


@pytest.fixture(scope="session")
def token() -> str:
    return secrets.token_hex(16)


@pytest.fixture(scope="session")
def docker_client():  # type: ignore[no-untyped-def]
    """A docker SDK client on the real engine (`make setup` starts it)."""
    from client.cli.localrack.engine import docker_host, engine_answers

    if not engine_answers():
        _unavailable(f"the Docker engine at {docker_host()}")
    import docker

    client = docker.DockerClient(base_url=docker_host(), timeout=300)
    try:
        client.images.get("busybox:latest")
    except Exception:  # noqa: BLE001
        _unavailable("busybox:latest in the engine (make setup seeds it)")
    yield client
    client.close()


@pytest.fixture(scope="session")
def registry_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the session's registry (`registry_host`) keeps its files: `data/docker/...`."""
    return tmp_path_factory.mktemp("registry")


@pytest.fixture(scope="session")
def registry_host(registry_root: Path) -> Iterator[str]:
    """A real Docker Distribution registry on 127.0.0.1 for this test session."""
    binary = shutil.which("docker-registry")
    if binary is None:
        _unavailable("docker-registry")
    root = registry_root
    port = free_port()
    config = root / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: warn\n"
        f"storage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n"
        "  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    with open(root / "registry.log", "wb") as log:
        proc = subprocess.Popen([binary, "serve", str(config)], stdout=log, stderr=log)
    host = f"127.0.0.1:{port}"
    try:
        import urllib.request

        eventually(lambda: urllib.request.urlopen(f"http://{host}/v2/", timeout=2).status == 200)
        yield host
    finally:
        remove_images_of(host)
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="session")
def skopeo() -> str:
    """The skopeo binary (make setup installs it)."""
    path = shutil.which("skopeo")
    if path is None:
        _unavailable("skopeo")
    assert path is not None
    return path


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """PostgreSQL on 127.0.0.1:5432 (trust auth, database `test`)."""
    url = os.environ.get("SLIPWAY_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
    try:
        import psycopg2

        psycopg2.connect(url, connect_timeout=3).close()
    except Exception:  # noqa: BLE001
        _unavailable(f"PostgreSQL at {url}")
    return url


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    return tmp_path


@contextlib.contextmanager
def new_database(postgres_url: str) -> Iterator[str]:
    """A PostgreSQL database created empty for the caller, dropped after."""
    import psycopg2
    from psycopg2 import sql

    name = f"slipway_run_{secrets.token_hex(5)}"
    admin = psycopg2.connect(postgres_url)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    base = postgres_url.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with admin.cursor() as cur:
            cur.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )
            cur.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        admin.close()


@pytest.fixture(scope="session")
def fresh_database(postgres_url: str) -> Iterator[str]:
    """A PostgreSQL database of this test run's own."""
    with new_database(postgres_url) as url:
        yield url


@dataclass(frozen=True)
class S3Endpoint:
    """A moto server: a real HTTP S3 endpoint, and the environment boto3 needs for it."""

    url: str
    env: dict[str, str]

    def client(self):  # type: ignore[no-untyped-def]
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.url,
            region_name=self.env["AWS_DEFAULT_REGION"],
            aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"],
        )

    def bucket(self) -> str:
        """A new, empty bucket."""
        name = f"slipway-{secrets.token_hex(5)}"
        self.client().create_bucket(Bucket=name)
        return name


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Endpoint]:
    """moto in server mode on 127.0.0.1, started for this session (never in-process)."""
    import sys

    binary = Path(sys.executable).parent / "moto_server"
    if not binary.exists():
        _unavailable("moto_server (pip install moto[server]; make setup does)")
    port = free_port()
    log = (tmp_path_factory.mktemp("moto") / "moto.log").open("wb")
    proc = subprocess.Popen(
        [str(binary), "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log
    )
    url = f"http://127.0.0.1:{port}"
    env = {
        "AWS_ENDPOINT_URL": url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    try:
        import urllib.request

        eventually(lambda: urllib.request.urlopen(url, timeout=2).status == 200, timeout=30)
        yield S3Endpoint(url, env)
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()
