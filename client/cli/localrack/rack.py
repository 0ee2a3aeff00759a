"""Starting, stopping and inspecting a rack on this machine.

A local rack is the Docker engine (shared by every local rack, started when none answers),
its own Docker Distribution registry, and the four services, each its own process. Ports
follow from one base: builder = base, archive = base+1, metadata = base+2, registry
service = base+3, Distribution registry = base+4. Everything else lives in the rack's data
folder: `token`, `run/*.pid`, `logs/*.log`, and one folder per part.

A rack has one or more builders sharing its queue: `builder-1` is the front door at the
base port (its files keep the part's name, `builder`); `builder-N` (`--builders`,
`add-builder`) listens on a free port and may build on another engine. `builders.json`
records each one's address and engine, so a rack started again brings back all of them.

Every part speaks TLS with a certificate from the rack's own CA (`tls/`, made at the first
start). Where the parts are is `layout`; the rack's registry and the parts' TLS settings
are `registry`; the CA is `tls`.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from rich.console import Console

from client.api.builder import BuilderClient
from client.api.channel import open_channel
from client.cli.config import ClientConfig, RackEntry
from client.cli.localrack import engine
from client.cli.localrack.layout import (
    DEFAULT_PORT,
    LOOPBACK,
    MAX_BUILDERS,
    SERVICES,
    WILDCARDS,
    BuilderSlot,
    Layout,
    check_advertise,
    check_archives,
    check_bindable,
    check_database,
    check_listen,
    check_registry,
    default_data,
    ecr_host,
    join_host_port,
    port_of,
    port_taken,
    record_builders,
    recorded_builders,
)
from client.cli.localrack.registry import (
    registry_answers,
    registry_config,
    registry_tls,
    tls_env,
    trust_registry,
)
from client.cli.localrack.tls import Authority
from client.kernel import types
from client.kernel.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    SlipwayError,
    Unavailable,
)
from client.kernel.types import BUILDKIT, ENGINE_BUILDERS

START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


@contextlib.contextmanager
def _builders_locked(layout: Layout) -> Iterator[None]:
    """Holds the rack's builder lock: one `rack start` or `add-builder` at a time picks
    builder numbers and starts them, so no two live builders share a name."""
    lock = layout.data / "run" / "builders.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        yield


def _free_address(layout: Layout) -> str:
    """A free port on the rack's listen address, as this machine reaches it."""
    family = socket.AF_INET6 if ":" in layout.listen else socket.AF_INET
    with socket.socket(family) as s:
        s.bind((layout.listen, 0))
        return join_host_port(layout.local_host, s.getsockname()[1])


def _layout_of(name: str) -> Layout:
    entry = ClientConfig.load().racks.get(name)
    if entry is None or not entry.local:
        raise NotFound(f"rack not found: {name} (no local rack of that name; see 'slipway racks')")
    return Layout.of(entry)


# What the supervisor and the parts it starts create is their owner's alone (SPEC §6):
# files 0600, folders 0700; the same value as services.common.server.PRIVATE_UMASK.
PRIVATE_UMASK = 0o077


def _private(layout: Layout) -> None:
    """Makes the data folder and its first level (the token, logs, pid files, the
    database; what an older rack left open too) its owner's alone, and sets the umask the
    rack's processes inherit, so whatever they create later is private as well."""
    os.umask(PRIVATE_UMASK)
    layout.data.mkdir(parents=True, exist_ok=True)
    paths = [layout.data, *layout.data.iterdir()]
    paths += [p for folder in ("logs", "run", "metadata") for p in (layout.data / folder).glob("*")]
    for path in paths:
        if path.is_symlink():
            continue
        mode = path.stat().st_mode & 0o777
        private = 0o700 if path.is_dir() else mode & 0o700
        if mode != private:
            os.chmod(path, private)


def _token(layout: Layout) -> str:
    """The rack's token, generated at first start and kept readable by the owner alone."""
    if layout.token_file.exists():
        return layout.token_file.read_text().strip()
    layout.data.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    fd = os.open(layout.token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(token + "\n")
    return token


def _read_pid(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None


def _alive(pid: int | None, marker: str) -> bool:
    """Whether `pid` runs and is ours (its command line mentions `marker`), not a reused pid."""
    if not pid:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return False
    return marker in cmdline


def _marker(part: str, layout: Layout) -> str:
    return "docker-registry" if part == "distribution" else f"services.{part}"


def _port_free(address: str) -> bool:
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, int(port)))
        except OSError:
            return False
    return True


