"""A build context as a list of entries: what an incremental upload sends and what a rack
assembles a context from (SPEC §7).

An entry is a folder, a regular file (with its size and sha256: the name of its blob in the
rack's object store) or a symlink (with its target). The list is checked once, as a whole,
with the same rules extraction applies to an archive (SPEC §6): no absolute path, no `..`,
no duplicate, every parent a folder listed before its children, no link leading outside
the tree (followed through the tree's other links, as the engine would), no devices or
fifos, limits on the number of entries and the bytes of their files. A checked list is a
`Tree`: looked up, listed folder by folder (sorted as bytes, like Go) and read through a
`Source`, the one interface the context walk, the BuildKit session and the legacy tar use,
whether the files are on disk or in a blob store.

Stored, a list is a *context document*: the line `slipway-context 1`, then one JSON object
per entry. Its sha256 is the archive id a build names.
"""

from __future__ import annotations

import io
import json
import os
import posixpath
import re
import stat
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import BinaryIO, Protocol

from client.kernel import dockerignore
from client.kernel.errors import InvalidArgument

FILE, DIR, SYMLINK = "file", "dir", "symlink"
TYPES = (FILE, DIR, SYMLINK)

#: The first line of a stored context document.
MAGIC = b"slipway-context 1\n"
#: An entry's path or a link's target, in bytes; Linux's PATH_MAX.
MAX_NAME = 4096
#: One stored entry line at most (a path and a target of MAX_NAME, escaped, and the rest).
MAX_LINE = 6 * MAX_NAME + 512
#: Names in messages are cut to this many characters: a reason stays one short line.
SHOWN_NAME = 200
#: How many links one path may go through before it counts as leaving the tree.
MAX_HOPS = 40

_SHA256 = re.compile(r"^[0-9a-f]{64}\Z")


def reject(reason: str) -> InvalidArgument:
    return InvalidArgument(f"archive rejected: {reason}")


def shown(name: str) -> str:
    """A name as a message shows it: one line, at most SHOWN_NAME characters."""
    name = name.replace("\n", "\\n").replace("\r", "\\r")
    return name if len(name) <= SHOWN_NAME else name[: SHOWN_NAME - 1] + "…"


@dataclass(frozen=True)
class Entry:
    """One entry of a build context."""

    path: str
    type: str
    #: Permission bits (`0o777` at most once checked).
    mode: int = 0o644
    #: A file's size in bytes (0 for folders and links).
    size: int = 0
    #: Modification time, nanoseconds since the epoch.
    mtime: int = 0
    #: A file's lowercase hex sha256.
    sha256: str = ""
    #: A symlink's target, as the link holds it.
    target: str = ""

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    @property
    def parent(self) -> str:
        return self.path.rsplit("/", 1)[0] if "/" in self.path else ""


@dataclass(frozen=True)
class Limits:
    """How much a context may hold."""

    max_bytes: int
    max_files: int
    #: The bytes of all its paths and link targets together (what the list itself holds).
    max_name_bytes: int = 32 * 1024 * 1024
    #: The bytes of all its link targets (each is followed through the tree when checked).
    max_link_bytes: int = 1024 * 1024


def _length(text: str) -> int:
    """`text`'s length in UTF-8; InvalidArgument when it has no UTF-8 form."""
    try:
        return len(text.encode("utf-8", "surrogateescape"))
    except UnicodeEncodeError:
        raise reject(f"a name that is not UTF-8: {shown(ascii(text))}") from None


def _clean(path: str) -> str:
    if "\x00" in path:
        raise reject(f"a NUL byte in a path: {shown(path)}")
    if _length(path) > MAX_NAME:
        raise reject(f"a path longer than {MAX_NAME} bytes")
    if not path or path.startswith("/"):
        raise reject(f"absolute path: {shown(path)}" if path else "an empty path")
    parts = path.split("/")
    if ".." in parts:
        raise reject(f"path escapes the build folder: {shown(path)}")
    if "" in parts or "." in parts:
        raise reject(f"a path that is not clean: {shown(path)}")
    return path


