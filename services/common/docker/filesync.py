"""`FileSync`: lends a build's folders to the engine's BuildKit, as the Docker CLI does.

A build started with `remote=client-session` reads its Dockerfile and its context from the
build's session: the Dockerfile frontend calls `FileSync/DiffCopy` once for every local
source it loads, naming it in the call's metadata (`dir-name`: `dockerfile`, `context`)
with the filters it wants applied (`exclude-patterns`: the context's `.dockerignore`,
`include-patterns`, `followpaths`). This is what gives a BuildKit build Docker's own
context: an ignored `Dockerfile` or `.dockerignore`, which Slipway always uploads, is not
seen by `COPY`.

The protocol is tonistiigi/fsutil's diff-copy, with Slipway as the sender: a STAT packet
for every entry of the folder in walk order (parents first, each folder's entries sorted
by name as bytes), then an empty STAT; the engine asks for the files it lacks (REQ, by
position in the STAT sequence), each answered with DATA packets and an empty DATA; the
engine ends with FIN, answered with FIN. Files are read from disk as they are asked for,
never held whole; a symlink is described, never followed, and nothing outside the lent
folder is read.
"""

from __future__ import annotations

import logging
import os
import queue
import stat
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence

import grpc
from slipway.buildkit import filesync_pb2, filesync_pb2_grpc

from client.kernel import dockerignore
from client.kernel.entries import DIR, FILE, SYMLINK, DiskSource, Source
from client.kernel.errors import InvalidArgument, SlipwayError

log = logging.getLogger(__name__)

Packet = filesync_pb2.Packet
Stat = filesync_pb2.Stat

#: The gRPC method the engine calls, as the session announces it.
METHOD = f"/{filesync_pb2.DESCRIPTOR.services_by_name['FileSync'].full_name}/DiffCopy"

#: The metadata keys of a DiffCopy call (moby/buildkit session/filesync).
DIR_NAME = "dir-name"
EXCLUDE_PATTERNS = "exclude-patterns"
INCLUDE_PATTERNS = "include-patterns"
FOLLOW_PATHS = "followpaths"

#: Bytes of a file in one DATA packet (far below gRPC's 4 MiB message limit).
DATA_CHUNK = 256 * 1024
#: Files read from the source in one go, at most.
READ_BATCH = 512
#: How many symlinks a followed path may go through before it is given up.
MAX_LINK_HOPS = 40

# Go's os.FileMode bits, which fsutil's Stat.mode carries.
_GO_DIR = 1 << 31
_GO_SYMLINK = 1 << 27
_GO_SETUID = 1 << 23
_GO_SETGID = 1 << 22
_GO_STICKY = 1 << 20


def go_mode(mode: int) -> int:
    """A unix `st_mode` as Go's os.FileMode: the permission bits, and the type and special
    bits where Go keeps them. Only folders, regular files and symlinks are ever lent."""
    bits = mode & 0o777
    if mode & stat.S_ISUID:
        bits |= _GO_SETUID
    if mode & stat.S_ISGID:
        bits |= _GO_SETGID
    if mode & stat.S_ISVTX:
        bits |= _GO_STICKY
    if stat.S_ISDIR(mode):
        bits |= _GO_DIR
    elif stat.S_ISLNK(mode):
        bits |= _GO_SYMLINK
    return bits


def _followed(source: Source, paths: Iterable[str]) -> set[str]:
    """The relative paths named by `followpaths`, with the paths inside the source that
    their symlinks lead to (as fsutil follows them); links leading outside are not
    followed."""
    found: set[str] = set()
    for raw in paths:
        path = os.path.normpath(raw.lstrip("/"))
        for _ in range(MAX_LINK_HOPS):
            if path in (".", "") or path == os.pardir or path.startswith(os.pardir + "/"):
                break
            found.add(path)
            try:
                entry = source.lstat(path)
            except OSError:
                break
            if entry.type != SYMLINK:
                break
            target = entry.target
            base = "" if target.startswith("/") else os.path.dirname(path)
            path = os.path.normpath(os.path.join(base, target.lstrip("/")))
    return found


