"""ExportBuild and ImportBuild through in-process registry and metadata servers, the real
Docker engine, a real Distribution registry, skopeo and SQLite.

Every failing import is checked to leave nothing behind: no build, no release, no tag of
the app, no new local image."""

from __future__ import annotations

import gzip
import gzip as gziplib
import hashlib
import io
import json
import secrets
import subprocess
import tarfile
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from client.api.channel import open_channel
from client.api.metadata import MetadataClient
from client.api.registry import RegistryClient
from client.cli.localrack.engine import docker_host
from client.kernel.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    SlipwayError,
    Unavailable,
)
from client.kernel.types import COMPLETE, PushResult
from services.common.server import Server
from services.metadata import server as metadata_server
from services.metadata.config import Config as MetadataConfig
from services.registry import layerscan
from services.registry import server as registry_server
from services.registry.config import Config
from services.registry.imports import LOCAL_NAME
from tests.helpers import app_name, eventually, free_port, push_image
from tests.tls import ca, tls_files

pytestmark = pytest.mark.docker

BUILD_KEYS = {
    "id",
    "app",
    "description",
    "entrypoint",
    "git-sha",
    "logs",
    "manifest",
    "release",
    "reason",
    "status",
    "started",
    "ended",
}
MANIFEST = "services:\n  web:\n    build: .\n  worker:\n    build: ./worker\n"


@dataclass
class Rack:
    """An in-process registry service on a real metadata service, engine and registry."""

    registry: RegistryClient
    metadata: MetadataClient
    host: str
    scratch: Path


