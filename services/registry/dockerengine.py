"""`ImageEngine` on the Docker engine through the docker SDK.

docker-py and requests errors stop here: everything leaving this module is a
`client.kernel.errors` exception whose message says what failed and where.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests.exceptions

from client.kernel.errors import Internal, InvalidArgument, NotFound, SlipwayError, Unavailable
from client.kernel.streams import CHUNK_SIZE
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
# skopeo texts meaning the engine, not the archive, is at fault.
ENGINE_DOWN = ("cannot connect to the docker daemon", "dial unix", "connection refused")
# How long skopeo may take to load one OCI archive into the engine.
SKOPEO_TIMEOUT = 3600


def push_error(registry: str, reference: str, text: str) -> SlipwayError:
    """The Slipway error for an engine's push error text."""
    lowered = text.lower()
    if any(marker in lowered for marker in UNREACHABLE):
        # The engine's text stays in the log: words like "connection refused" in an
        # UNAVAILABLE message make clients blame the registry *service*'s own address
        # (client.api.grpcerrors treats them as a transport failure).
        log.warning("push of %s: registry %s unreachable: %s", reference, registry, text)
        return Unavailable(f"registry unreachable at {registry}")
    if "does not exist locally" in lowered or "no such image" in lowered:
        return NotFound.of("image", reference)
    if any(marker in lowered for marker in BAD_NAME):
        return InvalidArgument(f"cannot push {reference}: {text}")
    return Internal(f"push of {reference} failed: {text}")


def pull_error(reference: str, text: str, status: int) -> SlipwayError:
    """The Slipway error for an engine's pull error, keeping the engine's text: a missing
    image is NotFound, a bad name InvalidArgument, an unreachable registry Unavailable."""
    lowered = text.lower()
    if any(marker in lowered for marker in UNREACHABLE):
        log.warning("pull of %s: registry unreachable: %s", reference, text)
        return Unavailable(f"cannot pull {reference}: registry unreachable at {host_of(reference)}")
    if status == 404 or any(m in lowered for m in ("not found", "manifest unknown", "not exist")):
        return NotFound(f"cannot pull {reference}: {text}")
    if status == 400 or any(marker in lowered for marker in BAD_NAME):
        return InvalidArgument(f"cannot pull {reference}: {text}")
    return Internal(f"cannot pull {reference}: {text}")


def host_of(reference: str) -> str:
    """The registry host of an image reference, Docker Hub's when it names none."""
    first, slash, _ = reference.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        return first
    return "registry-1.docker.io"


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

    def image_id(self, image: str) -> str | None:
        api = self._api()
        with self._errors("docker inspect"):
            try:
                return str(api.inspect_image(image)["Id"])
            except (docker.errors.NotFound, docker.errors.NullResource):
                return None
            except docker.errors.APIError as err:
                if err.status_code == 400:  # not a valid name: certainly not there
                    return None
                raise Internal(f"docker inspect {image} failed: {err.explanation or err}") from None

    def pull(self, repository: str, tag: str, auth: Mapping[str, str] | None = None) -> None:
        for _event in self.pull_events(repository, tag, auth):
            pass

    def pull_events(
        self, repository: str, tag: str, auth: Mapping[str, str] | None = None
    ) -> Iterator[PushEvent]:
        api = self._api()
        reference = f"{repository}@{tag}" if tag.startswith("sha256:") else f"{repository}:{tag}"
        with self._errors("docker pull"):
            try:
                lines = api.pull(
                    repository,
                    tag=tag,
                    stream=True,
                    decode=True,
                    auth_config=dict(auth) if auth else None,
                )
                for line in lines:
                    if line.get("error") or line.get("errorDetail"):
                        detail = line.get("errorDetail") or {}
                        text = str(detail.get("message") or line.get("error") or "unknown error")
                        raise pull_error(reference, text, 0)
                    progress = line.get("progressDetail") or {}
                    yield PushEvent(
                        status=str(line.get("status") or ""),
                        layer=str(line.get("id") or ""),
                        current=int(progress.get("current") or 0),
                        total=int(progress.get("total") or 0),
                    )
            except docker.errors.APIError as err:
                text = str(err.explanation or err)
                raise pull_error(reference, text, err.status_code or 0) from None

    def entrypoint(self, image: str) -> tuple[str, ...]:
        api = self._api()
        with self._errors("docker inspect"):
            try:
                attrs = api.inspect_image(image)
            except (docker.errors.NotFound, docker.errors.NullResource):
                raise NotFound.of("image", image) from None
            except docker.errors.APIError as err:
                raise Internal(f"docker inspect {image} failed: {err.explanation or err}") from None
        config = attrs.get("Config") or {}
        return tuple(str(part) for part in config.get("Entrypoint") or ())

    def save(self, images: Sequence[str]) -> Iterator[bytes]:
        api = self._api()
        with self._errors("docker save"):
            # docker-py saves one image per call; the engine API takes several, so that
            # layers shared between them are stored once.
            res = api._get(api._url("/images/get"), params={"names": list(images)}, stream=True)
            try:
                api._raise_for_status(res)
            except docker.errors.NotFound as err:
                raise NotFound(f"image not found: {err.explanation or err}") from None
            except docker.errors.APIError as err:
                raise Internal(f"docker save failed: {err.explanation or err}") from None
            try:
                yield from res.iter_content(CHUNK_SIZE)
            finally:
                res.close()

    def load(self, tar: Iterable[bytes]) -> None:
        api = self._api()
        with self._errors("docker load"):
            try:
                for line in api.load_image(iter(tar), quiet=True):
                    if line.get("error") or line.get("errorDetail"):
                        detail = line.get("errorDetail") or {}
                        text = str(detail.get("message") or line.get("error"))
                        raise InvalidArgument(f"the engine refused the image tar: {text}")
            except docker.errors.APIError as err:
                text = str(err.explanation or err)
                if (err.status_code or 500) < 500 or "invalid" in text:
                    raise InvalidArgument(f"the engine refused the image tar: {text}") from None
                raise Internal(f"docker load failed: {text}") from None

    def load_oci(self, archive: Path, name: str) -> None:
        skopeo = shutil.which("skopeo")
        if skopeo is None:
            raise Unavailable("skopeo not found: it loads OCI archives (apt-get install skopeo)")
        argv = [
            skopeo,
            "--insecure-policy",
            "copy",
            "--quiet",
            "--dest-daemon-host",
            self.base_url,
            f"oci-archive:{archive}",
            f"docker-daemon:{name}",
        ]
        # skopeo unpacks the archive into TMPDIR: keep that next to the archive, on disk.
        env = dict(os.environ, TMPDIR=str(archive.parent))
        try:
            done = subprocess.run(
                argv, capture_output=True, text=True, env=env, timeout=SKOPEO_TIMEOUT
            )
        except subprocess.TimeoutExpired:
            raise Unavailable(f"loading {archive.name} took over {SKOPEO_TIMEOUT}s") from None
        if done.returncode != 0:
            text = " ".join(done.stderr.strip().splitlines()[-1:]) or f"status {done.returncode}"
            if any(marker in text.lower() for marker in ENGINE_DOWN):
                log.warning("skopeo: engine at %s: %s", self.base_url, text)
                raise self._unreachable()
            raise InvalidArgument(text)

    def remove(self, image: str) -> None:
        api = self._api()
        with self._errors("docker rmi"):
            try:
                api.remove_image(image)
            except docker.errors.NotFound:
                return
            except docker.errors.APIError as err:
                raise Internal(f"docker rmi {image} failed: {err.explanation or err}") from None

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None