def _check_port(part: str, layout: Layout) -> None:
    """FailedPrecondition when `part` does not run and another program holds its port
    (checked for every part before anything starts, and again as each starts)."""
    running = _alive(_read_pid(layout.pidfile(part)), _marker(part, layout))
    if not running and not _port_free(layout.bind(part)):
        raise port_taken(layout, part)


def _healthy(address: str, ca: bytes, timeout: float = 2.0) -> bool:
    """Whether the part at `address` answers its health check over TLS, verified against
    the rack's CA."""
    channel = grpc.secure_channel(address, grpc.ssl_channel_credentials(root_certificates=ca))
    try:
        stub = health_pb2_grpc.HealthStub(channel)
        # types-grpcio-health-checking's HealthStub declares no methods; Check is there.
        resp = stub.Check(  # type: ignore[attr-defined]
            health_pb2.HealthCheckRequest(service=""), timeout=timeout
        )
        return bool(resp.status == health_pb2.HealthCheckResponse.SERVING)
    except grpc.RpcError:
        return False
    finally:
        channel.close()


def _tail(path: Path, lines: int = 8) -> str:
    try:
        text = path.read_text(errors="replace").rstrip().splitlines()
    except OSError:
        return ""
    return "\n".join(text[-lines:])


def _wait(
    check: Callable[[], bool], proc: subprocess.Popen[bytes], part: str, layout: Layout
) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if check():
            return
        if proc.poll() is not None:
            log = layout.logfile(part)
            raise Unavailable(f"{part} exited at start-up (see {log}):\n{_tail(log)}")
        time.sleep(0.2)
    raise Unavailable(
        f"{part} did not become healthy within {START_TIMEOUT:.0f}s (see {layout.logfile(part)})"
    )


def _spawn(
    part: str, argv: list[str], env: dict[str, str], layout: Layout
) -> subprocess.Popen[bytes]:
    layout.logfile(part).parent.mkdir(parents=True, exist_ok=True)
    layout.pidfile(part).parent.mkdir(parents=True, exist_ok=True)
    with open(layout.logfile(part), "ab") as log:
        proc = subprocess.Popen(
            argv,
            env=env,
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=layout.data,
        )
    layout.pidfile(part).write_text(f"{proc.pid}\n")
    return proc


def _service_env(
    part: str,
    layout: Layout,
    token: str,
    docker_host: str,
    builder: BuilderSlot | None = None,
) -> dict[str, str]:
    """The environment of one service of the rack; `builder` says which builder when
    `part` is `builder` (default builder-1)."""
    env = dict(os.environ)
    if env.get("GRPC_VERBOSITY") == "NONE":
        del env["GRPC_VERBOSITY"]  # the command's quiet (client.cli), not the services'
    env.update(
        SLIPWAY_TOKEN=token,
        SLIPWAY_LISTEN=layout.bind(part),
        DOCKER_HOST=docker_host,
        PYTHONUNBUFFERED="1",
    )
    # glibc gives each thread that allocates its own arena; a gRPC service's many threads
    # moving 512 KiB chunks then keep far more memory than they use. Two arenas keep a
    # service's peak near what it holds.
    env.setdefault("MALLOC_ARENA_MAX", "2")
    env.update(tls_env(layout, "builder" if part.startswith("builder") else part))
    if layout.registry:
        # ECR: credentials are its tokens, fetched with the AWS environment of the rack.
        registry = {"SLIPWAY_REGISTRY_URL": layout.registry}
    else:
        registry = {
            # Image references name the registry as other machines reach it.
            "SLIPWAY_REGISTRY_HOST": layout.advertised("distribution"),
            "SLIPWAY_REGISTRY_AUTH_FILE": str(layout.registry_auth_file),
        }
        if layout.beyond_loopback:
            registry["SLIPWAY_REGISTRY_CA"] = str(layout.tls / "ca.pem")
    if part == "metadata":
        env["SLIPWAY_DATA"] = str(layout.data / "metadata")
        if layout.database:
            env["SLIPWAY_DATABASE_URL"] = layout.database
    elif part == "archive":
        env["SLIPWAY_ARCHIVE_DIR"] = str(layout.data / "archive")
        if layout.archives:
            env["SLIPWAY_ARCHIVE_URL"] = layout.archives
    elif part == "registry":
        env.update(registry)
        env["SLIPWAY_METADATA_ADDRESS"] = layout.address("metadata")
        env["SLIPWAY_SCRATCH_DIR"] = str(layout.data / "registry")
    elif part == "builder":
        slot = builder or BuilderSlot(1, layout.address("builder"))
        env.update(registry)
        env.update(
            SLIPWAY_LISTEN=join_host_port(layout.listen, port_of(slot.address)),
            DOCKER_HOST=slot.engine or docker_host,
            SLIPWAY_RACK_NAME=layout.name,
            SLIPWAY_ADVERTISE=layout.public_host,
            SLIPWAY_ARCHIVE_ADDRESS=layout.address("archive"),
            SLIPWAY_METADATA_ADDRESS=layout.address("metadata"),
            SLIPWAY_REGISTRY_ADDRESS=layout.address("registry"),
            SLIPWAY_SCRATCH_DIR=str(layout.data / slot.part),
            SLIPWAY_ENGINE_BUILDER=layout.engine_builder,
            # A stable name: a builder started again ends at once the builds it held.
            SLIPWAY_BUILDER_ID=slot.id,
        )
    return env


