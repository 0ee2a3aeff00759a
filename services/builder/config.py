"""The builder's configuration, read once from the environment and the command line."""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from client.kernel.types import BUILDKIT, ENGINE_BUILDERS
from services.common.config import (
    RegistryCredentials,
    ServiceArgs,
    TlsFiles,
    ecr_registry,
    registry_credentials,
    valid_registry_host,
)

DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"
#: What a builder id may be: it is shown in reasons (`builder lost: ID …`) and statuses.
BUILDER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def _default_scratch() -> Path:
    return Path.home() / ".local" / "share" / "slipway" / "builder"


@dataclass(frozen=True)
class Config:
    """Everything the builder is told at start-up."""

    #: The rack token: required of callers and sent to the other services.
    token: str
    #: Where the builder listens, `host:port` (`--listen`, SLIPWAY_LISTEN).
    listen: str = "127.0.0.1:7400"
    #: The rack's name, reported by GetRack (SLIPWAY_RACK_NAME).
    rack_name: str = "local"
    #: The name or address other machines reach the rack at (SLIPWAY_ADVERTISE): GetRack
    #: announces every service at it; empty announces the addresses below as they are.
    advertise: str = ""
    #: The archive service (SLIPWAY_ARCHIVE_ADDRESS).
    archive_address: str = "127.0.0.1:7401"
    #: The metadata service (SLIPWAY_METADATA_ADDRESS).
    metadata_address: str = "127.0.0.1:7402"
    #: The registry service (SLIPWAY_REGISTRY_ADDRESS).
    registry_address: str = "127.0.0.1:7403"
    #: The rack's registry, `host:port`, which this builder pushes its images to through
    #: its own engine (SLIPWAY_REGISTRY_HOST; required by `from_env`).
    registry_host: str = ""
    #: `ecr://ACCOUNT.dkr.ecr.REGION.amazonaws.com` when the rack registry is ECR
    #: (SLIPWAY_REGISTRY_URL): credentials are then ECR's tokens, fetched through boto3.
    registry_url: str = ""
    #: What the rack registry requires, read from SLIPWAY_REGISTRY_AUTH_FILE (none: open).
    registry_auth: RegistryCredentials | None = None
    #: Where builds are extracted, one folder per build, removed when it ends
    #: (SLIPWAY_SCRATCH_DIR).
    scratch_dir: Path = _default_scratch()
    #: How many services of one build are built or pulled at once
    #: (SLIPWAY_BUILD_CONCURRENCY).
    build_concurrency: int = 2
    #: How many builds run at once; later ones wait, status created (SLIPWAY_MAX_BUILDS).
    max_builds: int = 4
    #: The most bytes an archive may extract to (SLIPWAY_MAX_EXTRACT_BYTES).
    max_extract_bytes: int = 2 * 1024**3
    #: The most entries an archive may hold (SLIPWAY_MAX_EXTRACT_FILES).
    max_extract_files: int = 100_000
    #: The Docker engine (DOCKER_HOST).
    docker_host: str = DEFAULT_DOCKER_HOST
    #: The engine's builder: `buildkit`, or `legacy` for engines without BuildKit
    #: (SLIPWAY_ENGINE_BUILDER).
    engine_builder: str = BUILDKIT
    #: How long log and status writes are retried while metadata refuses them, in
    #: seconds; past it the build fails with `could not store the build log: …`.
    store_retry_seconds: float = 120.0
    #: This builder's name on the rack's queue: the owner of the leases it holds
    #: (SLIPWAY_BUILDER_ID; by default host-pid). Stable across restarts when set, so a
    #: restarted builder ends the builds it held at once.
    builder_id: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    #: Seconds between looks at the queue when no build was started here (a build started
    #: through this builder is claimed at once).
    claim_interval: float = 1.0
    #: Seconds between renewals of this builder's leases (SPEC: at least every 10 s).
    renew_interval: float = 5.0
    #: Seconds between sweeps for builds other builders lost, and queued too long.
    sweep_interval: float = 10.0
    #: What it speaks TLS with (SLIPWAY_TLS_CERT, SLIPWAY_TLS_KEY, SLIPWAY_TLS_CA;
    #: required by `from_env`); None only for a server a test starts in-process.
    tls: TlsFiles | None = None
    #: Archives and blobs younger than this many seconds are never collected
    #: (SLIPWAY_GC_GRACE; a day).
    gc_grace: float = 24 * 3600.0
    #: Seconds between asks for the daily collection (the archive service runs it at
    #: most once a day, whichever builder asks); 0 never asks (SLIPWAY_GC_INTERVAL).
    gc_interval: float = 3600.0

    @classmethod
    def from_env(
        cls, argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
    ) -> Config:
        """Flags first, then the environment, then defaults; exits 2 on a missing token
        or a bad value, as argparse does (the other services do the same)."""
        env = os.environ if environ is None else environ
        parser = ServiceArgs("builder", cls.listen, env)
        args = parser.parse_args(argv)
        token = parser.token()
        tls = parser.tls()
        numbers = {}
        for name, default in (
            ("SLIPWAY_BUILD_CONCURRENCY", cls.build_concurrency),
            ("SLIPWAY_MAX_BUILDS", cls.max_builds),
            ("SLIPWAY_MAX_EXTRACT_BYTES", cls.max_extract_bytes),
            ("SLIPWAY_MAX_EXTRACT_FILES", cls.max_extract_files),
        ):
            value = _positive(env.get(name, ""), default)
            if value is None:
                parser.error(f"{name} must be a positive integer, not {env.get(name)!r}")
            numbers[name] = value
        registry_url = env.get("SLIPWAY_REGISTRY_URL", "").strip()
        registry_host = ecr_registry(parser, registry_url) or env.get("SLIPWAY_REGISTRY_HOST", "")
        if not registry_host:
            parser.error(
                "SLIPWAY_REGISTRY_HOST is required: the rack registry's host:port "
                "(or SLIPWAY_REGISTRY_URL=ecr://…)"
            )
        if not valid_registry_host(registry_host):
            parser.error(
                f"invalid SLIPWAY_REGISTRY_HOST {registry_host!r}: expected host:port, "
                "no scheme or path"
            )
        advertise = env.get("SLIPWAY_ADVERTISE", "").strip().strip("[]")
        if advertise and not _host_or_ip(advertise):
            parser.error(f"invalid SLIPWAY_ADVERTISE {advertise[:100]!r}: expected a host name")
        scratch = env.get("SLIPWAY_SCRATCH_DIR")
        builder_id = env.get("SLIPWAY_BUILDER_ID", "").strip()
        if builder_id and not BUILDER_ID.match(builder_id):
            parser.error(
                f"invalid SLIPWAY_BUILDER_ID {builder_id[:40]!r}: letters, digits, . _ - only"
            )
        engine_builder = env.get("SLIPWAY_ENGINE_BUILDER", "").strip() or cls.engine_builder
        if engine_builder not in ENGINE_BUILDERS:
            parser.error(
                f"SLIPWAY_ENGINE_BUILDER must be buildkit or legacy, not {engine_builder[:40]!r}"
            )
        times = {}
        for name, fallback in (
            ("SLIPWAY_GC_GRACE", cls.gc_grace),
            ("SLIPWAY_GC_INTERVAL", cls.gc_interval),
        ):
            raw = env.get(name, "").strip()
            try:
                times[name] = float(raw) if raw else fallback
            except ValueError:
                times[name] = -1.0
            if not 0 <= times[name] < float("inf"):
                parser.error(f"{name} must be 0 or more seconds, not {raw[:40]!r}")
        config = cls(
            token=token,
            listen=args.listen,
            rack_name=env.get("SLIPWAY_RACK_NAME") or cls.rack_name,
            advertise=advertise,
            archive_address=env.get("SLIPWAY_ARCHIVE_ADDRESS") or cls.archive_address,
            metadata_address=env.get("SLIPWAY_METADATA_ADDRESS") or cls.metadata_address,
            registry_address=env.get("SLIPWAY_REGISTRY_ADDRESS") or cls.registry_address,
            registry_host=registry_host,
            registry_url=registry_url,
            registry_auth=registry_credentials(parser, env.get("SLIPWAY_REGISTRY_AUTH_FILE", "")),
            scratch_dir=Path(scratch).expanduser() if scratch else _default_scratch(),
            build_concurrency=numbers["SLIPWAY_BUILD_CONCURRENCY"],
            max_builds=numbers["SLIPWAY_MAX_BUILDS"],
            max_extract_bytes=numbers["SLIPWAY_MAX_EXTRACT_BYTES"],
            max_extract_files=numbers["SLIPWAY_MAX_EXTRACT_FILES"],
            docker_host=env.get("DOCKER_HOST") or DEFAULT_DOCKER_HOST,
            engine_builder=engine_builder,
            tls=tls,
            gc_grace=times["SLIPWAY_GC_GRACE"],
            gc_interval=times["SLIPWAY_GC_INTERVAL"],
        )
        return dataclasses.replace(config, builder_id=builder_id) if builder_id else config


def _host_or_ip(text: str) -> bool:
    """Whether `text` is an IP address (v4 or v6) or a host name, with no port."""
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return ":" not in text and valid_registry_host(text)


def _positive(raw: str, default: int) -> int | None:
    """`raw` as a positive integer, `default` when empty, None when invalid."""
    raw = raw.strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        return None
    return value if value >= 1 else None
