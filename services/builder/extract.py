"""Safe, streaming extraction of a source archive (a gzip'd tar) into a build's folder.

Every entry is checked before anything is written: absolute paths, `..` components,
links that resolve outside the folder, device and fifo nodes, oversized headers, and
archives over the size or entry limits are rejected with InvalidArgument.

Nothing the archive made is ever followed. Every operation (create, write, chmod, utime,
hardlink, remove) works on a descriptor of the entry's parent folder, reached from the
scratch folder's descriptor one component at a time with O_NOFOLLOW, so a symlink planted
by an earlier entry (and re-pointed later) cannot carry a write, or a mode change, out.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import tarfile
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any, Self

from client.kernel.entries import MAX_NAME, Limits, reject, shown
from client.kernel.errors import InvalidArgument, ResourceExhausted
from client.kernel.streams import CHUNK_SIZE, reader

# The most an extended header (PAX, GNU long name or link) may hold; checked before the
# header is read, so a huge one never reaches memory.
MAX_HEADER = 64 * 1024
_EXTENDED = (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE, b"L", b"K")
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class _BoundedTarInfo(tarfile.TarInfo):
    """A TarInfo that refuses an extended header larger than MAX_HEADER before reading it.

    `fromtarfile` is the documented constructor tarfile calls for every header (extended
    ones included); this is the stdlib's body plus the size check. `_proc_member` is the
    stdlib's own next step, called as the stdlib calls it."""

    @classmethod
    def fromtarfile(cls, tarfile_: tarfile.TarFile) -> Self:
        buf = tarfile_.fileobj.read(tarfile.BLOCKSIZE)  # type: ignore[union-attr]
        obj = cls.frombuf(buf, tarfile_.encoding, tarfile_.errors)  # type: ignore[arg-type]
        obj.offset = tarfile_.fileobj.tell() - tarfile.BLOCKSIZE  # type: ignore[union-attr]
        if obj.type in _EXTENDED and obj.size > MAX_HEADER:
            raise reject(f"an extended header of {obj.size} bytes (the limit is {MAX_HEADER})")
        proc: Any = obj._proc_member  # type: ignore[attr-defined]
        return proc(tarfile_)  # type: ignore[no-any-return]


def extract(chunks: Iterable[bytes], dest: Path, limits: Limits) -> int:
    """Extracts the gzip'd tar streamed as `chunks` into `dest` (created if needed);
    returns the number of entries written."""
    dest.mkdir(parents=True, exist_ok=True)
    root = os.open(dest, _DIR_FLAGS)
    try:
        writer = _Writer(root, limits)
        try:
            with tarfile.open(fileobj=reader(chunks), mode="r|gz", tarinfo=_BoundedTarInfo) as tar:
                for member in tar:
                    writer.add(tar, member)
        except (tarfile.TarError, EOFError, zlib.error, OSError) as err:
            if isinstance(err, OSError) and not _is_format_error(err):
                raise _os_error(err, "") from None
            raise reject(f"not a valid gzip'd tar: {shown(str(err))}") from None
        writer.finish()
        return writer.files
    finally:
        os.close(root)


def _is_format_error(err: OSError) -> bool:
    # gzip.BadGzipFile is an OSError subclass; real I/O failures keep their errno.
    return err.errno is None


def _os_error(err: OSError, name: str) -> Exception:
    """A failure writing the scratch folder, said without the server's paths."""
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return ResourceExhausted("no space left on device for the build's scratch folder")
    if err.errno == errno.ENAMETOOLONG:
        return reject(f"a path component longer than the file system allows: {shown(name)}")
    if err.errno == errno.ELOOP:
        return reject(f"path escapes the build folder through a link: {shown(name)}")
    what = f"cannot extract {shown(name)}" if name else "cannot extract the archive"
    return reject(f"{what}: {err.strerror or 'error ' + str(err.errno)}")