def start_rack(
    name: str,
    port: int | None,
    data: Path | None,
    console: Console,
    engine_builder: str | None = None,
    builders: int | None = None,
    database: str | None = None,
    archives: str | None = None,
    listen: str | None = None,
    advertise: str | None = None,
    registry: str | None = None,
) -> RackEntry:
    """Starts every part of the local rack `name` that is not already running (and at
    least `builders` builders), waits until each is healthy, records the rack in the
    client configuration and makes it current. Port, data folder, engine builder,
    database, archives, listen address and advertised name default to the rack's own
    when it ran before. Every part speaks TLS with a certificate from the rack's CA,
    made at the first start."""
    if not name or "/" in name:
        raise InvalidArgument(f"invalid rack name: {name!r}")
    if engine_builder is not None and engine_builder not in ENGINE_BUILDERS:
        raise InvalidArgument(
            f"invalid engine builder: {engine_builder!r} (expected {' or '.join(ENGINE_BUILDERS)})"
        )
    if builders is not None and not 1 <= builders <= MAX_BUILDERS:
        raise InvalidArgument(f"invalid number of builders: {builders} (1-{MAX_BUILDERS})")
    if database:
        check_database(database)
    if archives:
        check_archives(archives)
    if registry:
        check_registry(registry)
    if listen is not None:
        listen = check_listen(listen)
    if advertise is not None:
        advertise = check_advertise(advertise)
    known = ClientConfig.load().racks.get(name)
    if known and known.local:
        was_layout = Layout(name, int(known.local["port"]), Path(known.local["data"]))
        if port and port != was_layout.port:
            _refuse_readdress(was_layout)
        port = port or was_layout.port
        data = data or was_layout.data
        engine_builder = engine_builder or str(known.local.get("engine_builder") or "")
        database = database or str(known.local.get("database") or "")
        archives = archives or str(known.local.get("archives") or "")
        was_registry = str(known.local.get("registry") or "")
        if registry and registry != was_registry:
            _refuse_readdress(was_layout)
        registry = registry or was_registry
        was = (str(known.local.get("listen") or LOOPBACK), str(known.local.get("advertise") or ""))
        if listen is None and advertise is None:
            listen, advertise = was
        elif (listen or was[0], advertise if advertise is not None else was[1]) != was:
            _refuse_readdress(was_layout)
        listen = listen or was[0]
        if advertise is None:
            advertise = was[1]
    listen = listen or LOOPBACK
    if listen in WILDCARDS and not advertise:
        raise InvalidArgument(
            f"--listen {listen} needs --advertise HOST: the name other machines reach this "
            "rack at (it goes in the rack's certificates)"
        )
    port = port or DEFAULT_PORT
    if not 1024 <= port <= 65530:
        raise InvalidArgument(f"invalid port: {port} (1024-65530)")
    layout = Layout(
        name,
        port,
        (data or default_data(name)).resolve(),
        engine_builder or BUILDKIT,
        database or "",
        archives or "",
        listen,
        advertise or "",
        registry or "",
    )
    check_bindable(layout.listen)
    for part in (*layout.parts, "builder"):  # builder-1; the others take any free port
        _check_port(part, layout)
    _private(layout)
    token = _token(layout)
    ca = Authority(layout.tls, name).ensure()
    if layout.beyond_loopback and not layout.registry:
        trust_registry(layout, console)

    docker_host = engine.ensure_engine()
    engine.seed_busybox(docker_host)
    console.print(f"Docker engine    {docker_host}  OK")

    started: list[str] = []
    try:
        if layout.registry:
            console.print(f"{'registry (ECR)':<16} {ecr_host(layout.registry)}")
        for part in layout.parts:
            _start_part(part, layout, token, docker_host, console)
            started.append(part)
        with _builders_locked(layout):
            slots = recorded_builders(layout)
            numbers = {slot.number for slot in slots}
            for number in range(2, (builders or 1) + 1):
                if number not in numbers:
                    slots.append(BuilderSlot(number, _free_address(layout)))
            slots.sort(key=lambda slot: slot.number)
            running: list[BuilderSlot] = []
            for slot in slots:
                running.append(_start_builder(slot, layout, token, docker_host, console))
                started.append(slot.part)
                # Recorded once started: a failed start leaves no builder on the books.
                waiting = [s for s in slots[len(running) :] if s.number in numbers]
                record_builders(layout, running + waiting)
    except Exception:
        for part in reversed(started):
            _stop_part(part, layout)
        raise

    entry = layout.entry(token, ca)
    config = ClientConfig.load()
    config.add(entry, make_current=True)
    config.save()
    console.print(f"Rack {name} is running at {entry.host}")
    console.print(f"Its CA certificate is {layout.tls / 'ca.pem'} (for 'slipway login --ca')")
    return entry


