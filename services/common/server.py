"""The server factory every service uses: interceptor, health, reflection, graceful stop."""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable, Sequence
from concurrent import futures
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from client.api.channel import KEEPALIVE_INTERVAL_MS, MESSAGE_OPTIONS, open_channel
from client.kernel.errors import SlipwayError, Unavailable
from client.kernel.memory import keep_freed_chunks
from services.common.config import TlsFiles
from services.common.interceptor import ServiceInterceptor
from services.common.logs import configure_logging

log = logging.getLogger(__name__)

# The umask of every service process and of the local-rack supervisor.
PRIVATE_UMASK = 0o077

# Streams (log follows, uploads, exports) a service holds open at once; one more gets
# RESOURCE_EXHAUSTED. Each open stream holds a thread, so the pool has this many plus
# UNARY_THREADS more: unary calls (the builder's own writes, health) always find one.
MAX_STREAMS = 256
UNARY_THREADS = 48

# Pings a client may send early before the server closes the connection with GOAWAY
# ENHANCE_YOUR_CALM "too_many_pings" (gRPC core's default, stated here on purpose).
MAX_PING_STRIKES = 2


def server_options(keepalive_interval_ms: int = KEEPALIVE_INTERVAL_MS) -> list[tuple[str, int]]:
    """Server options whose ping policy accepts clients pinging every `keepalive_interval_ms`
    (client.api.channel.channel_options of the same interval), with or without calls, and
    which ping idle clients as often themselves."""
    return [
        *MESSAGE_OPTIONS,
        ("grpc.keepalive_time_ms", keepalive_interval_ms),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        # The shortest gap between a client's pings the server accepts while no data flows
        # (gRPC core's default is 5 minutes). Half the interval leaves room for timer skew.
        ("grpc.http2.min_ping_interval_without_data_ms", keepalive_interval_ms // 2),
        ("grpc.http2.max_ping_strikes", MAX_PING_STRIKES),
    ]


@dataclass
class Server:
    """A started gRPC server and what goes with it."""

    grpc_server: grpc.Server
    port: int
    health: health.HealthServicer
    service_names: Sequence[str]
    on_stop: Callable[[], None] | None = None
    #: Called as the drain begins (the builder stops claiming builds there).
    on_drain: Callable[[], None] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self, grace: float = 5.0) -> None:
        """Marks every service NOT_SERVING, drains calls for `grace` seconds, then stops."""
        self.health.enter_graceful_shutdown()
        if self.on_drain:
            self.on_drain()
        self.grpc_server.stop(grace).wait()
        if self.on_stop:
            self.on_stop()

    def wait(self) -> None:
        self.grpc_server.wait_for_termination()


def connect(address: str, token: str, tls: TlsFiles | None) -> grpc.Channel:
    """A TLS channel to another service of the rack, verified against the rack's CA."""
    if tls is None:
        raise Unavailable(f"cannot reach {address}: no TLS configuration (SLIPWAY_TLS_CA)")
    return open_channel(address, token, ca=tls.ca)


def build_server(
    *,
    token: str,
    address: str,
    tls: TlsFiles | None,
    register: Callable[[grpc.Server], None],
    service_names: Sequence[str],
    max_streams: int = MAX_STREAMS,
    on_stop: Callable[[], None] | None = None,
    keepalive_interval_ms: int = KEEPALIVE_INTERVAL_MS,
    on_drain: Callable[[], None] | None = None,
) -> Server:
    """Creates, registers and starts a server on `address` (port 0 picks a free one),
    speaking TLS with `tls`: a plaintext client fails its handshake. There is no plaintext
    port: without `tls` nothing starts."""
    if tls is None:
        raise Unavailable("no TLS certificate: every port speaks TLS (SLIPWAY_TLS_CERT)")
    server = grpc.server(
        futures.ThreadPoolExecutor(
            max_workers=max_streams + UNARY_THREADS, thread_name_prefix="rpc"
        ),
        interceptors=[ServiceInterceptor(token, max_streams)],
        options=server_options(keepalive_interval_ms),
    )
    register(server)
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (*service_names, reflection.SERVICE_NAME, health.SERVICE_NAME), server
    )
    credentials = grpc.ssl_server_credentials([(tls.key, tls.cert)])
    port = server.add_secure_port(address, credentials)
    if port == 0:
        raise OSError(f"cannot listen on {address}")
    server.start()
    for name in ("", *service_names):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info("listening on port %d", port)
    return Server(server, port, health_servicer, service_names, on_stop, on_drain)


def serve_until_signalled(server: Server) -> None:
    """Runs until SIGTERM or SIGINT, then stops gracefully."""
    done = threading.Event()

    def handle(signum: int, _frame: object) -> None:
        log.info("signal %d: shutting down", signum)
        done.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    done.wait()
    server.stop()


def run_service(name: str, create: Callable[[], Server], describe: Callable[[Server], str]) -> int:
    """The body of every `python -m services.<name>`: start, log where, serve until
    signalled. A start-up failure is one log line and exit status 1, never a traceback."""
    # Everything a service writes (its database, archives, scratch folders, logs) is its
    # owner's alone: files 0600, folders 0700 (SPEC §6).
    os.umask(PRIVATE_UMASK)
    keep_freed_chunks()  # every service streams chunks: no page faults per chunk
    configure_logging()
    log = logging.getLogger(f"services.{name}")
    try:
        server = create()
    except (SlipwayError, OSError) as err:
        log.error("cannot start: %s", err)
        return 1
    log.info("%s", describe(server))
    serve_until_signalled(server)
    return 0