def check_entry(entry: Entry) -> Entry:
    """One entry, checked on its own (its place in the tree is `Tree`'s business)."""
    _clean(entry.path)
    if entry.type not in TYPES:
        if entry.type in ("device", "fifo", "socket", "char", "block"):
            raise reject(f"device or fifo node: {shown(entry.path)}")
        raise reject(f"unsupported entry type: {shown(entry.path)}")
    if entry.size < 0 or entry.mtime < -(2**62) or entry.mtime > 2**62:
        raise reject(f"an invalid size or time: {shown(entry.path)}")
    # Exec bits matter to Docker; setuid, setgid and sticky never cross.
    mode = entry.mode & 0o777
    if entry.type == FILE:
        if not _SHA256.match(entry.sha256):
            raise reject(f"an invalid sha256 for {shown(entry.path)}")
        return Entry(entry.path, FILE, mode, entry.size, entry.mtime, entry.sha256)
    if entry.type == SYMLINK:
        link = entry.target
        if _length(link) > MAX_NAME:
            raise reject(f"a link target longer than {MAX_NAME} bytes")
        if not link or link.startswith("/") or "\x00" in link:
            raise reject(
                f"link points outside the build folder: {shown(entry.path)} -> {shown(link)}"
            )
        return Entry(entry.path, SYMLINK, 0o777, 0, entry.mtime, target=link)
    return Entry(entry.path, DIR, mode, 0, entry.mtime)


class Tree:
    """A checked context: entries by path, folders' children in Go's order."""

    def __init__(self, entries: Iterable[Entry], limits: Limits) -> None:
        self._entries: dict[str, Entry] = {}
        self._children: dict[str, list[Entry]] = {"": []}
        self._names: dict[str, dict[str, Entry]] = {}
        self.bytes = 0
        names = links = 0
        for raw in entries:
            entry = check_entry(raw)
            if len(self._entries) >= limits.max_files:
                raise reject(f"more than {limits.max_files} files")
            names += len(entry.path) + len(entry.target)
            links += len(entry.target)
            if names > limits.max_name_bytes:
                raise reject(f"more than {limits.max_name_bytes} bytes of names and link targets")
            if links > limits.max_link_bytes:
                raise reject(f"more than {limits.max_link_bytes} bytes of link targets")
            if entry.path in self._entries:
                raise reject(f"a path listed twice: {shown(entry.path)}")
            parent = entry.parent
            if parent not in self._children:
                above = self._entries.get(parent)
                if above is not None and above.type == SYMLINK:
                    raise reject(
                        f"path escapes the build folder through a link: {shown(entry.path)}"
                    )
                if above is not None:
                    raise reject(f"{shown(parent)} is not a folder: {shown(entry.path)}")
                raise reject(f"{shown(entry.path)} comes before its folder {shown(parent)}")
            if entry.type == FILE:
                self.bytes += entry.size
                if self.bytes > limits.max_bytes:
                    raise reject(f"larger than {limits.max_bytes} bytes once extracted")
            self._entries[entry.path] = entry
            self._children[parent].append(entry)
            self._names.setdefault(parent, {})[entry.name] = entry
            if entry.type == DIR:
                self._children[entry.path] = []
        for children in self._children.values():
            children.sort(key=lambda e: os.fsencode(e.name))
        for entry in self._entries.values():
            if entry.type == SYMLINK and self._leaves(entry):
                raise reject(
                    "link points outside the build folder: "
                    f"{shown(entry.path)} -> {shown(entry.target)}"
                )

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[Entry]:
        """Every entry, parents first, each folder's children sorted."""

        def below(folder: str) -> Iterator[Entry]:
            for child in self._children.get(folder, ()):
                yield child
                if child.type == DIR:
                    yield from below(child.path)

        return below("")

    def get(self, path: str) -> Entry | None:
        return self._entries.get(path)

    def children(self, folder: str) -> list[Entry]:
        """The entries of `folder` ("" for the root); FileNotFoundError when it is none."""
        try:
            return self._children[folder]
        except KeyError:
            raise FileNotFoundError(folder) from None

    def digests(self) -> set[str]:
        return {e.sha256 for e in self._entries.values() if e.type == FILE}

    def _leaves(self, link: Entry) -> bool:
        """Whether the link, followed through the tree's links, climbs above the root (or
        goes round in links)."""
        return self.resolve(posixpath.join(link.parent, link.target)) is None

    def resolve(self, path: str) -> str | None:
        """`path` (relative to the root) with the tree's links followed: the path of what
        it names inside the tree ("" for the root), or None when it leaves the tree or
        goes round in links. What it names need not exist. Linear in the components
        walked: each step looks one name up in the folder reached."""
        if path.startswith("/"):
            return None
        folders: list[str] = []  # the tree's folders walked into, deepest last
        beyond: list[str] = []  # names below them the tree does not hold (or a file's)
        pending = path.split("/")[::-1]  # popped from the end
        hops = 0
        while pending:
            part = pending.pop()
            if part in ("", "."):
                continue
            if part == "..":
                if beyond:
                    beyond.pop()
                elif folders:
                    folders.pop()
                else:
                    return None
                continue
            here = self._names.get(folders[-1] if folders else "", {})
            entry = None if beyond else here.get(part)
            if entry is not None and entry.type == SYMLINK:
                hops += 1
                if hops > MAX_HOPS or entry.target.startswith("/"):
                    return None
                pending.extend(entry.target.split("/")[::-1])
                # The link's target is read from the link's own folder.
                continue
            if entry is not None and entry.type == DIR:
                folders.append(entry.path)
            else:
                beyond.append(part)
        base = folders[-1] if folders else ""
        rest = "/".join(beyond)
        return f"{base}/{rest}" if base and rest else (base or rest)


