"""The metadata service through an in-process gRPC server and the typed client."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from slipway.common.v1 import common_pb2
from slipway.metadata.v1 import metadata_pb2 as pb
from slipway.metadata.v1 import metadata_pb2_grpc as pb_grpc

from client.api.channel import open_channel
from client.api.grpcerrors import rpc_errors
from client.api.metadata import MetadataClient
from client.kernel.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unauthenticated,
)
from client.kernel.types import COMPLETE, FAILED, RUNNING
from services.common.server import Server
from services.metadata.config import Config
from services.metadata.server import SERVICE_NAME, create_server
from tests.helpers import eventually
from tests.tls import ca, tls_channel, tls_files

GHOST = "app not found: ghost (create it with: slipway apps create ghost)"


@pytest.fixture
def server(token: str, database_url: str, tmp_path: Path) -> Iterator[Server]:
    config = Config(
        listen="unused", token=token, data_dir=tmp_path, database_url=database_url, tls=tls_files()
    )
    srv = create_server(config, address="127.0.0.1:0")
    yield srv
    srv.stop(0)


@pytest.fixture
def channel(server: Server, token: str) -> Iterator[grpc.Channel]:
    ch = open_channel(server.address, token, ca=ca())
    yield ch
    ch.close()


@pytest.fixture
def md(server: Server, channel: grpc.Channel) -> MetadataClient:
    return MetadataClient(channel, server.address)


@pytest.fixture
def app(md: MetadataClient) -> str:
    return md.create_app("web").name


def test_apps(md: MetadataClient) -> None:
    web = md.create_app("web")
    assert web.name == "web" and web.created > 0
    md.create_app("api")
    with pytest.raises(AlreadyExists, match="app already exists: web"):
        md.create_app("web")
    assert md.create_app("web", exist_ok=True) == web
    assert md.get_app("web") == web
    assert [a.name for a in md.list_apps()] == ["api", "web"]


@pytest.mark.parametrize("name", ["Web", "9lives", "web_app", ""])
def test_a_bad_app_name_is_invalid_argument(md: MetadataClient, name: str) -> None:
    with pytest.raises(InvalidArgument, match="invalid app name"):
        md.create_app(name)
    with pytest.raises(InvalidArgument, match="invalid app name"):
        md.list_builds(name)


def test_unknown_records_are_not_found_with_the_exact_message(md: MetadataClient, app: str) -> None:
    cases = [
        (lambda: md.get_app("ghost"), "app not found: ghost"),
        (lambda: md.create_build("ghost"), GHOST),
        (lambda: md.list_releases("ghost"), "app not found: ghost"),
        (lambda: md.get_build("BNOTHEREXXX"), "build not found: BNOTHEREXXX"),
        (
            lambda: md.update_build("BNOTHEREXXX", status="failed", reason="boom"),
            "build not found: BNOTHEREXXX",
        ),
        (lambda: md.append_logs("BNOTHEREXXX", ["x"]), "build not found: BNOTHEREXXX"),
        (lambda: list(md.stream_logs("BNOTHEREXXX")), "build not found: BNOTHEREXXX"),
        (lambda: md.get_release("RNOTHEREXXX"), "release not found: RNOTHEREXXX"),
        (lambda: md.promote_release(app, "RNOTHEREXXX"), "release not found: RNOTHEREXXX"),
    ]
    for call, message in cases:
        with pytest.raises(NotFound) as caught:
            call()
        assert str(caught.value) == message


def test_builds(md: MetadataClient, app: str) -> None:
    made = [
        md.create_build(app, description=f"b{i}", manifest="m", git_sha="abc", archive="f00")
        for i in range(12)
    ]
    first = made[0]
    assert re.fullmatch(r"B[A-Z]{10}", first.id)
    assert (first.status, first.description, first.git_sha, first.archive) == (
        "created",
        "b0",
        "abc",
        "f00",
    )
    assert md.get_build(first.id) == first
    assert md.get_build(first.id, app=app) == first
    md.create_app("other")
    with pytest.raises(NotFound, match=f"^build not found: {first.id}$"):
        md.get_build(first.id, app="other")
    newest_first = [b.id for b in reversed(made)]
    assert [b.id for b in md.list_builds(app, limit=0)] == newest_first[:10]
    assert [b.id for b in md.list_builds(app, limit=4)] == newest_first[:4]


def test_update_build(md: MetadataClient, app: str) -> None:
    build = md.create_build(app, description="d")
    running = md.update_build(build.id, status=RUNNING)
    assert running.status == RUNNING and running.started > 0
    done = md.update_build(
        build.id, status=COMPLETE, release="RAAAAAAAAAA", entrypoint="sh", manifest="m2"
    )
    assert (done.status, done.release, done.entrypoint, done.manifest, done.description) == (
        COMPLETE,
        "RAAAAAAAAAA",
        "sh",
        "m2",
        "d",
    )
    assert done.ended > 0
    with pytest.raises(FailedPrecondition) as caught:
        md.update_build(build.id, status=FAILED, reason="too late")
    assert str(caught.value) == f"build {build.id} is already complete"
    assert md.get_build(build.id) == done


def test_update_build_with_an_unknown_field_is_invalid(
    md: MetadataClient, app: str, channel: grpc.Channel
) -> None:
    build = md.create_build(app)
    stub = pb_grpc.MetadataServiceStub(channel)
    for fields in (["bogus"], ["id"], ["status"]):
        request = pb.UpdateBuildRequest(build=common_pb2.Build(id=build.id), fields=fields)
        with pytest.raises(InvalidArgument), rpc_errors():
            stub.UpdateBuild(request)
    assert md.get_build(build.id) == build


def test_releases(md: MetadataClient, app: str) -> None:
    build = md.create_build(app)
    env = {"A": "1", "QUOTED": 'x="y, z"', "EMPTY": ""}
    release = md.create_release(
        app, build=build.id, env=env, manifest="services: {}", description="first"
    )
    assert re.fullmatch(r"R[A-Z]{10}", release.id)
    assert (release.build, release.env, release.description) == (build.id, env, "first")
    assert md.get_release(release.id) == release
    assert md.get_release(release.id, app=app) == release
    second = md.create_release(app, env={"A": "2"}, description="env change:A")
    assert [r.id for r in md.list_releases(app)] == [second.id, release.id]
    assert [r.id for r in md.list_releases(app, limit=1)] == [second.id]
    assert md.promote_release(app).release == second.id
    assert md.promote_release(app, release.id).release == release.id
    assert md.get_app(app).release == release.id


def test_logs_roundtrip_and_resume_from_an_offset(md: MetadataClient, app: str) -> None:
    build = md.create_build(app)
    assert md.append_logs(build.id, [f"line {i}" for i in range(700)]) == 700
    assert md.append_logs(build.id, ["tail"]) == 701
    whole = list(md.stream_logs(build.id))
    assert [line.offset for line in whole] == list(range(701))
    assert whole[-1].text == "tail"
    for offset in (0, 1, 499, 500, 700, 701):
        assert list(md.stream_logs(build.id, offset=offset)) == whole[offset:]


def test_follow_receives_live_lines_and_ends_with_the_build(md: MetadataClient, app: str) -> None:
    build = md.create_build(app)
    md.update_build(build.id, status=RUNNING)
    seen: list[str] = []

    def follow() -> None:
        for line in md.stream_logs(build.id, follow=True):
            seen.append(line.text)

    follower = threading.Thread(target=follow)
    follower.start()
    for i in range(3):
        md.append_logs(build.id, [f"step {i}"])
        eventually(lambda i=i: seen == [f"step {j}" for j in range(i + 1)], timeout=10)
    assert follower.is_alive()
    md.append_logs(build.id, ["done"])
    md.update_build(build.id, status=COMPLETE)
    follower.join(10)
    assert not follower.is_alive()
    assert seen == ["step 0", "step 1", "step 2", "done"]


def test_a_follower_that_reconnects_misses_and_repeats_nothing(
    md: MetadataClient, app: str
) -> None:
    build = md.create_build(app)
    md.update_build(build.id, status=RUNNING)
    md.append_logs(build.id, ["a", "b", "c"])
    first: list[tuple[int, str]] = []
    for line in md.stream_logs(build.id, follow=True):
        first.append((line.offset, line.text))
        if line.offset == 1:
            break  # the client goes away mid-stream
    md.append_logs(build.id, ["d", "e"])
    md.update_build(build.id, status=FAILED, reason="x")
    rest = [(line.offset, line.text) for line in md.stream_logs(build.id, first[-1][0] + 1, True)]
    assert first + rest == list(enumerate("abcde"))


def test_many_followers_see_the_same_log(md: MetadataClient, app: str) -> None:
    build = md.create_build(app)
    results: list[list[str]] = [[] for _ in range(8)]

    def follow(into: list[str]) -> None:
        into.extend(line.text for line in md.stream_logs(build.id, follow=True))

    followers = [threading.Thread(target=follow, args=(r,)) for r in results]
    for f in followers:
        f.start()
    for i in range(5):
        md.append_logs(build.id, [f"{i}a", f"{i}b"])
    md.update_build(build.id, status=COMPLETE)
    for f in followers:
        f.join(10)
    expected = [f"{i}{s}" for i in range(5) for s in "ab"]
    assert all(not f.is_alive() for f in followers)
    assert results == [expected] * 8


def test_no_token_or_a_wrong_token_is_unauthenticated(server: Server) -> None:
    plain = tls_channel(server.address)
    wrong = open_channel(server.address, "not-the-token", ca=ca())
    try:
        for channel in (plain, wrong):
            client = MetadataClient(channel, server.address)
            with pytest.raises(Unauthenticated, match="^unauthorized$"):
                client.list_apps()
            with pytest.raises(Unauthenticated):
                list(client.stream_logs("BNOTHEREXXX"))
    finally:
        plain.close()
        wrong.close()


def test_health_answers_without_a_token(server: Server) -> None:
    with tls_channel(server.address) as plain:
        health = health_pb2_grpc.HealthStub(plain)
        for name in ("", SERVICE_NAME):
            reply = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_update_env_keeps_the_order_and_values_over_the_wire(md: MetadataClient, app: str) -> None:
    build = md.create_build(app)
    md.create_release(app, build=build.id, env={"OLD": "o"}, manifest="m", description="b")
    values = {"ZED": 'a=b, "c"\nd', "ALPHA": ""}
    release = md.update_env(app, values, ["OLD"])
    assert release.description == "env add:ZED,ALPHA remove:OLD"
    assert (release.build, release.manifest, release.env) == (build.id, "m", values)
    assert md.list_releases(app, limit=1) == [release]
    assert md.get_app(app).release == ""


def test_update_env_errors_keep_their_codes_and_words(md: MetadataClient, app: str) -> None:
    with pytest.raises(NotFound, match="^env var not set: GONE$"):
        md.update_env(app, {}, ["GONE"])
    with pytest.raises(InvalidArgument, match="^invalid environment variable: '9X'"):
        md.update_env(app, {"9X": "1"})
    assert md.list_releases(app) == []


def test_the_queue_over_grpc(md: MetadataClient, app: str) -> None:
    """Claim, renew, fenced writes and expiry through the typed client: the lease travels,
    a lost lease is FAILED_PRECONDITION, the request comes back without its secrets."""
    from client.kernel.errors import FailedPrecondition
    from client.kernel.types import BuildRequest, Lease, request_json

    req = BuildRequest(app=app, archive="f" * 64, no_cache=True, secrets={"tok": b"v"})
    queued = md.create_build(app, archive=req.archive, request=request_json(req), timeout=5)
    first = md.claim_build("other")  # any builder may take an unpinned one
    assert first is not None and first.build.id == queued.id and first.timeout == 5
    assert md.get_build(queued.id).status == RUNNING
    pinned = md.create_build(app, request=request_json(req), pinned="b1")
    assert md.claim_build("b2") is None
    taken = md.claim_build("b1")
    assert taken is not None and taken.build.id == pinned.id
    assert taken.request.no_cache and taken.request.secrets == {}
    assert taken.lease == Lease("b1", 1) and taken.timeout == 3600
    assert md.renew_lease(pinned.id, taken.lease) == (True, md.get_build(pinned.id))
    md.append_logs(pinned.id, ["one"], lease=taken.lease)
    with pytest.raises(FailedPrecondition, match="lease lost"):
        md.append_logs(pinned.id, ["two"], lease=Lease("b2", 1))
    with pytest.raises(FailedPrecondition, match="lease lost"):
        md.update_build(pinned.id, lease=Lease("b1", 2), status=COMPLETE)
    assert md.expire_builds(owner="b1") == [pinned.id]
    held, build = md.renew_lease(pinned.id, taken.lease)
    assert not held and build.status == FAILED
    assert build.reason == "builder lost: b1 stopped renewing its lease"
    with pytest.raises(FailedPrecondition):
        md.create_release(app, build=pinned.id, lease=taken.lease)
    assert [line.text for line in md.stream_logs(pinned.id)] == [
        "one",
        "ERROR: builder lost: b1 stopped renewing its lease",
    ]
    # Completing travels too: the build turns complete with its release, in one write.
    from client.kernel.types import Completion

    again = md.create_build(app, request=request_json(req))
    claim = md.claim_build("b3")
    assert claim is not None and claim.build.id == again.id
    release = md.create_release(
        app, build=again.id, lease=claim.lease, complete=Completion("e", 2.0)
    )
    done = md.get_build(again.id)
    assert (done.status, done.release, done.entrypoint) == (COMPLETE, release.id, "e")
