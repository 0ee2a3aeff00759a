"""What goes into and comes out of the engine's streams: the build context as a tar
spooled to disk (the legacy builder's; BuildKit's is lent through the session), decoded
messages turned into log lines or progress events, and the one way to interrupt a stream
blocked in a read."""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import tarfile
from collections.abc import Iterator
from typing import Any

import requests

from client.kernel.entries import DIR, FILE, SYMLINK, DiskSource, Entry, Source, sub
from services.common.docker.types import LineSink, PushEvent

#: Files read from a source in one go while the tar is written.
TAR_BATCH = 512


@contextlib.contextmanager
def context_tar(
    context: str, dockerfile: str, source: Source | None = None
) -> Iterator[tuple[Iterator[bytes], str]]:
    """The build context as the engine receives it: every entry of `context` exactly as the
    client sent it (the client already applied `.dockerignore`; filtering again here would
    drop files Docker itself sends), symlinks kept, owned by root as the Docker CLI sends
    them: an uncompressed tar, written as the engine reads it, never spooled. `context`
    and `dockerfile` are folders on disk, or paths inside `source`. A Dockerfile outside
    the context is added under a generated name, as the Docker CLI does. Yields the tar's
    chunks and the Dockerfile's name inside it."""
    inside = os.path.relpath(dockerfile, context)
    outside = inside == os.pardir or inside.startswith(os.pardir + os.sep)
    name = f".dockerfile.{secrets.token_hex(10)}" if outside else inside
    if source is None:
        tree: Source = DiskSource(context)
        folder: Source = DiskSource(os.path.dirname(dockerfile) or ".")
    else:
        tree = sub(source, context)
        folder = sub(source, os.path.dirname(dockerfile))
    extra = (folder, os.path.basename(dockerfile), name) if outside else None
    yield _tar(tree, extra), name


def _walk(source: Source, folder: str = "") -> Iterator[str]:
    for name, is_dir in source.listdir(folder):
        path = f"{folder}/{name}" if folder else name
        yield path
        if is_dir:
            yield from _walk(source, path)


def _tar(source: Source, extra: tuple[Source, str, str] | None) -> Iterator[bytes]:
    batch: list[Entry] = []
    files = 0
    for path in _walk(source):
        entry = source.lstat(path)
        batch.append(entry)
        files += entry.type == FILE
        if files >= TAR_BATCH or len(batch) >= 8 * TAR_BATCH:
            yield from _tar_entries(source, batch)
            batch, files = [], 0
    yield from _tar_entries(source, batch)
    if extra is not None:
        folder, base, name = extra
        entry = folder.lstat(base)
        yield from _tar_entries(folder, [entry], {base: name})
    yield bytes(2 * tarfile.BLOCKSIZE)


def _tar_entries(
    source: Source, batch: list[Entry], names: dict[str, str] | None = None
) -> Iterator[bytes]:
    reads = source.read([e.path for e in batch if e.type == FILE])
    for entry in batch:
        info = tarfile.TarInfo((names or {}).get(entry.path, entry.path))
        info.mode = entry.mode & 0o7777
        info.mtime = entry.mtime // 1_000_000_000
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        if entry.type == DIR:
            info.type = tarfile.DIRTYPE
        elif entry.type == SYMLINK:
            info.type = tarfile.SYMTYPE
            info.linkname = entry.target
        elif entry.type == FILE:
            info.size = entry.size
        else:
            continue  # what Docker's receiver would refuse is left out
        yield info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
        if entry.type != FILE:
            continue
        _path, chunks = next(reads)
        sent = 0
        for data in chunks:
            sent += len(data)
            if sent > entry.size:
                raise OSError(f"{entry.path} grew while it was sent")
            yield data
        if sent != entry.size:
            raise OSError(f"{entry.path} shrank while it was sent")
        if entry.size % tarfile.BLOCKSIZE:
            yield bytes(tarfile.BLOCKSIZE - entry.size % tarfile.BLOCKSIZE)


class LineSplitter:
    """Turns output pieces (which the engine cuts anywhere, often sending a line's text
    and its newline apart) into whole lines: split on newlines, a trailing `\\r` stripped,
    nothing sent for the empty part after a final newline."""

    def __init__(self, emit: LineSink) -> None:
        self.emit = emit
        self._partial = ""

    def feed(self, text: str) -> None:
        parts = (self._partial + text).split("\n")
        self._partial = parts.pop()
        for part in parts:
            self.emit(part.rstrip("\r"))

    def flush(self) -> None:
        """Sends an unfinished last line, if any."""
        if self._partial:
            partial, self._partial = self._partial, ""
            self.emit(partial.rstrip("\r"))


def log_message(message: dict[str, Any], lines: LineSplitter) -> str:
    """Sends a decoded build or pull message's text to `lines` (statuses whole, progress
    bars dropped); returns the image id an `aux` message carries, else empty."""
    if "stream" in message:
        lines.feed(str(message["stream"]))
    elif "status" in message:
        if not message.get("progressDetail") or not message.get("progress"):
            ident = message.get("id")
            status = str(message["status"])
            lines.flush()
            lines.emit(f"{ident}: {status}" if ident else status)
    aux = message.get("aux")
    if isinstance(aux, dict) and aux.get("ID"):
        return str(aux["ID"])
    return ""


def event_of(message: dict[str, Any]) -> PushEvent:
    """A decoded push or pull message as a PushEvent (the digest of a push's `aux`)."""
    aux = message.get("aux") or {}
    if isinstance(aux, dict) and aux.get("Digest"):
        return PushEvent(digest=str(aux["Digest"]))
    progress = message.get("progressDetail") or {}
    return PushEvent(
        status=str(message.get("status") or ""),
        layer=str(message.get("id") or ""),
        current=int(progress.get("current") or 0),
        total=int(progress.get("total") or 0),
    )


def shutdown(response: requests.Response) -> None:
    """Interrupts a read blocked on `response`'s connection from another thread.

    Private reach: requests and urllib3 offer no public way to abort a read in progress
    (`Response.close` waits for the reading thread). The socket sits under
    `response.raw` (urllib3 HTTPResponse) `._fp` (http.client.HTTPResponse) `.fp`
    (socket.SocketIO) `.raw._sock`; every step is looked up defensively, so a change in
    either library degrades to closing the response."""
    fp = getattr(getattr(response.raw, "_fp", None), "fp", None)
    sock = getattr(getattr(fp, "raw", None), "_sock", None)
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(Exception):
        response.close()
