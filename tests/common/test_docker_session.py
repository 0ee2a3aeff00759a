"""services.common.docker.session against the real Docker engine: BuildKit builds that
mount the session's secrets, a secret the build was not given, and a clean close; fake
engines on local sockets for the failures a real one does not show on demand."""

from __future__ import annotations

import io
import json
import logging
import os
import secrets
import socket
import stat
import tarfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from client.kernel.errors import InvalidArgument, Unavailable
from services.common.docker.session import CLOSE_TIMEOUT, METHODS, BuildSession
from services.common.docker.types import EngineError
from tests.helpers import eventually

pytestmark = pytest.mark.docker


@pytest.fixture
def engine_host() -> str:
    from client.cli.localrack.engine import docker_host

    return docker_host()


@dataclass
class Built:
    """What a BuildKit build through the engine API produced."""

    image: str = ""
    error: str = ""
    messages: list[dict[str, Any]] = field(default_factory=list)


def _build(docker_client: Any, dockerfile: str, session: str) -> Built:
    """`POST /build?version=2&session=…` of a context holding only `dockerfile`, as the
    builder sends it (plain ustar tar, no cache, no pull)."""
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        data = dockerfile.encode()
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    api = docker_client.api
    response = api._post(
        api._url("/build"),
        params={
            "version": "2",
            "session": session,
            "dockerfile": "Dockerfile",
            "nocache": "1",
            "pull": "0",
            "rm": "1",
            "forcerm": "1",
        },
        data=context.getvalue(),
        headers={"Content-Type": "application/x-tar"},
        stream=True,
        timeout=300,
    )
    assert response.status_code == 200, response.text
    built = Built()
    with response:
        for line in response.iter_lines():
            if not line.strip():
                continue
            message = json.loads(line)
            built.messages.append(message)
            if message.get("error"):
                built.error = str(message["error"])
            elif message.get("id") == "moby.image.id":
                built.image = str(message["aux"]["ID"])
    return built


def _run(docker_client: Any, image: str, script: str) -> str:
    return docker_client.containers.run(image, ["sh", "-c", script], remove=True).decode()


def _session_threads(session: BuildSession) -> list[str]:
    prefix = f"session-{session.id[:8]}"
    return [t.name for t in threading.enumerate() if t.name.startswith(prefix) and t.is_alive()]


def test_a_build_mounts_the_secret_and_no_log_holds_it(
    docker_client: Any, engine_host: str, caplog: pytest.LogCaptureFixture
) -> None:
    word = secrets.token_hex(16)
    secret = f"tok-{word}".encode() + b"\x00\xff\n"
    dockerfile = (
        "FROM busybox:latest\n"
        "RUN --mount=type=secret,id=tok sh -c "
        "'wc -c < /run/secrets/tok > /len && sha256sum /run/secrets/tok | cut -d\" \" -f1 > /sum'\n"
    )
    caplog.set_level(logging.DEBUG)
    with BuildSession(engine_host, {"tok": secret, "unused": b"x"}) as session:
        built = _build(docker_client, dockerfile, session.id)
    assert built.error == "" and built.image
    try:
        import hashlib

        out = _run(docker_client, built.image, "cat /len /sum; test ! -e /run/secrets/tok")
        assert out.split() == [str(len(secret)), hashlib.sha256(secret).hexdigest()]
    finally:
        docker_client.images.remove(built.image, force=True)
    assert word not in caplog.text
    assert word not in json.dumps(built.messages)
    assert word not in repr(session)
    assert "serving secret 'tok'" in caplog.text


def test_a_secret_the_build_was_not_given_fails_with_buildkits_message(
    docker_client: Any, engine_host: str
) -> None:
    dockerfile = (
        "FROM busybox:latest\n"
        "RUN --mount=type=secret,id=other,required=true cat /run/secrets/other > /out\n"
    )
    with BuildSession(engine_host, {"tok": b"given"}) as session:
        built = _build(docker_client, dockerfile, session.id)
    assert built.image == ""
    assert built.error == "secret other not found: not found"


def test_an_optional_secret_the_build_was_not_given_is_not_mounted(
    docker_client: Any, engine_host: str
) -> None:
    dockerfile = (
        "FROM busybox:latest\n"
        "RUN --mount=type=secret,id=other"
        " sh -c 'test -e /run/secrets/other || echo absent > /out'\n"
    )
    with BuildSession(engine_host, {}) as session:
        built = _build(docker_client, dockerfile, session.id)
    assert built.error == "" and built.image
    try:
        assert _run(docker_client, built.image, "cat /out") == "absent\n"
    finally:
        docker_client.images.remove(built.image, force=True)


