"""Packing a source folder into the gzip'd tar `slipway build` uploads.

The tree is the one the Docker CLI would send for the folder (see `client.kernel.dockerignore`),
plus the manifest, `.dockerignore` and every Dockerfile the manifest names, even when
ignored. Symlinks stay symlinks; sockets, FIFOs and devices (which Docker would send and the
rack refuses) are left out. The archive is written as
it is produced, so memory stays flat whatever the folder's size.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import posixpath
import stat
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from client.kernel import manifest
from client.kernel.dockerignore import Matcher, walk
from client.kernel.entries import DIR, FILE, SYMLINK, Entry
from client.kernel.errors import InvalidArgument

log = logging.getLogger(__name__)

DEFAULT_MANIFEST = manifest.DEFAULT_MANIFEST
# Speed matters more than the last few percent of size for an upload that is used once.
COMPRESS_LEVEL = 6
# Files changed this recently when a walk begins are hashed, never remembered: file times
# move in clock ticks (a few ms), and a change in the same tick would go unseen.
RACY_NS = 50_000_000


class _DigestWriter:
    """A write-only file that counts and hashes what passes through to `out`."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self.size = 0
        self.sha256 = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        self.size += len(data)
        self._out.write(data)
        return len(data)

    def flush(self) -> None:
        self._out.flush()


def _inside(path: str) -> str | None:
    """`path` normalised relative to the folder, or None when it points outside it."""
    norm = posixpath.normpath(path.replace(os.sep, "/"))
    if norm in (".", "..") or norm.startswith(("/", "../")):
        return None
    return norm


def manifest_dockerfiles(path: Path) -> list[str]:
    """The Dockerfiles the manifest at `path` names (relative to its folder), for services
    that build rather than pull. A missing or invalid manifest names none: the manifest
    check reports that, not packing."""
    try:
        text = path.read_text(errors="replace")
        return manifest.dockerfiles(manifest.parse(text, {}, check_env=False))
    except (OSError, InvalidArgument):
        return []


def always_included(folder: Path, manifest: str = DEFAULT_MANIFEST) -> list[str]:
    """The paths sent even when `.dockerignore` excludes them."""
    paths = [".dockerignore", manifest, *manifest_dockerfiles(folder / manifest)]
    kept = (_inside(p) for p in paths)
    return sorted({p for p in kept if p})


def context_paths(
    folder: str | os.PathLike[str], manifest: str = DEFAULT_MANIFEST
) -> Iterator[str]:
    """The relative paths `pack` would archive, in order (sockets and devices included)."""
    root = Path(folder)
    matcher = Matcher.from_file(root / ".dockerignore")
    return walk(root, matcher, always_included(root, manifest))


def _tarinfo(tar: tarfile.TarFile, full: str, path: str) -> tarfile.TarInfo | None:
    """The header of one entry, owned by root like Docker's; None for what is not sent."""
    st = os.lstat(full)
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode) or stat.S_ISLNK(st.st_mode)):
        log.debug("leaving out %s: not a file, directory or symlink", path)
        return None
    info = tar.gettarinfo(full, arcname=path)  # lstat: symlinks are not followed
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime = int(st.st_mtime)  # a float would add a pax header to every entry
    return info


def pack(
    folder: str | os.PathLike[str], out: BinaryIO, manifest: str = DEFAULT_MANIFEST
) -> tuple[int, str]:
    """Writes the gzip'd tar of `folder` to `out`; returns its size and sha256 (hex)."""
    root = Path(folder)
    if not root.is_dir():
        raise InvalidArgument(f"no such directory: {folder}")
    writer = _DigestWriter(out)
    try:
        with (
            gzip.GzipFile(
                filename="",
                mode="wb",
                fileobj=writer,
                compresslevel=COMPRESS_LEVEL,
                mtime=0,
            ) as gz,
            tarfile.open(fileobj=gz, mode="w|", format=tarfile.PAX_FORMAT) as tar,
        ):
            for path in context_paths(root, manifest):
                full = os.path.join(root, path)
                info = _tarinfo(tar, full, path)
                if info is None:
                    continue
                if info.isreg():
                    with open(full, "rb") as data:
                        tar.addfile(info, data)
                else:
                    tar.addfile(info)
    except OSError as err:
        where = f": {err.filename}" if err.filename else ""
        raise InvalidArgument(f"cannot pack {folder}{where}: {err.strerror or err}") from None
    out.flush()
    return writer.size, writer.sha256.hexdigest()