# -- the stored form -------------------------------------------------------------------


def _line(entry: Entry) -> bytes:
    record: dict[str, object] = {"path": entry.path, "type": entry.type, "mode": entry.mode}
    if entry.mtime:
        record["mtime"] = entry.mtime
    if entry.type == FILE:
        record["size"] = entry.size
        record["sha256"] = entry.sha256
    elif entry.type == SYMLINK:
        record["target"] = entry.target
    return json.dumps(record, separators=(",", ":")).encode() + b"\n"


def encode(entries: Iterable[Entry]) -> Iterator[bytes]:
    """The context document of `entries`, a line at a time."""
    yield MAGIC
    for entry in entries:
        yield _line(entry)


def is_document(head: bytes) -> bool:
    """Whether stored bytes starting with `head` are a context document."""
    return head.startswith(MAGIC)


def decode(lines: Iterable[bytes]) -> Iterator[Entry]:
    """The entries of a context document read a line at a time (the magic line first);
    InvalidArgument when it is not one."""
    stream = iter(lines)
    if next(stream, b"") != MAGIC:
        raise reject("not a context document")
    for number, line in enumerate(stream, 2):
        if len(line) > MAX_LINE:
            raise reject(f"line {number} of the context document is too long")
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):  # RecursionError: arrays nested thousands deep
            record = None
        entry = _entry_of(record)
        if entry is None:
            raise reject(f"line {number} of the context document is not an entry")
        yield entry


def _entry_of(record: object) -> Entry | None:
    """The entry a decoded line describes, None unless every field has its type."""
    if not isinstance(record, dict):
        return None
    texts = {k: record.get(k, "") for k in ("path", "type", "sha256", "target")}
    numbers = {k: record.get(k, 0) for k in ("mode", "size", "mtime")}
    if not all(isinstance(v, str) for v in texts.values()) or not texts["path"]:
        return None
    if not texts["type"]:
        return None
    if not all(type(v) is int for v in numbers.values()):
        return None
    return Entry(
        path=texts["path"],
        type=texts["type"],
        mode=numbers["mode"],
        size=numbers["size"],
        mtime=numbers["mtime"],
        sha256=texts["sha256"],
        target=texts["target"],
    )


def read_lines(fileobj: BinaryIO) -> Iterator[bytes]:
    """The lines of a stored document, none longer than MAX_LINE held."""
    while True:
        line = fileobj.readline(MAX_LINE + 1)
        if not line:
            return
        yield line


# -- reading a context, on disk or in a store -----------------------------------------


class Source(Protocol):
    """A context's entries and their bytes, wherever they are."""

    def listdir(self, folder: str) -> list[tuple[str, bool]]:
        """(name, is a folder) of `folder`'s entries ("" for the root), sorted as bytes;
        OSError when it cannot be read."""
        ...

    def lstat(self, path: str) -> Entry:
        """The entry at `path`, links not followed; FileNotFoundError when there is none."""
        ...

    def read(self, paths: Sequence[str]) -> Iterator[tuple[str, Iterator[bytes]]]:
        """The bytes of each regular file of `paths`, in order, each as chunks that must
        be read before the next file's."""
        ...

    def resolve(self, path: str) -> str | None:
        """`path` with links followed, relative to the root; None when it leaves it."""
        ...


@dataclass(frozen=True)
class Sub:
    """The part of a source below `prefix`, as a source of its own."""

    inner: Source
    prefix: str

    def _full(self, path: str) -> str:
        return f"{self.prefix}/{path}" if self.prefix and path else (self.prefix or path)

    def listdir(self, folder: str) -> list[tuple[str, bool]]:
        return self.inner.listdir(self._full(folder))

    def lstat(self, path: str) -> Entry:
        entry = self.inner.lstat(self._full(path))
        return replace(entry, path=path)

    def read(self, paths: Sequence[str]) -> Iterator[tuple[str, Iterator[bytes]]]:
        cut = len(self.prefix) + 1 if self.prefix else 0
        for full, chunks in self.inner.read([self._full(p) for p in paths]):
            yield full[cut:], chunks

    def resolve(self, path: str) -> str | None:
        found = self.inner.resolve(self._full(path))
        if found is None:
            return None
        if not self.prefix:
            return found
        if found == self.prefix:
            return ""
        if found.startswith(self.prefix + "/"):
            return found[len(self.prefix) + 1 :]
        return None


