"""The archive service's configuration, read once from flags and the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from client.kernel.errors import InvalidArgument
from services.common.config import ServiceArgs, TlsFiles
from services.common.objectstore import parse_s3_url

DEFAULT_LISTEN = "127.0.0.1:7401"
DEFAULT_DATA = "~/.local/share/slipway/archive"
DEFAULT_MAX_BYTES = 2 * 1024**3
DEFAULT_GIT_TIMEOUT = 600.0
DEFAULT_MAX_FILES = 100_000


@dataclass(frozen=True)
class Config:
    """How the archive service runs."""

    listen: str
    """`host:port` to listen on (`--listen`, SLIPWAY_LISTEN)."""
    token: str
    """The rack token every call but health must carry (SLIPWAY_TOKEN; required)."""
    data_dir: Path
    """Where the filesystem object store keeps archives (`--data`, SLIPWAY_ARCHIVE_DIR)."""
    max_bytes: int = DEFAULT_MAX_BYTES
    """The largest archive accepted, in bytes (`--max-bytes`, SLIPWAY_ARCHIVE_MAX_BYTES)."""
    max_files: int = DEFAULT_MAX_FILES
    """The most entries of a context (`--max-files`, SLIPWAY_ARCHIVE_MAX_FILES)."""
    git_timeout: float = DEFAULT_GIT_TIMEOUT
    """The longest a git fetch may take, in seconds, submodules included (`--git-timeout`,
    SLIPWAY_ARCHIVE_GIT_TIMEOUT)."""
    archive_url: str = ""
    """`s3://bucket[/prefix]` to keep archives in S3 (`--archives`, SLIPWAY_ARCHIVE_URL);
    empty for the filesystem under `data_dir`."""
    tls: TlsFiles | None = None
    """What it speaks TLS with (SLIPWAY_TLS_CERT, SLIPWAY_TLS_KEY, SLIPWAY_TLS_CA; required
    by `from_env`); None only for a server a test starts in-process."""

    @property
    def scratch_dir(self) -> Path:
        """Where git fetches clone and pack, beside the store's own temporary files."""
        return self.data_dir / "tmp"

    @classmethod
    def from_env(
        cls, argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
    ) -> Config:
        """Flags first, then the environment, then defaults; exits 2 on a missing token
        or a bad value, as argparse does."""
        env = os.environ if environ is None else environ
        parser = ServiceArgs("archive", DEFAULT_LISTEN, env)
        parser.add_argument(
            "--data",
            default=env.get("SLIPWAY_ARCHIVE_DIR") or DEFAULT_DATA,
            help=f"archive folder (SLIPWAY_ARCHIVE_DIR, default {DEFAULT_DATA})",
        )
        parser.add_argument(
            "--max-bytes",
            default=env.get("SLIPWAY_ARCHIVE_MAX_BYTES") or str(DEFAULT_MAX_BYTES),
            help="largest archive accepted, in bytes (SLIPWAY_ARCHIVE_MAX_BYTES, default 2 GiB)",
        )
        parser.add_argument(
            "--max-files",
            default=env.get("SLIPWAY_ARCHIVE_MAX_FILES") or str(DEFAULT_MAX_FILES),
            help="most entries of a context (SLIPWAY_ARCHIVE_MAX_FILES, default 100000)",
        )
        parser.add_argument(
            "--git-timeout",
            default=env.get("SLIPWAY_ARCHIVE_GIT_TIMEOUT") or str(DEFAULT_GIT_TIMEOUT),
            help="longest a git fetch may take, in seconds (SLIPWAY_ARCHIVE_GIT_TIMEOUT, "
            "default 600)",
        )
        parser.add_argument(
            "--archives",
            default=env.get("SLIPWAY_ARCHIVE_URL") or "",
            help="keep archives in S3, s3://BUCKET[/PREFIX] (SLIPWAY_ARCHIVE_URL; default the "
            "data folder)",
        )
        args = parser.parse_args(argv)
        token = parser.token()
        tls = parser.tls()
        if args.archives:
            try:
                parse_s3_url(args.archives)
            except InvalidArgument as err:
                parser.error(str(err))
        try:
            max_bytes = int(args.max_bytes)
        except ValueError:
            max_bytes = -1
        if max_bytes <= 0:
            parser.error(f"--max-bytes must be a positive number of bytes, not {args.max_bytes!r}")
        try:
            max_files = int(args.max_files)
        except ValueError:
            max_files = -1
        if max_files <= 0:
            parser.error(f"--max-files must be a positive number, not {args.max_files!r}")
        try:
            git_timeout = float(args.git_timeout)
        except ValueError:
            git_timeout = -1.0
        if not 0 < git_timeout < float("inf"):
            parser.error(
                f"--git-timeout must be a positive number of seconds, not {args.git_timeout!r}"
            )
        return cls(
            listen=args.listen,
            token=token,
            data_dir=Path(args.data).expanduser(),
            max_bytes=max_bytes,
            max_files=max_files,
            git_timeout=git_timeout,
            archive_url=args.archives,
            tls=tls,
        )
