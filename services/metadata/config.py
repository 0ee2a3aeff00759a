"""The metadata service's configuration, read once from flags and the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from services.common.config import ServiceArgs, TlsFiles

DEFAULT_LISTEN = "127.0.0.1:7402"
DEFAULT_DATA = "~/.local/share/slipway/metadata"
DATABASE_SCHEMES = ("sqlite", "postgresql", "postgres")


@dataclass(frozen=True)
class Config:
    """How the metadata service runs."""

    listen: str
    """`host:port` to listen on (`--listen`, SLIPWAY_LISTEN)."""
    token: str
    """The rack token every call but health must carry (SLIPWAY_TOKEN; required)."""
    data_dir: Path
    """Where the default SQLite database lives (`--data`, SLIPWAY_DATA)."""
    database_url: str
    """`sqlite:///<path>` or `postgresql://user[:password]@host:port/db` (`--database`,
    SLIPWAY_DATABASE_URL; default `sqlite:///<data>/metadata.db`)."""
    tls: TlsFiles | None = None
    """What it speaks TLS with (SLIPWAY_TLS_CERT, SLIPWAY_TLS_KEY, SLIPWAY_TLS_CA; required
    by `from_env`); None only for a server a test starts in-process."""

    @classmethod
    def from_env(
        cls, argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
    ) -> Config:
        """Flags first, then the environment, then defaults; exits 2 on a missing token
        or a bad value, as argparse does."""
        env = os.environ if environ is None else environ
        parser = ServiceArgs("metadata", DEFAULT_LISTEN, env)
        parser.add_argument(
            "--data",
            default=env.get("SLIPWAY_DATA") or DEFAULT_DATA,
            help=f"folder of the default SQLite database (SLIPWAY_DATA, default {DEFAULT_DATA})",
        )
        parser.add_argument(
            "--database",
            default=env.get("SLIPWAY_DATABASE_URL") or "",
            help="database URL, sqlite:///PATH or postgresql://USER@HOST:PORT/DB "
            "(SLIPWAY_DATABASE_URL, default sqlite:///DATA/metadata.db)",
        )
        args = parser.parse_args(argv)
        token = parser.token()
        tls = parser.tls()
        data_dir = Path(args.data).expanduser()
        url = args.database or f"sqlite:///{data_dir / 'metadata.db'}"
        problem = check_database_url(url)
        if problem:
            parser.error(problem)
        return cls(listen=args.listen, token=token, data_dir=data_dir, database_url=url, tls=tls)


def check_database_url(url: str) -> str:
    """Why `url` is not a usable database URL, or "" when it is."""
    parts = urlsplit(url)
    if parts.scheme not in DATABASE_SCHEMES:
        return f"unsupported database URL {redact(url)!r}: use sqlite:///PATH or postgresql://…"
    if not parts.path.lstrip("/"):
        return f"database URL {redact(url)!r} names no database"
    return ""


def redact(url: str) -> str:
    """`url` without its password, fit for logs and error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()
