"""The interceptor's error mapping never echoes unbounded input, nor an unexpected
error's text (which may hold a server path)."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from client.api.channel import open_channel
from client.kernel.errors import InvalidArgument
from services.common.interceptor import MAX_MESSAGE_CHARS
from services.common.server import Server, build_server
from tests.tls import ca, tls_files

TOKEN = "secret-token"
_IDENTITY = (lambda b: b, lambda b: b)


@pytest.fixture
def server() -> Iterator[Server]:
    def echo(request: bytes, context: grpc.ServicerContext) -> bytes:
        raise InvalidArgument(f"invalid id: {request.decode()}")

    def crash(request: bytes, context: grpc.ServicerContext) -> bytes:
        raise OSError(28, "No space left on device", "/var/lib/slipway/secret/path")

    handlers = {
        "Echo": grpc.unary_unary_rpc_method_handler(echo, *_IDENTITY),
        "Crash": grpc.unary_unary_rpc_method_handler(crash, *_IDENTITY),
    }
    srv = build_server(
        token=TOKEN,
        address="127.0.0.1:0",
        register=lambda s: s.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("test.Errors", handlers),)
        ),
        service_names=["test.Errors"],
        tls=tls_files(),
    )
    yield srv
    srv.stop(0)


def test_a_huge_input_is_not_echoed_whole(server: Server) -> None:
    with open_channel(server.address, TOKEN, ca=ca()) as channel:
        echo = channel.unary_unary("/test.Errors/Echo", *_IDENTITY)
        with pytest.raises(grpc.RpcError) as err:
            echo(b"B" + b"X" * 20_000)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = err.value.details() or ""
    assert details.startswith("invalid id: BXXX") and details.endswith("…")
    assert len(details) == MAX_MESSAGE_CHARS


def test_an_unexpected_error_names_no_server_path(server: Server) -> None:
    with open_channel(server.address, TOKEN, ca=ca()) as channel:
        crash = channel.unary_unary("/test.Errors/Crash", *_IDENTITY)
        with pytest.raises(grpc.RpcError) as err:
            crash(b"")
    assert err.value.code() == grpc.StatusCode.INTERNAL
    assert err.value.details() == "internal error: OSError: No space left on device"
