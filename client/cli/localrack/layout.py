"""What a local rack is and where its parts are: the ports from one base, the data
folder, the listen address and the advertised name, and the builders it records; and the
checks of the start options that decide them (nothing here starts anything)."""

from __future__ import annotations

import ipaddress
import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from client.cli.config import RackEntry
from client.kernel.errors import FailedPrecondition, InvalidArgument, Unavailable
from client.kernel.types import BUILDKIT

DEFAULT_PORT = 7400
LOOPBACK = "127.0.0.1"
WILDCARDS = ("0.0.0.0", "::")
# Start order: builders last, since each asks metadata to end the builds it left running.
SERVICES = ("metadata", "archive", "registry")
OFFSETS = {"builder": 0, "archive": 1, "metadata": 2, "registry": 3, "distribution": 4}
# What listens on each port of the range, in a person's words.
ROLES = {
    "builder": "the builder",
    "archive": "the archive service",
    "metadata": "the metadata service",
    "registry": "the registry service",
    "distribution": "the registry",
}
MAX_BUILDERS = 32


def join_host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def is_loopback(host: str) -> bool:
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

    @classmethod
    def of(cls, entry: RackEntry) -> Layout:
        """The layout of a local rack as the client configuration records it."""
        local = entry.local
        return cls(
            entry.name,
            int(local.get("port") or DEFAULT_PORT),
            Path(local["data"]) if local.get("data") else default_data(entry.name),
            str(local.get("engine_builder") or BUILDKIT),
            str(local.get("database") or ""),
            str(local.get("archives") or ""),
            str(local.get("listen") or LOOPBACK),
            str(local.get("advertise") or ""),
            str(local.get("registry") or ""),
        )

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
        return not (is_loopback(self.listen) and is_loopback(self.public_host))

    def address(self, part: str) -> str:
        """Where this machine reaches `part`."""
        return join_host_port(self.local_host, self.port + OFFSETS[part])

    def advertised(self, part: str) -> str:
        """Where other machines reach `part`."""
        return join_host_port(self.public_host, self.port + OFFSETS[part])

    def bind(self, part: str) -> str:
        """What `part` listens on."""
        return join_host_port(self.listen, self.port + OFFSETS[part])

    @property
    def registry_host(self) -> str:
        """The registry host of the rack's image references, what `docker pull` names:
        its own registry as other machines reach it, or ECR."""
        return ecr_host(self.registry) if self.registry else self.advertised("distribution")

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


def recorded_builders(layout: Layout) -> list[BuilderSlot]:
    """The builders recorded for the rack, builder-1 first (always there)."""
    slots = {1: BuilderSlot(1, layout.address("builder"))}
    try:
        recorded = json.loads(layout.builders_file.read_text())
    except (OSError, ValueError):
        recorded = []
    for item in recorded if isinstance(recorded, list) else []:
        try:
            number, port = int(item["number"]), port_of(str(item["address"]))
            engine_host = str(item.get("engine") or "")
        except (KeyError, TypeError, ValueError):
            continue
        # Its port is its own; its host is wherever the rack listens now.
        address = join_host_port(layout.local_host, port)
        if 1 < number <= MAX_BUILDERS:
            slots[number] = BuilderSlot(number, address, engine_host)
        elif number == 1:
            slots[1] = BuilderSlot(1, layout.address("builder"), engine_host)
    return [slots[n] for n in sorted(slots)]


def record_builders(layout: Layout, slots: list[BuilderSlot]) -> None:
    """Writes `builders.json` whole, then renames it into place."""
    text = json.dumps(
        [{"number": s.number, "address": s.address, "engine": s.engine} for s in slots], indent=2
    )
    partial = layout.builders_file.with_name(layout.builders_file.name + ".partial")
    partial.write_text(text + "\n")
    os.replace(partial, layout.builders_file)


def port_taken(layout: Layout, part: str) -> FailedPrecondition:
    """The rack cannot start: another program holds `part`'s port. Says which port of
    the range it is and how to move the whole range (the CLI's flag and make's variable)."""
    offset = OFFSETS[part]
    port = layout.port + offset
    where = "the base port" if offset == 0 else f"base port {layout.port} + {offset}"
    return FailedPrecondition(
        f"cannot start the rack: port {port} ({where}, {ROLES[part]}) is in use; "
        "choose another base port with --port, or PORT=… for make"
    )


def port_of(address: str) -> int:
    return int(address.rpartition(":")[2])


def check_registry(url: str) -> None:
    ecr_host(url)


def ecr_host(url: str) -> str:
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


def check_listen(listen: str) -> str:
    listen = listen.strip().strip("[]")
    try:
        ipaddress.ip_address(listen)
    except ValueError:
        raise InvalidArgument(
            f"invalid --listen: {listen[:100]!r} (want an IP address of this machine, "
            "such as 10.0.0.5, or 0.0.0.0 for all)"
        ) from None
    return listen


def check_advertise(advertise: str) -> str:
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


def check_bindable(listen: str) -> None:
    """InvalidArgument unless this machine has the address `listen`."""
    with socket.socket(socket.AF_INET6 if ":" in listen else socket.AF_INET) as probe:
        try:
            probe.bind((listen, 0))
        except OSError as err:
            raise InvalidArgument(
                f"invalid --listen: {listen} is not an address of this machine ({err.strerror})"
            ) from None


def check_database(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres") or not parts.path.strip("/"):
        raise InvalidArgument(
            "invalid --database: want postgresql://USER@HOST:PORT/DB (the default is SQLite)"
        )


def check_archives(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc:
        raise InvalidArgument("invalid --archives: want s3://BUCKET[/PREFIX]")
