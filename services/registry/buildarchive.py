"""The export format (SPEC §5): a gzip'd tar whose first entry is `build.json`, followed by
image tars. Written and read as streams; image tars go to and come from files on disk."""

from __future__ import annotations

import json
import re
import tarfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from client.kernel import types
from client.kernel.errors import InvalidArgument
from client.kernel.streams import rechunk
from services.registry.layerscan import HeldUploads, LayerDigests, Scan
from services.registry.tarstream import (
    GZIP_LEVEL,
    TarReader,
    TarWriter,
    file_info,
    gunzip,
    gzip,
)

BUILD_JSON = "build.json"
# build.json carries the whole build log: generous, yet bounded, since it is read in memory.
MAX_BUILD_JSON = 64 * 1024 * 1024
# Go's zero time, which Convox writes for a time never set.
ZERO_TIME = "0001-01-01T00:00:00Z"
# A build id from any rack: it becomes part of image tags.
BUILD_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}\Z")
_FRACTION = re.compile(r"(\.\d{1,6})\d*")


@dataclass(frozen=True)
class BuildRecord:
    """What `build.json` says of a build (times in epoch seconds, 0 when unset)."""

    id: str
    app: str
    status: str = types.COMPLETE
    description: str = ""
    entrypoint: str = ""
    git_sha: str = ""
    logs: str = ""
    manifest: str = ""
    release: str = ""
    reason: str = ""
    started: float = 0.0
    ended: float = 0.0

    @property
    def log_lines(self) -> list[str]:
        return self.logs.splitlines()


def rfc3339(when: float) -> str:
    """`2024-05-01T12:00:00.123456Z`, or Go's zero time for 0, as Convox writes times."""
    if not when:
        return ZERO_TIME
    return datetime.fromtimestamp(when, UTC).isoformat().replace("+00:00", "Z")


def parse_time(value: Any) -> float:
    """Epoch seconds from an RFC 3339 string (any fraction, `Z` or an offset) or a number;
    0 for the zero time or nothing."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if not value:
        return 0.0
    text = _FRACTION.sub(r"\1", str(value).strip()).replace("Z", "+00:00").replace("z", "+00:00")
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidArgument(f"invalid build.json: {value!r} is not an RFC 3339 time") from None
    if parsed.year <= 1:
        return 0.0
    return parsed.timestamp()


def encode_build(build: types.Build, logs: str) -> bytes:
    """build.json for a build and its full log text."""
    doc = {
        "id": build.id,
        "app": build.app,
        "description": build.description,
        "entrypoint": build.entrypoint,
        "git-sha": build.git_sha,
        "logs": logs,
        "manifest": build.manifest,
        "release": build.release,
        "reason": build.reason,
        "status": build.status,
        "started": rfc3339(build.started),
        "ended": rfc3339(build.ended),
    }
    return json.dumps(doc, indent=2).encode() + b"\n"


def decode_build(data: bytes) -> BuildRecord:
    """The record of a build.json; InvalidArgument says what is wrong with it."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as err:
        raise InvalidArgument(f"invalid build.json: {err}") from None
    if not isinstance(doc, dict):
        raise InvalidArgument("invalid build.json: not a JSON object")

    def text(key: str) -> str:
        value = doc.get(key)
        if value is None:
            return ""
        if not isinstance(value, str):
            raise InvalidArgument(f"invalid build.json: {key!r} is not a string")
        return value

    build_id, app = text("id"), text("app")
    if not BUILD_ID.match(build_id):
        raise InvalidArgument(f"invalid build.json: invalid build id {build_id!r}")
    return BuildRecord(
        id=build_id,
        app=app,
        status=text("status") or types.COMPLETE,
        description=text("description"),
        entrypoint=text("entrypoint"),
        git_sha=text("git-sha"),
        logs=text("logs"),
        manifest=text("manifest"),
        release=text("release"),
        reason=text("reason"),
        started=parse_time(doc.get("started")),
        ended=parse_time(doc.get("ended")),
    )


def write_archive(
    build_json: bytes,
    image_name: str,
    image: Iterable[bytes],
    image_size: int,
    mtime: float = 0.0,
    level: int = GZIP_LEVEL,
) -> Iterator[bytes]:
    """The gzip'd export archive in chunks: build.json, then the image tar's `image_size`
    bytes from `image`. `level` 0 stores the bytes in gzip's framing without compressing
    them: for layers already compressed, compressing again gains nothing and costs most of
    the time."""
    when = mtime or time.time()
    tar = TarWriter()

    def pieces() -> Iterator[bytes]:
        yield from tar.member(file_info(BUILD_JSON, len(build_json), when), [build_json])
        yield from tar.member(file_info(image_name, image_size, when), image)
        yield tar.end()

    return rechunk(gzip(pieces(), level))


@dataclass
class Unpacked:
    """An import archive taken apart: build.json's bytes and each image tar, on disk."""

    build_json: bytes | None = None
    #: Image tars by member name, each spooled to its own file.
    tars: dict[str, Path] = field(default_factory=dict)
    #: The gzip'd members of each image tar, checked as it arrived (`layerscan`).
    layers: dict[str, dict[str, LayerDigests]] = field(default_factory=dict)


def unpack(chunks: Iterable[bytes], folder: Path, held: HeldUploads | None = None) -> Unpacked:
    """Reads the archive as it arrives: build.json into memory (bounded), every top-level
    `*.tar` into a file of `folder` (its compressed layers scanned on the way, and sent
    into uploads `held` starts), anything else skipped. InvalidArgument for a corrupt or
    truncated archive, a member twice, or an oversized build.json."""
    found = Unpacked()
    tar = TarReader(gunzip(chunks))
    try:
        for member in tar.members():
            name = member.name.removeprefix("./")
            image_tar = name.endswith(".tar") and "/" not in name
            if not member.isreg() or not (name == BUILD_JSON or image_tar):
                continue
            if member.issparse():
                raise InvalidArgument(f"{name[:200]}: a sparse file is not supported here")
            if name == BUILD_JSON:
                if found.build_json is not None:
                    raise InvalidArgument("the archive holds build.json twice")
                found.build_json = _read_small(tar, member, MAX_BUILD_JSON)
            else:
                if name in found.tars:
                    raise InvalidArgument(f"the archive holds {name[:200]} twice")
                path = folder / f"image{len(found.tars)}.tar"
                found.layers[name] = _spool(tar.data(member), path, held)
                found.tars[name] = path
        # The tar ends at its end-of-archive blocks: read on to the gzip trailer, so that a
        # truncated or corrupt end is caught too.
        tar.drain()
    except (tarfile.TarError, EOFError) as err:
        raise InvalidArgument(f"invalid archive: {err}") from None
    return found


def _spool(
    chunks: Iterable[bytes | memoryview], path: Path, held: HeldUploads | None
) -> dict[str, LayerDigests]:
    """Writes an image tar to `path`, scanning it as it goes (`Scan`); its scanned layers."""
    scan = Scan(held)
    try:
        with open(path, "wb") as out:
            for data in chunks:
                out.write(data)
                scan.feed(data)
    finally:
        layers = scan.finish()
    return layers


def _read_small(tar: TarReader, member: tarfile.TarInfo, limit: int) -> bytes:
    if member.size > limit:
        raise InvalidArgument(f"{member.name} is too large ({member.size} bytes, at most {limit})")
    return b"".join(tar.data(member))
