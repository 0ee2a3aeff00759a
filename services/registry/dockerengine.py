"""`ImageEngine` on the Docker engine through the docker SDK.

docker-py and requests errors stop here: everything leaving this module is a
`client.errors` exception whose message says what failed and where.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator, Mapping
from typing import Any

import docker
import docker.errors
import requests.exceptions

from client.errors import Internal, InvalidArgument, NotFound, SlipwayError, Unavailable
from services.registry.engine import PushEvent

log = logging.getLogger(__name__)

# Seconds the SDK waits for the engine's next bytes; a push can sit quiet while the
# registry commits a large layer, so this is generous.
ENGINE_TIMEOUT = 300

# Engine texts meaning the registry could not be reached at all.
UNREACHABLE = (
    "connection refused",
    "no such host",
    "i/o timeout",
    "dial tcp",
    "network is unreachable",
    "no route to host",
    "connection reset",
    "tls handshake timeout",
    "server gave http response to https client",
    "client.timeout exceeded",
)
BAD_NAME = ("invalid reference format", "repository name must", "invalid tag format")


def push_error(registry: str, reference: str, text: str) -> SlipwayError:
    """The Slipway error for an engine's push error text."""
    lowered = text.lower()
    if any(marker in lowered for marker in UNREACHABLE):
        # The engine's text stays in the log: words like "connection refused" in an
        # UNAVAILABLE message make clients blame the registry *service*'s own address
        # (client.grpcerrors treats them as a transport failure).
        log.warning("push of %s: registry %s unreachable: %s", reference, registry, text)
        return Unavailable(f"registry unreachable at {registry}")
    if "does not exist locally" in lowered or "no such image" in lowered:
        return NotFound.of("image", reference)
    if any(marker in lowered for marker in BAD_NAME):
        return InvalidArgument(f"cannot push {reference}: {text}")
    return Internal(f"push of {reference} failed: {text}")


def registry_of(repository: str) -> str:
    """The registry host of a full repository name (`127.0.0.1:7404/app` → `127.0.0.1:7404`)."""
    return repository.split("/", 1)[0]


class DockerEngine:
    """The Docker engine at `base_url`, connected on first use so the service starts (and
    reports Unavailable per call) while the engine is down."""

    def __init__(self, base_url: str, timeout: int = ENGINE_TIMEOUT) -> None:
        self.base_url = base_url
        self._timeout = timeout
        self._client: docker.DockerClient | None = None
        self._lock = threading.Lock()

    def _api(self) -> Any:
        with self._lock:
            if self._client is None:
                try:
                    self._client = docker.DockerClient(
                        base_url=self.base_url, version="auto", timeout=self._timeout
                    )
                except docker.errors.DockerException as err:
                    log.warning("engine at %s: %s", self.base_url, err)
                    raise self._unreachable() from None
            return self._client.api

    def _unreachable(self) -> Unavailable:
        return Unavailable(f"Docker engine unreachable at {self.base_url}")

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        """Translates transport failures; callers handle the engine's own API errors."""
        try:
            yield
        except (
            requests.exceptions.ConnectionError,
            requests.exceptions.ChunkedEncodingError,
            requests.exceptions.Timeout,
        ) as err:
            log.warning("%s: engine at %s: %s", what, self.base_url, err)
            raise self._unreachable() from None

    def tag(self, image: str, repository: str, tag: str) -> None:
        api = self._api()
        with self._errors("docker tag"):
            try:
                ok = api.tag(image, repository, tag=tag, force=True)
            except docker.errors.NotFound:
                raise NotFound.of("image", image) from None
            except docker.errors.APIError as err:
                raise Internal(f"docker tag {image} failed: {err.explanation or err}") from None
        if not ok:
            raise Internal(f"docker tag {image} {repository}:{tag} failed")

    def push(
        self, repository: str, tag: str, auth: Mapping[str, str] | None = None
    ) -> Iterator[PushEvent]:
        api = self._api()
        reference = f"{repository}:{tag}"
        with self._errors("docker push"):
            try:
                lines = api.push(
                    repository,
                    tag=tag,
                    stream=True,
                    decode=True,
                    auth_config=dict(auth) if auth else None,
                )
                for line in lines:
                    yield self._event(line, repository, reference)
            except docker.errors.APIError as err:
                text = str(err.explanation or err)
                raise push_error(registry_of(repository), reference, text) from None

    def _event(self, line: dict[str, Any], repository: str, reference: str) -> PushEvent:
        if line.get("error") or line.get("errorDetail"):
            detail = line.get("errorDetail") or {}
            text = str(detail.get("message") or line.get("error") or "unknown error")
            raise push_error(registry_of(repository), reference, text)
        aux = line.get("aux") or {}
        if aux.get("Digest"):
            return PushEvent(digest=str(aux["Digest"]))
        progress = line.get("progressDetail") or {}
        return PushEvent(
            status=str(line.get("status") or ""),
            layer=str(line.get("id") or ""),
            current=int(progress.get("current") or 0),
            total=int(progress.get("total") or 0),
        )

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None