class _Writer:
    """Writes checked entries below the folder open as `root`, counting them."""

    def __init__(self, root: int, limits: Limits) -> None:
        self.root = root
        self.limits = limits
        self.files = 0
        self.bytes = 0
        self._dirs: list[tuple[list[str], int]] = []

    def add(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        if len(member.name.encode("utf-8", "surrogateescape")) > MAX_NAME:
            raise reject(f"a path longer than {MAX_NAME} bytes")
        if len(member.linkname.encode("utf-8", "surrogateescape")) > MAX_NAME:
            raise reject(f"a link target longer than {MAX_NAME} bytes")
        parts = _clean_parts(member.name)
        if not parts:
            return  # the archive's root folder itself
        self.files += 1
        if self.files > self.limits.max_files:
            raise reject(f"more than {self.limits.max_files} files")
        if member.ischr() or member.isblk() or member.isfifo():
            raise reject(f"device or fifo node: {shown(member.name)}")
        if member.isfile():
            self.bytes += member.size
            if self.bytes > self.limits.max_bytes:
                raise reject(f"larger than {self.limits.max_bytes} bytes once extracted")
        if not (member.isdir() or member.issym() or member.islnk() or member.isfile()):
            raise reject(f"unsupported entry type: {shown(member.name)}")
        try:
            with self._parent(parts, create=True) as parent:
                base = parts[-1]
                if member.isdir():
                    self._mkdir(parent, base, parts, member)
                elif member.issym():
                    self._symlink(parent, base, parts, member)
                elif member.islnk():
                    self._hardlink(parent, base, member)
                else:
                    self._file(tar, parent, base, member)
        except OSError as err:
            raise _os_error(err, member.name) from None

    def finish(self) -> None:
        """Folder modes last, so a read-only folder does not block its own entries; each
        folder is reached again without following links and changed through its own fd."""
        for parts, mode in reversed(self._dirs):
            try:
                with self._parent(parts, create=False) as parent:
                    try:
                        fd = os.open(parts[-1], _DIR_FLAGS, dir_fd=parent)
                    except OSError as err:
                        if err.errno in (errno.ELOOP, errno.ENOTDIR, errno.ENOENT):
                            continue  # a later entry replaced the folder: it is not ours
                        raise
                    try:
                        os.fchmod(fd, mode)
                    finally:
                        os.close(fd)
            except OSError as err:
                raise _os_error(err, "/".join(parts)) from None

    @contextlib.contextmanager
    def _parent(self, parts: list[str], create: bool) -> Iterator[int]:
        """A descriptor of the folder holding `parts[-1]`, reached from the root one
        component at a time; never through a link (that is a rejection)."""
        fd = os.dup(self.root)
        try:
            for i, part in enumerate(parts[:-1]):
                try:
                    child = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise
                    os.mkdir(part, 0o700, dir_fd=fd)
                    child = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except (NotADirectoryError, OSError) as err:
                    if isinstance(err, NotADirectoryError) or err.errno == errno.ELOOP:
                        name = "/".join(parts)
                        if _is_link(fd, part):
                            raise reject(
                                f"path escapes the build folder through a link: {shown(name)}"
                            ) from None
                        raise reject(
                            f"{shown('/'.join(parts[: i + 1]))} is not a folder: {shown(name)}"
                        ) from None
                    raise
                os.close(fd)
                fd = child
            yield fd
        finally:
            os.close(fd)

    def _clear(self, parent: int, base: str) -> None:
        """Removes whatever an earlier entry left at `base`, never following a link."""
        try:
            st = os.stat(base, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(base, dir_fd=parent)
        else:
            os.unlink(base, dir_fd=parent)

    def _mkdir(self, parent: int, base: str, parts: list[str], member: tarfile.TarInfo) -> None:
        try:
            st = os.stat(base, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            st = None
        if st is not None and not stat.S_ISDIR(st.st_mode):
            os.unlink(base, dir_fd=parent)
            st = None
        if st is None:
            os.mkdir(base, 0o700, dir_fd=parent)
        self._dirs.append((parts, (member.mode & 0o777) | 0o700))

    def _symlink(self, parent: int, base: str, parts: list[str], member: tarfile.TarInfo) -> None:
        link = member.linkname
        outside = reject(
            f"link points outside the build folder: {shown(member.name)} -> {shown(link)}"
        )
        if os.path.isabs(link) or not link:
            raise outside
        # Lexically, from the link's own folder: the target must stay in the tree. Links
        # are never followed here; this keeps what the engine later resolves inside too.
        target = PurePosixPath(*parts[:-1], link).as_posix()
        normal = os.path.normpath(target)
        if normal == ".." or normal.startswith("../") or normal.startswith("/"):
            raise outside
        if self._resolves_outside(parts[:-1], link):
            raise outside
        self._clear(parent, base)
        os.symlink(link, base, dir_fd=parent)

    def _resolves_outside(self, folder: list[str], link: str) -> bool:
        """Whether `link`, read from `folder`, leaves the tree when the links already
        extracted are followed (as the engine would)."""
        here = list(folder)
        pending = link.split("/")
        hops = 0
        while pending:
            part = pending.pop(0)
            if part in ("", "."):
                continue
            if part == "..":
                if not here:
                    return True
                here.pop()
                continue
            try:
                with self._parent([*here, part], create=False) as fd:
                    target = os.readlink(part, dir_fd=fd)
            except (OSError, InvalidArgument):
                here.append(part)  # not a link (or not there yet): a plain component
                continue
            hops += 1
            if hops > 40 or os.path.isabs(target):
                return True
            pending = target.split("/") + pending
        return False

    def _hardlink(self, parent: int, base: str, member: tarfile.TarInfo) -> None:
        link = f"{shown(member.name)} -> {shown(member.linkname)}"
        source = _clean_parts(member.linkname)
        if not source:
            raise reject(f"link points outside the build folder: {link}")
        try:
            with self._parent(source, create=False) as source_parent:
                st = os.stat(source[-1], dir_fd=source_parent, follow_symlinks=False)
                if not stat.S_ISREG(st.st_mode):
                    raise reject(f"link to a missing file: {link}")
                self._clear(parent, base)
                os.link(
                    source[-1],
                    base,
                    src_dir_fd=source_parent,
                    dst_dir_fd=parent,
                    follow_symlinks=False,
                )
        except FileNotFoundError:
            raise reject(f"link to a missing file: {link}") from None

    def _file(self, tar: tarfile.TarFile, parent: int, base: str, member: tarfile.TarInfo) -> None:
        self._clear(parent, base)
        source = tar.extractfile(member)
        assert source is not None  # a regular file always has content
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(base, flags, 0o600, dir_fd=parent)
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(source, out, CHUNK_SIZE)
            out.flush()
            # Keep the permission bits Docker cares about (exec), never setuid/setgid/sticky.
            os.fchmod(fd, (member.mode & 0o777) | 0o600)
            os.utime(fd, (member.mtime, member.mtime))


def _is_link(parent: int, name: str) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode)
    except OSError:
        return False


def _clean_parts(raw: str) -> list[str]:
    """The entry's path components relative to the archive root (empty for the root
    itself); rejects absolute paths and `..` components."""
    if raw.startswith("/") or PurePosixPath(raw).is_absolute():
        raise reject(f"absolute path: {shown(raw)}")
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise reject(f"path escapes the build folder: {shown(raw)}")
    return parts
