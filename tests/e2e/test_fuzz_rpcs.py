"""Every RPC of every service of a real rack, fed random and edge-case field values
(hypothesis, built from the protobuf descriptors): only SPEC §8's codes come back, no
error echoes an unbounded input, and every service stays healthy.

Fields that name something to reach (a git URL, a source rack, an image) only take values
that stay on this machine or cannot be reached at all: the fuzzer never sends traffic out.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor as d
from google.protobuf import message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from slipway.archive.v1 import archive_pb2
from slipway.builder.v1 import builder_pb2
from slipway.metadata.v1 import metadata_pb2
from slipway.registry.v1 import registry_pb2

from client.api.channel import open_channel
from client.api.grpcerrors import ORIGIN_KEY
from client.api.rack import reach
from tests.e2e.conftest import RackHandle
from tests.e2e.test_cancel_logs import _library
from tests.e2e.test_followers import _token

pytestmark = pytest.mark.docker

# SPEC §8, plus OK, ALREADY_EXISTS (apps create of an existing app) and CANCELLED /
# DEADLINE_EXCEEDED, which only this test's own deadline produces.
ALLOWED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.DEADLINE_EXCEEDED,
}
HUGE = "B" + "X" * 20_000
EDGE_STRINGS = [
    "",
    " ",
    "\n",
    "a\nb",
    "\x00",
    "é€😀",
    "../../etc/passwd",
    "/etc/passwd",
    "BNOTHEREXXXX",
    "RNOTHEREXXXX",
    "${HOME}",
    "%s%n",
    "web",
    "app-1",
    "a" * 300,
    HUGE,
]
# Values for fields that name a place to reach: loopback ports nothing listens on,
# files that are not there, or nonsense.
PLACES = ["", "127.0.0.1:1", "file:///nonexistent/repo.git", "127.0.0.1:1/x:y", "not a url", HUGE]
PLACE_FIELDS = {"url", "source_host", "image", "host"}
SERVICES = {
    "builder": builder_pb2.DESCRIPTOR.services_by_name["BuilderService"],
    "archive": archive_pb2.DESCRIPTOR.services_by_name["ArchiveService"],
    "metadata": metadata_pb2.DESCRIPTOR.services_by_name["MetadataService"],
    "registry": registry_pb2.DESCRIPTOR.services_by_name["RegistryService"],
}
METHODS = [(name, m) for name, svc in SERVICES.items() for m in svc.methods]

_INT_RANGES = {
    d.FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    d.FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    d.FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    d.FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    d.FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    d.FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
}


def _scalar(field: d.FieldDescriptor) -> st.SearchStrategy[Any]:
    kind = field.type
    if kind == d.FieldDescriptor.TYPE_STRING:
        if field.name in PLACE_FIELDS:
            return st.sampled_from(PLACES)
        return st.one_of(st.sampled_from(EDGE_STRINGS), st.text(max_size=40))
    if kind == d.FieldDescriptor.TYPE_BYTES:
        return st.one_of(st.binary(max_size=2048), st.just(b"\x1f\x8b" + bytes(600)))
    if kind == d.FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if kind in (d.FieldDescriptor.TYPE_DOUBLE, d.FieldDescriptor.TYPE_FLOAT):
        return st.floats(allow_nan=True, allow_infinity=True, width=32)
    if kind == d.FieldDescriptor.TYPE_ENUM:
        known = [v.number for v in field.enum_type.values]
        return st.one_of(st.sampled_from(known), st.integers(-5, 50))
    low, high = _INT_RANGES.get(kind, (-(2**31), 2**31 - 1))
    edges = [v for v in (0, 1, -1, low, high) if low <= v <= high]  # no -1 for unsigned
    return st.one_of(st.sampled_from(edges), st.integers(low, high))


def _message(desc: d.Descriptor, depth: int = 0) -> st.SearchStrategy[Any]:
    cls = message_factory.GetMessageClass(desc)

    @st.composite
    def build(draw: st.DrawFn) -> Any:
        msg = cls()
        for field in desc.fields:
            if not draw(st.booleans()):
                continue
            is_map = field.message_type is not None and field.message_type.GetOptions().map_entry
            if is_map:
                key_field = field.message_type.fields_by_name["key"]
                value_field = field.message_type.fields_by_name["value"]
                entries = draw(
                    st.dictionaries(_scalar(key_field), _scalar(value_field), max_size=3)
                )
                getattr(msg, field.name).update(entries)
            elif field.type == d.FieldDescriptor.TYPE_MESSAGE:
                if depth >= 3:
                    continue
                sub = _message(field.message_type, depth + 1)
                if field.is_repeated:
                    getattr(msg, field.name).extend(draw(st.lists(sub, max_size=3)))
                else:
                    getattr(msg, field.name).CopyFrom(draw(sub))
            elif field.is_repeated:
                getattr(msg, field.name).extend(draw(st.lists(_scalar(field), max_size=3)))
            else:
                setattr(msg, field.name, draw(_scalar(field)))
        return msg

    return build()


class Probe:
    """Channels to every service of the rack, with and without the token."""

    def __init__(self, rack: RackHandle) -> None:
        library = _library(rack)
        info = library.builder.rack()
        front = library.builder.address
        self.addresses = {
            "builder": front,
            "archive": reach(front, info.archive_address),
            "metadata": reach(front, info.metadata_address),
            "registry": reach(front, info.registry_address),
        }
        token, ca = _token(rack), rack.ca
        self.channels = {n: open_channel(a, token, ca=ca) for n, a in self.addresses.items()}
        self.codes: dict[tuple[str, str], int] = {}
        self.anonymous = {
            n: open_channel(a, "wrong-token", ca=ca) for n, a in self.addresses.items()
        }

    def call(
        self, service: str, method: d.MethodDescriptor, requests: list[Any], anon: bool
    ) -> grpc.StatusCode:
        channel = (self.anonymous if anon else self.channels)[service]
        path = f"/{method.containing_service.full_name}/{method.name}"
        out_cls = message_factory.GetMessageClass(method.output_type)
        args = {
            "request_serializer": lambda m: m.SerializeToString(),
            "response_deserializer": out_cls.FromString,
        }
        try:
            if method.client_streaming and method.server_streaming:
                for _ in channel.stream_stream(path, **args)(iter(requests), timeout=10):
                    pass
            elif method.client_streaming:
                channel.stream_unary(path, **args)(iter(requests), timeout=10)
            elif method.server_streaming:
                for _ in channel.unary_stream(path, **args)(requests[0], timeout=10):
                    pass
            else:
                channel.unary_unary(path, **args)(requests[0], timeout=10)
        except grpc.RpcError as err:
            details = err.details() or ""  # type: ignore[attr-defined]
            assert HUGE not in details and len(details) <= 2000, (path, details[:300])
            assert "Traceback" not in details, (path, details)
            code: grpc.StatusCode = err.code()  # type: ignore[attr-defined]
            if code != grpc.StatusCode.DEADLINE_EXCEEDED:
                # Said by the service on purpose, not by the transport (a message or
                # metadata size limit, a crash).
                trailing = dict(err.trailing_metadata() or ())  # type: ignore[attr-defined]
                assert trailing.get(ORIGIN_KEY) == "service", (path, code, details[:300])
            self.codes[(path, code.name)] = self.codes.get((path, code.name), 0) + 1
            return code
        return grpc.StatusCode.OK

    def healthy(self) -> bool:
        for name, channel in self.channels.items():
            stub = health_pb2_grpc.HealthStub(channel)
            reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING, name
        return True

    def close(self) -> None:
        for channel in [*self.channels.values(), *self.anonymous.values()]:
            channel.close()


@pytest.fixture(scope="module")
def probe(rack: RackHandle) -> Iterator[Probe]:
    p = Probe(rack)
    yield p
    for (path, code), count in sorted(p.codes.items()):
        print(f"{path} {code} {count}")
    p.close()


@pytest.mark.parametrize(("service", "method"), METHODS, ids=[f"{s}.{m.name}" for s, m in METHODS])
def test_random_requests_get_only_spec_codes(
    probe: Probe, service: str, method: d.MethodDescriptor
) -> None:
    requests = st.lists(_message(method.input_type), min_size=1, max_size=3)

    @settings(
        max_examples=25,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        database=None,
    )
    @given(requests=requests, anon=st.booleans())
    def run(requests: list[Any], anon: bool) -> None:
        code = probe.call(service, method, requests, anon)
        assert code in ALLOWED, (method.full_name, code)
        if anon:
            assert code == grpc.StatusCode.UNAUTHENTICATED, (method.full_name, code)

    run()
    assert probe.healthy()
