"""The docker adapter's error translation."""

from __future__ import annotations

import pytest

from client.kernel.errors import Internal, InvalidArgument, NotFound, Unavailable
from services.common.docker.engine import DockerEngine
from services.common.docker.errors import push_error, registry_of


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
