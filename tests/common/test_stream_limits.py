"""Fan-out is bounded: past a service's stream limit new streams get RESOURCE_EXHAUSTED
with a message, while open streams, unary calls and health go on (SPEC §6)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from client.api.channel import open_channel
from services.common.server import Server, build_server
from tests.tls import ca, tls_files

TOKEN = "secret-token"
_IDENTITY = (lambda b: b, lambda b: b)


@pytest.fixture
def server() -> Iterator[tuple[Server, threading.Event]]:
    release = threading.Event()

    def hold(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        yield b"open"
        while not release.is_set() and context.is_active():
            release.wait(0.05)
        yield b"done"

    def ping(request: bytes, context: grpc.ServicerContext) -> bytes:
        return b"pong"

    handlers = {
        "Hold": grpc.unary_stream_rpc_method_handler(hold, *_IDENTITY),
        "Ping": grpc.unary_unary_rpc_method_handler(ping, *_IDENTITY),
    }

    def register(s: grpc.Server) -> None:
        s.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Limits", handlers),))

    srv = build_server(
        token=TOKEN,
        address="127.0.0.1:0",
        register=register,
        service_names=["test.Limits"],
        max_streams=3,
        tls=tls_files(),
    )
    yield srv, release
    release.set()
    srv.stop(0)


def test_streams_past_the_limit_are_refused_and_the_rest_goes_on(
    server: tuple[Server, threading.Event],
) -> None:
    srv, release = server
    channel = open_channel(srv.address, TOKEN, ca=ca())
    hold = channel.unary_stream("/test.Limits/Hold", *_IDENTITY)
    ping = channel.unary_unary("/test.Limits/Ping", *_IDENTITY)
    streams = [hold(b"") for _ in range(3)]
    assert [next(s) for s in streams] == [b"open"] * 3

    refused = hold(b"")
    with pytest.raises(grpc.RpcError) as err:
        next(refused)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "too many open streams" in (err.value.details() or "")
    assert "3 at once" in (err.value.details() or "")

    assert [ping(b"") for _ in range(20)] == [b"pong"] * 20
    health = health_pb2_grpc.HealthStub(channel)
    status = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status
    assert status == health_pb2.HealthCheckResponse.SERVING

    streams[0].cancel()  # a client that goes gives its slot back
    again = hold(b"")
    for _ in range(100):
        try:
            assert next(again) == b"open"
            break
        except grpc.RpcError as retry:
            assert retry.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            again = hold(b"")
            threading.Event().wait(0.05)
    else:
        pytest.fail("the slot of a cancelled stream was never given back")

    release.set()
    assert list(streams[1]) == [b"done"]
    channel.close()
