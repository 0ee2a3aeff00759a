"""The registry service's configuration, read once from flags and the environment."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from services.common.config import (
    RegistryCredentials,
    ServiceArgs,
    TlsFiles,
    ecr_registry,
    registry_credentials,
    valid_registry_host,
)

DEFAULT_LISTEN = "127.0.0.1:7403"
DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"


@dataclass(frozen=True)
class Config:
    """How the registry service runs."""

    listen: str
    """`host:port` to listen on (`--listen`, SLIPWAY_LISTEN)."""
    token: str
    """The rack token every call but health must carry (SLIPWAY_TOKEN; required)."""
    registry_host: str
    """The Distribution registry images are pushed to, `host:port`
    (`--registry`, SLIPWAY_REGISTRY_HOST; required)."""
    registry_auth: RegistryCredentials | None = None
    """What the registry requires (SLIPWAY_REGISTRY_AUTH_FILE, `user:password`; none: open)."""
    registry_url: str = ""
    """`ecr://ACCOUNT.dkr.ecr.REGION.amazonaws.com` when the rack registry is ECR
    (SLIPWAY_REGISTRY_URL); `registry_host` is then its host."""
    registry_ca: Path | None = None
    """The CA (PEM) the registry's certificate is verified against when it serves HTTPS
    (SLIPWAY_REGISTRY_CA; none: plain HTTP, as on loopback)."""
    docker_host: str = DEFAULT_DOCKER_HOST
    """The Docker engine holding the images (`--docker-host`, DOCKER_HOST)."""
    metadata_address: str = ""
    """The metadata service, `host:port`, which exports read builds from and imports record
    them in (`--metadata`, SLIPWAY_METADATA_ADDRESS); without it both are UNAVAILABLE."""
    scratch_dir: Path = Path(tempfile.gettempdir())
    """Where exports and imports spool image tars on disk, never in memory
    (`--scratch`, SLIPWAY_SCRATCH_DIR; default: the system's temporary folder)."""
    tls: TlsFiles | None = None
    """What it speaks TLS with (SLIPWAY_TLS_CERT, SLIPWAY_TLS_KEY, SLIPWAY_TLS_CA; required
    by `from_env`); None only for a server a test starts in-process."""

    @classmethod
    def from_env(
        cls, argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
    ) -> Config:
        """Flags first, then the environment, then defaults; exits 2 on a missing token or
        registry, as argparse does."""
        env = os.environ if environ is None else environ
        parser = ServiceArgs("registry", DEFAULT_LISTEN, env)
        parser.add_argument(
            "--registry",
            default=env.get("SLIPWAY_REGISTRY_HOST", ""),
            help="the registry's host:port, e.g. 127.0.0.1:7404 (SLIPWAY_REGISTRY_HOST)",
        )
        parser.add_argument(
            "--docker-host",
            default=env.get("DOCKER_HOST") or DEFAULT_DOCKER_HOST,
            help=f"the Docker engine (DOCKER_HOST, default {DEFAULT_DOCKER_HOST})",
        )
        parser.add_argument(
            "--metadata",
            default=env.get("SLIPWAY_METADATA_ADDRESS", ""),
            help="the metadata service's host:port, for builds export/import "
            "(SLIPWAY_METADATA_ADDRESS)",
        )
        parser.add_argument(
            "--scratch",
            default=env.get("SLIPWAY_SCRATCH_DIR") or tempfile.gettempdir(),
            help="where image tars are spooled during export/import (SLIPWAY_SCRATCH_DIR)",
        )
        args = parser.parse_args(argv)
        registry_url = env.get("SLIPWAY_REGISTRY_URL", "").strip()
        if registry_url:
            args.registry = ecr_registry(parser, registry_url)
        token = parser.token()
        tls = parser.tls()
        if not args.registry:
            parser.error("the registry is required: pass --registry or set SLIPWAY_REGISTRY_HOST")
        if not valid_registry_host(args.registry):
            parser.error(
                f"invalid registry {args.registry!r}: expected host:port, no scheme or path"
            )
        return cls(
            listen=args.listen,
            token=token,
            registry_host=args.registry,
            registry_auth=registry_credentials(parser, env.get("SLIPWAY_REGISTRY_AUTH_FILE", "")),
            docker_host=args.docker_host,
            metadata_address=args.metadata,
            scratch_dir=Path(args.scratch).expanduser(),
            registry_url=registry_url,
            registry_ca=Path(env["SLIPWAY_REGISTRY_CA"])
            if env.get("SLIPWAY_REGISTRY_CA")
            else None,
            tls=tls,
        )
