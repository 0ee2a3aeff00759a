"""GetManifests, ReadBlob and CopyBuild between two in-process racks: each its own registry
service, metadata service (SQLite), token and real Distribution registry, the source with a
front door answering GetRack. The destination reaches the source over gRPC exactly as it
would another machine's rack.

Every failing copy is checked to leave nothing behind on the destination: no build, no
release, no tag."""

from __future__ import annotations

import hashlib
import io
import json
import os
import secrets
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import grpc
import pytest
from slipway.builder.v1 import builder_pb2, builder_pb2_grpc

from client.api.channel import open_channel
from client.api.metadata import MetadataClient
from client.api.registry import RegistryClient
from client.cli.localrack.engine import docker_host
from client.kernel.errors import (
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    Unauthenticated,
    Unavailable,
)
from client.kernel.types import COMPLETE, CopyProgress, CopyResult, PushResult
from services.common.oci import DistributionRegistry
from services.common.server import Server, build_server
from services.registry import server as registry_server
from services.registry.config import Config
from services.registry.records import BuildRecords, ImportedBuild
from tests.conftest import _unavailable
from tests.helpers import app_name, eventually, free_port, push_image
from tests.tls import ca, tls_env, tls_files

pytestmark = pytest.mark.docker

MANIFEST = "services:\n  web:\n    build: .\n  worker:\n    build: ./worker\n"
CHUNK = 512 * 1024


@pytest.fixture(scope="module")
def other_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A second real Distribution registry: the destination rack's."""
    binary = shutil.which("docker-registry")
    if binary is None:
        _unavailable("docker-registry")
    root = tmp_path_factory.mktemp("registry-b")
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
        eventually(lambda: urllib.request.urlopen(f"http://{host}/v2/", timeout=2).status == 200)
        yield host
    finally:
        proc.terminate()
        proc.wait(10)


class FrontDoor(builder_pb2_grpc.BuilderServiceServicer):
    """The source rack's builder as far as a copy needs it: GetRack."""

    def __init__(self, registry: str, metadata: str, registry_host: str) -> None:
        self.info = builder_pb2.GetRackResponse(
            name="source",
            version="test",
            metadata_address=metadata,
            registry_address=registry,
            registry_host=registry_host,
        )

    def GetRack(  # noqa: N802 - gRPC method name
        self, request: builder_pb2.GetRackRequest, context: grpc.ServicerContext
    ) -> builder_pb2.GetRackResponse:
        return self.info


@dataclass
class Rack:
    """One in-process rack: clients of its services, its registry host and front door."""

    token: str
    host: str
    front: str
    registry: RegistryClient
    metadata: MetadataClient


@dataclass(frozen=True)
class Metadata:
    """A metadata service of its own process (peewee binds one database per process)."""

    address: str
    token: str


def start_metadata(data: Path) -> tuple[subprocess.Popen[bytes], Metadata]:
    token = secrets.token_hex(16)
    address = f"127.0.0.1:{free_port()}"
    env = dict(os.environ, SLIPWAY_TOKEN=token, SLIPWAY_DATA=str(data), **tls_env())
    data.mkdir(parents=True)
    with open(data.parent / f"{data.name}.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "services.metadata", "--listen", address],
            env=env,
            stdout=log,
            stderr=log,
        )
    channel = open_channel(address, token, ca=ca())
    try:
        eventually(lambda: MetadataClient(channel, address).list_apps() is not None, timeout=30)
    finally:
        channel.close()
    return proc, Metadata(address, token)


@pytest.fixture(scope="module")
def metadata(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Metadata]]:
    """The source rack's and the destination rack's metadata services."""
    root = tmp_path_factory.mktemp("metadata")
    procs: list[subprocess.Popen[bytes]] = []
    found: dict[str, Metadata] = {}
    try:
        for name in ("source", "dest"):
            proc, found[name] = start_metadata(root / name)
            procs.append(proc)
        yield found
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)


