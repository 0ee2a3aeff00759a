"""The Docker adapter's one error table: engine texts and docker-py/requests errors."""

from __future__ import annotations

from typing import Any

import pytest

from client.kernel.errors import Cancelled, Internal, InvalidArgument, NotFound, Unavailable
from services.common.docker.engine import DockerEngine
from services.common.docker.errors import push_error, registry_of
from services.common.docker.types import EngineError


def test_unreachable_registry_texts_become_unavailable() -> None:
    for text in (
        'Get "http://127.0.0.1:1/v2/": dial tcp 127.0.0.1:1: connect: connection refused',
        'Get "https://reg.example:5000/v2/": dial tcp: lookup reg.example: no such host',
        'Get "https://10.0.0.1/v2/": net/http: TLS handshake timeout',
    ):
        err = push_error("reg:5000", "reg:5000/app:t", text)
        assert isinstance(err, Unavailable)
        assert str(err) == "registry unreachable at reg:5000"


def test_other_push_errors_keep_the_engine_text() -> None:
    denied = "denied: requested access to the resource is denied"
    err = push_error("reg", "reg/app:t", denied)
    assert isinstance(err, Internal)
    assert str(err) == f"push of reg/app:t failed: {denied}"
    assert isinstance(push_error("reg", "reg/app:t", "invalid reference format"), InvalidArgument)
    missing = push_error("reg", "reg/app:t", "An image does not exist locally with the tag: r/a")
    assert isinstance(missing, NotFound) and str(missing) == "image not found: reg/app:t"


def test_registry_of() -> None:
    assert registry_of("127.0.0.1:7404/org/app") == "127.0.0.1:7404"


def test_unreachable_engine_is_unavailable_naming_it() -> None:
    engine = DockerEngine("unix:///nonexistent/slipway/docker.sock")
    message = "Docker engine unreachable at unix:///nonexistent/slipway/docker.sock"
    with pytest.raises(Unavailable, match=message):
        engine.tag("busybox", "reg/app", "t")
    with pytest.raises(Unavailable, match=message):
        list(engine.push("reg/app", "t"))


# -- the one table: docker-py and requests errors --------------------------------------


HOST = "unix:///run/test.sock"


def _api_error(status: int, explanation: str) -> Exception:
    import docker.errors
    import requests

    response = requests.Response()
    response.status_code = status
    cls = docker.errors.NotFound if status == 404 else docker.errors.APIError
    return cls(f"{status} error", response=response, explanation=explanation)


def _raised(err: Exception, classify: Any = None, scope: Any = None) -> BaseException:
    from services.common.docker.errors import engine_text, translated

    with pytest.raises(Exception) as caught:
        with translated(HOST, classify or engine_text, scope):
            raise err
    return caught.value


def test_transport_failures_are_the_engine_unreachable() -> None:
    import docker.errors
    import requests

    for err in (
        requests.exceptions.ConnectionError("refused"),
        requests.exceptions.ChunkedEncodingError("cut"),
        requests.exceptions.ReadTimeout("slow"),
        FileNotFoundError("no socket"),
        docker.errors.DockerException("Error while fetching server API version: boom"),
    ):
        got = _raised(err)
        assert isinstance(got, Unavailable), err
        assert str(got) == f"Docker engine unreachable at {HOST}"


def test_api_errors_go_through_the_call_classifier() -> None:
    from services.common.docker.errors import command_error, load_error, save_error

    failed = _raised(_api_error(500, "disk full"))
    assert type(failed) is EngineError and str(failed) == "disk full"
    assert isinstance(failed, Internal)  # INTERNAL on the wire, as before
    missing = _raised(_api_error(404, "No such image: x"), command_error("docker tag", "x"))
    assert isinstance(missing, NotFound) and str(missing) == "image not found: x"
    tagging = _raised(_api_error(500, "oops"), command_error("docker tag", "x"))
    assert isinstance(tagging, EngineError) and str(tagging) == "docker tag failed: oops"
    saved = _raised(_api_error(404, "reference does not exist"), save_error)
    assert isinstance(saved, NotFound) and str(saved) == "image not found: reference does not exist"
    refused = _raised(_api_error(400, "unexpected EOF"), load_error)
    assert isinstance(refused, InvalidArgument)
    assert str(refused) == "the engine refused the image tar: unexpected EOF"
    assert isinstance(_raised(_api_error(500, "engine broke"), load_error), EngineError)


def test_a_missing_name_is_not_found_and_bugs_pass_unchanged() -> None:
    import docker.errors

    from services.common.docker.errors import command_error

    classify = command_error("docker inspect", "web")
    assert isinstance(_raised(docker.errors.NullResource("no name"), classify), NotFound)
    bug = KeyError("Id")
    assert _raised(bug) is bug
    own = InvalidArgument("mine")
    assert _raised(own) is own


def test_any_failure_after_a_cancel_is_the_cancellation() -> None:
    from services.builder.seams import CancelScope

    scope = CancelScope()
    scope.cancel()
    got = _raised(OSError("socket shut down"), scope=scope)
    assert isinstance(got, Cancelled) and str(got) == "build cancelled"


def test_pull_errors_keep_the_engine_text() -> None:
    from services.common.docker.errors import pull_error

    down = pull_error("reg:5000/app:t", "dial tcp 127.0.0.1:1: connect: connection refused", 0)
    assert isinstance(down, Unavailable)
    assert str(down) == "cannot pull reg:5000/app:t: registry unreachable at reg:5000"
    gone = pull_error("reg:5000/app:t", "manifest unknown", 0)
    assert isinstance(gone, NotFound)
    assert str(gone) == "cannot pull reg:5000/app:t: manifest unknown"
    assert isinstance(pull_error("x", "invalid reference format", 0), InvalidArgument)
    assert isinstance(pull_error("x", "denied", 500), EngineError)


def test_stream_text() -> None:
    from services.common.docker.errors import stream_text

    assert stream_text({"status": "Pushing"}) is None
    assert stream_text({"error": "boom\n"}) == "boom"
    assert stream_text({"errorDetail": {"message": "detail"}}) == "detail"
