"""The server factory every service uses: interceptor, health, reflection, graceful stop."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Sequence
from concurrent import futures
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from client.channel import CHANNEL_OPTIONS
from services.common.interceptor import ServiceInterceptor

log = logging.getLogger(__name__)


@dataclass
class Server:
    """A started gRPC server and what goes with it."""

    grpc_server: grpc.Server
    port: int
    health: health.HealthServicer
    service_names: Sequence[str]
    on_stop: Callable[[], None] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self, grace: float = 5.0) -> None:
        """Marks every service NOT_SERVING, drains calls for `grace` seconds, then stops."""
        self.health.enter_graceful_shutdown()
        self.grpc_server.stop(grace).wait()
        if self.on_stop:
            self.on_stop()

    def wait(self) -> None:
        self.grpc_server.wait_for_termination()


def build_server(
    *,
    token: str,
    address: str,
    register: Callable[[grpc.Server], None],
    service_names: Sequence[str],
    max_workers: int = 64,
    on_stop: Callable[[], None] | None = None,
) -> Server:
    """Creates, registers and starts a server on `address` (port 0 picks a free one)."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="rpc"),
        interceptors=[ServiceInterceptor(token)],
        options=CHANNEL_OPTIONS,
        maximum_concurrent_rpcs=max_workers - 4,
    )
    register(server)
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (*service_names, reflection.SERVICE_NAME, health.SERVICE_NAME), server
    )
    port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot listen on {address}")
    server.start()
    for name in ("", *service_names):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info("listening on port %d", port)
    return Server(server, port, health_servicer, service_names, on_stop)


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


def configure_logging(level: str = "INFO") -> None:
    """Log records to stderr with time, logger and (when set) the build id."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


class BuildLogAdapter(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Carries the build id on every record made while handling a build."""

    def process(self, msg, kwargs):  # type: ignore[no-untyped-def]
        return f"[{self.extra['build']}] {msg}", kwargs  # type: ignore[index]
