"""The archive service through an in-process gRPC server and the typed client."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from slipway.archive.v1 import archive_pb2 as pb
from slipway.archive.v1 import archive_pb2_grpc as pb_grpc
from slipway.common.v1 import common_pb2

from client.api.archive import ArchiveClient
from client.api.channel import open_channel
from client.api.grpcerrors import rpc_errors
from client.kernel.errors import InvalidArgument, NotFound, Unauthenticated
from services.archive.config import Config
from services.archive.server import create_server
from services.common.server import Server
from tests.common.test_objectstore import files_under
from tests.helpers import eventually, free_port
from tests.tls import ca, tls_channel, tls_env, tls_files

MAX_BYTES = 16 * 1024 * 1024


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "archive"


@pytest.fixture
def server(token: str, data_dir: Path) -> Iterator[Server]:
    config = Config(
        listen="unused", token=token, data_dir=data_dir, max_bytes=MAX_BYTES, tls=tls_files()
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
def archives(server: Server, channel: grpc.Channel) -> ArchiveClient:
    return ArchiveClient(channel, server.address)


def upload_bytes(
    archives: ArchiveClient, data: bytes, size: int | None = None, digest: str | None = None
) -> str:
    size = len(data) if size is None else size
    return archives.upload("app", io.BytesIO(data), size, digest or sha(data))


def test_roundtrip_of_a_multi_chunk_archive(archives: ArchiveClient, tmp_path: Path) -> None:
    data = os.urandom(5 * 1024 * 1024 + 12345)
    path = tmp_path / "source.tgz"
    path.write_bytes(data)
    sent: list[int] = []
    archive_id = archives.upload_file("app", path, progress=sent.append)
    assert archive_id == sha(data)
    assert sum(sent) == len(data) and len(sent) > 1
    chunks = list(archives.download(archive_id))
    assert len(chunks) > 1 and max(len(c) for c in chunks) <= 512 * 1024
    assert b"".join(chunks) == data
    assert archives.stat(archive_id) == len(data)


def test_same_archive_twice_is_stored_once(archives: ArchiveClient, data_dir: Path) -> None:
    data = os.urandom(1000)
    assert upload_bytes(archives, data) == upload_bytes(archives, data) == sha(data)
    assert len(files_under(data_dir)) == 1


def test_checksum_mismatch_stores_nothing(archives: ArchiveClient, data_dir: Path) -> None:
    data = os.urandom(2 * 1024 * 1024)
    wrong = sha(b"other")
    mismatch = f"checksum mismatch: expected {wrong}, got {sha(data)}"
    with pytest.raises(InvalidArgument, match=mismatch):
        upload_bytes(archives, data, digest=wrong)
    assert files_under(data_dir) == []
    with pytest.raises(NotFound):
        archives.stat(wrong)


def test_more_bytes_than_declared(archives: ArchiveClient, data_dir: Path) -> None:
    data = os.urandom(3 * 1024 * 1024)
    with pytest.raises(InvalidArgument, match="archive larger than declared size"):
        upload_bytes(archives, data, size=1024 * 1024)
    assert files_under(data_dir) == []


def test_fewer_bytes_than_declared(archives: ArchiveClient, data_dir: Path) -> None:
    data = os.urandom(1000)
    with pytest.raises(InvalidArgument, match="size mismatch: expected 2000 bytes, got 1000"):
        upload_bytes(archives, data, size=2000)
    assert files_under(data_dir) == []


def test_header_is_validated(archives: ArchiveClient, data_dir: Path) -> None:
    with pytest.raises(InvalidArgument, match="invalid sha256"):
        upload_bytes(archives, b"abc", digest="ABC")
    with pytest.raises(InvalidArgument, match="invalid size: -1"):
        upload_bytes(archives, b"", size=-1)
    with pytest.raises(InvalidArgument, match="archive too large"):
        upload_bytes(archives, b"", size=MAX_BYTES + 1)
    with pytest.raises(InvalidArgument, match="invalid app name"):
        archives.upload("Bad App", io.BytesIO(b"x"), 1, sha(b"x"))
    assert files_under(data_dir) == []


def raw_upload(channel: grpc.Channel, requests: list[pb.UploadRequest]) -> pb.UploadResponse:
    with rpc_errors():
        return pb_grpc.ArchiveServiceStub(channel).Upload(iter(requests))


def chunk(data: bytes) -> pb.UploadRequest:
    return pb.UploadRequest(chunk=common_pb2.Chunk(data=data))


def header(data: bytes) -> pb.UploadRequest:
    return pb.UploadRequest(header=pb.UploadHeader(app="app", size=len(data), sha256=sha(data)))


def test_upload_must_start_with_a_header(channel: grpc.Channel, data_dir: Path) -> None:
    with pytest.raises(InvalidArgument, match="upload must start with a header"):
        raw_upload(channel, [chunk(b"abc"), header(b"abc")])
    with pytest.raises(InvalidArgument, match="upload must start with a header"):
        raw_upload(channel, [])
    with pytest.raises(InvalidArgument, match="one header, then only chunks"):
        raw_upload(channel, [header(b"abc"), header(b"abc"), chunk(b"abc")])
    assert files_under(data_dir) == []


def test_oversized_chunk_is_refused(channel: grpc.Channel, data_dir: Path) -> None:
    data = os.urandom(2 * 1024 * 1024)
    with pytest.raises(InvalidArgument, match="chunk too large"):
        raw_upload(channel, [header(data), chunk(data)])
    assert files_under(data_dir) == []


def test_cancelled_upload_leaves_nothing(channel: grpc.Channel, data_dir: Path) -> None:
    data = os.urandom(4 * 512 * 1024)
    release = threading.Event()

    def requests() -> Iterator[pb.UploadRequest]:
        yield header(data)
        yield chunk(data[: 512 * 1024])
        release.wait(30)

    call = pb_grpc.ArchiveServiceStub(channel).Upload.future(requests())
    try:
        # The server has started writing the upload to a temp file...
        eventually(lambda: files_under(data_dir))
        call.cancel()
    finally:
        release.set()
    # ...and removes it once the call is cancelled.
    eventually(lambda: files_under(data_dir) == [])
    assert call.cancelled()


def test_unknown_archive_is_not_found(archives: ArchiveClient) -> None:
    missing = sha(b"never uploaded")
    with pytest.raises(NotFound, match=f"archive not found: {missing}"):
        list(archives.download(missing))
    with pytest.raises(NotFound, match=f"archive not found: {missing}"):
        archives.stat(missing)
    with pytest.raises(InvalidArgument, match="invalid archive id"):
        archives.stat("../etc/passwd")


def test_token_is_required(server: Server, token: str) -> None:
    data = b"secret"
    for channel in (tls_channel(server.address), open_channel(server.address, "wrong", ca=ca())):
        with channel:
            client = ArchiveClient(channel, server.address)
            with pytest.raises(Unauthenticated):
                upload_bytes(client, data)
            with pytest.raises(Unauthenticated):
                list(client.download(sha(data)))
            with pytest.raises(Unauthenticated):
                client.stat(sha(data))


def test_health_answers_without_token(server: Server) -> None:
    with tls_channel(server.address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for name in ("", "slipway.archive.v1.ArchiveService"):
            resp = stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
            assert resp.status == health_pb2.HealthCheckResponse.SERVING


def test_main_serves_until_sigterm(token: str, tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    env = dict(
        os.environ,
        SLIPWAY_TOKEN=token,
        **tls_env(),
        SLIPWAY_LISTEN=address,
        SLIPWAY_ARCHIVE_DIR=str(tmp_path / "data"),
    )
    with open(tmp_path / "service.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "services.archive"], env=env, stdout=log, stderr=log
        )
    try:
        with open_channel(address, token, ca=ca()) as channel:
            client = ArchiveClient(channel, address)
            assert eventually(lambda: upload_bytes(client, b"hello")) == sha(b"hello")
        assert (tmp_path / "data" / "objects").is_dir()
        proc.terminate()
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
