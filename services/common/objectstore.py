"""The one object-store adapter: the `ObjectStore` seam, its filesystem implementation (S3
comes later as a second one), and a size limit that wraps either.

Objects are named by their sha256, so an object's id is its content's checksum and two
uploads of the same bytes share one object. A store commits an object only once its size
and sha256 match what the uploader declared; nothing of a failed upload remains.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO, Protocol

from client.kernel.errors import InvalidArgument, NotFound, ResourceExhausted

log = logging.getLogger(__name__)

SHA256 = re.compile(r"^[0-9a-f]{64}\Z")


def check_id(value: str, what: str = "archive id") -> str:
    """Returns `value` when it is a lowercase hex sha256, else raises InvalidArgument."""
    if not SHA256.match(value or ""):
        shown = f"{value!r} " if len(value or "") <= 64 else ""  # never echo a huge input
        raise InvalidArgument(f"invalid {what}: {shown}(must be 64 lowercase hex digits)")
    return value


class ObjectStore(Protocol):
    """Content-addressed storage of archives."""

    def put(self, chunks: Iterable[bytes], size: int, sha256: str) -> str:
        """Stores the bytes of `chunks` when they are exactly `size` bytes with digest
        `sha256`, returning the object id (the digest); raises InvalidArgument otherwise,
        leaving nothing behind."""
        ...

    def open(self, object_id: str) -> BinaryIO:
        """The stored object, open for reading; NotFound when there is none."""
        ...

    def stat(self, object_id: str) -> int:
        """The stored object's size in bytes; NotFound when there is none."""
        ...


class FileStore:
    """Objects as files `objects/<first two hex>/<sha256>` under a root folder.

    An upload is written to `tmp/` (same filesystem, so the final `os.replace` is atomic)
    while it is hashed, and only renamed into place once it is verified."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._objects = self.root / "objects"
        self._tmp = self.root / "tmp"
        self._objects.mkdir(parents=True, exist_ok=True)
        self._tmp.mkdir(parents=True, exist_ok=True)

    def _path(self, object_id: str) -> Path:
        check_id(object_id)
        return self._objects / object_id[:2] / object_id

    def put(self, chunks: Iterable[bytes], size: int, sha256: str) -> str:
        check_id(sha256, "sha256")
        fd, tmp_name = tempfile.mkstemp(dir=self._tmp, prefix="upload-")
        try:
            digest = hashlib.sha256()
            written = 0
            with os.fdopen(fd, "wb") as out:
                for data in chunks:
                    # Stop at the first byte past the declared size: no need to read the rest.
                    if written + len(data) > size:
                        raise InvalidArgument("archive larger than declared size")
                    digest.update(data)
                    out.write(data)
                    written += len(data)
                out.flush()
                os.fsync(out.fileno())
            if written != size:
                raise InvalidArgument(f"size mismatch: expected {size} bytes, got {written}")
            actual = digest.hexdigest()
            if actual != sha256:
                raise InvalidArgument(f"checksum mismatch: expected {sha256}, got {actual}")
            final = self._path(sha256)
            if final.exists():
                log.info("archive %s already stored", sha256)
                os.unlink(tmp_name)
                return sha256
            final.parent.mkdir(exist_ok=True)
            os.chmod(tmp_name, 0o400)  # read-only, and the owner's alone
            os.replace(tmp_name, final)
            log.info("stored archive %s (%d bytes)", sha256, size)
            return sha256
        except BaseException as err:
            # A bad or broken stream (including a cancelled call) leaves nothing.
            try:
                os.unlink(tmp_name)
            except FileNotFoundError:
                pass
            if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
                raise ResourceExhausted("no space left on device for the archive store") from None
            raise

    def open(self, object_id: str) -> BinaryIO:
        try:
            return open(self._path(object_id), "rb")
        except FileNotFoundError:
            raise NotFound.of("archive", object_id) from None

    def stat(self, object_id: str) -> int:
        try:
            return self._path(object_id).stat().st_size
        except FileNotFoundError:
            raise NotFound.of("archive", object_id) from None


class SizeLimit:
    """An ObjectStore refusing archives larger than `max_bytes` before reading any byte."""

    def __init__(self, inner: ObjectStore, max_bytes: int) -> None:
        self.inner = inner
        self.max_bytes = max_bytes

    def put(self, chunks: Iterable[bytes], size: int, sha256: str) -> str:
        if size > self.max_bytes:
            raise InvalidArgument(
                f"archive too large: {size} bytes, the limit is {self.max_bytes} bytes"
            )
        return self.inner.put(chunks, size, sha256)

    def open(self, object_id: str) -> BinaryIO:
        return self.inner.open(object_id)

    def stat(self, object_id: str) -> int:
        return self.inner.stat(object_id)
