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
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from rich.console import Console

from client.api.builder import BuilderClient
from client.api.channel import open_channel
from client.cli.config import ClientConfig, RackEntry
from client.cli.localrack import engine
from client.kernel import types
from client.kernel.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    SlipwayError,
    Unavailable,
)
from client.kernel.types import BUILDKIT, ENGINE_BUILDERS

DEFAULT_PORT = 7400
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0

# Start order: builders last, since each asks metadata to end the builds it left running.
SERVICES = ("metadata", "archive", "registry")
OFFSETS = {"builder": 0, "archive": 1, "metadata": 2, "registry": 3, "distribution": 4}
MAX_BUILDERS = 32


def default_data(name: str) -> Path:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(Path.home(), ".local", "share")
    return Path(base) / "slipway" / "racks" / name


@dataclass(frozen=True)
class Layout:
    """Where each part of one local rack listens and keeps its files."""

    name: str
    port: int
    data: Path
    #: The engine's builder the rack's builder uses: `buildkit`, or `legacy` for engines
    #: without BuildKit (`slipway rack start --engine-builder`).
    engine_builder: str = BUILDKIT
    #: The metadata database URL (`--database`); empty for SQLite in the data folder.
    database: str = ""
    #: Where source archives live (`--archives s3://bucket[/prefix]`); empty for the data
    #: folder.
    archives: str = ""

    def address(self, part: str) -> str:
        return f"127.0.0.1:{self.port + OFFSETS[part]}"

    def pidfile(self, part: str) -> Path:
        return self.data / "run" / f"{part}.pid"

    def logfile(self, part: str) -> Path:
        return self.data / "logs" / f"{part}.log"

    @property
    def builders_file(self) -> Path:
        return self.data / "builders.json"

    @property
    def token_file(self) -> Path:
        return self.data / "token"

    @property
    def registry_auth_file(self) -> Path:
        """`user:password` of the rack registry (0600), handed to the services that push."""
        return self.data / "registry.auth"

    def entry(self, token: str) -> RackEntry:
        return RackEntry(
            name=self.name,
            host=self.address("builder"),
            token=token,
            local={
                "port": self.port,
                "data": str(self.data),
                "engine_builder": self.engine_builder,
                "database": self.database,
                "archives": self.archives,
            },
        )


@dataclass(frozen=True)
class BuilderSlot:
    """One builder of a local rack: its number, where it listens, and the engine it builds
    with (empty: the rack's own, whatever DOCKER_HOST says when the rack starts)."""

    number: int
    address: str
    engine: str = ""

    @property
    def id(self) -> str:
        """Its name on the rack's queue, stable across restarts."""
        return f"builder-{self.number}"

    @property
    def part(self) -> str:
        """The name of its pid file, log file and scratch folder."""
        return "builder" if self.number == 1 else self.id


def _builders(layout: Layout) -> list[BuilderSlot]:
    """The builders recorded for the rack, builder-1 first (always there)."""
    slots = {1: BuilderSlot(1, layout.address("builder"))}
    try:
        recorded = json.loads(layout.builders_file.read_text())
    except (OSError, ValueError):
        recorded = []
    for item in recorded if isinstance(recorded, list) else []:
        try:
            number, address = int(item["number"]), str(item["address"])
            engine_host = str(item.get("engine") or "")
        except (KeyError, TypeError, ValueError):
            continue
        if 1 < number <= MAX_BUILDERS:
            slots[number] = BuilderSlot(number, address, engine_host)
        elif number == 1:
            slots[1] = BuilderSlot(1, layout.address("builder"), engine_host)
    return [slots[n] for n in sorted(slots)]


def _record_builders(layout: Layout, slots: list[BuilderSlot]) -> None:
    """Writes `builders.json` whole, then renames it into place."""
    text = json.dumps(
        [{"number": s.number, "address": s.address, "engine": s.engine} for s in slots], indent=2
    )
    partial = layout.builders_file.with_name(layout.builders_file.name + ".partial")
    partial.write_text(text + "\n")
    os.replace(partial, layout.builders_file)


