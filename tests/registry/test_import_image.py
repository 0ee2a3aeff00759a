"""ImportImage through in-process registry and metadata servers, the real Docker engine, a
real Distribution registry and SQLite.

Source images are pushed to the registry under repositories of their own, and removed from
the engine, so every import really pulls them. A failing import is checked to leave
nothing behind: no app, build, release or tag, no local name."""

from __future__ import annotations

import io
import json
import secrets
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import docker.errors
import pytest

from client.api.channel import open_channel
from client.api.metadata import MetadataClient
from client.api.registry import RegistryClient
from client.cli.localrack.engine import docker_host
from client.kernel.errors import InvalidArgument, NotFound, Unavailable
from client.kernel.types import COMPLETE, PushProgress
from services.common.server import Server
from services.metadata import server as metadata_server
from services.metadata.config import Config as MetadataConfig
from services.registry import server as registry_server
from services.registry.config import Config
from services.registry.importimage import plan, split_reference
from tests.helpers import app_name
from tests.tls import ca, tls_files

pytestmark = pytest.mark.docker


@dataclass
class Rack:
    """An in-process registry service on a real metadata service, engine and registry."""

    registry: RegistryClient
    metadata: MetadataClient
    host: str


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


@pytest.fixture
def rack_of(
    token: str, registry_host: str, metadata: Server, tmp_path: Path
) -> Iterator[Callable[..., Rack]]:
    """Makes registry services; each keyword argument wraps the dependency of that name."""
    servers: list[Server] = []
    channels: list[Any] = []

    def make(**swap: Any) -> Rack:
        config = Config(
            listen="unused",
            token=token,
            registry_host=registry_host,
            docker_host=docker_host(),
            metadata_address=metadata.address,
            scratch_dir=tmp_path / "scratch",
            tls=tls_files(),
        )
        deps = registry_server.default_deps(config)
        deps = replace(deps, **{k: v(getattr(deps, k)) for k, v in swap.items()})
        srv = registry_server.create_server(config, deps, address="127.0.0.1:0")
        servers.append(srv)
        reg, md = (
            open_channel(srv.address, token, ca=ca()),
            open_channel(metadata.address, token, ca=ca()),
        )
        channels.extend([reg, md])
        return Rack(
            RegistryClient(reg, srv.address), MetadataClient(md, metadata.address), registry_host
        )

    yield make
    for channel in channels:
        channel.close()
    for srv in servers:
        srv.stop(0)


@pytest.fixture
def rack(rack_of: Callable[..., Rack]) -> Rack:
    return rack_of()


@dataclass(frozen=True)
class Source:
    """An image in the registry, absent from the engine: its reference and marker."""

    ref: str
    marker: str


@pytest.fixture
def source_of(registry_host: str, docker_client: Any) -> Iterator[Callable[[], Source]]:
    """Makes images `cat`-ing a marker, pushed as `{registry}/src-…:v1` and then removed
    from the engine."""
    refs: list[str] = []

    def make() -> Source:
        marker = f"marker-{secrets.token_hex(6)}"
        dockerfile = f'FROM busybox\nRUN echo {marker} > /value\nENTRYPOINT ["cat", "/value"]\n'
        # No cache: the classic builder's cache lookup races with images others delete.
        image, _ = docker_client.images.build(
            fileobj=io.BytesIO(dockerfile.encode()), rm=True, nocache=True
        )
        repository = f"{registry_host}/src-{secrets.token_hex(4)}"
        image.tag(repository, "v1")
        docker_client.images.push(repository, tag="v1")
        ref = f"{repository}:v1"
        remove_quietly(docker_client, ref)
        remove_quietly(docker_client, image.id)
        refs.append(ref)
        return Source(ref, marker)

    yield make
    for ref in refs:
        remove_quietly(docker_client, ref)


def remove_quietly(docker_client: Any, ref: str) -> None:
    import docker.errors

    try:
        docker_client.images.remove(ref, force=True)
    except docker.errors.ImageNotFound:
        pass


def registry_tags(host: str, repository: str) -> list[str]:
    try:
        with urllib.request.urlopen(f"http://{host}/v2/{repository}/tags/list", timeout=10) as r:
            return sorted(json.loads(r.read()).get("tags") or [])
    except urllib.error.HTTPError as err:
        assert err.code == 404
        return []


