"""THE table translating docker-py, requests and engine texts into Slipway errors.

Nothing from docker-py or requests leaves the adapter: `translated()` wraps every call to
the engine and maps what it raises in one place (in the manner of httpx's
`map_exceptions`):

- anything once the call's scope was cancelled → Cancelled `build cancelled`;
- a Slipway error → itself;
- docker `APIError` (the engine answered) → the call's classifier on the engine's text
  and status: NotFound, InvalidArgument, EngineError, or for pushes and pulls the
  registry markers below (`registry unreachable at <host>`);
- docker `DockerException` while fetching the API version, requests transport errors
  and `OSError` → Unavailable `Docker engine unreachable at <host>`;
- another `DockerException` (`NullResource`: no name given) → the classifier, as a 404.

Errors the engine reports inside a stream (`{"error": …}` messages) go through the same
classifiers (`stream_text` extracts the text).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Any

import docker.errors
import requests.exceptions

from client.kernel.errors import (
    Cancelled,
    InvalidArgument,
    NotFound,
    SlipwayError,
    Unavailable,
)
from services.common.docker.types import Cancellable, EngineError

log = logging.getLogger(__name__)

#: Maps the engine's text and HTTP status (0 inside a stream) to the error to raise.
Classifier = Callable[[str, int], SlipwayError]

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


def unreachable(host: str) -> Unavailable:
    """The error for an engine that does not answer at `host`."""
    return Unavailable(f"Docker engine unreachable at {host}")


def engine_text(text: str, status: int = 0) -> SlipwayError:
    """Builds and the builder's pulls: the engine's text as it is."""
    return EngineError(text)


def command_error(command: str, image: str) -> Classifier:
    """A control call on a local image (`docker tag`, `docker rmi`, …): NotFound naming
    the image for a 404, else EngineError `<command> failed: <text>`."""

    def classify(text: str, status: int) -> SlipwayError:
        if status == 404:
            return NotFound.of("image", image)
        return EngineError(f"{command} failed: {text}")

    return classify


def save_error(text: str, status: int) -> SlipwayError:
    """`docker save` of several images: the engine's text names the missing one."""
    if status == 404:
        return NotFound(f"image not found: {text}")
    return EngineError(f"docker save failed: {text}")


def load_error(text: str, status: int) -> SlipwayError:
    """`docker load`: a tar the engine refuses (a 4xx, or its text says invalid) is bad
    input; an engine failure (a 5xx, or no status) is not."""
    if 0 < status < 500 or "invalid" in text:
        return InvalidArgument(f"the engine refused the image tar: {text}")
    return EngineError(f"docker load failed: {text}")


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
    return EngineError(f"push of {reference} failed: {text}")


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
    return EngineError(f"cannot pull {reference}: {text}")


def host_of(reference: str) -> str:
    """The registry host of an image reference, Docker Hub's when it names none."""
    first, slash, _ = reference.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        return first
    return "registry-1.docker.io"


def registry_of(repository: str) -> str:
    """The registry host of a full repository name (`127.0.0.1:7404/app` → `127.0.0.1:7404`)."""
    return repository.split("/", 1)[0]


def stream_text(message: dict[str, Any]) -> str | None:
    """The error text of a decoded stream message, None when it reports no error."""
    if not (message.get("error") or message.get("errorDetail")):
        return None
    detail = message.get("errorDetail") or {}
    return str(message.get("error") or detail.get("message") or "unknown engine error").strip()


def translate(err: Exception, host: str, classify: Classifier) -> Exception:
    """One error raised by docker-py or requests as the Slipway error to raise instead;
    anything else (a bug) comes back unchanged."""
    if isinstance(err, SlipwayError):
        return err
    # APIError first: it is also a requests HTTPError and a DockerException.
    if isinstance(err, docker.errors.APIError):
        return classify(str(err.explanation or err), err.status_code or 0)
    if isinstance(err, docker.errors.DockerException):
        if "fetching server api version" in str(err).lower():
            log.warning("engine at %s: %s", host, err)
            return unreachable(host)
        return classify(str(err), 404 if isinstance(err, docker.errors.NullResource) else 0)
    if isinstance(err, (requests.exceptions.RequestException, OSError)):
        log.warning("engine at %s: %s", host, err)
        return unreachable(host)
    return err


@contextlib.contextmanager
def translated(
    host: str, classify: Classifier = engine_text, scope: Cancellable | None = None
) -> Iterator[None]:
    """Runs a call to the engine at `host`, raising only Slipway errors (see the table
    above); any failure after `scope` was cancelled is the cancellation."""
    try:
        yield
        if scope is not None and scope.cancelled:
            raise Cancelled("build cancelled")
    except Exception as err:
        if scope is not None and scope.cancelled:
            raise Cancelled("build cancelled") from None
        translated_err = translate(err, host, classify)
        if translated_err is err:
            raise
        raise translated_err from None
