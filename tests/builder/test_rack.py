"""The builder wired to the real metadata, archive and registry services, the real Docker
engine and a real Distribution registry: a build goes from an uploaded archive to images
in the registry and a release, as `slipway build` drives it."""

from __future__ import annotations

import io
import re
import tarfile
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from client.api.rack import Rack
from client.kernel import types
from client.kernel.types import BuildRequest
from services.common.server import Server
from tests.tls import ca, tls_files

pytestmark = pytest.mark.docker


@dataclass
class LiveRack:
    rack: Rack
    registry_host: str


@pytest.fixture
def live(tmp_path: Path, token: str, docker_client: Any, registry_host: str) -> Iterator[LiveRack]:
    from client.cli.localrack.engine import docker_host
    from services.archive import config as archive_config
    from services.archive import server as archive_server
    from services.builder import config as builder_config
    from services.builder import server as builder_server
    from services.metadata import config as metadata_config
    from services.metadata import server as metadata_server
    from services.registry import config as registry_config
    from services.registry import server as registry_server

    servers: list[Server] = []
    try:
        metadata = metadata_server.create_server(
            metadata_config.Config(
                listen="127.0.0.1:0",
                token=token,
                data_dir=tmp_path,
                database_url=f"sqlite:///{tmp_path / 'metadata.db'}",
                tls=tls_files(),
            )
        )
        servers.append(metadata)
        archive = archive_server.create_server(
            archive_config.Config(
                listen="127.0.0.1:0", token=token, data_dir=tmp_path / "archives", tls=tls_files()
            )
        )
        servers.append(archive)
        registry = registry_server.create_server(
            registry_config.Config(
                listen="127.0.0.1:0",
                token=token,
                registry_host=registry_host,
                docker_host=docker_host(),
                tls=tls_files(),
            )
        )
        servers.append(registry)
        builder = builder_server.create_server(
            builder_config.Config(
                token=token,
                listen="127.0.0.1:0",
                scratch_dir=tmp_path / "scratch",
                archive_address=archive.address,
                metadata_address=metadata.address,
                registry_address=registry.address,
                registry_host=registry_host,
                docker_host=docker_host(),
                tls=tls_files(),
            )
        )
        servers.append(builder)
        yield LiveRack(Rack.connect(builder.address, token, ca()), registry_host)
    finally:
        for server in reversed(servers):
            server.stop(grace=1)


def _upload(rack: Rack, app: str, files: dict[str, str], tmp_path: Path) -> str:
    path = tmp_path / "source.tgz"
    with tarfile.open(path, "w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    rack.metadata.create_app(app, exist_ok=True)  # builds go only into apps that exist
    return rack.archive.upload_file(app, path)


def _follow(rack: Rack, build_id: str) -> tuple[types.Build, list[str]]:
    follower = rack.builder.follow(build_id)
    events = list(follower)
    follower.close()
    last = events[-1]
    assert isinstance(last, types.Build)
    return last, [e.text for e in events if isinstance(e, types.LogLine)]


def test_build_pushes_images_and_creates_a_release(live: LiveRack, tmp_path: Path) -> None:
    rack = live.rack
    assert rack.info.registry_host == live.registry_host
    rack.metadata.create_app("webapp")
    rack.metadata.create_release("webapp", env={"GREETING": "hello from env"})
    archive = _upload(
        rack,
        "webapp",
        {
            "convox.yml": "services:\n  web:\n    build: .\n  worker:\n    build: .\n",
            "Dockerfile": 'FROM busybox\nARG GREETING\nRUN echo "said: $GREETING"\n'
            'ENTRYPOINT ["sh", "-c"]\n',
        },
        tmp_path,
    )
    build = rack.builder.start_build(
        BuildRequest(app="webapp", archive=archive, description="live", no_cache=True)
    )
    final, lines = _follow(rack, build.id)
    assert final.status == "complete", (final.reason, lines)
    assert final.entrypoint == "sh -c"
    # BuildKit's plain progress: the step's output carries its step number and offset.
    assert any(re.match(r"^#\d+ \d+\.\d{3} said: hello from env$", line) for line in lines)
    assert lines.count("Building: .") == 1  # web and worker are one build
    assert any(line.startswith("Running: docker push ") for line in lines)
    release = rack.metadata.get_release(final.release)
    assert (release.build, release.env) == (build.id, {"GREETING": "hello from env"})
    stored = [line.text for line in rack.metadata.stream_logs(build.id)]
    assert stored == lines
    with urllib.request.urlopen(f"http://{live.registry_host}/v2/webapp/tags/list") as resp:
        body = resp.read().decode()
    assert f"web.{build.id}" in body and f"worker.{build.id}" in body


def test_a_failing_build_records_the_engine_reason(live: LiveRack, tmp_path: Path) -> None:
    rack = live.rack
    archive = _upload(
        rack,
        "failing",
        {
            "convox.yml": "services:\n  web:\n    build: .\n",
            "Dockerfile": "FROM busybox\nRUN exit 3\n",
        },
        tmp_path,
    )
    build = rack.builder.start_build(BuildRequest(app="failing", archive=archive))
    final, lines = _follow(rack, build.id)
    reason = "executor failed running [/bin/sh -c exit 3]: exit code: 3"
    assert (final.status, final.reason) == ("failed", reason)
    assert any(re.match(rf"^#\d+ ERROR: {re.escape(reason)}$", line) for line in lines)
    assert lines[-1] == f"ERROR: {reason}"


def test_cancel_a_running_build(live: LiveRack, tmp_path: Path) -> None:
    rack = live.rack
    archive = _upload(
        rack,
        "slow",
        {
            "convox.yml": "services:\n  web:\n    build: .\n",
            "Dockerfile": "FROM busybox\nRUN echo started && sleep 300\n",
        },
        tmp_path,
    )
    build = rack.builder.start_build(BuildRequest(app="slow", archive=archive, no_cache=True))
    follower = rack.builder.follow(build.id)
    lines: list[str] = []
    final = None
    for event in follower:
        if isinstance(event, types.LogLine):
            lines.append(event.text)
            if event.text.endswith(" started"):
                rack.builder.cancel_build(build.id)
        else:
            final = event
    follower.close()
    assert final is not None and final.status == "cancelled"
    assert lines[-1] == "Build cancelled"
    assert not rack.metadata.list_releases("slow")