@pytest.fixture
def make_rack(tmp_path: Path) -> Iterator[Callable[..., Rack]]:
    """Makes a rack: a registry service and a front door on `host` and `md`; keyword
    arguments wrap the registry service's deps."""
    servers: list[Server] = []
    channels: list[grpc.Channel] = []

    def make(name: str, host: str, md: Metadata, **swap: Any) -> Rack:
        config = Config(
            listen="unused",
            token=md.token,
            registry_host=host,
            docker_host=docker_host(),
            metadata_address=md.address,
            scratch_dir=tmp_path / name,
            tls=tls_files(),
        )
        deps = registry_server.default_deps(config)
        deps = replace(deps, **{k: v(deps) for k, v in swap.items()})
        reg = registry_server.create_server(config, deps, address="127.0.0.1:0")
        servers.append(reg)
        door = FrontDoor(reg.address, md.address, host)
        front = build_server(
            token=md.token,
            address="127.0.0.1:0",
            register=lambda s: builder_pb2_grpc.add_BuilderServiceServicer_to_server(door, s),
            service_names=[builder_pb2.DESCRIPTOR.services_by_name["BuilderService"].full_name],
            tls=tls_files(),
        )
        servers.append(front)
        reg_channel = open_channel(reg.address, md.token, ca=ca())
        md_channel = open_channel(md.address, md.token, ca=ca())
        channels.extend([reg_channel, md_channel])
        return Rack(
            md.token,
            host,
            front.address,
            RegistryClient(reg_channel, reg.address),
            MetadataClient(md_channel, md.address),
        )

    yield make
    for channel in channels:
        channel.close()
    for srv in reversed(servers):
        srv.stop(0)


@pytest.fixture
def source(
    make_rack: Callable[..., Rack], registry_host: str, metadata: dict[str, Metadata]
) -> Rack:
    return make_rack("source", registry_host, metadata["source"])


@pytest.fixture
def dest(
    make_rack: Callable[..., Rack], other_registry: str, metadata: dict[str, Metadata]
) -> Rack:
    return make_rack("dest", other_registry, metadata["dest"])


def http(url: str, method: str = "GET") -> tuple[int, bytes]:
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, b""


def registry_tags(host: str, repository: str) -> list[str]:
    status, body = http(f"http://{host}/v2/{repository}/tags/list")
    return sorted(json.loads(body).get("tags") or []) if status == 200 else []


