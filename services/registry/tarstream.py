"""Tar and gzip as streams of bytes: members written from chunk iterators with their headers
and padding, gzip compression and decompression that never hold more than a chunk or two,
so that images of any size pass through in flat memory."""

from __future__ import annotations

import itertools
import tarfile
import zlib
from collections.abc import Iterable, Iterator

from client.kernel.errors import InvalidArgument
from client.kernel.streams import CHUNK_SIZE

BLOCK = tarfile.BLOCKSIZE
RECORD = tarfile.RECORDSIZE
# Fast compression: image layers in a `docker save` tar are uncompressed, and the export is
# usually piped straight into an import, where speed matters more than a few percent.
GZIP_LEVEL = 1


def file_info(name: str, size: int, mtime: float) -> tarfile.TarInfo:
    """The header of a regular file owned by nobody in particular, mode 0644."""
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = int(mtime)
    info.mode = 0o644
    return info


class TarWriter:
    """Produces a tar stream member by member; the caller decides where the bytes go."""

    def __init__(self) -> None:
        self.offset = 0

    def _out(self, data: bytes) -> bytes:
        self.offset += len(data)
        return data

    def member(self, info: tarfile.TarInfo, chunks: Iterable[bytes] = ()) -> Iterator[bytes]:
        """The header, exactly `info.size` bytes of `chunks`, and the padding; a source that
        yields more or fewer bytes than announced raises."""
        yield self._out(info.tobuf(tarfile.PAX_FORMAT))
        written = 0
        for data in chunks:
            written += len(data)
            if written > info.size:
                raise InvalidArgument(f"{info.name}: more than its {info.size} bytes")
            yield self._out(data)
        if written != info.size:
            raise InvalidArgument(f"{info.name}: {written} bytes instead of {info.size}")
        yield self._out(b"\0" * (-info.size % BLOCK))

    def end(self) -> bytes:
        """Two zero blocks, then zeros up to a whole record, as tar itself ends an archive."""
        size = 2 * BLOCK
        size += -(self.offset + size) % RECORD
        return self._out(b"\0" * size)


def gzip(pieces: Iterable[bytes], level: int = GZIP_LEVEL) -> Iterator[bytes]:
    """The gzip stream (header, deflate, CRC trailer) of the concatenated pieces."""
    compressor = zlib.compressobj(level, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    for piece in pieces:
        out = compressor.compress(piece)
        if out:
            yield out
    yield compressor.flush()


class Inflater:
    """Decompresses a gzip stream fed piece by piece (several members allowed), checking
    every CRC; `end` checks that the stream is complete. InvalidArgument says whether it is
    corrupt or truncated."""

    def __init__(self) -> None:
        self._inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)

    def feed(self, data: bytes) -> Iterator[bytes]:
        """The decompressed bytes of `data`, in pieces of at most CHUNK_SIZE."""
        pending = data
        while pending:
            if self._inflater.eof:  # one gzip member ended and more bytes follow
                self._inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            try:
                out = self._inflater.decompress(pending, CHUNK_SIZE)
            except zlib.error as err:
                raise InvalidArgument(f"the archive is corrupt: {err}") from None
            if out:
                yield out
            eof = self._inflater.eof
            pending = self._inflater.unused_data if eof else self._inflater.unconsumed_tail

    def end(self) -> None:
        if not self._inflater.eof:
            raise InvalidArgument("the archive is truncated: the gzip stream ends early")


def gunzip(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Decompresses a gzip stream (`Inflater`); bytes that are not gzip at all pass
    through as they are (a plain tar). InvalidArgument for an empty, corrupt or truncated
    archive."""
    source = iter(chunks)
    first = b""
    for first in source:
        if first:
            break
    if not first:
        raise InvalidArgument("the archive is empty")
    if not first.startswith(b"\x1f\x8b"):
        yield first
        yield from source
        return
    inflater = Inflater()
    for data in itertools.chain([first], source):
        yield from inflater.feed(data)
    inflater.end()