@contextlib.contextmanager
def _builders_locked(layout: Layout) -> Iterator[None]:
    """Holds the rack's builder lock: one `rack start` or `add-builder` at a time picks
    builder numbers and starts them, so no two live builders share a name."""
    lock = layout.data / "run" / "builders.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        yield


def _free_address() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def _layout_of(name: str) -> Layout:
    entry = ClientConfig.load().racks.get(name)
    if entry is None or not entry.local:
        raise NotFound(f"rack not found: {name} (no local rack of that name; see 'slipway racks')")
    return Layout(
        name,
        int(entry.local["port"]),
        Path(entry.local["data"]),
        str(entry.local.get("engine_builder") or BUILDKIT),
        str(entry.local.get("database") or ""),
        str(entry.local.get("archives") or ""),
    )


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
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, int(port)))
        except OSError:
            return False
    return True


def _healthy(address: str, timeout: float = 2.0) -> bool:
    channel = grpc.insecure_channel(address)
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


def _registry_answers(address: str) -> bool:
    """Whether the registry answers; without credentials it says 401, which is an answer."""
    try:
        with urllib.request.urlopen(f"http://{address}/v2/", timeout=2) as resp:
            return bool(resp.status == 200)
    except urllib.error.HTTPError as err:
        err.close()
        return err.code == 401
    except (urllib.error.URLError, OSError):
        return False


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


REGISTRY_USER = "slipway"


