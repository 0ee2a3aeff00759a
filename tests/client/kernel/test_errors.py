"""The one error mapping: service errors keep their class and message through gRPC, and a
transport failure names the service and address that could not be reached."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from client.api.channel import open_channel
from client.api.grpcerrors import iter_rpc, rpc_errors
from client.kernel import errors
from services.common.server import Server, build_server
from tests.helpers import free_port
from tests.tls import ca, tls_files

RAISED = {
    "notfound": errors.NotFound("build not found: BXXXXXXXXXX"),
    "invalid": errors.InvalidArgument("validation errors:\n  bad name"),
    "precondition": errors.FailedPrecondition("build BXXXXXXXXXX is already complete"),
    "unavailable": errors.Unavailable("registry unreachable at 127.0.0.1:1: connection refused"),
}


def _ident(raw: bytes) -> bytes:
    return raw


@pytest.fixture
def server(token: str) -> Iterator[Server]:
    def unary(request: bytes, context: grpc.ServicerContext) -> bytes:
        key = request.decode()
        if key == "boom":
            raise RuntimeError("unexpected")
        raise RAISED[key]

    def stream(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        yield b"first"
        raise RAISED[request.decode()]

    handler = grpc.method_handlers_generic_handler(
        "test.Errors",
        {
            "Unary": grpc.unary_unary_rpc_method_handler(unary, _ident, _ident),
            "Stream": grpc.unary_stream_rpc_method_handler(stream, _ident, _ident),
        },
    )
    srv = build_server(
        token=token,
        address="127.0.0.1:0",
        register=lambda s: s.add_generic_rpc_handlers((handler,)),
        service_names=["test.Errors"],
        tls=tls_files(),
    )
    yield srv
    srv.stop(0)


@pytest.mark.parametrize("key", sorted(RAISED))
def test_service_errors_keep_class_and_message(server: Server, token: str, key: str) -> None:
    channel = open_channel(server.address, token, ca=ca())
    call = channel.unary_unary("/test.Errors/Unary", _ident, _ident)
    with pytest.raises(type(RAISED[key])) as caught, rpc_errors(server.address, "test"):
        call(key.encode())
    assert str(caught.value) == str(RAISED[key])


def test_stream_errors_are_translated_after_data(server: Server, token: str) -> None:
    channel = open_channel(server.address, token, ca=ca())
    call = channel.unary_stream("/test.Errors/Stream", _ident, _ident)
    got: list[bytes] = []
    with pytest.raises(errors.NotFound, match="build not found"):
        for item in iter_rpc(call(b"notfound"), server.address, "test"):
            got.append(item)
    assert got == [b"first"]


def test_unexpected_exception_is_internal(server: Server, token: str) -> None:
    call = open_channel(server.address, token, ca=ca()).unary_unary(
        "/test.Errors/Unary", _ident, _ident
    )
    with pytest.raises(errors.Internal, match="RuntimeError: unexpected"), rpc_errors():
        call(b"boom")


def test_wrong_token_is_unauthenticated(server: Server) -> None:
    call = open_channel(server.address, "wrong", ca=ca()).unary_unary(
        "/test.Errors/Unary", _ident, _ident
    )
    with pytest.raises(errors.Unauthenticated, match="^unauthorized$"), rpc_errors():
        call(b"notfound")


def test_nothing_listening_names_service_and_address(token: str) -> None:
    address = f"127.0.0.1:{free_port()}"
    call = open_channel(address, token, ca=ca()).unary_unary("/test.Errors/Unary", _ident, _ident)
    with pytest.raises(errors.Unavailable) as caught, rpc_errors(address, "metadata"):
        call(b"x", timeout=5)
    assert str(caught.value) == f"metadata service unreachable at {address}"


def test_a_call_the_service_lacks_says_the_rack_is_older(server: Server, token: str) -> None:
    call = open_channel(server.address, token, ca=ca()).unary_unary(
        "/test.Errors/Newer", _ident, _ident
    )
    with pytest.raises(errors.FailedPrecondition) as caught, rpc_errors(server.address, "registry"):
        call(b"x")
    assert str(caught.value) == (
        f"the registry service at {server.address} does not know this call: it runs an "
        "older Slipway than this client "
        "(restart the rack: 'slipway rack stop', then 'slipway rack start')"
    )


def test_a_server_another_ca_signed_is_unverified_in_a_persons_words(
    server: Server, token: str, tmp_path: Path
) -> None:
    from client.cli.localrack.tls import Authority

    other = Authority(tmp_path / "other", "other").ensure()
    call = open_channel(server.address, token, ca=other).unary_unary(
        "/test.Errors/Unary", _ident, _ident
    )
    with pytest.raises(errors.Unverified) as caught, rpc_errors(server.address):
        call(b"notfound")
    assert str(caught.value) == (
        f"cannot verify rack at {server.address}: "
        "its certificate is not signed by the CA this client trusts"
    )
    assert isinstance(caught.value, errors.Unavailable)
    assert str(errors.Unverified("as it is")) == "as it is"