def blobs_of(host: str, repository: str, tag: str) -> dict[str, int]:
    """The blobs (config and layers) of the image `repository:tag`, with their sizes."""
    request = urllib.request.Request(
        f"http://{host}/v2/{repository}/manifests/{tag}",
        headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        data = json.loads(resp.read())
    return {ref["digest"]: ref["size"] for ref in [data["config"], *data["layers"]]}


def build_image(docker_client: Any, marker: str) -> str:
    dockerfile = f'FROM busybox\nRUN echo {marker} > /value\nENTRYPOINT ["cat", "/value"]\n'
    image, _ = docker_client.images.build(
        fileobj=io.BytesIO(dockerfile.encode()), rm=True, nocache=True
    )
    return str(image.id)


def remove_quietly(docker_client: Any, ref: str) -> None:
    import docker.errors

    try:
        docker_client.images.remove(ref, force=True)
    except docker.errors.ImageNotFound:
        pass


def run_image(docker_client: Any, host: str, app: str, tag: str) -> str:
    """Pulls `{host}/{app}:{tag}` afresh and runs its entrypoint."""
    ref = f"{host}/{app}:{tag}"
    remove_quietly(docker_client, ref)
    docker_client.images.pull(f"{host}/{app}", tag=tag)
    try:
        return str(docker_client.containers.run(ref, remove=True).decode().strip())
    finally:
        remove_quietly(docker_client, ref)


@dataclass
class Made:
    app: str
    id: str
    images: dict[str, str]
    markers: dict[str, str]
    logs: list[str]


class Builds:
    """Makes complete builds on the source rack the way the builder does."""

    def __init__(self, rack: Rack, docker_client: Any) -> None:
        self.rack = rack
        self.docker = docker_client
        self.app = app_name()
        self.made: list[Made] = []
        rack.metadata.create_app(self.app)

    def make(self, images: dict[str, str] | None = None, **markers: str) -> Made:
        """A build of `web` and `worker`: reusing `images` where given, else new images."""
        md = self.rack.metadata
        build = md.create_build(
            self.app, description="to copy", manifest=MANIFEST, git_sha="cd" * 20
        )
        md.update_build(build.id, status="running")
        images = dict(images or {})
        for service in ("web", "worker"):
            if service not in images:
                markers[service] = f"{service}-{secrets.token_hex(6)}"
                images[service] = build_image(self.docker, markers[service])
            pushed = push_image(self.rack.host, images[service], self.app, f"{service}.{build.id}")
            assert isinstance(pushed[-1], PushResult)
        logs = ["Building: .", f"build {build.id}", "\ttab and ünïcode"]
        md.append_logs(build.id, logs)
        release = md.create_release(self.app, build=build.id, env={"SRC": "1"}, manifest=MANIFEST)
        md.update_build(build.id, status=COMPLETE, release=release.id, entrypoint="cat /value")
        made = Made(self.app, build.id, images, markers, logs)
        self.made.append(made)
        return made

    def cleanup(self) -> None:
        for made in self.made:
            for service, image in made.images.items():
                remove_quietly(self.docker, f"{self.rack.host}/{self.app}:{service}.{made.id}")
                remove_quietly(self.docker, image)


@pytest.fixture
def builds(source: Rack, docker_client: Any) -> Iterator[Builds]:
    made = Builds(source, docker_client)
    yield made
    made.cleanup()


def copy(
    dest: Rack, source: Rack, app: str, build_id: str, to_app: str = "", token: str = ""
) -> tuple[CopyResult, list[CopyProgress]]:
    events: list[CopyProgress] = []
    result = dest.registry.copy_build(
        source.front,
        token or source.token,
        app,
        build_id,
        to_app=to_app,
        source_name="src",
        progress=events.append,
        source_ca=ca(),
    )
    return result, events


def assert_nothing_left(dest: Rack, app: str) -> None:
    try:
        assert dest.metadata.list_builds(app) == []
        assert dest.metadata.list_releases(app) == []
    except NotFound:
        pass
    assert registry_tags(dest.host, app) == []


# The source side.


def test_get_manifests_and_read_blob(source: Rack, builds: Builds) -> None:
    made = builds.make()

    images = source.registry.get_manifests(made.app, made.id)

    assert [i.service for i in images] == ["web", "worker"]
    for image in images:
        assert image.digest == f"sha256:{hashlib.sha256(image.body).hexdigest()}"
        assert image.media_type == "application/vnd.docker.distribution.manifest.v2+json"
        assert image.config_digest == json.loads(image.body)["config"]["digest"]
        sizes = blobs_of(source.host, made.app, f"{image.service}.{made.id}")
        for digest, size in sizes.items():
            chunks = list(source.registry.read_blob(made.app, digest))
            assert all(0 < len(c) <= CHUNK for c in chunks)
            data = b"".join(chunks)
            assert len(data) == size
            assert f"sha256:{hashlib.sha256(data).hexdigest()}" == digest
    # The busybox layer alone is over a megabyte: it came in several chunks.
    largest = max(sizes, key=lambda d: sizes[d])
    assert len(list(source.registry.read_blob(made.app, largest))) > 1


def test_source_side_errors(source: Rack, builds: Builds) -> None:
    made = builds.make()
    with pytest.raises(NotFound, match="^build not found: BNOSUCHBUIL$"):
        source.registry.get_manifests(made.app, "BNOSUCHBUIL")
    running = source.metadata.create_build(made.app)
    with pytest.raises(FailedPrecondition, match=f"^build {running.id} is created"):
        source.registry.get_manifests(made.app, running.id)
    with pytest.raises(InvalidArgument, match="invalid digest"):
        list(source.registry.read_blob(made.app, "sha256:../../etc"))
    with pytest.raises(NotFound, match="^blob not found: "):
        list(source.registry.read_blob(made.app, "sha256:" + "0" * 64))
    with pytest.raises(InvalidArgument, match="invalid app name"):
        list(source.registry.read_blob("Bad", "sha256:" + "0" * 64))


# Copies.


def test_copy_moves_a_build_then_only_the_blobs_the_destination_lacks(
    source: Rack, dest: Rack, builds: Builds, docker_client: Any
) -> None:
    first = builds.make()
    target = app_name()
    dest.metadata.create_app(target)
    dest.metadata.create_release(target, env={"DEST": "yes"})

    result, events = copy(dest, source, first.app, first.id, to_app=target)

    build, release = result.build, result.release
    assert build.id != first.id and build.app == target and build.status == COMPLETE
    assert (build.description, build.manifest, build.git_sha) == ("to copy", MANIFEST, "cd" * 20)
    assert (build.entrypoint, build.release) == ("cat /value", release.id)
    assert [line.text for line in dest.metadata.stream_logs(build.id)] == first.logs
    assert release.build == build.id and release.env == {"DEST": "yes"}
    assert dest.metadata.get_app(target).release == ""  # not promoted
    assert registry_tags(dest.host, target) == [f"web.{build.id}", f"worker.{build.id}"]
    # Nothing was there: every blob (two configs, busybox once, two layers) travelled.
    sizes: dict[str, int] = {}
    for service in ("web", "worker"):
        sizes.update(blobs_of(source.host, first.app, f"{service}.{first.id}"))
    assert (result.blobs, result.moved, result.mounted) == (5, 5, 0)
    assert sorted(result.moved_blobs) == sorted(sizes)
    assert result.bytes == sum(sizes.values())
    assert events[-1].current == events[-1].total == result.bytes
    for service, marker in first.markers.items():
        assert run_image(docker_client, dest.host, target, f"{service}.{build.id}") == marker

    # A second build: the same web image, a new worker image on the same busybox.
    second = builds.make(images={"web": first.images["web"]})
    result2, _ = copy(dest, source, second.app, second.id, to_app=target)

    new = blobs_of(source.host, second.app, f"worker.{second.id}")
    expected = {d: s for d, s in new.items() if d not in sizes}
    assert len(expected) == 2  # the worker's config and its own layer
    assert sorted(result2.moved_blobs) == sorted(expected)
    assert (result2.blobs, result2.moved, result2.mounted, result2.present) == (5, 2, 0, 3)
    assert result2.bytes == sum(expected.values())
    build2 = result2.build
    assert [b.id for b in dest.metadata.list_builds(target)] == [build2.id, build.id]
    assert run_image(docker_client, dest.host, target, f"web.{build2.id}") == first.markers["web"]
    worker = run_image(docker_client, dest.host, target, f"worker.{build2.id}")
    assert worker == second.markers["worker"]


def test_copy_mounts_blobs_a_repository_of_the_source_app_holds(
    source: Rack, dest: Rack, builds: Builds
) -> None:
    made = builds.make()
    with pytest.raises(NotFound, match=rf"^app not found: {made.app} \(create it with"):
        copy(dest, source, made.app, made.id)  # nothing creates an app
    assert registry_tags(dest.host, made.app) == []
    dest.metadata.create_app(made.app)
    first, _ = copy(dest, source, made.app, made.id)  # into the app of the same name
    assert first.build.app == made.app and first.moved == 5

    other = app_name(dest)
    again, _ = copy(dest, source, made.app, made.id, to_app=other)

    assert (again.blobs, again.moved, again.mounted, again.bytes) == (5, 0, 5, 0)
    assert registry_tags(dest.host, other) == [f"web.{again.build.id}", f"worker.{again.build.id}"]


def test_copy_errors_leave_nothing_behind(source: Rack, dest: Rack, builds: Builds) -> None:
    made = builds.make()
    target = app_name(dest)

    with pytest.raises(InvalidArgument, match="^source rack src refused the token$"):
        copy(dest, source, made.app, made.id, to_app=target, token="not-the-token")
    with pytest.raises(NotFound, match="^build not found: BNOSUCHBUIL$"):
        copy(dest, source, made.app, "BNOSUCHBUIL", to_app=target)
    with pytest.raises(NotFound, match=f"^build not found: {made.id}$"):
        copy(dest, source, "nosuchapp", made.id, to_app=target)
    running = source.metadata.create_build(made.app)
    with pytest.raises(FailedPrecondition, match=f"^build {running.id} is created"):
        copy(dest, source, made.app, running.id, to_app=target)
    with pytest.raises(InvalidArgument, match="invalid app name"):
        copy(dest, source, made.app, made.id, to_app="Bad")
    nowhere = f"127.0.0.1:{free_port()}"
    with pytest.raises(Unavailable, match=f"^source rack {nowhere} unreachable at {nowhere}$"):
        dest.registry.copy_build(
            nowhere, source.token, made.app, made.id, to_app=target, source_ca=ca()
        )
    # The destination's own token is still checked.
    channel = open_channel(dest.registry.address, "wrong", ca=ca())
    with pytest.raises(Unauthenticated, match="^unauthorized$"):
        RegistryClient(channel).copy_build(source.front, source.token, made.app, made.id)
    channel.close()
    assert_nothing_left(dest, target)


class FailingRecords:
    """Records whose import fails after the manifests are in."""

    def __init__(self, inner: BuildRecords) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def record_import(self, app: str, build_id: str, build: ImportedBuild) -> Any:
        raise Internal("the database went away")


class FailingUpload:
    """A registry whose second blob upload fails half-way, or whose bytes get damaged."""

    def __init__(self, inner: DistributionRegistry, damage: bool = False) -> None:
        self.inner = inner
        self.damage = damage
        self.uploads = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def upload_blob(self, repository: str, digest: str, chunks: Iterable[bytes]) -> int:
        self.uploads += 1
        if self.damage:
            return int(self.inner.upload_blob(repository, digest, (b"x" + c for c in chunks)))
        if self.uploads == 2:

            def broken() -> Iterator[bytes]:
                yield next(iter(chunks))
                raise Unavailable("the source went away")

            return int(self.inner.upload_blob(repository, digest, broken()))
        return int(self.inner.upload_blob(repository, digest, chunks))


@pytest.mark.parametrize(
    ("swap", "error", "message"),
    [
        ({"records": lambda d: FailingRecords(d.records)}, Internal, "the database went away"),
        (
            {"registry": lambda d: FailingUpload(DistributionRegistry(d.registry.host))},
            Unavailable,
            "the source went away",
        ),
        (
            {
                "registry": lambda d: FailingUpload(
                    DistributionRegistry(d.registry.host), damage=True
                )
            },
            InvalidArgument,
            "its content has the digest",
        ),
    ],
    ids=["record", "upload", "digest"],
)
def test_a_failed_copy_leaves_nothing_behind(
    make_rack: Callable[..., Rack],
    source: Rack,
    other_registry: str,
    metadata: dict[str, Metadata],
    builds: Builds,
    swap: dict[str, Callable[[Any], Any]],
    error: type[Exception],
    message: str,
) -> None:
    dest = make_rack("failing", other_registry, metadata["dest"], **swap)
    made = builds.make()
    target = app_name(dest)

    with pytest.raises(error, match=message):
        copy(dest, source, made.app, made.id, to_app=target)

    assert_nothing_left(dest, target)


def test_the_source_ca_a_copy_carries_must_be_certificates() -> None:
    from services.registry.copy import check_ca

    check_ca(b"")
    check_ca(ca())
    for bad in (b"junk", b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n"):
        with pytest.raises(InvalidArgument, match="^the source rack's CA must be PEM"):
            check_ca(bad)
    with pytest.raises(InvalidArgument):
        check_ca(ca() * 1000)