def run_image(docker_client: Any, host: str, app: str, tag: str) -> str:
    """Pulls `{host}/{app}:{tag}` afresh and runs its entrypoint."""
    ref = f"{host}/{app}:{tag}"
    remove_quietly(docker_client, ref)
    docker_client.images.pull(f"{host}/{app}", tag=tag)
    try:
        return str(docker_client.containers.run(ref, remove=True).decode().strip())
    finally:
        remove_quietly(docker_client, ref)


def local_names(docker_client: Any, host: str, app: str) -> list[str]:
    prefix = f"{host}/{app}:"
    return [tag for image in docker_client.images.list() for tag in image.tags if prefix in tag]


def assert_nothing_left(rack: Rack, app: str, docker_client: Any) -> None:
    assert rack.metadata.list_builds(app) == []
    assert rack.metadata.list_releases(app) == []
    assert registry_tags(rack.host, app) == []
    assert local_names(docker_client, rack.host, app) == []


# The plan, without a server.


def test_plan_gives_each_service_its_own_image_or_the_imported_one() -> None:
    text = "services:\n  web:\n    build: .\n  worker:\n    image: ${W}\n"
    assert plan("a:1", text, {"W": "b:2"}).images == {"web": "a:1", "worker": "b:2"}
    default = plan("host:5000/a@sha256:ff", "", {})
    assert default.images == {"web": "host:5000/a@sha256:ff"}
    assert default.manifest == "services:\n  web:\n    image: host:5000/a@sha256:ff\n"


def test_split_reference() -> None:
    assert split_reference("busybox") == ("busybox", "latest")
    assert split_reference("host:5000/team/app") == ("host:5000/team/app", "latest")
    assert split_reference("host:5000/app:v1") == ("host:5000/app", "v1")
    assert split_reference("app:v1@sha256:ab") == ("app", "sha256:ab")


# Through the service.


def test_an_image_without_manifest_becomes_a_build_of_web(
    rack: Rack, source_of: Callable[[], Source], docker_client: Any
) -> None:
    source = source_of()
    app = app_name(rack)
    events: list[PushProgress] = []

    build, release = rack.registry.import_image(app, source.ref, progress=events.append)

    assert build.app == app and build.status == COMPLETE and build.release == release.id
    assert build.description == f"import-image {source.ref}"
    assert build.manifest == f"services:\n  web:\n    image: {source.ref}\n"
    assert build.entrypoint == "cat /value" and build.started <= build.ended
    assert rack.metadata.get_build(build.id, app) == build
    assert release.build == build.id and release.manifest == build.manifest
    assert rack.metadata.get_app(app).release == ""  # not promoted
    target = f"{rack.host}/{app}:web.{build.id}"
    logs = [line.text for line in rack.metadata.stream_logs(build.id)]
    assert logs[0] == f"Running: docker pull {source.ref}"
    assert f"Running: docker tag {source.ref} {target}" in logs
    assert f"Running: docker push {target}" in logs
    assert any("Pull complete" in line for line in logs)
    assert [e.text for e in events if not e.current] == logs  # the log is what was shown
    assert registry_tags(rack.host, app) == [f"web.{build.id}"]
    assert local_names(docker_client, rack.host, app) == []
    assert run_image(docker_client, rack.host, app, f"web.{build.id}") == source.marker


def test_a_service_with_its_own_image_keeps_it(
    rack: Rack, source_of: Callable[[], Source], docker_client: Any
) -> None:
    main, other = source_of(), source_of()
    app = app_name(rack)
    rack.metadata.create_release(app, env={"WORKER_IMAGE": other.ref})
    text = (
        "services:\n  web:\n    build: .\n  worker:\n    image: ${WORKER_IMAGE}\n"
        "  api:\n    build: ./api\n"
    )

    build, release = rack.registry.import_image(app, main.ref, text, "two images")

    assert (build.description, build.manifest, release.manifest) == ("two images", text, text)
    assert release.env == {"WORKER_IMAGE": other.ref}
    assert registry_tags(rack.host, app) == sorted(
        f"{s}.{build.id}" for s in ("web", "worker", "api")
    )
    logs = [line.text for line in rack.metadata.stream_logs(build.id)]
    pulls = [line for line in logs if line.startswith("Running: docker pull")]
    assert pulls == [f"Running: docker pull {main.ref}", f"Running: docker pull {other.ref}"]
    for service, marker in (("web", main.marker), ("worker", other.marker), ("api", main.marker)):
        assert run_image(docker_client, rack.host, app, f"{service}.{build.id}") == marker