def test_the_session_closes_cleanly_and_the_engine_forgets_it(
    docker_client: Any, engine_host: str
) -> None:
    with BuildSession(engine_host, {}):  # grpc's lazily started parts start here
        pass
    before = set(threading.enumerate())
    session = BuildSession(engine_host, {"tok": b"value"})
    with session:
        assert session.folder is not None
        folder = Path(session.folder)
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        assert os.listdir(folder) == ["grpc.sock"]
        assert len(_session_threads(session)) >= 2
        started = time.monotonic()
    assert time.monotonic() - started < CLOSE_TIMEOUT
    assert not folder.exists()
    assert _session_threads(session) == []
    eventually(lambda: set(threading.enumerate()) <= before, timeout=10)

    # The engine dropped the session: one with the same id is accepted again.
    def reopens() -> bool:
        again = BuildSession(engine_host, {})
        again.id = session.id
        with again:
            return True

    eventually(reopens, timeout=10)


def test_a_session_the_engine_refuses_is_an_engine_error(
    docker_client: Any, engine_host: str
) -> None:
    with BuildSession(engine_host, {}) as first:
        firsts = sorted(_session_threads(first))
        second = BuildSession(engine_host, {})
        second.id = first.id
        with pytest.raises(EngineError, match=f"session {first.id} already exists"):
            second.__enter__()
        assert second.folder is not None and not os.path.exists(second.folder)
        # The same id names the same threads: only the first session's are left.
        assert sorted(_session_threads(second)) == firsts


def test_an_unreachable_engine_is_unavailable(tmp_path: Path) -> None:
    host = f"unix://{tmp_path}/nothing.sock"
    session = BuildSession(host, {"tok": b"value"})
    with pytest.raises(Unavailable, match=f"^Docker engine unreachable at {host}$"):
        session.__enter__()
    assert session.folder is not None and not os.path.exists(session.folder)


@dataclass
class FakeEngine:
    """A listening socket that accepts one connection, records the request head and
    answers `answer` (nothing when empty), then holds the connection until stopped."""

    listener: socket.socket
    answer: bytes
    head: bytes = b""
    stop: threading.Event = field(default_factory=threading.Event)

    def serve(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(10)
            while b"\r\n\r\n" not in self.head:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                self.head += chunk
            if self.answer:
                conn.sendall(self.answer)
            self.stop.wait(60)


@pytest.fixture
def fake_engine(tmp_path: Path) -> Iterator[Any]:
    started: list[tuple[FakeEngine, threading.Thread]] = []

    def start(answer: bytes, tcp: bool = False) -> tuple[FakeEngine, str]:
        if tcp:
            listener = socket.create_server(("127.0.0.1", 0))
            host = f"tcp://127.0.0.1:{listener.getsockname()[1]}"
        else:
            path = f"{tmp_path}/engine.sock"
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            listener.bind(path)
            listener.listen()
            host = f"unix://{path}"
        fake = FakeEngine(listener, answer)
        thread = threading.Thread(target=fake.serve, name="fake-engine")
        thread.start()
        started.append((fake, thread))
        return fake, host

    yield start
    for fake, thread in started:
        fake.stop.set()
        fake.listener.close()
        thread.join(10)


def test_an_engine_that_never_answers_times_out(fake_engine: Any) -> None:
    _, host = fake_engine(b"")
    session = BuildSession(host, {}, timeout=1)
    started = time.monotonic()
    with pytest.raises(
        Unavailable, match=f"^Docker engine at {host} did not open a build session within 1 s$"
    ):
        session.__enter__()
    assert time.monotonic() - started < 5
    assert session.folder is not None and not os.path.exists(session.folder)
    assert _session_threads(session) == []


def test_closing_does_not_wait_for_an_engine_that_keeps_the_connection(
    fake_engine: Any,
) -> None:
    fake, host = fake_engine(
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n",
        tcp=True,
    )
    with BuildSession(host, {"tok": b"value"}) as session:
        pass
    assert fake.head.startswith(b"POST /session HTTP/1.1\r\n")
    head = fake.head.decode()
    assert f"Host: {host.removeprefix('tcp://')}\r\n" in head
    assert "Upgrade: h2c\r\n" in head and "Connection: Upgrade\r\n" in head
    assert f"X-Docker-Expose-Session-Uuid: {session.id}\r\n" in head
    for method in METHODS:
        assert f"X-Docker-Expose-Session-Grpc-Method: {method}\r\n" in head
    assert "value" not in head
    assert _session_threads(session) == []
    assert session.folder is not None and not os.path.exists(session.folder)


def test_a_refusal_carries_the_engines_message(fake_engine: Any) -> None:
    body = b'{"message":"page not found"}'
    _, host = fake_engine(
        b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    with pytest.raises(EngineError, match=r"^the engine refused a build session \(404\): page"):
        BuildSession(host, {}).__enter__()


def test_bad_hosts_and_secrets_are_invalid_arguments() -> None:
    with pytest.raises(InvalidArgument, match="expected unix://PATH or tcp://HOST:PORT"):
        BuildSession("ssh://somewhere", {}).__enter__()
    with pytest.raises(InvalidArgument, match="expected unix://PATH or tcp://HOST:PORT"):
        BuildSession("tcp://127.0.0.1:port", {}).__enter__()
    with pytest.raises(InvalidArgument, match="^secret big is 512001 bytes") as err:
        BuildSession("unix:///var/run/docker.sock", {"big": b"z" * 512001})
    assert "zzz" not in str(err.value)
