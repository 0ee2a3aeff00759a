"""Two hundred followers of one running build on a real rack (SPEC §6 fan-out): each sees
every line once and the terminal record; the build's own log and end are recorded; the
services keep answering health and unary calls throughout."""

from __future__ import annotations

import secrets
import subprocess
import threading
from pathlib import Path

import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from client.api.channel import open_channel
from client.api.rack import reach
from client.cli.config import ClientConfig
from client.kernel import types
from tests.e2e.conftest import SLIPWAY, RackHandle
from tests.e2e.test_cancel_logs import NUMBERED, _library, _running_build
from tests.helpers import step_output, write_files

pytestmark = pytest.mark.docker

FOLLOWERS = 200
LINES = [f"line-{i}" for i in range(1, 61)]


def _serving(address: str, token: str, ca: bytes) -> bool:
    channel = open_channel(address, token, ca=ca)
    try:
        health = health_pb2_grpc.HealthStub(channel)
        reply = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        return reply.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        channel.close()


def _token(rack: RackHandle) -> str:
    config = Path(rack.env["XDG_CONFIG_HOME"]) / "slipway" / "config.json"
    return ClientConfig.load(config).resolve(rack.name).token


def test_two_hundred_followers_of_one_build(rack: RackHandle, tmp_path: Path) -> None:
    marker = secrets.token_hex(4)
    app = f"fanout-{marker}"
    rack.ok("apps", "create", app)
    folder = write_files(
        tmp_path / "app",
        {
            "convox.yml": "services:\n  web:\n    build: .\n",
            "Dockerfile": (
                f"FROM busybox\nRUN echo {marker} && "
                "for i in $(seq 1 60); do echo line-$i; sleep 0.2; done\n"
            ),
        },
    )
    build = subprocess.Popen(
        [SLIPWAY, "build", str(folder), "-a", app],
        env=rack.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        build_id = _running_build(rack, app, marker)
        library = _library(rack)
        seen: list[list[str]] = [[] for _ in range(FOLLOWERS)]
        ends: list[types.Build | None] = [None] * FOLLOWERS
        errors: list[BaseException] = []

        def follow(i: int) -> None:
            follower = library.builder.follow(build_id)
            try:
                for item in follower:
                    if isinstance(item, types.LogLine):
                        seen[i].append(item.text)
                    elif item.terminal:
                        ends[i] = item
                        return
            except BaseException as err:  # noqa: BLE001 - reported by the assertion below
                errors.append(err)
            finally:
                follower.close()

        threads = [threading.Thread(target=follow, args=(i,)) for i in range(FOLLOWERS)]
        for thread in threads:
            thread.start()

        # While all of them watch, the rack keeps answering.
        info = library.builder.rack()
        metadata = reach(library.builder.address, info.metadata_address)
        token = _token(rack)
        assert _serving(library.builder.address, token, rack.ca)
        assert _serving(metadata, token, rack.ca)
        assert library.metadata.get_build(build_id).status == types.RUNNING

        for thread in threads:
            thread.join(180)
        out, err = build.communicate(timeout=120)
    finally:
        if build.poll() is None:
            build.kill()
            build.wait(10)

    assert errors == []
    assert build.returncode == 0, err
    assert all(end is not None and end.status == types.COMPLETE for end in ends)
    for lines in seen:
        assert [text for text in step_output(lines) if NUMBERED.match(text)] == LINES
    stored = [line.text for line in library.metadata.stream_logs(build_id)]
    assert [text for text in step_output(stored) if NUMBERED.match(text)] == LINES
    assert all(lines == stored for lines in seen)
    assert library.metadata.get_build(build_id).status == types.COMPLETE
