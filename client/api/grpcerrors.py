"""Maps Slipway errors to gRPC status codes and back (the only place that does)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TypeVar

import grpc

from client.kernel.errors import (
    BY_CODE,
    FailedPrecondition,
    Internal,
    SlipwayError,
    Unauthenticated,
    Unavailable,
    Unreachable,
    Unverified,
)

T = TypeVar("T")

# Trailing metadata key a Slipway service sets on every error it raises on purpose; an
# UNAVAILABLE without it comes from the transport (nothing listening, connection lost).
ORIGIN_KEY = "slipway-origin"


def status_code(err: SlipwayError) -> grpc.StatusCode:
    """The gRPC status code for a Slipway error."""
    return getattr(grpc.StatusCode, err.code, grpc.StatusCode.INTERNAL)


def from_rpc_error(err: grpc.RpcError, address: str = "", service: str = "") -> SlipwayError:
    """The Slipway error an RpcError carries, with a useful message for transport failures."""
    code = err.code() if isinstance(err, grpc.Call) else grpc.StatusCode.UNKNOWN
    details = (err.details() if isinstance(err, grpc.Call) else "") or ""
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return Unauthenticated()
    if code == grpc.StatusCode.UNAVAILABLE and not _from_service(err):
        why = tls_failure(details, address)
        if why:
            what = f"{service} service" if service and service != "builder" else "rack"
            return Unverified(what, address or "its address", why)
        return Unreachable(f"{service} service" if service else "rack", address)
    if code == grpc.StatusCode.UNIMPLEMENTED:
        where = f"the {service} service" if service else "the rack"
        where += f" at {address}" if address else ""
        return FailedPrecondition(
            f"{where} does not know this call: it runs an older Slipway than this client "
            "(restart the rack: 'slipway rack stop', then 'slipway rack start')"
        )
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return Unavailable(
            f"{service or 'rack'} did not answer in time" + (f" at {address}" if address else "")
        )
    cls = BY_CODE.get(code.name) if code is not None else None
    if cls is None:
        return Internal(details or f"unexpected error ({code.name if code else 'unknown'})")
    return cls(details or code.name.lower())


# What gRPC core says of a TLS handshake that failed, and what it means to a person.
_TLS_FAILURES = (
    ("Hostname Verification", "its certificate does not name {host}"),
    ("certificate has expired", "its certificate has expired"),
    ("CERTIFICATE_VERIFY_FAILED", "its certificate is not signed by the CA this client trusts"),
    ("WRONG_VERSION_NUMBER", "it does not speak TLS (is it an older Slipway?)"),
    ("handshake failed", "the TLS handshake failed"),
    ("Handshake failed", "the TLS handshake failed"),
)


def tls_failure(details: str, address: str = "") -> str:
    """Why a connection's TLS handshake failed, in a person's words; empty when `details`
    (an UNAVAILABLE's) tells of no TLS failure."""
    host = address.rpartition(":")[0].strip("[]") or "the address it was reached at"
    for marker, why in _TLS_FAILURES:
        if marker in details:
            return why.format(host=host)
    return ""


def _from_service(err: grpc.RpcError) -> bool:
    """Whether a Slipway service raised this error (rather than the transport)."""
    if not isinstance(err, grpc.Call):
        return False
    try:
        trailers = err.trailing_metadata() or ()
    except Exception:  # noqa: BLE001 - no trailers means not from a service
        return False
    return any(key == ORIGIN_KEY for key, _ in trailers)


@contextlib.contextmanager
def rpc_errors(address: str = "", service: str = "") -> Iterator[None]:
    """Turns any RpcError raised inside the block into the matching SlipwayError."""
    try:
        yield
    except grpc.RpcError as err:
        raise from_rpc_error(err, address, service) from None


def iter_rpc(stream: Iterator[T], address: str = "", service: str = "") -> Iterator[T]:
    """Iterates a response stream, translating RpcErrors like `rpc_errors`."""
    with rpc_errors(address, service):
        yield from stream
