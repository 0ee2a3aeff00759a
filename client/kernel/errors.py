"""The one exception hierarchy of Slipway, shared by every service and the client.

Domain code raises these; `client.api.grpcerrors` maps them to gRPC status codes on the way
out of a service and back into the same classes in the client. This module imports no
gRPC so domain cores can use it.
"""

from __future__ import annotations


class SlipwayError(Exception):
    """Base of every error a user may see; `str(err)` is the message shown after `ERROR: `."""

    code = "INTERNAL"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InvalidArgument(SlipwayError):
    """Bad input: a name, flag value, manifest or archive."""

    code = "INVALID_ARGUMENT"


class NotFound(SlipwayError):
    """An unknown app, build, release or archive."""

    code = "NOT_FOUND"

    @classmethod
    def of(cls, kind: str, ident: str) -> NotFound:
        """The standard `<kind> not found: <id>` error."""
        return cls(f"{kind} not found: {ident}")

    @classmethod
    def no_app(cls, app: str) -> NotFound:
        """Building, deploying, importing, copying into or changing the env of an app that
        does not exist: nothing creates an app but `slipway apps create`, and this says so."""
        return cls(f"app not found: {app} (create it with: slipway apps create {app})")


class AlreadyExists(SlipwayError):
    """Something with that name is already there."""

    code = "ALREADY_EXISTS"


class FailedPrecondition(SlipwayError):
    """The request is valid but the target is in the wrong state."""

    code = "FAILED_PRECONDITION"


class Unauthenticated(SlipwayError):
    """No token, or a wrong one."""

    code = "UNAUTHENTICATED"

    def __init__(self, message: str = "unauthorized") -> None:
        super().__init__(message)


class Unavailable(SlipwayError):
    """A dependency (engine, registry, database, service) could not be reached."""

    code = "UNAVAILABLE"


class Unreachable(Unavailable):
    """Nothing answered at `address`: `what` (the rack, or one of its services) does not
    run there, or the network does not reach it."""

    def __init__(self, what: str, address: str = "") -> None:
        super().__init__(f"{what} unreachable" + (f" at {address}" if address else ""))
        self.what = what
        self.address = address


class Unverified(Unavailable):
    """A peer's TLS certificate did not verify: `what` at `address`, and why. Made from a
    message alone (as code rewording an error does), the message is kept as it is."""

    def __init__(self, what: str, address: str = "", why: str = "") -> None:
        super().__init__(f"cannot verify {what} at {address}: {why}" if address else what)
        self.what = what
        self.address = address
        self.why = why


class Cancelled(SlipwayError):
    """The operation was cancelled."""

    code = "CANCELLED"


class ResourceExhausted(SlipwayError):
    """A limit was reached: too many streams, a full disk, a size limit. The message says
    which limit."""

    code = "RESOURCE_EXHAUSTED"


class Internal(SlipwayError):
    """A bug or an unexpected failure; details are in the service's log."""

    code = "INTERNAL"


BY_CODE: dict[str, type[SlipwayError]] = {
    cls.code: cls
    for cls in (
        InvalidArgument,
        NotFound,
        AlreadyExists,
        FailedPrecondition,
        Unauthenticated,
        Unavailable,
        Cancelled,
        ResourceExhausted,
        Internal,
    )
}