class DigestCache(Protocol):
    """Digests of files already read, keyed by what changes when a file does."""

    def get(self, path: str, size: int, mtime: int, inode: int) -> str | None:
        """The sha256 recorded for the file at `path` (absolute) as it was, else None."""
        ...

    def put(self, path: str, size: int, mtime: int, inode: int, sha256: str) -> None:
        """Records the file's sha256."""
        ...


@dataclass(frozen=True)
class Scanned:
    """One entry of a folder's context, and where its bytes are."""

    entry: Entry
    #: The file on disk (files only).
    full: str = ""
    #: Whether the file was read to hash it (not found in the cache).
    read: bool = False


def file_sha256(path: str) -> tuple[int, str]:
    """Size and sha256 of the regular file at `path`, never read through a link."""
    digest = hashlib.sha256()
    size = 0
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb", buffering=0) as handle:
        while data := handle.read(1024 * 1024):
            digest.update(data)
            size += len(data)
    return size, digest.hexdigest()


def scan(
    folder: str | os.PathLike[str],
    manifest: str = DEFAULT_MANIFEST,
    cache: DigestCache | None = None,
) -> Iterator[Scanned]:
    """The entries `slipway build` sends for `folder` (the tree `pack` would archive), each
    file with its sha256: from `cache` when the file's path, size, mtime and inode are
    unchanged, else read (and recorded there). Entries come as they are found, so the
    caller can send while the walk goes on."""
    root = Path(folder)
    if not root.is_dir():
        raise InvalidArgument(f"no such directory: {folder}")
    base = os.path.abspath(root)
    by_inode: dict[tuple[int, int], str] = {}  # hard links are read once
    settled = time.time_ns() - RACY_NS
    try:
        for path in context_paths(root, manifest):
            try:
                path.encode("utf-8")
            except UnicodeEncodeError:
                raise InvalidArgument(
                    f"cannot pack {folder}: a file name is not UTF-8: {path!r}"[:300]
                ) from None
            full = os.path.join(base, path)
            st = os.lstat(full)
            if stat.S_ISDIR(st.st_mode):
                yield Scanned(Entry(path, DIR, stat.S_IMODE(st.st_mode), 0, st.st_mtime_ns))
            elif stat.S_ISLNK(st.st_mode):
                target = os.readlink(full)
                yield Scanned(Entry(path, SYMLINK, 0o777, 0, st.st_mtime_ns, target=target))
            elif stat.S_ISREG(st.st_mode):
                key = (st.st_dev, st.st_ino)
                cached = cache.get(full, st.st_size, st.st_mtime_ns, st.st_ino) if cache else None
                digest = cached or by_inode.get(key)
                read = digest is None
                size = st.st_size
                if digest is None:
                    size, digest = file_sha256(full)
                    # Racy-clean, as git has it: a file changed in the clock tick the walk
                    # began in could change again unseen, so it is not remembered.
                    if cache is not None and size == st.st_size and st.st_mtime_ns < settled:
                        cache.put(full, size, st.st_mtime_ns, st.st_ino, digest)
                by_inode[key] = digest
                entry = Entry(path, FILE, stat.S_IMODE(st.st_mode), size, st.st_mtime_ns, digest)
                yield Scanned(entry, full, read)
            else:
                log.debug("leaving out %s: not a file, directory or symlink", path)
    except OSError as err:
        where = f": {err.filename}" if err.filename else ""
        raise InvalidArgument(f"cannot pack {folder}{where}: {err.strerror or err}") from None
