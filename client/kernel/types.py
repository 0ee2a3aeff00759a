"""The records Slipway speaks in: plain dataclasses shared by the client library and services."""

from __future__ import annotations

import re
import secrets
import string
from collections.abc import Mapping
from dataclasses import dataclass, field

from client.kernel.errors import InvalidArgument

# Apps and services follow the same rule (SPEC §1, §4).
APP_NAME = SERVICE_NAME = re.compile(r"^[a-z][a-z0-9-]*\Z")

CREATED = "created"
RUNNING = "running"
COMPLETE = "complete"
FAILED = "failed"
CANCELLED = "cancelled"
BUILD_STATUSES = (CREATED, RUNNING, COMPLETE, FAILED, CANCELLED)
TERMINAL = frozenset({COMPLETE, FAILED, CANCELLED})


# A failure reason is one line of at most this many characters (SPEC §1).
MAX_REASON = 500
# A log line the builder writes about a failure is cut to this many characters.
MAX_ERROR_LINE = 2000
# Further lines of a failure (a list of validation errors, say) kept in the log.
MAX_ERROR_LINES = 50


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def one_line(message: str) -> str:
    """A failure reason: the first line, or `head: a; b` when the first line introduces a
    list; at most MAX_REASON characters (longer ones end in `…`)."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    if not lines:
        return "unknown error"
    if len(lines) > 1 and lines[0].endswith(":"):
        return _cut(f"{lines[0]} {'; '.join(lines[1:MAX_ERROR_LINES])}", MAX_REASON)
    return _cut(lines[0], MAX_REASON)


def check_reason(reason: str) -> str:
    """Returns `reason` when it is a valid failure reason (one non-empty line of at most
    MAX_REASON characters), else raises InvalidArgument."""
    if not reason.strip():
        raise InvalidArgument("a failed build needs a reason")
    if "\n" in reason or "\r" in reason:
        raise InvalidArgument("a failure reason must be one line")
    if len(reason) > MAX_REASON:
        raise InvalidArgument(f"a failure reason is at most {MAX_REASON} characters")
    return reason


def error_lines(message: str) -> list[str]:
    """How a failure ends a build's log: `ERROR: <first line>`, then any further lines as
    they are (a list of validation errors keeps one line each), each line and their count
    bounded."""
    lines = [line.rstrip() for line in message.splitlines() if line.strip()]
    if not lines:
        return ["ERROR: unknown error"]
    head = [f"ERROR: {lines[0].strip()}", *lines[1:MAX_ERROR_LINES]]
    return [_cut(line, MAX_ERROR_LINE) for line in head]


def new_id(prefix: str) -> str:
    """A build or release id: `prefix` followed by 10 random uppercase letters."""
    return prefix + "".join(secrets.choice(string.ascii_uppercase) for _ in range(10))


def check_app_name(name: str) -> str:
    """Returns `name` when it is a valid app name, else raises InvalidArgument."""
    if not APP_NAME.match(name or ""):
        raise InvalidArgument(f"invalid app name: {name!r} (must match ^[a-z][a-z0-9-]*$)")
    return name


#: The engine's builders a rack builds with: BuildKit, or the classic one for engines
#: without it (`slipway rack start --engine-builder`).
BUILDKIT = "buildkit"
LEGACY = "legacy"
ENGINE_BUILDERS = (BUILDKIT, LEGACY)

#: A build secret's id, as a Dockerfile names it (`RUN --mount=type=secret,id=ID`).
SECRET_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
#: The most secrets one build takes, and the largest value (BuildKit's own limit).
MAX_SECRETS = 32
MAX_SECRET_BYTES = 500 * 1024


def check_secrets(values: Mapping[str, bytes]) -> None:
    """Raises InvalidArgument unless `values` are build secrets a build may carry; the
    message names an id at most, never a value."""
    if len(values) > MAX_SECRETS:
        raise InvalidArgument(f"too many secrets: {len(values)} (at most {MAX_SECRETS})")
    for ident, value in values.items():
        if not SECRET_ID.match(ident):
            shown = ident[:40] + ("…" if len(ident) > 40 else "")
            raise InvalidArgument(
                f"invalid secret id: {shown!r} (letters, digits, '.', '_', '-'; at most 128)"
            )
        if len(value) > MAX_SECRET_BYTES:
            raise InvalidArgument(
                f"secret {ident} is too large: {len(value)} bytes (at most {MAX_SECRET_BYTES})"
            )


@dataclass(frozen=True)
class App:
    """A named application on a rack."""

    name: str
    created: float = 0.0
    release: str = ""


@dataclass(frozen=True)
class Build:
    """One attempt to turn a source into images (times are epoch seconds, 0 when unset)."""

    id: str
    app: str
    status: str = CREATED
    description: str = ""
    release: str = ""
    manifest: str = ""
    entrypoint: str = ""
    git_sha: str = ""
    reason: str = ""
    created: float = 0.0
    started: float = 0.0
    ended: float = 0.0
    archive: str = ""

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL


@dataclass(frozen=True)
class BuildRequest:
    """What a build is asked to do: the uploaded archive and how to build it."""

    app: str
    archive: str
    description: str = ""
    manifest: str = ""
    no_cache: bool = False
    development: bool = False
    build_args: Mapping[str, str] = field(default_factory=dict)
    git_sha: str = ""
    #: Build secrets, id -> value (`--secret`); never printed, stored or exported.
    secrets: Mapping[str, bytes] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class Release:
    """A build plus an environment."""

    id: str
    app: str
    build: str = ""
    env: dict[str, str] = field(default_factory=dict)
    manifest: str = ""
    description: str = ""
    created: float = 0.0


@dataclass(frozen=True)
class LogLine:
    """One line of a build log."""

    offset: int
    text: str
    time: float = 0.0


@dataclass(frozen=True)
class RackInfo:
    """What a rack's front door says of it."""

    name: str
    version: str
    archive_address: str
    metadata_address: str
    registry_address: str
    registry_host: str


@dataclass(frozen=True)
class PushProgress:
    """One progress update of an image push."""

    text: str
    layer: str = ""
    status: str = ""
    current: int = 0
    total: int = 0


@dataclass(frozen=True)
class PushResult:
    """A finished image push."""

    reference: str
    digest: str


@dataclass(frozen=True)
class ImageManifest:
    """One service's image of a build, as its rack's registry serves it (`body` unchanged:
    its digest depends on every byte)."""

    service: str
    media_type: str
    body: bytes
    digest: str
    config_digest: str


@dataclass(frozen=True)
class CopyProgress:
    """One progress update of a rack-to-rack copy: bytes moved so far of `total`."""

    text: str
    current: int = 0
    total: int = 0


@dataclass(frozen=True)
class CopyResult:
    """A finished copy: the new build and release, and how many blobs (layers and image
    configs) travelled, were mounted from another repository, or were already there."""

    build: Build
    release: Release
    blobs: int = 0
    moved: int = 0
    mounted: int = 0
    bytes: int = 0
    moved_blobs: tuple[str, ...] = ()

    @property
    def present(self) -> int:
        """Blobs the destination repository already held."""
        return self.blobs - self.moved - self.mounted