def sub(source: Source, folder: str) -> Source:
    """`folder` of `source` (links in it followed inside the source) as a source."""
    if folder in ("", "."):
        return source
    found = source.resolve(folder)
    if found is None:
        raise InvalidArgument(f"build path escapes the build folder: {shown(folder)}")
    return Sub(source, found) if found else source


class TreeSource:
    """A checked tree whose files are read from a blob store by digest: `fetch` gives the
    chunks of each digest asked for, in order."""

    def __init__(
        self, tree: Tree, fetch: Callable[[Sequence[str]], Iterator[tuple[str, Iterator[bytes]]]]
    ) -> None:
        self.tree = tree
        self._fetch = fetch

    def listdir(self, folder: str) -> list[tuple[str, bool]]:
        return [(e.name, e.type == DIR) for e in self.tree.children(folder)]

    def lstat(self, path: str) -> Entry:
        entry = self.tree.get(path)
        if entry is None:
            raise FileNotFoundError(path)
        return entry

    def read(self, paths: Sequence[str]) -> Iterator[tuple[str, Iterator[bytes]]]:
        files = [self.lstat(p) for p in paths]
        for entry in files:
            if entry.type != FILE:
                raise IsADirectoryError(entry.path)
        fetched = self._fetch([e.sha256 for e in files])
        for entry, (digest, chunks) in zip(files, fetched, strict=True):
            if digest != entry.sha256:
                raise OSError(f"the store sent {digest[:12]} for {entry.path}")
            yield entry.path, chunks

    def resolve(self, path: str) -> str | None:
        return self.tree.resolve(path)


class DiskSource:
    """A folder on disk; nothing is read through a link."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = os.fspath(root)
        self._list = dockerignore.lister(self.root)

    def _full(self, path: str) -> str:
        return os.path.join(self.root, path) if path else self.root

    def listdir(self, folder: str) -> list[tuple[str, bool]]:
        return self._list(folder)

    def lstat(self, path: str) -> Entry:
        full = self._full(path)
        info = os.lstat(full)
        if stat.S_ISDIR(info.st_mode):
            kind = DIR
        elif stat.S_ISLNK(info.st_mode):
            return Entry(path, SYMLINK, 0o777, 0, info.st_mtime_ns, target=os.readlink(full))
        elif stat.S_ISREG(info.st_mode):
            kind = FILE
        else:
            kind = "device"
        size = info.st_size if kind == FILE else 0
        return Entry(path, kind, stat.S_IMODE(info.st_mode), size, info.st_mtime_ns)

    def read(self, paths: Sequence[str]) -> Iterator[tuple[str, Iterator[bytes]]]:
        for path in paths:
            fd = os.open(self._full(path), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            yield path, _chunks(os.fdopen(fd, "rb", buffering=0))

    def resolve(self, path: str) -> str | None:
        real_root = os.path.realpath(self.root)
        if os.path.isabs(path):
            return None
        candidate = os.path.realpath(os.path.join(real_root, path))
        if candidate == real_root:
            return ""
        if not candidate.startswith(real_root + os.sep):
            return None
        return os.path.relpath(candidate, real_root).replace(os.sep, "/")


def _chunks(handle: BinaryIO, size: int = 256 * 1024) -> Iterator[bytes]:
    with handle:
        while data := handle.read(size):
            yield data


def read_file(source: Source, path: str, limit: int) -> bytes:
    """The bytes of the file `path` names (links followed inside the source), at most
    `limit`; InvalidArgument when there is no such file or it is larger."""
    found = source.resolve(path)
    if found is None:
        raise InvalidArgument(f"no such file: {shown(path)}")
    try:
        entry = source.lstat(found)
    except FileNotFoundError:
        raise InvalidArgument(f"no such file: {shown(path)}") from None
    if entry.type != FILE:
        raise InvalidArgument(f"no such file: {shown(path)}")
    if entry.size > limit:
        raise InvalidArgument(f"{shown(path)} is larger than {limit} bytes")
    out = io.BytesIO()
    for _name, chunks in source.read([found]):
        for data in chunks:
            out.write(data)
            if out.tell() > limit:
                raise InvalidArgument(f"{shown(path)} is larger than {limit} bytes")
    return out.getvalue()
