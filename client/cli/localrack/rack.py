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
import ipaddress
import json
import os
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from rich.console import Console

from client.api.builder import BuilderClient
from client.api.channel import open_channel
from client.cli.config import ClientConfig, RackEntry
from client.cli.localrack import engine
from client.cli.localrack.tls import Authority, CertFiles, names_for
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
LOOPBACK = "127.0.0.1"
WILDCARDS = ("0.0.0.0", "::")
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0

# Start order: builders last, since each asks metadata to end the builds it left running.
SERVICES = ("metadata", "archive", "registry")
OFFSETS = {"builder": 0, "archive": 1, "metadata": 2, "registry": 3, "distribution": 4}
MAX_BUILDERS = 32


def _join(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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
    #: The address every part binds (`--listen`).
    listen: str = LOOPBACK
    #: The name or address other machines reach the rack at (`--advertise`; empty: the
    #: listen address).
    advertise: str = ""
    #: `ecr://ACCOUNT.dkr.ecr.REGION.amazonaws.com` when the rack registry is ECR
    #: (`--registry`); empty for the rack's own Distribution registry.
    registry: str = ""

    @property
    def parts(self) -> tuple[str, ...]:
        """What runs besides the builders, in start order: the rack's own registry (unless
        it is ECR), then the services."""
        return SERVICES if self.registry else ("distribution", *SERVICES)

    @property
    def local_host(self) -> str:
        """Where this machine reaches the parts: the listen address, loopback for a wildcard."""
        return LOOPBACK if self.listen in WILDCARDS else self.listen

    @property
    def public_host(self) -> str:
        """The name the rack announces to clients and other racks."""
        return self.advertise or self.local_host

    @property
    def beyond_loopback(self) -> bool:
        """Whether other machines may reach the rack (its registry then serves TLS): it
        listens on more than loopback (a wildcard included) or announces another name."""
        return not (_loopback(self.listen) and _loopback(self.public_host))

    def address(self, part: str) -> str:
        """Where this machine reaches `part`."""
        return _join(self.local_host, self.port + OFFSETS[part])

    def advertised(self, part: str) -> str:
        """Where other machines reach `part`."""
        return _join(self.public_host, self.port + OFFSETS[part])

    def bind(self, part: str) -> str:
        """What `part` listens on."""
        return _join(self.listen, self.port + OFFSETS[part])

    @property
    def tls(self) -> Path:
        """The rack's CA and the certificates of its parts."""
        return self.data / "tls"

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

    def entry(self, token: str, ca: bytes) -> RackEntry:
        return RackEntry(
            name=self.name,
            host=self.advertised("builder"),
            token=token,
            local={
                "port": self.port,
                "data": str(self.data),
                "engine_builder": self.engine_builder,
                "database": self.database,
                "archives": self.archives,
                "listen": self.listen,
                "advertise": self.advertise,
                "registry": self.registry,
            },
            ca=ca.decode(),
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
            number, port = int(item["number"]), _port(str(item["address"]))
            engine_host = str(item.get("engine") or "")
        except (KeyError, TypeError, ValueError):
            continue
        # Its port is its own; its host is wherever the rack listens now.
        address = _join(layout.local_host, port)
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


def _free_address(layout: Layout) -> str:
    """A free port on the rack's listen address, as this machine reaches it."""
    family = socket.AF_INET6 if ":" in layout.listen else socket.AF_INET
    with socket.socket(family) as s:
        s.bind((layout.listen, 0))
        return _join(layout.local_host, s.getsockname()[1])


def _port(address: str) -> int:
    return int(address.rpartition(":")[2])


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
        str(entry.local.get("listen") or LOOPBACK),
        str(entry.local.get("advertise") or ""),
        str(entry.local.get("registry") or ""),
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
    host = host.strip("[]")
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, int(port)))
        except OSError:
            return False
    return True


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


def _registry_tls(layout: Layout) -> ssl.SSLContext | None:
    """How this machine verifies the rack registry: against the rack's CA when it serves
    TLS (a rack reached beyond loopback), None for plain HTTP on loopback."""
    if not layout.beyond_loopback:
        return None
    return ssl.create_default_context(cafile=str(layout.tls / "ca.pem"))


def _registry_answers(address: str, tls: ssl.SSLContext | None) -> bool:
    """Whether the registry answers; without credentials it says 401, which is an answer."""
    scheme = "https" if tls is not None else "http"
    try:
        with urllib.request.urlopen(f"{scheme}://{address}/v2/", timeout=2, context=tls) as resp:
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