def _refuse_readdress(layout: Layout) -> None:
    """A running rack keeps its addresses: moving it means stopping it first."""
    parts = ["distribution", *SERVICES, *(slot.part for slot in recorded_builders(layout))]
    for part in parts:
        if _alive(_read_pid(layout.pidfile(part)), _marker(part, layout)):
            raise FailedPrecondition(
                f"rack {layout.name} is running with other addresses or another registry: "
                "stop it ('slipway rack stop') before changing --port, --listen, --advertise "
                "or --registry"
            )


def add_builder(name: str, engine_host: str | None, console: Console) -> BuilderSlot:
    """Starts one more builder for the running local rack `name`, on `engine_host` (a
    DOCKER_HOST) when given, else on the rack's engine; returns it once healthy."""
    layout = _layout_of(name)
    for part in SERVICES:
        if not _alive(_read_pid(layout.pidfile(part)), _marker(part, layout)):
            raise FailedPrecondition(
                f"rack {name} is not running (start it with 'slipway rack start')"
            )
    token = _token(layout)
    docker_host = engine.docker_host()
    if engine_host:
        if not engine.engine_answers(engine_host):
            raise Unavailable(f"Docker engine unreachable at {engine_host[:200]}")
        engine.seed_busybox(engine_host)
    with _builders_locked(layout):
        slots = recorded_builders(layout)
        number = max(slot.number for slot in slots) + 1
        if number > MAX_BUILDERS:
            raise FailedPrecondition(
                f"rack {name} has {MAX_BUILDERS} builders, the most it may have"
            )
        slot = BuilderSlot(number, _free_address(layout), engine_host or "")
        slot = _start_builder(slot, layout, token, docker_host, console)
        record_builders(layout, [*slots, slot])
    return slot


def _start_builder(
    slot: BuilderSlot, layout: Layout, token: str, docker_host: str, console: Console
) -> BuilderSlot:
    """Starts one builder unless it runs; on a new free port when its own is taken."""
    label = f"{slot.id:<16} {slot.address}"
    if _alive(_read_pid(layout.pidfile(slot.part)), _marker("builder", layout)):
        console.print(f"{label}  already running")
        return slot
    if slot.number == 1:
        _check_port("builder", layout)
    elif not _port_free(join_host_port(layout.listen, port_of(slot.address))):
        slot = BuilderSlot(slot.number, _free_address(layout), slot.engine)
        label = f"{slot.id:<16} {slot.address}"
    env = _service_env("builder", layout, token, docker_host, slot)
    argv = [sys.executable, "-m", "services.builder"]
    proc = _spawn(slot.part, argv, env, layout)
    ca = (layout.tls / "ca.pem").read_bytes()
    _wait(lambda: _healthy(slot.address, ca), proc, slot.part, layout)
    console.print(f"{label}  OK" + (f"  (engine {slot.engine})" if slot.engine else ""))
    return slot


def _start_part(part: str, layout: Layout, token: str, docker_host: str, console: Console) -> None:
    address = layout.address(part)
    label = f"{part:<16} {address}"
    if _alive(_read_pid(layout.pidfile(part)), _marker(part, layout)):
        console.print(f"{label}  already running")
        return
    _check_port(part, layout)
    if part == "distribution":
        argv = ["docker-registry", "serve", str(registry_config(layout))]
        proc = _spawn(part, argv, dict(os.environ), layout)
        tls = registry_tls(layout)
        _wait(lambda: registry_answers(address, tls), proc, part, layout)
    else:
        argv = [sys.executable, "-m", f"services.{part}"]
        proc = _spawn(part, argv, _service_env(part, layout, token, docker_host), layout)
        ca = (layout.tls / "ca.pem").read_bytes()
        _wait(lambda: _healthy(address, ca), proc, part, layout)
    console.print(f"{label}  OK")