def entries(
    source: Source | str,
    *,
    excludes: Sequence[str] = (),
    includes: Sequence[str] = (),
    followpaths: Sequence[str] = (),
) -> Iterator[Stat]:
    """The Stat of every entry of `source` (a folder, or a path to one) the engine asked
    for, in fsutil's walk order: `.dockerignore` semantics for `excludes`; when `includes`
    or `followpaths` are given, only what they name (and what lies below it), with the
    folders above it. Owners are root's, as the Docker CLI sends them. InvalidArgument for
    a bad pattern."""
    if isinstance(source, str):
        source = DiskSource(source)
    matcher = dockerignore.Matcher(excludes, "exclude patterns: ")
    wanted = dockerignore.Matcher(includes, "include patterns: ") if includes else None
    followed = _followed(source, followpaths)
    filtered = wanted is not None or bool(followed)
    sent: set[str] = set()
    for path in dockerignore.walk(None, matcher, listdir=source.listdir):
        if filtered:
            named = any(path == f or path.startswith(f + "/") for f in followed)
            if not named and not (wanted is not None and wanted.matches(path)):
                continue
            # The folders above it first, once each: the engine checks every entry's
            # parent came before it.
            parts = path.split("/")
            for depth in range(1, len(parts)):
                parent = "/".join(parts[:depth])
                if parent not in sent:
                    sent.add(parent)
                    yield _stat(source, parent)
            sent.add(path)
        yield _stat(source, path)


def _stat(source: Source, path: str) -> Stat:
    entry = source.lstat(path)
    if entry.type not in (FILE, DIR, SYMLINK):
        raise InvalidArgument(f"not a file, folder or link: {path[:200]}")
    kind = {DIR: stat.S_IFDIR, SYMLINK: stat.S_IFLNK}.get(entry.type, stat.S_IFREG)
    return Stat(
        path=path,
        mode=go_mode(kind | entry.mode),
        modTime=entry.mtime,
        # A folder's size is the filesystem's business; 0 keeps the entry the same on any.
        size=entry.size if entry.type == FILE else 0,
        linkname=entry.target if entry.type == SYMLINK else "",
    )


class FileSync(filesync_pb2_grpc.FileSyncServicer):
    """DiffCopy over `dirs` (a source name, as the frontend asks for it, -> a folder on
    disk or a `Source`)."""

    def __init__(self, dirs: Mapping[str, Source | str], session: str = "") -> None:
        self._dirs = {k: DiskSource(v) if isinstance(v, str) else v for k, v in dirs.items()}
        self._session = session

    def DiffCopy(  # noqa: N802 - gRPC method name
        self, request_iterator: Iterator[Packet], context: grpc.ServicerContext
    ) -> Iterator[Packet]:
        metadata: dict[str, list[str]] = {}
        for key, value in context.invocation_metadata():
            if isinstance(value, str):
                metadata.setdefault(key.lower(), []).append(value)
        name = (metadata.get(DIR_NAME) or [""])[0]
        root = self._dirs.get(name)
        if root is None:
            # fsutil's own words; the name is the engine's, bounded for the log.
            log.warning("session %s: the engine asked for folder %r", self._session, name[:64])
            context.abort(grpc.StatusCode.NOT_FOUND, f"no access allowed to dir {name[:64]!r}")
        log.debug("session %s: lending %r (%s)", self._session, name, _filters(metadata))
        incoming = _Incoming(request_iterator, f"session-{self._session[:8]}-{name}")
        yield from _diff_copy(root, metadata, incoming)


def _filters(metadata: Mapping[str, list[str]]) -> str:
    keys = (EXCLUDE_PATTERNS, INCLUDE_PATTERNS, FOLLOW_PATHS)
    return ", ".join(f"{k}: {len(metadata.get(k, []))}" for k in keys)


