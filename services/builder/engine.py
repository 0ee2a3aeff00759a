"""The Docker engine, through docker-py's low-level API with decoded streaming, so every
line the engine prints reaches the build log as it happens.

docker-py and requests errors are translated here and nowhere else: an unreachable engine
is Unavailable, a refused or failed build or pull is EngineError with the engine's text.
Cancelling a scope shuts the streaming connection down (the engine then stops the work)
and kills the container a RUN step is executing in.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import socket
import tarfile
import tempfile
import threading
from collections.abc import Iterator
from typing import Any, BinaryIO

import docker
import docker.errors
import docker.utils
import requests

from client.kernel.errors import Cancelled, NotFound, Unavailable
from services.builder.seams import BuildSpec, CancelScope, EngineError, ImageInfo, LineSink

log = logging.getLogger(__name__)

# Control calls (inspect, kill, remove) answer quickly; streams have no read timeout.
CONTROL_TIMEOUT = 120
_RUNNING_IN = re.compile(r"^\s*---> Running in ([0-9a-f]{12,64})\s*$")
_BUILT = re.compile(r"^Successfully built ([0-9a-f]{12,64})\s*$")


@contextlib.contextmanager
def context_tar(context: str, dockerfile: str) -> Iterator[tuple[BinaryIO, str]]:
    """The build context as the engine receives it: every file of `context` exactly as the
    client sent it (the client already applied `.dockerignore`; filtering again here would
    drop files Docker itself sends), symlinks kept, owned by root as the Docker CLI sends
    them. Spooled to disk, never held in memory. A Dockerfile outside the context is added
    under a generated name, as the Docker CLI does. Yields the file and the Dockerfile's
    name inside it."""
    inside = os.path.relpath(dockerfile, context)
    outside = inside == os.pardir or inside.startswith(os.pardir + os.sep)
    name = f".dockerfile.{secrets.token_hex(10)}" if outside else inside

    def as_root(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        return info

    with tempfile.TemporaryFile(prefix="context-", suffix=".tar") as spool:
        with tarfile.open(fileobj=spool, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for entry in sorted(os.listdir(context)):
                tar.add(os.path.join(context, entry), arcname=entry, filter=as_root)
            if outside:
                tar.add(dockerfile, arcname=name, filter=as_root)
        spool.seek(0)
        yield spool, name


class DockerEngine:
    """An ImageEngine on the Docker engine at `host` (a DOCKER_HOST value)."""

    def __init__(self, host: str) -> None:
        self.host = host
        self._lock = threading.Lock()
        self._control: docker.APIClient | None = None

    def close(self) -> None:
        with self._lock:
            if self._control is not None:
                self._control.close()
                self._control = None

    # -- ImageEngine -------------------------------------------------------------------

    def build(self, spec: BuildSpec, on_line: LineSink, scope: CancelScope) -> str:
        dockerfile = os.path.normpath(os.path.join(spec.context, spec.dockerfile))
        image_id = ""
        last_line = ""
        containers: list[str] = []

        def line(text: str) -> None:
            nonlocal last_line
            match = _RUNNING_IN.match(text)
            if match:
                containers.append(match.group(1))
            last_line = text
            on_line(text)

        lines = LineSplitter(line)
        with (
            context_tar(spec.context, dockerfile) as (context, dockerfile_name),
            self._job(scope, containers) as api,
            self._translated(scope),
        ):
            stream = api.build(
                fileobj=context,
                custom_context=True,
                dockerfile=dockerfile_name,
                nocache=spec.nocache,
                rm=True,
                forcerm=True,
                pull=False,
                target=spec.target or None,
                buildargs=dict(spec.buildargs),
                decode=True,
                timeout=None,
            )
            try:
                for message in stream:
                    image_id = _handle(message, lines) or image_id
            finally:
                lines.flush()
        if not image_id:
            match = _BUILT.match(last_line)
            if not match:
                raise EngineError("the engine did not report the built image")
            image_id = match.group(1)
        return image_id

    def pull(self, image: str, on_line: LineSink, scope: CancelScope) -> str:
        repository, tag = docker.utils.parse_repository_tag(image)
        lines = LineSplitter(on_line)
        with self._job(scope, []) as api, self._translated(scope):
            try:
                for message in api.pull(repository, tag=tag or None, stream=True, decode=True):
                    _handle(message, lines)
            finally:
                lines.flush()
        return self.inspect(image).id

    def inspect(self, image: str) -> ImageInfo:
        with self._translated(None):
            try:
                attrs = self._control_api().inspect_image(image)
            except docker.errors.ImageNotFound:
                raise NotFound.of("image", image) from None
        config = attrs.get("Config") or {}
        return ImageInfo(id=str(attrs["Id"]), entrypoint=tuple(config.get("Entrypoint") or ()))

    def remove(self, image: str) -> None:
        with self._translated(None), contextlib.suppress(docker.errors.NotFound):
            self._control_api().remove_image(image)

    # -- plumbing ----------------------------------------------------------------------

    def _control_api(self) -> docker.APIClient:
        with self._lock:
            if self._control is None:
                with self._translated(None):
                    self._control = docker.APIClient(base_url=self.host, timeout=CONTROL_TIMEOUT)
            return self._control

    @contextlib.contextmanager
    def _job(self, scope: CancelScope, containers: list[str]) -> Iterator[docker.APIClient]:
        """A session of its own for one streaming call, so cancelling it can shut down
        exactly its connection (captured by a response hook) and its RUN containers."""
        control = self._control_api()
        api = docker.APIClient(
            base_url=self.host, version=control.api_version, timeout=CONTROL_TIMEOUT
        )
        responses: list[requests.Response] = []

        def capture(response: requests.Response, *args: Any, **kwargs: Any) -> None:
            responses.append(response)
            if scope.cancelled:
                _shutdown(response)

        def abort() -> None:
            for response in responses:
                _shutdown(response)
            for container in containers[-1:]:
                self._kill(container)

        api.hooks["response"].append(capture)
        unregister = scope.on_cancel(abort)
        try:
            yield api
        finally:
            unregister()
            api.close()

    def _kill(self, container: str) -> None:
        """Best effort: the engine also stops the build when its client goes away."""
        control = self._control_api()
        for action in (
            lambda: control.kill(container),
            lambda: control.remove_container(container, force=True),
        ):
            try:
                action()
            except Exception as err:  # noqa: BLE001 - the container may already be gone
                log.debug("cleaning up container %s: %s", container, err)

    @contextlib.contextmanager
    def _translated(self, scope: CancelScope | None) -> Iterator[None]:
        """Maps docker-py and requests errors to Slipway errors; any failure after the
        scope was cancelled is the cancellation."""
        try:
            yield
            if scope is not None and scope.cancelled:
                raise Cancelled("build cancelled")
        except Exception as err:
            if scope is not None and scope.cancelled:
                raise Cancelled("build cancelled") from None
            if isinstance(err, (EngineError, Cancelled, NotFound)):
                raise
            raise self._translate(err) from err

    def _translate(self, err: Exception) -> Exception:
        unreachable = Unavailable(f"Docker engine unreachable at {self.host}")
        if isinstance(err, requests.exceptions.ConnectionError):
            return unreachable
        if isinstance(err, docker.errors.APIError):
            return EngineError(str(err.explanation or err))
        if isinstance(err, docker.errors.DockerException):
            if "fetching server api version" in str(err).lower():
                return unreachable
            return EngineError(str(err))
        if isinstance(err, (requests.exceptions.RequestException, OSError)):
            return unreachable
        return err


def _handle(message: dict[str, Any], lines: LineSplitter) -> str:
    """Sends a decoded engine message's text to `lines`; returns the image id an `aux`
    message carries (else empty); raises EngineError for an `error` message."""
    if "error" in message or "errorDetail" in message:
        detail = message.get("errorDetail") or {}
        text = message.get("error") or detail.get("message") or "unknown engine error"
        raise EngineError(str(text).strip())
    if "stream" in message:
        lines.feed(str(message["stream"]))
    elif "status" in message:
        if not message.get("progressDetail") or not message.get("progress"):
            ident = message.get("id")
            status = str(message["status"])
            lines.flush()
            lines.emit(f"{ident}: {status}" if ident else status)
    aux = message.get("aux")
    if isinstance(aux, dict) and aux.get("ID"):
        return str(aux["ID"])
    return ""


class LineSplitter:
    """Turns output pieces (which the engine cuts anywhere, often sending a line's text
    and its newline apart) into whole lines: split on newlines, a trailing `\\r` stripped,
    nothing sent for the empty part after a final newline."""

    def __init__(self, emit: LineSink) -> None:
        self.emit = emit
        self._partial = ""

    def feed(self, text: str) -> None:
        parts = (self._partial + text).split("\n")
        self._partial = parts.pop()
        for part in parts:
            self.emit(part.rstrip("\r"))

    def flush(self) -> None:
        """Sends an unfinished last line, if any."""
        if self._partial:
            partial, self._partial = self._partial, ""
            self.emit(partial.rstrip("\r"))


def _shutdown(response: requests.Response) -> None:
    """Interrupts a read blocked on `response`'s connection from another thread."""
    fp = getattr(getattr(response.raw, "_fp", None), "fp", None)
    sock = getattr(getattr(fp, "raw", None), "_sock", None)
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(Exception):
        response.close()