def _certificate(layout: Layout, part: str) -> CertFiles:
    """`part`'s certificate, for every name it is reached at."""
    names = names_for(layout.listen, layout.public_host)
    return Authority(layout.tls, layout.name).issue(part, names)


def _tls_env(layout: Layout, part: str) -> dict[str, str]:
    files = _certificate(layout, part)
    return {
        "SLIPWAY_TLS_CERT": str(files.cert),
        "SLIPWAY_TLS_KEY": str(files.key),
        "SLIPWAY_TLS_CA": str(files.ca),
    }


# Where a Docker engine on this machine looks for the CA of a registry it talks to.
ENGINE_CERTS = Path("/etc/docker/certs.d")


def _trust_registry(layout: Layout, console: Console) -> None:
    """Tells the Docker engines of this machine to trust the rack registry's CA (they
    read `/etc/docker/certs.d/HOST:PORT/ca.crt` at each push and pull). An engine on
    another machine needs the same file there (README, "Racks other machines use")."""
    folder = ENGINE_CERTS / layout.advertised("distribution")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        os.chmod(folder, 0o755)
        target = folder / "ca.crt"
        partial = folder / "ca.crt.partial"
        partial.write_bytes((layout.tls / "ca.pem").read_bytes())
        os.chmod(partial, 0o644)  # a CA certificate is public
        os.replace(partial, target)
    except OSError as err:
        console.print(
            f"[yellow]cannot make this machine's Docker engine trust the rack registry "
            f"({err.strerror}): copy {layout.tls / 'ca.pem'} to {folder / 'ca.crt'}[/]"
        )


def _registry_config(layout: Layout) -> Path:
    folder = layout.data / "distribution"
    folder.mkdir(parents=True, exist_ok=True)
    htpasswd = folder / "htpasswd"
    htpasswd.write_text(_htpasswd(_registry_credentials(layout)))
    config = folder / "config.yml"
    http = f"http:\n  addr: {layout.bind('distribution')}\n"
    if layout.beyond_loopback:
        # Other machines push and pull here: TLS, with a certificate from the rack's CA.
        files = _certificate(layout, "distribution")
        http += f"  tls:\n    certificate: {files.cert}\n    key: {files.key}\n"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: info\n"
        "storage:\n"
        f"  filesystem:\n    rootdirectory: {folder / 'data'}\n"
        "  delete:\n    enabled: true\n"
        "auth:\n"
        f"  htpasswd:\n    realm: slipway\n    path: {htpasswd}\n" + http
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
    if env.get("GRPC_VERBOSITY") == "NONE":
        del env["GRPC_VERBOSITY"]  # the command's quiet (client.cli), not the services'
    env.update(
        SLIPWAY_TOKEN=token,
        SLIPWAY_LISTEN=layout.bind(part),
        DOCKER_HOST=docker_host,
        PYTHONUNBUFFERED="1",
    )
    env.update(_tls_env(layout, "builder" if part.startswith("builder") else part))
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
            SLIPWAY_LISTEN=_join(layout.listen, _port(slot.address)),
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
        _check_database(database)
    if archives:
        _check_archives(archives)
    if registry:
        _check_registry(registry)
    if listen is not None:
        listen = _check_listen(listen)
    if advertise is not None:
        advertise = _check_advertise(advertise)
    known = ClientConfig.load().racks.get(name)
    if known and known.local:
        port = port or int(known.local["port"])
        data = data or Path(known.local["data"])
        engine_builder = engine_builder or str(known.local.get("engine_builder") or "")
        database = database or str(known.local.get("database") or "")
        archives = archives or str(known.local.get("archives") or "")
        was_registry = str(known.local.get("registry") or "")
        if registry and registry != was_registry:
            _refuse_readdress(Layout(name, int(known.local["port"]), Path(known.local["data"])))
        registry = registry or was_registry
        was = (str(known.local.get("listen") or LOOPBACK), str(known.local.get("advertise") or ""))
        if listen is None and advertise is None:
            listen, advertise = was
        elif (listen or was[0], advertise if advertise is not None else was[1]) != was:
            _refuse_readdress(Layout(name, int(known.local["port"]), Path(known.local["data"])))
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
    _check_bindable(layout.listen)
    _private(layout)
    token = _token(layout)
    ca = Authority(layout.tls, name).ensure()
    if layout.beyond_loopback and not layout.registry:
        _trust_registry(layout, console)

    docker_host = engine.ensure_engine()
    engine.seed_busybox(docker_host)
    console.print(f"Docker engine    {docker_host}  OK")

    started: list[str] = []
    try:
        if layout.registry:
            console.print(f"{'registry (ECR)':<16} {_ecr_host(layout.registry)}")
        for part in layout.parts:
            _start_part(part, layout, token, docker_host, console)
            started.append(part)
        with _builders_locked(layout):
            slots = _builders(layout)
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
                _record_builders(layout, running + waiting)
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


