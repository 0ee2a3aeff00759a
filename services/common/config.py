"""What every service's configuration shares: the `--listen` flag, the rack token, the
TLS certificate it serves with, the shape of a registry host and the rack registry's
credentials."""

from __future__ import annotations

import argparse
import base64
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

# `host`, `host:port` or `[v6]:port`, as image references name a registry: no scheme, no path.
REGISTRY_HOST = re.compile(r"^(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:]+\])(?::[0-9]+)?\Z")


def valid_registry_host(host: str) -> bool:
    """Whether `host` names a registry as image references do (`host[:port]`)."""
    return bool(REGISTRY_HOST.match(host))


TLS_VARIABLES = ("SLIPWAY_TLS_CERT", "SLIPWAY_TLS_KEY", "SLIPWAY_TLS_CA")


@dataclass(frozen=True)
class TlsFiles:
    """What a service speaks TLS with: its certificate and key (PEM), and the rack's CA,
    against which it verifies the services it calls."""

    cert: bytes
    key: bytes = field(repr=False)
    ca: bytes


class ServiceArgs(argparse.ArgumentParser):
    """A service's flag parser: `--listen` (SLIPWAY_LISTEN) is there from the start, and
    `token()` reads SLIPWAY_TOKEN. Errors exit 2 with argparse's usage message."""

    def __init__(self, service: str, default_listen: str, env: Mapping[str, str]) -> None:
        super().__init__(
            prog=f"python -m services.{service}", description=f"Slipway {service} service."
        )
        self.env = env
        self.add_argument(
            "--listen",
            default=env.get("SLIPWAY_LISTEN") or default_listen,
            help=f"host:port to listen on (SLIPWAY_LISTEN, default {default_listen})",
        )

    def tls(self) -> TlsFiles:
        """The certificate, key and CA of SLIPWAY_TLS_CERT, SLIPWAY_TLS_KEY and
        SLIPWAY_TLS_CA (PEM files): every port speaks TLS, so a service without them
        exits 2."""
        paths = {var: self.env.get(var, "") for var in TLS_VARIABLES}
        missing = [var for var, path in paths.items() if not path]
        if missing:
            self.error(
                f"{', '.join(missing)} required: every port speaks TLS (the PEM files of "
                "this service's certificate, its key and the rack's CA)"
            )
        read: dict[str, bytes] = {}
        for var, path in paths.items():
            try:
                read[var] = Path(path).read_bytes()
            except OSError as err:
                self.error(f"cannot read {var}: {err.strerror}")
            if b"-----BEGIN " not in read[var]:
                self.error(f"{var} is not a PEM file")
        return TlsFiles(*(read[var] for var in TLS_VARIABLES))

    def token(self) -> str:
        """The rack token every call but health must carry; exits 2 when it is not set."""
        token = self.env.get("SLIPWAY_TOKEN", "")
        if not token:
            self.error("SLIPWAY_TOKEN is required: set it to the rack token")
        return token


@dataclass(frozen=True)
class RegistryCredentials:
    """The user name and password the rack registry requires (basic auth)."""

    username: str
    password: str = field(repr=False)

    def engine_auth(self) -> dict[str, str]:
        """As the Docker engine API takes them for a push or pull."""
        return {"username": self.username, "password": self.password}

    def header(self) -> str:
        """The HTTP `Authorization` header value."""
        pair = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(pair).decode()


def ecr_registry(parser: argparse.ArgumentParser, url: str) -> str:
    """The registry host of SLIPWAY_REGISTRY_URL, `ecr://ACCOUNT.dkr.ecr.REGION.amazonaws.com`
    (ECR as the rack registry); empty when `url` is. A malformed URL exits 2."""
    from client.kernel.errors import InvalidArgument
    from services.common.ecr import parse_ecr_url

    if not url:
        return ""
    try:
        return parse_ecr_url(url).host
    except InvalidArgument as err:
        parser.error(f"invalid SLIPWAY_REGISTRY_URL: {err}")


def registry_credentials(parser: argparse.ArgumentParser, path: str) -> RegistryCredentials | None:
    """The credentials in the file at `path` (one line, `user:password`; the rack writes
    it 0600 at start and passes SLIPWAY_REGISTRY_AUTH_FILE); None when `path` is empty.
    A missing or malformed file exits 2 (`parser.error`) without showing its content."""
    if not path:
        return None
    try:
        text = Path(path).read_text().strip()
    except OSError as err:
        parser.error(f"cannot read SLIPWAY_REGISTRY_AUTH_FILE: {err.strerror}")
    username, sep, password = text.partition(":")
    if not sep or not username or not password or "\n" in text:
        parser.error("SLIPWAY_REGISTRY_AUTH_FILE must hold one line, user:password")
    return RegistryCredentials(username, password)
