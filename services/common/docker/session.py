"""`BuildSession`: a BuildKit session on the Docker engine that serves a build's context,
its Dockerfile and its secrets.

A BuildKit build reads its Dockerfile and context (`remote=client-session`, served by
`filesync.FileSync`) and its `RUN --mount=type=secret` values from the client, through a
session the build names (`POST /build?session=<id>`). The client opens it with
`POST /session`; the engine answers 101 Switching Protocols and from then on is the gRPC
(HTTP/2) *client* on that connection, calling the session's FileSync, Secrets and Health services.
grpcio serves only connections it accepts itself, so the session serves on a unix socket
in a private folder and relays the upgraded connection's bytes to it, both ways.

Secret values stay in memory: they are never logged, never written to disk, and cross only
the relay's sockets. Only the folders the session is given are lent, and only to its
engine.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Mapping
from concurrent import futures
from urllib.parse import urlsplit

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from slipway.buildkit import filesync_pb2_grpc, secrets_pb2, secrets_pb2_grpc

from client.kernel.entries import Source
from client.kernel.errors import InvalidArgument, Unavailable
from client.kernel.types import MAX_SECRET_BYTES
from services.common.docker.errors import unreachable
from services.common.docker.filesync import METHOD as FILESYNC_METHOD
from services.common.docker.filesync import FileSync
from services.common.docker.types import EngineError

log = logging.getLogger(__name__)

#: How long the engine has to accept a session (connect, request, 101 answer).
OPEN_TIMEOUT = 30.0
#: How long closing waits for each relay thread and for the server once the sockets are shut.
CLOSE_TIMEOUT = 5.0
#: BuildKit's own limit on one secret (session/secrets/secretsprovider MaxSecretSize).
MAX_SECRET_SIZE = MAX_SECRET_BYTES
#: The engine's port for a `tcp://` DOCKER_HOST that names none (plain HTTP).
DEFAULT_TCP_PORT = 2375
#: The session name the engine shows in its logs.
SESSION_NAME = "slipway"

_SECRETS = secrets_pb2.DESCRIPTOR.services_by_name["Secrets"]
#: The methods every session serves, announced to the engine (BuildKit calls only those);
#: a session that lends folders announces FileSync's DiffCopy too.
METHODS = (
    f"/{_SECRETS.full_name}/GetSecret",
    f"/{health.SERVICE_NAME}/Check",
)

# The engine's answer to `POST /session` is a few hundred bytes; more is not an engine.
_HEAD_LIMIT = 64 * 1024
_RELAY_CHUNK = 64 * 1024
# Enough for the frontend's parallel loads (Dockerfile, .dockerignore, context) and secrets.
_RPC_THREADS = 8


class _Secrets(secrets_pb2_grpc.SecretsServicer):
    """GetSecret over one session's secrets. NOT_FOUND for an id the build was not given is
    BuildKit's protocol (its own provider answers so, and BuildKit reports the secret as
    missing), not Slipway's error mapping; hence the code set by hand."""

    def __init__(self, session: str, secrets: Mapping[str, bytes]) -> None:
        self._session = session
        self._secrets = secrets

    def GetSecret(  # noqa: N802 - gRPC method name
        self, request: secrets_pb2.GetSecretRequest, context: grpc.ServicerContext
    ) -> secrets_pb2.GetSecretResponse:
        value = self._secrets.get(request.ID)
        if value is None:
            log.info(
                "session %s: the build asked for secret %r, not given", self._session, request.ID
            )
            context.abort(grpc.StatusCode.NOT_FOUND, f"secret {request.ID} not found")
        # The id only: a secret's value is never logged, at any level.
        log.debug("session %s: serving secret %r", self._session, request.ID)
        return secrets_pb2.GetSecretResponse(data=value)