@pytest.fixture(autouse=True)
def send_small_layers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Imports here send layers to the registry as they arrive however small (the tests'
    layers are far below layerscan.MIN_SENT), so that the early uploads are exercised."""
    monkeypatch.setattr(layerscan, "MIN_SENT", 0)


@pytest.fixture
def metadata(token: str, tmp_path: Path) -> Iterator[Server]:
    data = tmp_path / "metadata"
    config = MetadataConfig(
        listen="unused",
        token=token,
        data_dir=data,
        database_url=f"sqlite:///{data / 'md.db'}",
        tls=tls_files(),
    )
    srv = metadata_server.create_server(config, address="127.0.0.1:0")
    yield srv
    srv.stop(0)


def start_registry(token: str, host: str, metadata: Server, scratch: Path, **swap: Any) -> Server:
    """A registry service; each keyword argument wraps the dependency of that name."""
    config = Config(
        listen="unused",
        token=token,
        registry_host=host,
        docker_host=docker_host(),
        metadata_address=metadata.address,
        scratch_dir=scratch,
        tls=tls_files(),
    )
    deps = registry_server.default_deps(config)
    if swap:
        deps = replace(deps, **{k: v(getattr(deps, k)) for k, v in swap.items()})
    return registry_server.create_server(config, deps, address="127.0.0.1:0")


@pytest.fixture
def rack_of(
    token: str, registry_host: str, metadata: Server, tmp_path: Path
) -> Iterator[Callable[..., Rack]]:
    """Makes racks sharing the metadata service; keyword arguments wrap their deps."""
    servers: list[Server] = []
    channels: list[Any] = []

    def make(host: str = registry_host, **swap: Any) -> Rack:
        scratch = tmp_path / f"scratch{len(servers)}"
        scratch.mkdir()
        srv = start_registry(token, host, metadata, scratch, **swap)
        servers.append(srv)
        reg, md = (
            open_channel(srv.address, token, ca=ca()),
            open_channel(metadata.address, token, ca=ca()),
        )
        channels.extend([reg, md])
        return Rack(
            RegistryClient(reg, srv.address),
            MetadataClient(md, metadata.address),
            host,
            scratch,
        )

    yield make
    for channel in channels:
        channel.close()
    for srv in servers:
        srv.stop(0)


@pytest.fixture
def rack(rack_of: Callable[..., Rack]) -> Rack:
    return rack_of()


def http_json(url: str) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as err:
        if err.code == 404:
            return {}
        raise


def registry_tags(host: str, repository: str) -> list[str]:
    return sorted(http_json(f"http://{host}/v2/{repository}/tags/list").get("tags") or [])


def import_names(docker_client: Any) -> list[str]:
    """Local image names an import gives images while it works (the engine is shared with
    other work, so only these say something about imports)."""
    return [tag for image in docker_client.images.list() for tag in image.tags if LOCAL_NAME in tag]


def present(docker_client: Any, image: str) -> bool:
    import docker.errors

    try:
        docker_client.images.get(image)
    except docker.errors.ImageNotFound:
        return False
    return True


@dataclass
class Made:
    """A build made the way the builder makes one."""

    app: str
    id: str
    release: str
    markers: dict[str, str]
    logs: list[str]
    images: dict[str, str]


def build_image(docker_client: Any, marker: str) -> str:
    dockerfile = f'FROM busybox\nRUN echo {marker} > /value\nENTRYPOINT ["cat", "/value"]\n'
    # No cache: the classic builder's cache lookup races with images others delete.
    image, _ = docker_client.images.build(
        fileobj=io.BytesIO(dockerfile.encode()), rm=True, nocache=True
    )
    return str(image.id)


@pytest.fixture
def made(rack: Rack, docker_client: Any) -> Iterator[Made]:
    """A complete two-service build of a new app: web and worker, distinct images on a
    shared busybox layer, pushed as `{app}:{service}.{id}`, with a log and a release."""
    app = app_name()
    md = rack.metadata
    md.create_app(app)
    build = md.create_build(app, description="first build", manifest=MANIFEST, git_sha="ab" * 20)
    md.update_build(build.id, status="running")
    markers = {s: f"{s}-{secrets.token_hex(6)}" for s in ("web", "worker")}
    images = {}
    for service, marker in markers.items():
        images[service] = build_image(docker_client, marker)
        events = push_image(rack.host, images[service], app, f"{service}.{build.id}")
        assert isinstance(events[-1], PushResult)
    logs = ["Building: .", "Step 1/2 : FROM busybox", "\ttab and ünïcode", "done"]
    md.append_logs(build.id, logs)
    release = md.create_release(app, build=build.id, env={"A": "1"}, manifest=MANIFEST)
    md.update_build(build.id, status=COMPLETE, release=release.id, entrypoint="cat /value")
    yield Made(app, build.id, release.id, markers, logs, images)
    for service, image in images.items():
        remove_quietly(docker_client, f"{rack.host}/{app}:{service}.{build.id}")
        remove_quietly(docker_client, image)


def remove_quietly(docker_client: Any, ref: str) -> None:
    import docker.errors

    try:
        docker_client.images.remove(ref, force=True)
    except docker.errors.ImageNotFound:
        pass


def export_bytes(rack: Rack, app: str, build_id: str) -> bytes:
    chunks = list(rack.registry.export_build(app, build_id))
    assert all(0 < len(c) <= 512 * 1024 for c in chunks)
    return b"".join(chunks)


def members(archive: bytes) -> list[tuple[str, bytes]]:
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(archive))) as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar]  # type: ignore[union-attr]


def archive_of(entries: list[tuple[str, bytes]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def chunked(data: bytes, size: int = 512 * 1024) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


def run_image(docker_client: Any, host: str, app: str, tag: str) -> str:
    """Pulls `{host}/{app}:{tag}` afresh and runs its entrypoint."""
    ref = f"{host}/{app}:{tag}"
    remove_quietly(docker_client, ref)
    docker_client.images.pull(f"{host}/{app}", tag=tag)
    try:
        return str(docker_client.containers.run(ref, remove=True).decode().strip())
    finally:
        docker_client.images.remove(ref, force=True)


def assert_nothing_left(rack: Rack, app: str, docker_client: Any) -> None:
    try:
        builds = rack.metadata.list_builds(app)
    except NotFound:
        builds = []
    assert [b for b in builds if b.status == COMPLETE] == []
    assert builds == [], builds
    try:
        assert rack.metadata.list_releases(app) == []
    except NotFound:
        pass
    assert registry_tags(rack.host, app) == []
    # The service may still be tidying up after a cancelled call.
    eventually(lambda: import_names(docker_client) == [], timeout=10)
    eventually(lambda: list(rack.scratch.iterdir()) == [], timeout=10)


# Export.


def test_export_writes_build_json_then_one_docker_save_tar(rack: Rack, made: Made) -> None:
    archive = export_bytes(rack, made.app, made.id)

    entries = members(archive)
    assert [name for name, _ in entries] == ["build.json", f"{made.app}.{made.id}.tar"]
    record = json.loads(entries[0][1])
    assert set(record) == BUILD_KEYS
    assert record["id"] == made.id and record["app"] == made.app
    assert record["status"] == "complete" and record["release"] == made.release
    assert record["manifest"] == MANIFEST and record["git-sha"] == "ab" * 20
    assert record["description"] == "first build" and record["entrypoint"] == "cat /value"
    assert record["logs"] == "".join(f"{line}\n" for line in made.logs)
    assert record["started"].endswith("Z") and record["ended"].endswith("Z")

    with tarfile.open(fileobj=io.BytesIO(entries[1][1])) as image_tar:
        manifest = json.loads(image_tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
        layers = [m.name for m in image_tar if m.name.endswith("layer.tar")]
    tags = sorted(tag for image in manifest for tag in image["RepoTags"])
    assert tags == [f"{made.app}:web.{made.id}", f"{made.app}:worker.{made.id}"]
    # Two images of two layers each, the busybox layer shared: three layers stored.
    assert sum(len(image["Layers"]) for image in manifest) == 4
    assert len(layers) == 3
    assert rack.scratch.exists() and list(rack.scratch.iterdir()) == []


def test_export_carries_the_registrys_compressed_layers_as_they_are(
    rack: Rack, made: Made, docker_client: Any
) -> None:
    from services.common.oci import DistributionRegistry

    registry = DistributionRegistry(rack.host)
    image_tar = members(export_bytes(rack, made.app, made.id))[1][1]
    with tarfile.open(fileobj=io.BytesIO(image_tar)) as tar:
        files = [(m.name, tar.extractfile(m).read()) for m in tar if m.isreg()]  # type: ignore[union-attr]
    assert files[0][0] == "manifest.json"  # first: a reader knows the images up front
    layers = [(name, data) for name, data in files if name.endswith("/layer.tar")]
    assert len(layers) == 3
    for name, data in layers:
        digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
        assert name == f"{digest.removeprefix('sha256:')}/layer.tar"
        assert data[:2] == b"\x1f\x8b"  # gzip'd, as pushed
        assert b"".join(registry.read_blob(made.app, digest)) == data  # byte for byte
    # `docker load` takes it, compressed layers and all, and the images run.
    for service, image in made.images.items():
        remove_quietly(docker_client, f"{rack.host}/{made.app}:{service}.{made.id}")
        remove_quietly(docker_client, image)
    loaded = docker_client.images.load(image_tar)
    tags = sorted(tag for image in loaded for tag in image.tags)
    assert tags == [f"{made.app}:web.{made.id}", f"{made.app}:worker.{made.id}"]
    try:
        for service, marker in made.markers.items():
            ref = f"{made.app}:{service}.{made.id}"
            assert docker_client.containers.run(ref, remove=True).decode().strip() == marker
    finally:
        for tag in tags:
            remove_quietly(docker_client, tag)


class IndexesOnly:
    """The real registry, but every manifest reads as an index: images the export cannot
    take blob by blob, so the engine saves them (pulling what it lacks)."""

    def __init__(self, registry: Any) -> None:
        self._registry = registry

    def __getattr__(self, name: str) -> Any:
        return getattr(self._registry, name)

    def manifest(self, repository: str, reference: str) -> Any:
        from services.common.oci import Manifest

        found = self._registry.manifest(repository, reference)
        index = "application/vnd.oci.image.index.v1+json"
        return found and Manifest(found.digest, index, found.body)


def test_export_pulls_images_the_engine_lacks(
    rack_of: Callable[..., Rack], made: Made, docker_client: Any
) -> None:
    rack = rack_of(registry=IndexesOnly)
    refs = [f"{rack.host}/{made.app}:{s}.{made.id}" for s in made.markers]
    for ref in refs:
        docker_client.images.remove(ref, force=True)

    entries = members(export_bytes(rack, made.app, made.id))
    with tarfile.open(fileobj=io.BytesIO(entries[1][1])) as tar:
        layer = next(m for m in tar if m.name.endswith("layer.tar"))
        assert tar.extractfile(layer).read(2) != b"\x1f\x8b"  # type: ignore[union-attr]

    assert entries[1][0] == f"{made.app}.{made.id}.tar"
    # What it pulled, it removed.
    assert [ref for ref in refs if present(docker_client, ref)] == []


def test_export_errors(rack: Rack, made: Made) -> None:
    with pytest.raises(NotFound, match="^build not found: BNOSUCHBUIL$"):
        list(rack.registry.export_build(made.app, "BNOSUCHBUIL"))
    other = app_name()
    rack.metadata.create_app(other)
    with pytest.raises(NotFound, match=f"^build not found: {made.id}$"):
        list(rack.registry.export_build(other, made.id))
    with pytest.raises(InvalidArgument, match="invalid app name"):
        list(rack.registry.export_build("Bad", made.id))
    running = rack.metadata.create_build(made.app)
    with pytest.raises(
        FailedPrecondition, match=f"build {running.id} is not complete \\(created\\)"
    ):
        list(rack.registry.export_build(made.app, running.id))


# Import.


def test_export_import_round_trip_into_another_app(
    rack: Rack, made: Made, docker_client: Any
) -> None:
    archive = export_bytes(rack, made.app, made.id)
    target = app_name()
    rack.metadata.create_app(target)
    rack.metadata.create_release(target, env={"TARGET": "yes"})

    build, release = rack.registry.import_build(target, chunked(archive))

    assert build.id != made.id and build.app == target and build.status == COMPLETE
    assert (build.description, build.manifest) == ("first build", MANIFEST)
    assert (build.entrypoint, build.git_sha, build.release) == ("cat /value", "ab" * 20, release.id)
    assert rack.metadata.get_build(build.id, target) == build
    assert [line.text for line in rack.metadata.stream_logs(build.id)] == made.logs
    assert release.build == build.id and release.env == {"TARGET": "yes"}
    assert rack.metadata.get_app(target).release == ""  # not promoted
    assert registry_tags(rack.host, target) == [f"web.{build.id}", f"worker.{build.id}"]
    for service, marker in made.markers.items():
        assert run_image(docker_client, rack.host, target, f"{service}.{build.id}") == marker
    assert list(rack.scratch.iterdir()) == []


def test_import_into_a_missing_app_is_refused_then_imports_twice(rack: Rack, made: Made) -> None:
    archive = export_bytes(rack, made.app, made.id)
    target = app_name()
    with pytest.raises(NotFound, match=rf"^app not found: {target} \(create it with"):
        rack.registry.import_build(target, chunked(archive))
    assert registry_tags(rack.host, target) == []
    with pytest.raises(NotFound):
        rack.metadata.get_app(target)  # nothing creates an app
    rack.metadata.create_app(target)

    first, _ = rack.registry.import_build(target, chunked(archive))
    second, _ = rack.registry.import_build(target, chunked(archive, 1000))

    assert first.id != second.id
    assert [b.id for b in rack.metadata.list_builds(target)] == [second.id, first.id]
    assert registry_tags(rack.host, target) == sorted(
        f"{s}.{b}" for s in ("web", "worker") for b in (first.id, second.id)
    )


class WatchingUploads:
    """The real registry, noting which blobs go up whole (`upload_blob`) and how many
    uploads are opened to be sent as the archive arrives (`start_upload`)."""

    def __init__(self, registry: Any) -> None:
        self._registry = registry
        self.whole: list[str] = []
        self.started = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._registry, name)

    def upload_blob(self, repository: str, digest: str, chunks: Any) -> int:
        self.whole.append(digest)
        return int(self._registry.upload_blob(repository, digest, chunks))

    def start_upload(self, repository: str) -> Any:
        self.started += 1
        return self._registry.start_upload(repository)


def stored_layers(registry_root: Path, app: str) -> list[str]:
    """The blobs linked into repository `app`, and the bytes of its open uploads (a
    cancelled upload keeps only its hash state: Distribution writes it after the delete)."""
    repo = registry_root / "data" / "docker" / "registry" / "v2" / "repositories" / app
    return sorted(
        [f"sha256:{p.name}" for p in (repo / "_layers" / "sha256").glob("*")]
        + [f"upload {p.parent.name}" for p in (repo / "_uploads").glob("*/data")]
    )


def test_an_exports_layers_are_sent_as_they_arrive_and_committed_once_checked(
    rack_of: Callable[..., Rack], made: Made, registry_root: Path
) -> None:
    watching: list[WatchingUploads] = []

    def watched(inner: Any) -> WatchingUploads:
        watching.append(WatchingUploads(inner))
        return watching[-1]

    rack = rack_of(registry=watched)
    archive = export_bytes(rack, made.app, made.id)
    target = app_name(rack)

    build, _ = rack.registry.import_build(target, chunked(archive))

    layers = set()
    for service in ("web", "worker"):
        doc = json.loads(
            http_json_bytes(f"http://{rack.host}/v2/{target}/manifests/{service}.{build.id}")
        )
        layers |= {layer["digest"] for layer in doc["layers"]}
    (registry,) = watching
    assert registry.started >= 1  # the layers this registry lacked went up as they arrived
    assert layers.isdisjoint(registry.whole)  # none of them was sent again from the spool
    assert not any(name.startswith("upload") for name in stored_layers(registry_root, target))
    assert layers <= set(stored_layers(registry_root, target))


def http_json_bytes(url: str) -> bytes:
    request = urllib.request.Request(
        url, headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"}
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        return bytes(resp.read())


def save_tar(docker_client: Any, names: list[str]) -> bytes:
    proc = subprocess.run(["docker", "save", *names], capture_output=True, check=True)
    return proc.stdout


def convox_build_json(build_id: str, app: str = "convox") -> bytes:
    return json.dumps(
        {
            "id": build_id,
            "app": app,
            "description": "from convox",
            "entrypoint": "",
            "logs": "line one\nline two\n",
            "manifest": MANIFEST,
            "release": "RCONVOXREL1",
            "reason": "",
            "status": "complete",
            "started": "2024-03-01T10:00:00.123456789Z",
            "ended": "2024-03-01T10:01:30Z",
        }
    ).encode()


@pytest.fixture
def two_images(docker_client: Any) -> Iterator[dict[str, tuple[str, str]]]:
    """web and worker images with markers: {service: (image id, marker)}."""
    markers = {s: f"{s}-{secrets.token_hex(6)}" for s in ("web", "worker")}
    images = {s: (build_image(docker_client, m), m) for s, m in markers.items()}
    yield images
    for image, _ in images.values():
        remove_quietly(docker_client, image)


def plain_archive(
    docker_client: Any, images: dict[str, tuple[str, str]], names: dict[str, str], old: str
) -> bytes:
    """An export as Convox writes it: build.json and one plain `docker save` tar of each
    service's image under `names[service]` (the names are the engine's only meanwhile)."""
    for service, name in names.items():
        docker_client.images.get(images[service][0]).tag(*name.rsplit(":", 1))
    try:
        image_tar = save_tar(docker_client, list(names.values()))
    finally:
        for name in names.values():
            docker_client.images.remove(name)
    return archive_of([("build.json", convox_build_json(old)), (f"convox.{old}.tar", image_tar)])


def test_import_of_a_plain_docker_save_archive(
    rack: Rack, docker_client: Any, two_images: dict[str, tuple[str, str]]
) -> None:
    old = "BCONVOXABCD"
    # As Convox names them: one with the registry in front, one without.
    names = {"web": f"{rack.host}/convox:web.{old}", "worker": f"convox:worker.{old}"}
    archive = plain_archive(docker_client, two_images, names, old)
    target = app_name(rack)

    build, release = rack.registry.import_build(target, chunked(archive))

    assert build.status == COMPLETE and build.description == "from convox"
    assert build.started == pytest.approx(1709287200.123456)
    assert build.ended - build.started == pytest.approx(89.876544)
    assert [line.text for line in rack.metadata.stream_logs(build.id)] == ["line one", "line two"]
    # The loaded images took none of the archive's names in the engine, and were new
    # there: the import removed them once pushed.
    assert [n for n in names.values() if present(docker_client, n)] == []
    assert [i for i, _ in two_images.values() if present(docker_client, i)] == []
    assert import_names(docker_client) == []
    for service, (_, marker) in two_images.items():
        assert run_image(docker_client, rack.host, target, f"{service}.{build.id}") == marker


def oci_archive(docker_client: Any, image: str, path: Path) -> bytes:
    name = f"slipway-test-oci:{secrets.token_hex(4)}"
    repo, tag = name.split(":")
    docker_client.images.get(image).tag(repo, tag)
    try:
        subprocess.run(
            [
                "skopeo",
                "--insecure-policy",
                "copy",
                "--quiet",
                f"docker-daemon:{name}",
                f"oci-archive:{path}",
            ],
            check=True,
            capture_output=True,
        )
    finally:
        docker_client.images.remove(name)
    return path.read_bytes()


def test_import_of_oci_archives_one_per_service(
    skopeo: str,
    rack: Rack,
    docker_client: Any,
    two_images: dict[str, tuple[str, str]],
    tmp_path: Path,
) -> None:
    old = "BOCIARCHIVE"
    entries = [("build.json", convox_build_json(old, "oci"))]
    for service, (image, _) in two_images.items():
        entries.append(
            (f"{service}.{old}.tar", oci_archive(docker_client, image, tmp_path / service))
        )
    target = app_name(rack)

    build, _ = rack.registry.import_build(target, chunked(archive_of(entries)))

    assert registry_tags(rack.host, target) == [f"web.{build.id}", f"worker.{build.id}"]
    for service, (_, marker) in two_images.items():
        assert run_image(docker_client, rack.host, target, f"{service}.{build.id}") == marker
    assert import_names(docker_client) == []


# Failed imports leave nothing behind.


@pytest.fixture
def archive(rack: Rack, made: Made, docker_client: Any) -> bytes:
    """The export of `made`, whose images are then gone from the engine (as on another
    rack's), so that an import must load every layer from the archive."""
    data = export_bytes(rack, made.app, made.id)
    for service, image in made.images.items():
        remove_quietly(docker_client, f"{rack.host}/{made.app}:{service}.{made.id}")
        remove_quietly(docker_client, image)
    return data


def replace_in_layer(archive: bytes, old: bytes) -> bytes:
    """The archive with `old` overwritten (same length) inside the image tar's layers:
    every size and header stays valid, one layer's content no longer matches its digest."""
    entries = members(archive)
    with tarfile.open(fileobj=io.BytesIO(entries[1][1])) as tar:
        parts = [(m.name, tar.extractfile(m).read()) for m in tar if m.isreg()]  # type: ignore[union-attr]

    def damage(data: bytes) -> bytes:
        if data[:2] == b"\x1f\x8b":  # a layer as the registry keeps it, compressed
            return gziplib.compress(gziplib.decompress(data).replace(old, b"x" * len(old)))
        return data.replace(old, b"x" * len(old))

    damaged = [(name, damage(data) if name.endswith("layer.tar") else data) for name, data in parts]
    assert damaged != parts
    return archive_of([entries[0], (entries[1][0], _tar(damaged))])


@pytest.mark.parametrize(
    ("damage", "error", "message"),
    [
        (lambda a, m: a[: len(a) // 2], InvalidArgument, "^the archive is truncated"),
        (lambda a, m: a[:-4], InvalidArgument, "^the archive is truncated"),
        (
            lambda a, m: a[:4000] + bytes([a[4000] ^ 0xFF]) + a[4001:],
            InvalidArgument,
            "^(the archive is corrupt|invalid archive)",
        ),
        (lambda a, m: b"not an archive at all" * 100, InvalidArgument, "^invalid archive"),
        (lambda a, m: b"", InvalidArgument, "^the archive is empty$"),
        (
            lambda a, m: archive_of(members(a)[1:]),
            InvalidArgument,
            "^invalid archive: it holds no build.json$",
        ),
        (
            lambda a, m: archive_of(members(a)[:1]),
            InvalidArgument,
            "^the archive holds no image tagged <service>.B",
        ),
        (
            lambda a, m: archive_of([("build.json", b"{nope"), members(a)[1]]),
            InvalidArgument,
            "^invalid build.json",
        ),
        (
            lambda a, m: replace_in_layer(a, m.markers["web"].encode()),
            InvalidArgument,
            "(refused the image tar|does not match the layer its image names).*(diffID|digest)",
        ),
    ],
    ids=[
        "truncated-half",
        "truncated-trailer",
        "corrupt",
        "garbage",
        "empty",
        "no-build-json",
        "no-images",
        "bad-build-json",
        "layer-digest",
    ],
)
def test_a_bad_archive_fails_and_leaves_nothing(
    rack: Rack,
    made: Made,
    archive: bytes,
    docker_client: Any,
    damage: Callable[[bytes, Made], bytes],
    error: type[SlipwayError],
    message: str,
    registry_root: Path,
) -> None:
    target = app_name(rack)
    with pytest.raises(error, match=message):
        rack.registry.import_build(target, chunked(damage(archive, made)))
    assert_nothing_left(rack, target, docker_client)
    # No layer sent as it arrived was committed, and no upload was left open.
    assert stored_layers(registry_root, target) == []


def test_an_oci_blob_whose_digest_does_not_match_fails(
    skopeo: str,
    rack: Rack,
    docker_client: Any,
    two_images: dict[str, tuple[str, str]],
    tmp_path: Path,
) -> None:
    old = "BOCIDIGESTX"
    oci = oci_archive(docker_client, two_images["web"][0], tmp_path / "web")
    with tarfile.open(fileobj=io.BytesIO(oci)) as tar:
        blobs = sorted((m for m in tar if m.name.startswith("blobs/")), key=lambda m: -m.size)
        biggest = blobs[0].name
        parts = [(m.name, tar.extractfile(m).read()) for m in tar if m.isreg()]  # type: ignore[union-attr]
    damaged = [
        (n, d[:100] + bytes([d[100] ^ 1]) + d[101:] if n == biggest else d) for n, d in parts
    ]
    entries = [("build.json", convox_build_json(old)), (f"web.{old}.tar", _tar(damaged))]
    target = app_name(rack)

    with pytest.raises(InvalidArgument, match="^invalid OCI archive web.BOCIDIGESTX.tar: .*"):
        rack.registry.import_build(target, chunked(archive_of(entries)))
    assert_nothing_left(rack, target, docker_client)


def _tar(entries: list[tuple[str, bytes]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def test_an_unreachable_registry_fails_the_import_with_nothing_created(
    rack_of: Callable[..., Rack], archive: bytes, docker_client: Any
) -> None:
    dead = f"127.0.0.1:{free_port()}"
    rack = rack_of(dead)
    target = app_name(rack)

    with pytest.raises(
        Unavailable, match=f"^cannot push (web|worker): registry unreachable at {dead}$"
    ):
        rack.registry.import_build(target, chunked(archive))

    assert rack.metadata.list_builds(target) == []
    assert import_names(docker_client) == []
    assert list(rack.scratch.iterdir()) == []


class FailingSecondPush:
    """The real registry, but from the second image put on, every put fails, as a
    registry outage that lasts through every retry would (an import of an export's
    compressed layers puts images itself, without the engine)."""

    def __init__(self, registry: Any) -> None:
        self._registry = registry
        self.puts = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._registry, name)

    def put_manifest(self, repository: str, tag: str, manifest: Any) -> None:
        self.puts += 1
        if self.puts >= 2:
            raise Unavailable("registry unreachable at the test's outage")
        self._registry.put_manifest(repository, tag, manifest)


def test_a_failed_second_push_removes_the_first_one(
    rack_of: Callable[..., Rack], made: Made, archive: bytes, docker_client: Any
) -> None:
    rack = rack_of(registry=FailingSecondPush)
    target = app_name(rack)

    with pytest.raises(Unavailable, match="^cannot push worker: registry unreachable at"):
        rack.registry.import_build(target, chunked(archive))

    assert_nothing_left(rack, target, docker_client)


class RefusingRecords:
    """The real metadata, but recording the imported build fails (a database outage)."""

    def __init__(self, records: Any) -> None:
        self._records = records

    def __getattr__(self, name: str) -> Any:
        return getattr(self._records, name)

    def record_import(self, app: str, build_id: str, build: Any) -> Any:
        raise Unavailable("metadata refused the record")


def test_a_failure_after_the_pushes_keeps_other_tags_and_records_nothing(
    rack_of: Callable[..., Rack], made: Made, archive: bytes, docker_client: Any
) -> None:
    healthy = rack_of()
    target = app_name(healthy)
    earlier, _ = healthy.registry.import_build(target, chunked(archive))
    rack = rack_of(records=RefusingRecords)

    with pytest.raises(Unavailable, match="^metadata refused the record$"):
        rack.registry.import_build(target, chunked(archive))

    # The same images were imported before: their tags (same manifests) survive, the new
    # ones are gone, and no build or release was recorded.
    assert registry_tags(rack.host, target) == [f"web.{earlier.id}", f"worker.{earlier.id}"]
    assert [b.id for b in rack.metadata.list_builds(target)] == [earlier.id]
    assert [r.build for r in rack.metadata.list_releases(target)] == [earlier.id]
    eventually(lambda: import_names(docker_client) == [], timeout=10)


def test_a_source_that_breaks_cancels_the_import(
    rack: Rack, archive: bytes, docker_client: Any
) -> None:
    target = app_name(rack)

    def broken() -> Iterator[bytes]:
        yield archive[: len(archive) // 3]
        raise OSError("the pipe broke")

    with pytest.raises(OSError, match="^the pipe broke$"):
        rack.registry.import_build(target, broken())
    assert_nothing_left(rack, target, docker_client)


def test_without_metadata_export_and_import_are_unavailable(
    token: str, registry_host: str, tmp_path: Path
) -> None:
    config = Config(
        listen="unused",
        token=token,
        registry_host=registry_host,
        scratch_dir=tmp_path,
        tls=tls_files(),
    )
    srv = registry_server.create_server(config, address="127.0.0.1:0")
    try:
        with open_channel(srv.address, token, ca=ca()) as channel:
            client = RegistryClient(channel, srv.address)
            with pytest.raises(Unavailable, match="SLIPWAY_METADATA_ADDRESS"):
                list(client.export_build("app", "BABCDEFGHIJ"))
    finally:
        srv.stop(0)


class FailingSecondEnginePush:
    """The real engine, but from the second push on every push fails (a plain `docker
    save` archive's images are pushed by the engine)."""

    def __init__(self, engine: Any) -> None:
        self._engine = engine
        self.pushes = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    def push(self, repository: str, tag: str, auth: Any = None) -> Iterator[Any]:
        self.pushes += 1
        if self.pushes >= 2:
            raise Unavailable("registry unreachable at the test's outage")
        return self._engine.push(repository, tag, auth)


def test_a_failed_engine_push_of_a_plain_archive_leaves_nothing(
    rack_of: Callable[..., Rack], docker_client: Any, two_images: dict[str, tuple[str, str]]
) -> None:
    rack = rack_of(engine=FailingSecondEnginePush)
    old = "BPLAINFAILS"
    names = {s: f"convox:{s}.{old}" for s in two_images}
    archive = plain_archive(docker_client, two_images, names, old)
    target = app_name(rack)

    with pytest.raises(Unavailable, match="^cannot push worker: registry unreachable at"):
        rack.registry.import_build(target, chunked(archive))

    assert_nothing_left(rack, target, docker_client)
