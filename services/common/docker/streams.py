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
import tempfile
from collections.abc import Iterator
from typing import Any, BinaryIO

import requests

from services.common.docker.types import LineSink, PushEvent


@contextlib.contextmanager
def context_tar(context: str, dockerfile: str) -> Iterator[tuple[BinaryIO, str]]:
    """The build context as the engine receives it: every file of `context` exactly as the
    client sent it (the client already applied `.dockerignore`; filtering again here would
    drop files Docker itself sends), symlinks kept, owned by root as the Docker CLI sends
    them. Spooled to disk, never held in memory. A Dockerfile outside the context is added
    under a generated name, as the Docker CLI does. Yields the file and the Dockerfile's
    name inside it."""
    inside = os.path.relpath(dockerfile, context)
    outside = inside == os.pardir or inside.startswith(os.pardir + os.sep)
    name = f".dockerfile.{secrets.token_hex(10)}" if outside else inside

    def as_root(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        return info

    with tempfile.TemporaryFile(prefix="context-", suffix=".tar") as spool:
        with tarfile.open(fileobj=spool, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for entry in sorted(os.listdir(context)):
                tar.add(os.path.join(context, entry), arcname=entry, filter=as_root)
            if outside:
                tar.add(dockerfile, arcname=name, filter=as_root)
        spool.seek(0)
        yield spool, name


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