def _registry_credentials(layout: Layout) -> str:
    """The registry's password: generated at the first start, kept with its user name in
    `registry.auth` (0600); the registry gets only its bcrypt hash (htpasswd)."""
    path = layout.registry_auth_file
    if path.exists():
        user, _, password = path.read_text().strip().partition(":")
        if user == REGISTRY_USER and password:
            return password
    # Written whole, then renamed: a start killed half-way leaves no broken file.
    password = secrets.token_urlsafe(24)
    partial = path.with_name(path.name + ".partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(f"{REGISTRY_USER}:{password}\n")
        out.flush()
        os.fsync(out.fileno())
    os.replace(partial, path)
    return password


def _htpasswd(password: str) -> str:
    try:
        import bcrypt  # the rack extra's: Distribution's htpasswd takes bcrypt hashes only
    except ImportError as err:
        raise Unavailable(f"bcrypt is not installed ({err}): install slipway[rack]") from None
    # Distribution checks the hash on every request. The password is 192 random bits, so a
    # work factor adds no protection against guessing; bcrypt's default (12) would cost
    # 0.3 s a request on this kind of machine, the minimum (4) about 1 ms.
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
    return f"{REGISTRY_USER}:{hashed}\n"


def _registry_config(layout: Layout) -> Path:
    folder = layout.data / "distribution"
    folder.mkdir(parents=True, exist_ok=True)
    htpasswd = folder / "htpasswd"
    htpasswd.write_text(_htpasswd(_registry_credentials(layout)))
    config = folder / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: info\n"
        "storage:\n"
        f"  filesystem:\n    rootdirectory: {folder / 'data'}\n"
        "  delete:\n    enabled: true\n"
        "auth:\n"
        f"  htpasswd:\n    realm: slipway\n    path: {htpasswd}\n"
        f"http:\n  addr: {layout.address('distribution')}\n"
    )
    return config


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
    env.update(
        SLIPWAY_TOKEN=token,
        SLIPWAY_LISTEN=layout.address(part),
        DOCKER_HOST=docker_host,
        PYTHONUNBUFFERED="1",
    )
    if part == "metadata":
        env["SLIPWAY_DATA"] = str(layout.data / "metadata")
        if layout.database:
            env["SLIPWAY_DATABASE_URL"] = layout.database
    elif part == "archive":
        env["SLIPWAY_ARCHIVE_DIR"] = str(layout.data / "archive")
        if layout.archives:
            env["SLIPWAY_ARCHIVE_URL"] = layout.archives
    elif part == "registry":
        env["SLIPWAY_REGISTRY_HOST"] = layout.address("distribution")
        env["SLIPWAY_REGISTRY_AUTH_FILE"] = str(layout.registry_auth_file)
        env["SLIPWAY_METADATA_ADDRESS"] = layout.address("metadata")
        env["SLIPWAY_SCRATCH_DIR"] = str(layout.data / "registry")
    elif part == "builder":
        slot = builder or BuilderSlot(1, layout.address("builder"))
        env.update(
            SLIPWAY_LISTEN=slot.address,
            DOCKER_HOST=slot.engine or docker_host,
            SLIPWAY_RACK_NAME=layout.name,
            SLIPWAY_ARCHIVE_ADDRESS=layout.address("archive"),
            SLIPWAY_METADATA_ADDRESS=layout.address("metadata"),
            SLIPWAY_REGISTRY_ADDRESS=layout.address("registry"),
            SLIPWAY_REGISTRY_HOST=layout.address("distribution"),
            SLIPWAY_REGISTRY_AUTH_FILE=str(layout.registry_auth_file),
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
) -> RackEntry:
    """Starts every part of the local rack `name` that is not already running (and at
    least `builders` builders), waits until each is healthy, records the rack in the
    client configuration and makes it current. Port, data folder, engine builder,
    database and archives default to the rack's own when it ran before."""
    if not name or "/" in name:
        raise InvalidArgument(f"invalid rack name: {name!r}")
    if engine_builder is not None and engine_builder not in ENGINE_BUILDERS:
        raise InvalidArgument(
            f"invalid engine builder: {engine_builder!r} (expected {' or '.join(ENGINE_BUILDERS)})"
        )
    if builders is not None and not 1 <= builders <= MAX_BUILDERS:
        raise InvalidArgument(f"invalid number of builders: {builders} (1-{MAX_BUILDERS})")
    if database:
        _check_database(database)
    if archives:
        _check_archives(archives)
    known = ClientConfig.load().racks.get(name)
    if known and known.local:
        port = port or int(known.local["port"])
        data = data or Path(known.local["data"])
        engine_builder = engine_builder or str(known.local.get("engine_builder") or "")
        database = database or str(known.local.get("database") or "")
        archives = archives or str(known.local.get("archives") or "")
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
    )
    _private(layout)
    token = _token(layout)

    docker_host = engine.ensure_engine()
    engine.seed_busybox(docker_host)
    console.print(f"Docker engine    {docker_host}  OK")

    started: list[str] = []
    try:
        for part in ("distribution", *SERVICES):
            _start_part(part, layout, token, docker_host, console)
            started.append(part)
        with _builders_locked(layout):
            slots = _builders(layout)
            numbers = {slot.number for slot in slots}
            for number in range(2, (builders or 1) + 1):
                if number not in numbers:
                    slots.append(BuilderSlot(number, _free_address()))
            slots.sort(key=lambda slot: slot.number)
            running: list[BuilderSlot] = []
            for slot in slots:
                running.append(_start_builder(slot, layout, token, docker_host, console))
                started.append(slot.part)
                # Recorded once started: a failed start leaves no builder on the books.
                waiting = [s for s in slots[len(running) :] if s.number in numbers]
                _record_builders(layout, running + waiting)
    except Exception:
        for part in reversed(started):
            _stop_part(part, layout)
        raise

    entry = layout.entry(token)
    config = ClientConfig.load()
    config.add(entry, make_current=True)
    config.save()
    console.print(f"Rack {name} is running at {entry.host}")
    return entry


