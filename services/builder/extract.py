"""Safe, streaming extraction of a source archive (a gzip'd tar) into a build's folder.

Every entry is checked before anything is written: absolute paths, `..` components,
links that resolve outside the folder, device and fifo nodes, and archives over the size
or entry limits are rejected with InvalidArgument. Writes go through the real path of an
entry's parent, so a symlink planted by an earlier entry cannot carry a later one out.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from client.kernel.errors import InvalidArgument
from client.kernel.streams import CHUNK_SIZE, reader


@dataclass(frozen=True)
class Limits:
    """How much an archive may extract to."""

    max_bytes: int
    max_files: int


def reject(reason: str) -> InvalidArgument:
    return InvalidArgument(f"archive rejected: {reason}")


def extract(chunks: Iterable[bytes], dest: Path, limits: Limits) -> int:
    """Extracts the gzip'd tar streamed as `chunks` into `dest` (created if needed);
    returns the number of entries written."""
    dest.mkdir(parents=True, exist_ok=True)
    root = os.path.realpath(dest)
    writer = _Writer(root, limits)
    try:
        with tarfile.open(fileobj=reader(chunks), mode="r|gz") as tar:
            for member in tar:
                writer.add(tar, member)
    except (tarfile.TarError, EOFError, zlib.error, OSError) as err:
        if isinstance(err, OSError) and not _is_format_error(err):
            raise
        raise reject(f"not a valid gzip'd tar: {err}") from None
    writer.finish()
    return writer.files


def _is_format_error(err: OSError) -> bool:
    # gzip.BadGzipFile is an OSError subclass; real I/O failures keep their errno.
    return err.errno is None


class _Writer:
    """Writes checked entries below `root`, counting them against the limits."""

    def __init__(self, root: str, limits: Limits) -> None:
        self.root = root
        self.limits = limits
        self.files = 0
        self.bytes = 0
        self._dirs: list[tuple[str, int]] = []

    def add(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        name = _clean_name(member.name)
        if name is None:
            return  # the archive's root folder itself
        self.files += 1
        if self.files > self.limits.max_files:
            raise reject(f"more than {self.limits.max_files} files")
        if member.ischr() or member.isblk() or member.isfifo():
            raise reject(f"device or fifo node: {member.name}")
        if member.isfile():
            self.bytes += member.size
            if self.bytes > self.limits.max_bytes:
                raise reject(f"larger than {self.limits.max_bytes} bytes once extracted")
        target = self._target(name)
        if member.isdir():
            self._mkdir(target, member)
        elif member.issym():
            self._symlink(target, member)
        elif member.islnk():
            self._hardlink(target, member)
        elif member.isfile():
            self._file(tar, target, member)
        else:
            raise reject(f"unsupported entry type: {member.name}")

    def finish(self) -> None:
        # Folder modes last, so a read-only folder does not block its own entries.
        for path, mode in reversed(self._dirs):
            os.chmod(path, mode)

    def _inside(self, path: str) -> bool:
        return path == self.root or path.startswith(self.root + os.sep)

    def _target(self, name: str) -> str:
        """The path to write `name` at: its parent's real path (which must be inside the
        folder and is created as needed) joined with its last component."""
        parent, _, base = name.rpartition("/")
        parent_real = os.path.realpath(os.path.join(self.root, parent))
        if not self._inside(parent_real):
            raise reject(f"path escapes the build folder: {name}")
        os.makedirs(parent_real, exist_ok=True)
        return os.path.join(parent_real, base)

    def _clear(self, target: str) -> None:
        """Removes whatever an earlier entry left at `target`, never following a link."""
        if os.path.islink(target) or (os.path.lexists(target) and not os.path.isdir(target)):
            os.unlink(target)
        elif os.path.isdir(target):
            shutil.rmtree(target)

    def _mkdir(self, target: str, member: tarfile.TarInfo) -> None:
        if os.path.islink(target) or (os.path.lexists(target) and not os.path.isdir(target)):
            os.unlink(target)
        os.makedirs(target, exist_ok=True)
        self._dirs.append((target, (member.mode & 0o777) | 0o700))

    def _symlink(self, target: str, member: tarfile.TarInfo) -> None:
        link = member.linkname
        resolved = os.path.realpath(os.path.join(os.path.dirname(target), link))
        if os.path.isabs(link) or not self._inside(resolved):
            raise reject(f"link points outside the build folder: {member.name} -> {link}")
        self._clear(target)
        os.symlink(link, target)

    def _hardlink(self, target: str, member: tarfile.TarInfo) -> None:
        link = f"{member.name} -> {member.linkname}"
        outside = reject(f"link points outside the build folder: {link}")
        source_name = _clean_name(member.linkname)
        if source_name is None:
            raise outside
        source = os.path.realpath(os.path.join(self.root, source_name))
        if not self._inside(source):
            raise outside
        if not os.path.isfile(source):
            raise reject(f"link to a missing file: {link}")
        self._clear(target)
        os.link(source, target)

    def _file(self, tar: tarfile.TarFile, target: str, member: tarfile.TarInfo) -> None:
        self._clear(target)
        source = tar.extractfile(member)
        assert source is not None  # a regular file always has content
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
        fd = os.open(target, flags, 0o600)
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(source, out, CHUNK_SIZE)
        # Keep the permission bits Docker cares about (exec), never setuid/setgid/sticky.
        os.chmod(target, (member.mode & 0o777) | 0o600)
        os.utime(target, (member.mtime, member.mtime))


def _clean_name(raw: str) -> str | None:
    """The entry's path relative to the archive root, or None for the root itself;
    rejects absolute paths and `..` components."""
    if raw.startswith("/") or PurePosixPath(raw).is_absolute():
        raise reject(f"absolute path: {raw}")
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise reject(f"path escapes the build folder: {raw}")
    return "/".join(parts) or None