def _diff_copy(
    source: Source, metadata: Mapping[str, list[str]], incoming: _Incoming
) -> Iterator[Packet]:
    files: dict[int, str] = {}
    try:
        walked = entries(
            source,
            excludes=metadata.get(EXCLUDE_PATTERNS, []),
            includes=metadata.get(INCLUDE_PATTERNS, []),
            followpaths=metadata.get(FOLLOW_PATHS, []),
        )
        for index, entry in enumerate(walked):
            if not entry.mode & (_GO_DIR | _GO_SYMLINK):
                files[index] = entry.path
            yield Packet(type=Packet.PACKET_STAT, stat=entry)
    except InvalidArgument as err:
        yield _error(str(err))
        return
    except (OSError, ValueError) as err:
        # ValueError: a name that is not UTF-8 cannot travel in the protocol's strings.
        yield _error(f"cannot read the build context: {_why(err)}")
        return
    yield Packet(type=Packet.PACKET_STAT)
    while True:
        packet = incoming.next()
        if packet is None:
            return
        # The engine asks for every file it lacks at once: the requests waiting are read
        # together, so a store behind the source is asked once for a batch of them.
        batch: list[tuple[int, str]] = []
        while packet is not None and packet.type == Packet.PACKET_REQ:
            path = files.pop(packet.ID, None)
            if path is None:
                yield _error(f"invalid file id {packet.ID}")
                return
            batch.append((packet.ID, path))
            packet = incoming.next_nowait() if len(batch) < READ_BATCH else None
        if batch:
            reading: list[str] = []
            try:
                yield from _files(source, batch, reading)
            except (OSError, SlipwayError) as err:
                where = (reading or [batch[0][1]])[-1]
                yield _error(f"cannot read {where[:200]}: {_why(err)}")
                return
        if packet is None:
            continue
        if packet.type == Packet.PACKET_FIN:
            yield Packet(type=Packet.PACKET_FIN)
            return
        if packet.type == Packet.PACKET_ERR:
            log.info(
                "the engine ended a context transfer: %s",
                packet.data[:200].decode("utf-8", "replace"),
            )
            return


def _files(
    source: Source, batch: Sequence[tuple[int, str]], reading: list[str]
) -> Iterator[Packet]:
    """DATA packets of each file of the batch; `reading` ends with the file being read."""
    by_path = {path: ident for ident, path in batch}
    for path, chunks in source.read([path for _ident, path in batch]):
        reading.append(path)
        ident = by_path[path]
        size = source.lstat(path).size
        for data in _exactly(chunks, size, path):
            for start in range(0, len(data), DATA_CHUNK):
                yield Packet(
                    type=Packet.PACKET_DATA, ID=ident, data=data[start : start + DATA_CHUNK]
                )
        yield Packet(type=Packet.PACKET_DATA, ID=ident)


def _exactly(chunks: Iterable[bytes], size: int, path: str) -> Iterator[bytes]:
    """The chunks of a file that must be `size` bytes, as its Stat said; OSError when it
    is not (the engine would take a truncated file)."""
    sent = 0
    for data in chunks:
        sent += len(data)
        if sent > size:
            raise OSError(f"{path[:200]} grew while it was sent")
        yield data
    if sent != size:
        raise OSError(f"{path[:200]} shrank while it was sent")


def _error(text: str) -> Packet:
    return Packet(type=Packet.PACKET_ERR, data=text.encode("utf-8", "replace"))


def _why(err: Exception) -> str:
    if isinstance(err, SlipwayError):
        return str(err)[:200]
    if isinstance(err, OSError):
        return err.strerror or str(err)[:200] or type(err).__name__
    return "a file name is not UTF-8"


class _Incoming:
    """The engine's packets, read on a thread of their own so that sending never waits on
    them; `next()` gives None once the engine's side has ended."""

    def __init__(self, packets: Iterator[Packet], name: str) -> None:
        self._packets = packets
        self._queue: queue.Queue[Packet | None] = queue.Queue()
        self._thread = threading.Thread(target=self._read, name=name, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for packet in self._packets:
                self._queue.put(packet)
        except Exception as err:  # noqa: BLE001 - a cancelled call ends the stream
            log.debug("context transfer: the engine's stream ended: %s", err)
        finally:
            self._queue.put(None)

    def next(self) -> Packet | None:
        # Never forever: grpcio ends the request stream when the call ends, however it ends.
        return self._queue.get()

    def next_nowait(self) -> Packet | None:
        """The next packet if one has arrived, else None (and nothing is lost)."""
        try:
            packet = self._queue.get_nowait()
        except queue.Empty:
            return None
        if packet is None:
            self._queue.put(None)  # the end stays for next()
        return packet
