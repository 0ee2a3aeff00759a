"""File-like helpers over chunked byte streams, so no other code sees a chunk message.

Chunks are 512 KiB: inside the 256 KiB–1 MiB band, far from gRPC's 4 MiB message limit.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Iterator
from typing import BinaryIO, TypeVar

CHUNK_SIZE = 512 * 1024
# A message carrying a batch of items (log lines, say) stays far below the 8 MiB limit.
BATCH_BYTES = 1024 * 1024

T = TypeVar("T")


def iter_chunks(fileobj: BinaryIO, size: int = CHUNK_SIZE) -> Iterator[bytes]:
    """Reads `fileobj` to its end in pieces of at most `size` bytes."""
    while True:
        data = fileobj.read(size)
        if not data:
            return
        yield data


def rechunk(pieces: Iterable[bytes], size: int = CHUNK_SIZE) -> Iterator[bytes]:
    """Regroups pieces of any size (engine streams, say) into chunks of exactly `size`
    bytes, the last one shorter; never holds more than about two chunks."""
    buf = bytearray()
    for piece in pieces:
        buf += piece
        while len(buf) >= size:
            yield bytes(buf[:size])
            del buf[:size]
    if buf:
        yield bytes(buf)


def write_stream_to(fileobj: BinaryIO, chunks: Iterable[bytes]) -> int:
    """Writes every chunk to `fileobj`, returning the number of bytes written."""
    total = 0
    for data in chunks:
        fileobj.write(data)
        total += len(data)
    return total


class ChunkReader(io.RawIOBase):
    """A read-only, non-seekable file over an iterator of byte chunks (for `tarfile` 'r|')."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        super().__init__()
        self._chunks = iter(chunks)
        self._buf = b""
        self._pos = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        while not self._buf:
            try:
                self._buf = next(self._chunks)
            except StopIteration:
                return 0
        n = min(len(buffer), len(self._buf))
        buffer[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        self._pos += n
        return n

    def tell(self) -> int:
        return self._pos


def reader(chunks: Iterable[bytes]) -> io.BufferedReader:
    """A buffered file object reading from `chunks`."""
    return io.BufferedReader(ChunkReader(chunks), buffer_size=CHUNK_SIZE)


def batched(
    items: Iterable[T], size_of: Callable[[T], int], limit: int = BATCH_BYTES
) -> Iterator[list[T]]:
    """`items` in order, in lists whose sizes add up to at most `limit` (an item larger
    than `limit` travels alone)."""
    batch: list[T] = []
    size = 0
    for item in items:
        cost = size_of(item)
        if batch and size + cost > limit:
            yield batch
            batch, size = [], 0
        batch.append(item)
        size += cost
    if batch:
        yield batch