class BuildSession:
    """A BuildKit session on the engine at `host` (a DOCKER_HOST value like
    unix:///var/run/docker.sock, or plain tcp://HOST:PORT) that serves `secrets`
    (id -> bytes) and lends `dirs` (a source name such as `context` -> a folder or a
    `Source`) to builds
    that name its id, for as long as the `with` lasts.

    Opening fails within `timeout` seconds with Unavailable when the engine does not
    answer, EngineError when it refuses the session; closing never waits on the engine."""

    def __init__(
        self,
        host: str,
        secrets: Mapping[str, bytes],
        *,
        dirs: Mapping[str, Source | str] | None = None,
        timeout: float = OPEN_TIMEOUT,
    ) -> None:
        self.host = host
        self._dirs = dict(dirs or {})
        #: The session's id, sent as the build's `session=` parameter.
        self.id = uuid.uuid4().hex
        self._secrets = _checked(secrets)
        self._timeout = timeout
        self._folder: str | None = None
        self._server: grpc.Server | None = None
        self._executor: futures.ThreadPoolExecutor | None = None
        self._health: health.HealthServicer | None = None
        self._relay: _Relay | None = None

    def __repr__(self) -> str:
        # Ids only: the values never reach a repr, a log record or a traceback.
        return (
            f"BuildSession(host={self.host!r}, id={self.id!r}, secrets={sorted(self._secrets)},"
            f" dirs={sorted(self._dirs)})"
        )

    def __enter__(self) -> BuildSession:
        if self._folder is not None:
            raise RuntimeError("a BuildSession is opened once")
        try:
            self._open()
        except BaseException:
            self._close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._close()

    @property
    def methods(self) -> tuple[str, ...]:
        """The gRPC methods the session announces to the engine."""
        return (*METHODS, FILESYNC_METHOD) if self._dirs else METHODS

    @property
    def folder(self) -> str | None:
        """The private folder (0700) of the server's unix socket, once opened; removed
        when the session closes."""
        return self._folder

    def _open(self) -> None:
        deadline = time.monotonic() + self._timeout
        # mkdtemp makes the folder 0700: only this user reaches the socket.
        self._folder = tempfile.mkdtemp(prefix="slipway-session-")
        path = os.path.join(self._folder, "grpc.sock")
        self._start_server(path)
        local = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            local.settimeout(self._timeout)
            local.connect(path)
            local.settimeout(None)
            engine, first = self._open_on_engine(deadline)
        except BaseException:
            local.close()
            raise
        self._relay = _Relay(engine, local, f"session-{self.id[:8]}")
        self._relay.start(first)
        log.info(
            "session %s open on %s (secrets: %s; folders: %s)",
            self.id,
            self.host,
            sorted(self._secrets),
            sorted(self._dirs),
        )

    def _start_server(self, path: str) -> None:
        self._executor = futures.ThreadPoolExecutor(
            max_workers=_RPC_THREADS, thread_name_prefix=f"session-{self.id[:8]}-rpc"
        )
        self._server = grpc.server(self._executor)
        secrets_pb2_grpc.add_SecretsServicer_to_server(
            _Secrets(self.id, self._secrets), self._server
        )
        self._health = health.HealthServicer(experimental_non_blocking=True)
        if self._dirs:
            filesync_pb2_grpc.add_FileSyncServicer_to_server(
                FileSync(self._dirs, self.id), self._server
            )
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        try:
            self._server.add_insecure_port(f"unix:{path}")
        except RuntimeError as err:
            raise OSError(f"cannot serve the build session on {path}: {err}") from None
        self._server.start()
        for name in ("", _SECRETS.full_name):
            self._health.set(name, health_pb2.HealthCheckResponse.SERVING)

    def _open_on_engine(self, deadline: float) -> tuple[socket.socket, bytes]:
        """The engine's connection, upgraded, and the bytes it sent after its 101 answer."""
        sock, authority = _dial(self.host, self._timeout)
        try:
            headers = [
                ("Host", authority),
                ("Upgrade", "h2c"),
                ("Connection", "Upgrade"),
                ("Content-Length", "0"),
                ("X-Docker-Expose-Session-Uuid", self.id),
                ("X-Docker-Expose-Session-Name", SESSION_NAME),
                ("X-Docker-Expose-Session-Sharedkey", self.id),
                *(("X-Docker-Expose-Session-Grpc-Method", method) for method in self.methods),
            ]
            head = "POST /session HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers)
            sock.settimeout(_remaining(deadline))
            sock.sendall(head.encode("ascii") + b"\r\n")
            status, fields, rest = _read_head(sock, deadline)
            if status != 101:
                text = _body_text(sock, fields, rest, deadline)
                raise EngineError(f"the engine refused a build session ({status}): {text}")
            sock.settimeout(None)
            return sock, rest
        except TimeoutError:
            sock.close()
            raise Unavailable(
                f"Docker engine at {self.host} did not open a build session"
                f" within {self._timeout:g} s"
            ) from None
        except OSError as err:
            sock.close()
            log.warning("engine at %s: %s", self.host, err)
            raise unreachable(self.host) from None
        except BaseException:
            sock.close()
            raise

    def _close(self) -> None:
        """Shuts the relay (the engine sees the session end), stops the server, removes
        the folder. Bounded: nothing here waits on the engine."""
        if self._relay is not None:
            if not self._relay.close(CLOSE_TIMEOUT):
                log.warning("session %s: a relay thread did not stop", self.id)
            self._relay = None
        if self._health is not None:
            self._health.enter_graceful_shutdown()
            self._health = None
        if self._server is not None:
            self._server.stop(None).wait(CLOSE_TIMEOUT)
            self._server = None
        if self._executor is not None:
            # Every handler answers at once, so waiting for the pool is bounded.
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            log.info("session %s closed", self.id)


