"""Servers accept the keepalive pings clients send, so a long quiet stream stays open.

gRPC's default server policy accepts a ping without data only every 5 minutes and closes
the connection (GOAWAY ENHANCE_YOUR_CALM "too_many_pings") after two early ones; clients
ping every KEEPALIVE_INTERVAL_MS. The live tests use a 1 s interval on both sides."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest

from client.api.channel import KEEPALIVE_INTERVAL_MS, channel_options, open_channel
from services.common.server import Server, build_server, server_options
from tests.tls import ca, tls_files

INTERVAL_MS = 1_000
# Longer than three client pings: the default policy's strikes are used up by then.
IDLE_SECONDS = 3.5
METHOD = "/test.Quiet/Wait"


def _option(options: list[tuple[str, int]], name: str) -> int:
    values = dict(options)
    assert name in values, f"{name} missing from {options}"
    return values[name]


@pytest.mark.parametrize("interval_ms", [KEEPALIVE_INTERVAL_MS, INTERVAL_MS])
def test_the_server_accepts_pings_as_often_as_the_client_sends_them(interval_ms: int) -> None:
    client = channel_options(interval_ms)
    server = server_options(interval_ms)
    ping_every = _option(client, "grpc.keepalive_time_ms")
    assert ping_every == interval_ms
    assert _option(server, "grpc.http2.min_ping_interval_without_data_ms") <= ping_every
    assert _option(server, "grpc.keepalive_permit_without_calls") == 1
    assert _option(client, "grpc.keepalive_permit_without_calls") == 1
    assert _option(server, "grpc.http2.max_ping_strikes") >= 1


def test_the_default_options_share_one_interval() -> None:
    assert _option(channel_options(), "grpc.keepalive_time_ms") == KEEPALIVE_INTERVAL_MS
    assert (
        _option(server_options(), "grpc.http2.min_ping_interval_without_data_ms")
        <= KEEPALIVE_INTERVAL_MS
    )


class _Quiet:
    """A server-streaming RPC: one message at once, then silence until released."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def wait(self, request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        yield b"started"
        # Bounded, so a test that never releases it still ends.
        if self.release.wait(timeout=30):
            yield b"done"

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(
            "test.Quiet", {"Wait": grpc.unary_stream_rpc_method_handler(self.wait)}
        )


@pytest.fixture
def quiet() -> Iterator[_Quiet]:
    servicer = _Quiet()
    yield servicer
    servicer.release.set()


def _hold_idle(call: grpc.Call, seconds: float) -> bool:
    """Keeps the stream quiet for `seconds`; False as soon as it stops being active."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not call.is_active():
            return False
        time.sleep(0.1)
    return call.is_active()


def test_a_quiet_stream_outlives_several_pings_with_the_slipway_policy(
    quiet: _Quiet, token: str
) -> None:
    server: Server = build_server(
        token=token,
        address="127.0.0.1:0",
        register=lambda s: s.add_generic_rpc_handlers((quiet.handler(),)),
        service_names=[],
        keepalive_interval_ms=INTERVAL_MS,
        tls=tls_files(),
    )
    channel = open_channel(server.address, token, keepalive_interval_ms=INTERVAL_MS, ca=ca())
    try:
        call = channel.unary_stream(METHOD)(b"")
        assert next(call) == b"started"
        assert _hold_idle(call, IDLE_SECONDS), f"stream closed while idle: {call.details()}"
        quiet.release.set()
        assert list(call) == [b"done"]
        assert call.code() == grpc.StatusCode.OK
    finally:
        channel.close()
        server.stop(grace=0)


def test_the_default_server_policy_closes_the_same_quiet_stream(quiet: _Quiet) -> None:
    """Without Slipway's policy the same client is sent away: the check above can fail."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((quiet.handler(),))
    files = tls_files()
    port = server.add_secure_port(
        "127.0.0.1:0", grpc.ssl_server_credentials([(files.key, files.cert)])
    )
    server.start()
    channel = open_channel(
        f"127.0.0.1:{port}", "unused", keepalive_interval_ms=INTERVAL_MS, ca=ca()
    )
    try:
        call = channel.unary_stream(METHOD)(b"")
        assert next(call) == b"started"
        # The next message would come only when released (never here): the read ends with
        # the connection, or with the servicer's own 30 s bound, which would fail below.
        with pytest.raises(grpc.RpcError) as raised:
            next(call)
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE, raised.value
        assert "too many pings" in (raised.value.details() or "").lower(), raised.value
    finally:
        channel.close()
        server.stop(grace=0)
