"""The records Slipway speaks in: plain dataclasses shared by the client library and services."""

from __future__ import annotations

import json
import re
import secrets
import ssl
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


#: The longest app name (it names image repositories and database rows).
MAX_APP_NAME = 100


def check_app_name(name: str) -> str:
    """Returns `name` when it is a valid app name, else raises InvalidArgument."""
    if len(name or "") > MAX_APP_NAME:
        raise InvalidArgument(f"invalid app name: longer than {MAX_APP_NAME} characters")
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
    #: The builder that took it from the queue and ran it (e.g. `builder-2`); empty while
    #: queued, and for a build imported or copied in (no builder of the rack ran it).
    builder: str = ""

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
    #: Seconds the build may run once started (`--timeout`); 0 for the default, 60 min.
    timeout: float = 0.0


#: A running build's lease (SPEC §4): its builder renews it at least this often...
LEASE_RENEW_SECONDS = 10.0
#: ...and any builder ends a build whose lease is older than this.
LEASE_EXPIRY_SECONDS = 30.0
#: A build still queued this long after it was recorded is ended, never started.
QUEUE_EXPIRY_SECONDS = 3600.0
#: How long a build may run unless `--timeout` says otherwise.
DEFAULT_TIMEOUT_SECONDS = 3600.0


def lost_reason(builder: str) -> str:
    """Why a build whose builder stopped renewing its lease ended."""
    return f"builder lost: {builder or 'a builder'} stopped renewing its lease"


def secrets_lost_reason(builder: str) -> str:
    """Why a build given secrets ended before it ran: only the builder that received them
    held them (in memory), and it stopped."""
    return f"its secrets were held by {builder or 'a builder'}, which stopped; start it again"


def timed_out_reason(seconds: float) -> str:
    """Why a build that ran past its deadline ended (`timed out after 60m`)."""
    return f"timed out after {format_duration(seconds)}"


def format_duration(seconds: float) -> str:
    """Whole minutes as minutes, anything else as seconds: `3600` -> `60m` (SPEC's
    `timed out after 60m`), `300` -> `5m`, `5` -> `5s`, `90` -> `90s`."""
    whole = max(0, round(seconds))
    if whole and whole % 60 == 0:
        return f"{whole // 60}m"
    return f"{whole}s"


def parse_duration(text: str) -> float:
    """`--timeout` values: `90s`, `5m`, `1h`, `1h30m`, or bare seconds; more than 0 and at
    most a week. InvalidArgument otherwise."""
    value = text.strip().lower()
    match = _DURATION.match(value)
    if not value or not match:
        raise InvalidArgument(f"invalid duration: {text[:40]!r} (e.g. 90s, 10m, 1h)")
    if match.group("bare"):
        seconds = float(match.group("bare"))
    else:
        seconds = sum(
            float(match.group(unit) or 0) * size
            for unit, size in (("h", 3600), ("m", 60), ("s", 1))
        )
    if not 0 < seconds <= MAX_TIMEOUT_SECONDS:
        raise InvalidArgument(f"invalid duration: {text[:40]!r} (more than 0, at most 168h)")
    return seconds


_DURATION = re.compile(
    r"^(?:(?P<bare>\d+(?:\.\d+)?)|(?:(?P<h>\d+)h)?(?:(?P<m>\d+)m)?(?:(?P<s>\d+)s)?)$"
)
#: The longest `--timeout` a build takes: a week.
MAX_TIMEOUT_SECONDS = 7 * 24 * 3600.0


@dataclass(frozen=True)
class Lease:
    """A builder's hold on a running build: its id and the claim's attempt number. Writes
    that carry a lease apply only while the build is still running under that very lease."""

    owner: str
    attempt: int


@dataclass(frozen=True)
class Completion:
    """What a build records as it completes, with its release in one write."""

    entrypoint: str
    ended: float


@dataclass(frozen=True)
class Claim:
    """A queued build a builder has taken: the build (now running), how to build it, the
    lease its writes carry, and its time limit in seconds."""

    build: Build
    request: BuildRequest
    lease: Lease
    timeout: float = DEFAULT_TIMEOUT_SECONDS
    #: The ids of the secrets it was given (the values stay with the builder it reached).
    secrets: tuple[str, ...] = ()


def request_json(req: BuildRequest) -> str:
    """The request as the queue keeps it: everything but its secrets."""
    return json.dumps(
        {
            "app": req.app,
            "archive": req.archive,
            "description": req.description,
            "manifest": req.manifest,
            "no_cache": req.no_cache,
            "development": req.development,
            "build_args": dict(req.build_args),
            "git_sha": req.git_sha,
            "secrets": sorted(req.secrets),
            "timeout": req.timeout,
        },
        sort_keys=True,
    )


def request_from_json(text: str, secrets: Mapping[str, bytes] | None = None) -> BuildRequest:
    """The request `request_json` kept, with the secrets the receiving builder holds."""
    data = json.loads(text or "{}")
    return BuildRequest(
        app=str(data.get("app", "")),
        archive=str(data.get("archive", "")),
        description=str(data.get("description", "")),
        manifest=str(data.get("manifest", "")),
        no_cache=bool(data.get("no_cache", False)),
        development=bool(data.get("development", False)),
        build_args={str(k): str(v) for k, v in dict(data.get("build_args") or {}).items()},
        git_sha=str(data.get("git_sha", "")),
        secrets=dict(secrets or {}),
        timeout=float(data.get("timeout") or 0.0),
    )


def secret_ids(text: str) -> list[str]:
    """The ids of the secrets a kept request was given (their values are never kept)."""
    return [str(s) for s in json.loads(text or "{}").get("secrets") or []]


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
    #: The answering builder: its name on the queue, its engine, the builds it runs.
    builder: str = ""
    engine: str = ""
    running: tuple[str, ...] = ()


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


# A CA bundle larger than this is not one (a rack's CA certificate is about 600 bytes).
MAX_CA_BYTES = 256 * 1024


def ca_problem(pem: bytes) -> str:
    """What is wrong with `pem` as the CA certificates a rack is verified against: empty
    when it is PEM certificates of at most MAX_CA_BYTES that load as trust roots."""
    if len(pem) > MAX_CA_BYTES:
        return "is not a CA certificate: over 256 KiB"
    if b"-----BEGIN CERTIFICATE-----" not in pem or b"-----END CERTIFICATE-----" not in pem:
        return "is not a PEM certificate"
    try:
        ssl.create_default_context(cadata=pem.decode("ascii"))
    except (ssl.SSLError, ValueError, UnicodeDecodeError):
        return "is not a valid PEM certificate"
    return ""


@dataclass(frozen=True)
class Garbage:
    """What a garbage collection of a rack's archives did."""

    removed: int = 0
    removed_bytes: int = 0
    kept: int = 0
    kept_bytes: int = 0
    skipped: bool = False