def _check_registry(url: str) -> None:
    _ecr_host(url)


def _ecr_host(url: str) -> str:
    """The registry host of an `ecr://` URL; InvalidArgument for anything else."""
    if not url.startswith("ecr://"):
        raise InvalidArgument(
            "invalid --registry: want ecr://ACCOUNT.dkr.ecr.REGION.amazonaws.com "
            "(the default is the rack's own registry)"
        )
    import importlib.util

    if importlib.util.find_spec("boto3") is None:
        raise Unavailable("boto3 is not installed: install slipway[rack] for a rack on ECR")
    from services.common.ecr import parse_ecr_url

    try:
        return parse_ecr_url(url).host
    except InvalidArgument as err:
        raise InvalidArgument(f"invalid --registry: {err}") from None


def _check_listen(listen: str) -> str:
    listen = listen.strip().strip("[]")
    try:
        ipaddress.ip_address(listen)
    except ValueError:
        raise InvalidArgument(
            f"invalid --listen: {listen[:100]!r} (want an IP address of this machine, "
            "such as 10.0.0.5, or 0.0.0.0 for all)"
        ) from None
    return listen


def _check_advertise(advertise: str) -> str:
    advertise = advertise.strip().strip("[]")
    try:
        ipaddress.ip_address(advertise)
        return advertise
    except ValueError:
        pass
    labels = advertise.split(".")
    if (
        not advertise
        or len(advertise) > 253
        or not all(
            label and len(label) <= 63 and label.replace("-", "").isalnum() and label.isascii()
            for label in labels
        )
    ):
        raise InvalidArgument(
            f"invalid --advertise: {advertise[:100]!r} (want a host name or IP address, "
            "no port or scheme)"
        )
    return advertise.lower()


def _check_bindable(listen: str) -> None:
    """InvalidArgument unless this machine has the address `listen`."""
    with socket.socket(socket.AF_INET6 if ":" in listen else socket.AF_INET) as probe:
        try:
            probe.bind((listen, 0))
        except OSError as err:
            raise InvalidArgument(
                f"invalid --listen: {listen} is not an address of this machine ({err.strerror})"
            ) from None


def _refuse_readdress(layout: Layout) -> None:
    """A running rack keeps its addresses: moving it means stopping it first."""
    parts = ["distribution", *SERVICES, *(slot.part for slot in _builders(layout))]
    for part in parts:
        if _alive(_read_pid(layout.pidfile(part)), _marker(part, layout)):
            raise FailedPrecondition(
                f"rack {layout.name} is running with other addresses or another registry: "
                "stop it ('slipway rack stop') before changing --listen, --advertise or "
                "--registry"
            )


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
        slot = BuilderSlot(number, _free_address(layout), engine_host or "")
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
    if not _port_free(_join(layout.listen, _port(slot.address))):
        if slot.number == 1:
            raise FailedPrecondition(
                f"cannot start builder: {slot.address} is in use (choose another --port)"
            )
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
    if not _port_free(layout.bind(part)):
        raise FailedPrecondition(
            f"cannot start {part}: {address} is in use (choose another --port)"
        )
    if part == "distribution":
        argv = ["docker-registry", "serve", str(_registry_config(layout))]
        proc = _spawn(part, argv, dict(os.environ), layout)
        tls = _registry_tls(layout)
        _wait(lambda: _registry_answers(address, tls), proc, part, layout)
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
    try:
        ca = (layout.tls / "ca.pem").read_bytes()
    except OSError:
        ca = b""
    if layout.registry:
        rows.append(("registry (ECR)", "external", _ecr_host(layout.registry)))
    for part in layout.parts:
        address = layout.address(part)
        pid = _read_pid(layout.pidfile(part))
        if not _alive(pid, _marker(part, layout)):
            rows.append((part, "stopped", address))
            continue
        if part == "distribution":
            ok = _registry_answers(address, _registry_tls(layout) if ca else None)
        else:
            ok = bool(ca) and _healthy(address, ca)
        rows.append((part, "running" if ok else "unhealthy", f"{address} pid {pid}"))
    token = _token(layout) if layout.token_file.exists() else ""
    for slot in _builders(layout):
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