def _check_database(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres") or not parts.path.strip("/"):
        raise InvalidArgument(
            "invalid --database: want postgresql://USER@HOST:PORT/DB (the default is SQLite)"
        )


def _check_archives(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc:
        raise InvalidArgument("invalid --archives: want s3://BUCKET[/PREFIX]")


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
        slots = _builders(layout)
        number = max(slot.number for slot in slots) + 1
        if number > MAX_BUILDERS:
            raise FailedPrecondition(
                f"rack {name} has {MAX_BUILDERS} builders, the most it may have"
            )
        slot = BuilderSlot(number, _free_address(), engine_host or "")
        slot = _start_builder(slot, layout, token, docker_host, console)
        _record_builders(layout, [*slots, slot])
    return slot


def _start_builder(
    slot: BuilderSlot, layout: Layout, token: str, docker_host: str, console: Console
) -> BuilderSlot:
    """Starts one builder unless it runs; on a new free port when its own is taken."""
    label = f"{slot.id:<16} {slot.address}"
    if _alive(_read_pid(layout.pidfile(slot.part)), _marker("builder", layout)):
        console.print(f"{label}  already running")
        return slot
    if not _port_free(slot.address):
        if slot.number == 1:
            raise FailedPrecondition(
                f"cannot start builder: {slot.address} is in use (choose another --port)"
            )
        slot = BuilderSlot(slot.number, _free_address(), slot.engine)
        label = f"{slot.id:<16} {slot.address}"
    env = _service_env("builder", layout, token, docker_host, slot)
    argv = [sys.executable, "-m", "services.builder"]
    proc = _spawn(slot.part, argv, env, layout)
    _wait(lambda: _healthy(slot.address), proc, slot.part, layout)
    console.print(f"{label}  OK" + (f"  (engine {slot.engine})" if slot.engine else ""))
    return slot


def _start_part(part: str, layout: Layout, token: str, docker_host: str, console: Console) -> None:
    address = layout.address(part)
    label = f"{part:<16} {address}"
    if _alive(_read_pid(layout.pidfile(part)), _marker(part, layout)):
        console.print(f"{label}  already running")
        return
    if not _port_free(address):
        raise FailedPrecondition(
            f"cannot start {part}: {address} is in use (choose another --port)"
        )
    if part == "distribution":
        argv = ["docker-registry", "serve", str(_registry_config(layout))]
        proc = _spawn(part, argv, dict(os.environ), layout)
        _wait(lambda: _registry_answers(address), proc, part, layout)
    else:
        argv = [sys.executable, "-m", f"services.{part}"]
        proc = _spawn(part, argv, _service_env(part, layout, token, docker_host), layout)
        _wait(lambda: _healthy(address), proc, part, layout)
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
    builders = [slot.part for slot in reversed(_builders(layout))]
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
    for part in ("distribution", *SERVICES):
        address = layout.address(part)
        pid = _read_pid(layout.pidfile(part))
        if not _alive(pid, _marker(part, layout)):
            rows.append((part, "stopped", address))
            continue
        ok = _registry_answers(address) if part == "distribution" else _healthy(address)
        rows.append((part, "running" if ok else "unhealthy", f"{address} pid {pid}"))
    token = _token(layout) if layout.token_file.exists() else ""
    for slot in _builders(layout):
        pid = _read_pid(layout.pidfile(slot.part))
        engine_host = slot.engine or host
        if not _alive(pid, _marker("builder", layout)):
            rows.append((slot.id, "stopped", f"{slot.address} engine {engine_host}"))
            continue
        info = _builder_info(slot.address, token)
        if info is None:
            rows.append((slot.id, "unhealthy", f"{slot.address} pid {pid} engine {engine_host}"))
            continue
        current = f"building {','.join(info.running)}" if info.running else "idle"
        rows.append(
            (slot.id, "running", f"{slot.address} pid {pid} engine {info.engine} {current}")
        )
    return rows


def _builder_info(address: str, token: str) -> types.RackInfo | None:
    channel = open_channel(address, token)
    try:
        return BuilderClient(channel, address).rack(timeout=3.0)
    except SlipwayError:
        return None
    finally:
        channel.close()
