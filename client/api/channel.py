"""gRPC channels to a rack: TLS, the rack's certificate verified against the CA the
client trusts, and the rack token on every call."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

# Large enough for a 1 MiB chunk plus framing, small enough to catch a runaway message.
MAX_MESSAGE = 8 * 1024 * 1024

# How often a client pings an idle connection, so a dead peer or a dropped NAT mapping is
# noticed on long, quiet streams (a followed build's log). Servers accept pings this often
# (services.common.server.server_options): one constant for both sides, or the server
# answers GOAWAY ENHANCE_YOUR_CALM "too_many_pings".
KEEPALIVE_INTERVAL_MS = 30_000

# The largest HTTP/2 frame each side accepts: a 512 KiB chunk travels in one frame instead
# of thirty-two of gRPC core's default 16 KiB, which costs less CPU on either side.
MAX_FRAME = 1024 * 1024

MESSAGE_OPTIONS: list[tuple[str, int]] = [
    ("grpc.max_send_message_length", MAX_MESSAGE),
    ("grpc.max_receive_message_length", MAX_MESSAGE),
    ("grpc.http2.max_frame_size", MAX_FRAME),
]


def channel_options(keepalive_interval_ms: int = KEEPALIVE_INTERVAL_MS) -> list[tuple[str, int]]:
    """Client channel options: message limits and a keepalive ping every interval, with or
    without calls in flight."""
    return [
        *MESSAGE_OPTIONS,
        ("grpc.keepalive_time_ms", keepalive_interval_ms),
        ("grpc.keepalive_permit_without_calls", 1),
        # Keep pinging however long a stream stays quiet (gRPC core's default stops at 2).
        ("grpc.http2.max_pings_without_data", 0),
    ]


CHANNEL_OPTIONS = channel_options()


class _TokenInterceptor(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds `authorization: Bearer <token>` to every call."""

    def __init__(self, token: str) -> None:
        self._header = ("authorization", f"Bearer {token}")

    def _details(self, details: Any) -> Any:
        metadata = list(details.metadata or []) + [self._header]
        return details._replace(metadata=metadata)

    def intercept_unary_unary(
        self, continuation: Callable[..., Any], client_call_details: Any, request: Any
    ) -> Any:
        return continuation(self._details(client_call_details), request)

    def intercept_unary_stream(
        self, continuation: Callable[..., Any], client_call_details: Any, request: Any
    ) -> Any:
        return continuation(self._details(client_call_details), request)

    def intercept_stream_unary(
        self, continuation: Callable[..., Any], client_call_details: Any, request_iterator: Any
    ) -> Any:
        return continuation(self._details(client_call_details), request_iterator)

    def intercept_stream_stream(
        self, continuation: Callable[..., Any], client_call_details: Any, request_iterator: Any
    ) -> Any:
        return continuation(self._details(client_call_details), request_iterator)


def open_channel(
    address: str,
    token: str,
    *,
    ca: bytes | None = None,
    keepalive_interval_ms: int = KEEPALIVE_INTERVAL_MS,
) -> grpc.Channel:
    """A TLS channel to `address` sending `token` with every call (there is no plaintext
    one: a rack refuses it). The server's certificate must be signed by `ca` (PEM; None:
    the system's trusted roots) and name the host of `address`."""
    credentials = grpc.ssl_channel_credentials(root_certificates=ca)
    channel = grpc.secure_channel(
        address, credentials, options=channel_options(keepalive_interval_ms)
    )
    return grpc.intercept_channel(channel, _TokenInterceptor(token))
