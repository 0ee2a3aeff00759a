"""The one server interceptor: checks the rack token, bounds the streams open at once,
and maps Slipway errors to gRPC codes.

Servicers never set status codes by hand: they raise `client.kernel.errors` exceptions and this
wrapper aborts the call with the mapped code. Anything else becomes INTERNAL and is logged
with its traceback.
"""

from __future__ import annotations

import hmac
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from client.api.grpcerrors import ORIGIN_KEY, status_code
from client.kernel.errors import ResourceExhausted, SlipwayError, Unauthenticated

log = logging.getLogger(__name__)

# Health must answer without a token so a supervisor can probe the service.
OPEN_PREFIXES = ("/grpc.health.v1.Health/",)


# An error message travels in a header, whose size gRPC bounds (16 KiB); a message is
# meant to be read by a person, so it is cut well before that, whatever input it echoes.
MAX_MESSAGE_CHARS = 1000


def bounded(message: str) -> str:
    """`message` cut to MAX_MESSAGE_CHARS characters (ending in `…` when cut)."""
    if len(message) <= MAX_MESSAGE_CHARS:
        return message
    return message[: MAX_MESSAGE_CHARS - 1] + "…"


def _abort(context: grpc.ServicerContext, err: Exception, method: str) -> None:
    # The marker tells the client this status came from Slipway, not from the transport.
    context.set_trailing_metadata(((ORIGIN_KEY, "service"),))
    if isinstance(err, SlipwayError):
        context.abort(status_code(err), bounded(err.message))
    log.exception("unexpected error in %s", method)
    # An OSError's text names the file it failed on: a server path, kept in the log only.
    text = (err.strerror or "") if isinstance(err, OSError) else str(err)
    what = f"{type(err).__name__}: {text}" if text else type(err).__name__
    context.abort(grpc.StatusCode.INTERNAL, bounded(f"internal error: {what}"))


def _wrap_unary(behavior: Callable[..., Any], method: str, authorized: bool) -> Callable[..., Any]:
    def handler(request: Any, context: grpc.ServicerContext) -> Any:
        try:
            if not authorized:
                raise Unauthenticated()
            return behavior(request, context)
        except Exception as err:  # noqa: BLE001 - every error is mapped, none swallowed
            if isinstance(err, grpc.RpcError) and not isinstance(err, SlipwayError):
                raise
            _abort(context, err, method)

    return handler


class StreamSlots:
    """A count of the streams open now, refusing one past `limit`."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open = 0
        self._lock = threading.Lock()

    def take(self) -> None:
        with self._lock:
            if self._open >= self.limit:
                raise ResourceExhausted(
                    f"too many open streams: this service allows {self.limit} at once; "
                    "try again later"
                )
            self._open += 1

    def give(self) -> None:
        with self._lock:
            self._open -= 1

    @property
    def open(self) -> int:
        with self._lock:
            return self._open


def _wrap_stream(
    behavior: Callable[..., Iterator[Any]], method: str, authorized: bool, slots: StreamSlots
) -> Callable[..., Any]:
    def handler(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        taken = False
        try:
            if not authorized:
                raise Unauthenticated()
            slots.take()
            taken = True
            yield from behavior(request, context)
        except Exception as err:  # noqa: BLE001 - every error is mapped, none swallowed
            _abort(context, err, method)
        finally:
            if taken:
                slots.give()

    return handler


def _wrap_client_stream(
    behavior: Callable[..., Any], method: str, authorized: bool, slots: StreamSlots
) -> Callable[..., Any]:
    unary = _wrap_unary(behavior, method, authorized)

    def handler(request: Any, context: grpc.ServicerContext) -> Any:
        try:
            slots.take()
        except ResourceExhausted as err:
            _abort(context, err, method)
        try:
            return unary(request, context)
        finally:
            slots.give()

    return handler


class ServiceInterceptor(grpc.ServerInterceptor):
    """Token check and error mapping for every RPC but health."""

    def __init__(self, token: str, max_streams: int = 256) -> None:
        self._expected = f"Bearer {token}".encode()
        self.streams = StreamSlots(max_streams)

    def _authorized(self, details: grpc.HandlerCallDetails) -> bool:
        for key, value in details.invocation_metadata or ():
            if key == "authorization":
                given = value.encode() if isinstance(value, str) else value
                return hmac.compare_digest(given, self._expected)
        return False

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        method = handler_call_details.method
        handler = continuation(handler_call_details)
        if handler is None or method.startswith(OPEN_PREFIXES):
            return handler
        return _wrapped(handler, method, self._authorized(handler_call_details), self.streams)


def _wrapped(
    handler: grpc.RpcMethodHandler, method: str, authorized: bool, slots: StreamSlots
) -> grpc.RpcMethodHandler:
    """The handler with the token check, the stream bound and error mapping around it."""
    codec: dict[str, Any] = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(
            _wrap_unary(handler.unary_unary, method, authorized), **codec
        )
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(
            _wrap_client_stream(handler.stream_unary, method, authorized, slots), **codec
        )
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(
            _wrap_stream(handler.unary_stream, method, authorized, slots), **codec
        )
    if handler.stream_stream:
        return grpc.stream_stream_rpc_method_handler(
            _wrap_stream(handler.stream_stream, method, authorized, slots), **codec
        )
    return handler