def _stop_part(part: str, layout: Layout) -> bool:
    """Stops one part with SIGTERM (SIGKILL after a grace period); True when it was running."""
    pidfile = layout.pidfile(part)
    pid = _read_pid(pidfile)
    marker = _marker("builder" if part.startswith("builder") else part, layout)
    if not _alive(pid, marker):
        pidfile.unlink(missing_ok=True)
        return False
    assert pid is not None
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    while time.monotonic() < deadline and _alive(pid, marker):
        time.sleep(0.1)
    if _alive(pid, marker):
        os.kill(pid, signal.SIGKILL)
    pidfile.unlink(missing_ok=True)
    return True


def stop_rack(name: str, console: Console) -> None:
    """Stops the rack's builders, services and registry; the Docker engine keeps running."""
    layout = _layout_of(name)
    builders = [slot.part for slot in reversed(recorded_builders(layout))]
    for part in (*builders, "registry", "archive", "metadata", "distribution"):
        was = _stop_part(part, layout)
        shown = "builder-1" if part == "builder" else part
        console.print(f"{shown:<16} {'stopped' if was else 'not running'}")
    console.print(f"Rack {name} is stopped")


def rack_status(name: str) -> list[tuple[str, str, str]]:
    """One row per part: (part, state, detail); a builder's detail has its pid, its
    engine and the builds it runs."""
    layout = _layout_of(name)
    host = engine.docker_host()
    rows = [("engine", "running" if engine.engine_answers(host) else "unreachable", host)]
    try:
        ca = (layout.tls / "ca.pem").read_bytes()
    except OSError:
        ca = b""
    if layout.registry:
        rows.append(("registry (ECR)", "external", ecr_host(layout.registry)))
    for part in layout.parts:
        address = layout.address(part)
        pid = _read_pid(layout.pidfile(part))
        if not _alive(pid, _marker(part, layout)):
            rows.append((part, "stopped", address))
            continue
        if part == "distribution":
            ok = registry_answers(address, registry_tls(layout) if ca else None)
        else:
            ok = bool(ca) and _healthy(address, ca)
        rows.append((part, "running" if ok else "unhealthy", f"{address} pid {pid}"))
    token = _token(layout) if layout.token_file.exists() else ""
    for slot in recorded_builders(layout):
        pid = _read_pid(layout.pidfile(slot.part))
        engine_host = slot.engine or host
        if not _alive(pid, _marker("builder", layout)):
            rows.append((slot.id, "stopped", f"{slot.address} engine {engine_host}"))
            continue
        info = _builder_info(slot.address, token, ca) if ca else None
        if info is None:
            rows.append((slot.id, "unhealthy", f"{slot.address} pid {pid} engine {engine_host}"))
            continue
        current = f"building {','.join(info.running)}" if info.running else "idle"
        rows.append(
            (slot.id, "running", f"{slot.address} pid {pid} engine {info.engine} {current}")
        )
    return rows


def _builder_info(address: str, token: str, ca: bytes) -> types.RackInfo | None:
    channel = open_channel(address, token, ca=ca)
    try:
        return BuilderClient(channel, address).rack(timeout=3.0)
    except SlipwayError:
        return None
    finally:
        channel.close()


@dataclass(frozen=True)
class RegistryLogin:
    """What `docker login` needs for a local rack's registry."""

    address: str
    username: str
    password: str = field(repr=False)


def registry_login(name: str) -> RegistryLogin:
    """The address (as other machines reach it) and credentials of rack `name`'s registry:
    for ECR, a token fetched now with this environment's AWS credentials."""
    layout = _layout_of(name)
    if layout.registry:
        from services.common.ecr import EcrRegistry

        ecr = EcrRegistry.from_url(layout.registry)
        auth = ecr.auth() or {}
        return RegistryLogin(ecr.host, auth.get("username", "AWS"), auth.get("password", ""))
    try:
        user, _, password = layout.registry_auth_file.read_text().strip().partition(":")
    except OSError:
        user, password = "", ""
    if not user or not password:
        raise FailedPrecondition(
            f"rack {name} has no registry credentials yet: start it with 'slipway rack start'"
        )
    return RegistryLogin(layout.advertised("distribution"), user, password)
