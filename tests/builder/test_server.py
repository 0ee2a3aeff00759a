"""The builder's gRPC contract, through client.api.builder.BuilderClient and an in-process
server (port 0) whose seams are fakes."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import client
from client.api.builder import BuilderClient
from client.api.channel import open_channel
from client.kernel import types
from client.kernel.errors import FailedPrecondition, InvalidArgument, NotFound, Unauthenticated
from client.kernel.types import BuildRequest
from services.builder.config import Config
from services.builder.seams import Deps
from services.builder.server import create_server
from services.common.server import Server
from tests.builder.fakes import FakeEngine, FakePusher, FakeSources, FakeStore, make_archive
from tests.helpers import eventually
from tests.tls import ca, tls_files

MANIFEST = "services:\n  web:\n    build: .\n"


@dataclass
class Rack:
    server: Server
    client: BuilderClient
    store: FakeStore
    sources: FakeSources
    engine: FakeEngine
    token: str


@pytest.fixture
def rack(tmp_path: Path, token: str) -> Iterator[Rack]:
    store, sources, engine = FakeStore(), FakeSources(), FakeEngine()
    config = Config(
        token=token,
        scratch_dir=tmp_path / "scratch",
        rack_name="test-rack",
        archive_address="10.0.0.1:1",
        metadata_address="10.0.0.1:2",
        registry_address="10.0.0.1:3",
        tls=tls_files(),
    )
    server = create_server(config, Deps(store, sources, FakePusher(), engine), "127.0.0.1:0")
    builder = BuilderClient(open_channel(server.address, token, ca=ca()), server.address)
    try:
        yield Rack(server, builder, store, sources, engine, token)
    finally:
        server.stop(grace=1)


def _start(rack: Rack, dockerfile: str, **options: object) -> types.Build:
    archive = rack.sources.add(make_archive({"convox.yml": MANIFEST, "Dockerfile": dockerfile}))
    rack.store.create_app("myapp", exist_ok=True)
    return rack.client.start_build(BuildRequest(app="myapp", archive=archive, **options))  # type: ignore[arg-type]


def test_start_up_ends_the_builds_it_held_and_those_others_lost(rack: Rack) -> None:
    # Its own id's running builds (a restart under the same id), then every stale lease.
    assert rack.store.expire_calls[:2] == [f"{socket.gethostname()}-{os.getpid()}", ""]


def test_get_rack(rack: Rack) -> None:
    assert rack.client.rack() == types.RackInfo(
        name="test-rack",
        version=client.__version__,
        archive_address="10.0.0.1:1",
        metadata_address="10.0.0.1:2",
        registry_address="10.0.0.1:3",
        registry_host=FakePusher.host,
        builder=f"{socket.gethostname()}-{os.getpid()}",
        engine="unix:///var/run/docker.sock",
    )


def test_build_and_follow_to_the_end(rack: Rack) -> None:
    build = _start(
        rack,
        'FROM busybox\nENTRYPOINT ["/app"]\n',
        description="d",
        git_sha="s",
        build_args={"X": "1"},
    )
    assert (build.status, build.app, build.description, build.git_sha) == (
        "created",
        "myapp",
        "d",
        "s",
    )
    follower = rack.client.follow(build.id)
    events = list(follower)
    follower.close()
    assert isinstance(events[0], types.Build) and events[0].id == build.id
    last = events[-1]
    assert isinstance(last, types.Build)
    assert (last.status, last.entrypoint) == ("complete", "/app") and last.release
    texts = [e.text for e in events if isinstance(e, types.LogLine)]
    assert texts[:3] == [
        "[Warning] One or more build-args [X] were not consumed",  # no ARG X
        "Building: .",
        "Step 1/2 : FROM busybox",
    ]


def test_follow_resumes_at_an_offset_and_cancels_through_the_stream(rack: Rack) -> None:
    build = _start(rack, "FROM busybox\nRUN wait\n")
    assert rack.engine.waiting.wait(10)
    follower = rack.client.follow(build.id, offset=1)
    seen: list[types.Build | types.LogLine] = []
    for event in follower:
        seen.append(event)
        if isinstance(event, types.LogLine) and event.text == "Step 2/2 : RUN wait":
            follower.cancel()
    follower.close()
    lines = [e for e in seen if isinstance(e, types.LogLine)]
    assert lines[0].offset == 1 and lines[-1].text == "Build cancelled"
    assert isinstance(seen[-1], types.Build) and seen[-1].status == "cancelled"


def test_cancel_build(rack: Rack) -> None:
    build = _start(rack, "FROM busybox\nRUN wait\n")
    assert rack.engine.waiting.wait(10)
    assert rack.client.cancel_build(build.id, "myapp").status == "cancelled"
    with pytest.raises(FailedPrecondition, match=f"build {build.id} is already cancelled"):
        rack.client.cancel_build(build.id)
    eventually(lambda: rack.store.log_text(build.id)[-1] == "Build cancelled")


def test_errors_map_to_codes(rack: Rack) -> None:
    with pytest.raises(NotFound, match="build not found: BNOSUCHBUILD"):
        rack.client.cancel_build("BNOSUCHBUILD")
    with pytest.raises(NotFound, match="build not found: BNOSUCHBUILD"):
        list(rack.client.follow("BNOSUCHBUILD"))
    with pytest.raises(NotFound, match="archive not found"):
        rack.client.start_build(BuildRequest(app="myapp", archive="0" * 64))
    with pytest.raises(InvalidArgument, match="invalid app name"):
        rack.client.start_build(BuildRequest(app="My App", archive="0" * 64))


def test_a_wrong_token_is_refused(rack: Rack) -> None:
    stranger = BuilderClient(
        open_channel(rack.server.address, "wrong", ca=ca()), rack.server.address
    )
    with pytest.raises(Unauthenticated):
        stranger.rack()
    with pytest.raises(Unauthenticated):
        list(stranger.follow("BANYTHING"))