class _Relay:
    """Copies bytes both ways between the engine's upgraded connection and the server's
    unix socket, one thread a direction. An end of stream is passed on as a half-close;
    a failed side shuts both, which ends the other thread too."""

    def __init__(self, engine: socket.socket, server: socket.socket, name: str) -> None:
        self._sockets = (engine, server)
        self._threads = (
            threading.Thread(target=self._pump, args=(engine, server), name=f"{name}-in"),
            threading.Thread(target=self._pump, args=(server, engine), name=f"{name}-out"),
        )

    def start(self, first: bytes) -> None:
        """Starts both threads, after passing on what the engine sent with its answer."""
        if first:
            self._sockets[1].sendall(first)
        for thread in self._threads:
            thread.daemon = True
            thread.start()

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while chunk := source.recv(_RELAY_CHUNK):
                target.sendall(chunk)
        except OSError:
            self._shutdown()
            return
        with contextlib.suppress(OSError):
            target.shutdown(socket.SHUT_WR)

    def _shutdown(self) -> None:
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self, timeout: float) -> bool:
        """Shuts both connections, waits up to `timeout` for each thread, closes the
        sockets; True when both threads ended."""
        self._shutdown()
        for thread in self._threads:
            if thread.ident is not None:
                thread.join(timeout)
        for sock in self._sockets:
            sock.close()
        return not any(thread.is_alive() for thread in self._threads)


def _checked(secrets: Mapping[str, bytes]) -> dict[str, bytes]:
    """The secrets as an owned dict, refused with InvalidArgument (naming the id, never
    the value) when BuildKit would refuse them."""
    checked: dict[str, bytes] = {}
    for ident, value in secrets.items():
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise InvalidArgument(f"secret {ident}: the value must be bytes")
        data = bytes(value)
        if len(data) > MAX_SECRET_SIZE:
            raise InvalidArgument(
                f"secret {ident} is {len(data)} bytes; BuildKit takes at most"
                f" {MAX_SECRET_SIZE // 1024} KiB"
            )
        checked[ident] = data
    return checked


def _dial(host: str, timeout: float) -> tuple[socket.socket, str]:
    """A connection to the engine at `host` and the Host header to send it."""
    parts = urlsplit(host)
    try:
        if parts.scheme == "unix" and parts.path:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(timeout)
                sock.connect(parts.path)
            except BaseException:
                sock.close()
                raise
            # Any name will do on a unix socket; the Docker CLI sends this placeholder.
            return sock, "api.moby.localhost"
        if parts.scheme == "tcp" and parts.hostname:
            port = parts.port or DEFAULT_TCP_PORT
            sock = socket.create_connection((parts.hostname, port), timeout=timeout)
            return sock, parts.netloc
    except ValueError:  # a port that is not a number
        pass
    except TimeoutError:
        raise Unavailable(f"Docker engine at {host} did not answer within {timeout:g} s") from None
    except OSError as err:
        log.warning("engine at %s: %s", host, err)
        raise unreachable(host) from None
    raise InvalidArgument(
        f"cannot open a build session on {host!r}: expected unix://PATH or tcp://HOST:PORT"
    )


def _remaining(deadline: float) -> float:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError
    return remaining


def _read_head(sock: socket.socket, deadline: float) -> tuple[int, dict[str, str], bytes]:
    """The status and header fields (lower-cased names) of the engine's answer, and the
    bytes received after them."""
    data = b""
    while b"\r\n\r\n" not in data:
        if len(data) > _HEAD_LIMIT:
            raise EngineError("the engine's answer to a build session has no end of headers")
        sock.settimeout(_remaining(deadline))
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("the engine closed the connection without answering")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    words = status_line.split(" ", 2)
    if len(words) < 2 or not words[0].startswith("HTTP/") or not words[1].isdigit():
        raise EngineError(f"unexpected answer to a build session: {status_line[:200]!r}")
    fields = {}
    for line in lines:
        name, _, value = line.partition(":")
        fields[name.strip().lower()] = value.strip()
    return int(words[1]), fields, rest


def _body_text(sock: socket.socket, fields: Mapping[str, str], body: bytes, deadline: float) -> str:
    """The error text of a refused session: the JSON `message` the engine sends, else the
    body as it is, bounded; what it does not send before the deadline is left out."""
    declared = fields.get("content-length", "")
    length = min(int(declared), _HEAD_LIMIT) if declared.isdigit() else 0
    with contextlib.suppress(OSError):
        while len(body) < length:
            sock.settimeout(_remaining(deadline))
            chunk = sock.recv(length - len(body))
            if not chunk:
                break
            body += chunk
    text = body[:length].decode("utf-8", "replace").strip()
    with contextlib.suppress(ValueError):
        message = json.loads(text)
        if isinstance(message, dict) and message.get("message"):
            return str(message["message"])[:1000]
    return text[:1000] or "no reason given"