def test_a_missing_image_fails_with_the_engines_reason_and_leaves_nothing(
    rack: Rack, source_of: Callable[[], Source], registry_host: str, docker_client: Any
) -> None:
    present = source_of()
    missing = f"{registry_host}/nosuch-{secrets.token_hex(4)}:v1"
    app = app_name(rack)

    with pytest.raises(NotFound, match=rf"^cannot pull {missing}: .*manifest unknown"):
        rack.registry.import_image(app, missing)
    text = f"services:\n  web:\n    build: .\n  worker:\n    image: {missing}\n"
    with pytest.raises(NotFound, match=rf"^cannot pull {missing}: "):
        rack.registry.import_image(app, present.ref, text)

    assert_nothing_left(rack, app, docker_client)
    with pytest.raises(docker.errors.ImageNotFound):  # pulled for the import, removed
        docker_client.images.get(present.ref)


class RefusingRecords:
    """The real metadata, but recording the build fails (a database outage)."""

    def __init__(self, records: Any) -> None:
        self._records = records

    def __getattr__(self, name: str) -> Any:
        return getattr(self._records, name)

    def record_import(self, app: str, build_id: str, build: Any) -> Any:
        raise Unavailable("metadata refused the record")


def test_a_failure_after_the_pushes_untags_them(
    rack_of: Callable[..., Rack], source_of: Callable[[], Source], docker_client: Any
) -> None:
    rack = rack_of(records=RefusingRecords)
    app = app_name(rack)
    text = "services:\n  web:\n    build: .\n  worker:\n    build: .\n"

    with pytest.raises(Unavailable, match="^metadata refused the record$"):
        rack.registry.import_image(app, source_of().ref, text)

    assert_nothing_left(rack, app, docker_client)


def test_bad_input_is_refused_before_anything_happens(rack: Rack) -> None:
    with pytest.raises(InvalidArgument, match="invalid app name"):
        rack.registry.import_image("Bad", "busybox")
    app = app_name()
    with pytest.raises(InvalidArgument, match="^image is required$"):
        rack.registry.import_image(app, " ")
    with pytest.raises(InvalidArgument, match="^the manifest has no services$"):
        rack.registry.import_image(app, "busybox", "services: {}\n")
    with pytest.raises(InvalidArgument, match="^validation errors:\nservice name Web invalid"):
        rack.registry.import_image(app, "busybox", "services:\n  Web: {}\n")
    with pytest.raises(InvalidArgument, match="^required env: SECRET$"):
        rack.registry.import_image(app, "busybox", "services:\n  web:\n    environment: [SECRET]\n")
    with pytest.raises(NotFound, match=rf"^app not found: {app} \(create it with"):
        rack.registry.import_image(app, "busybox")
    rack.metadata.create_app(app)
    with pytest.raises(InvalidArgument, match="^cannot pull Not/Valid:latest: invalid reference"):
        rack.registry.import_image(app, "Not/Valid")
    assert rack.metadata.list_builds(app) == []


def test_an_unreachable_registry_uses_the_engines_own_copy(rack: Rack, docker_client: Any) -> None:
    # Nothing listens on port 1: the engine's copy of the image is used, as in builds.
    offline = f"127.0.0.1:1/offline-{secrets.token_hex(4)}:v1"
    docker_client.images.get("busybox:latest").tag(offline)
    app = app_name(rack)
    try:
        build, _ = rack.registry.import_image(app, offline)
    finally:
        remove_quietly(docker_client, offline)

    logs = [line.text for line in rack.metadata.stream_logs(build.id)]
    assert logs[:2] == [
        f"Running: docker pull {offline}",
        f"Pull failed (cannot pull {offline}: registry unreachable at 127.0.0.1:1); "
        f"using the local {offline}",
    ]
    assert registry_tags(rack.host, app) == [f"web.{build.id}"]
    assert local_names(docker_client, rack.host, app) == []
