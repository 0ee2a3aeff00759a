"""Tar and gzip as streams of bytes: members written from chunk iterators with their headers
and padding, gzip compression and decompression that never hold more than a chunk or two,
so that images of any size pass through in flat memory."""

from __future__ import annotations

import itertools
import tarfile
from collections.abc import Iterable, Iterator

from zlib_ng import zlib_ng as zlib  # zlib's API; CRC-32 and inflate several times faster

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

    def feed(self, data: bytes | memoryview) -> Iterator[bytes]:
        """The decompressed bytes of `data`, in pieces of at most CHUNK_SIZE."""
        pending: bytes | memoryview = data
        while pending:
            if self._inflater.eof:  # one gzip member ended and more bytes follow
                self._inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            try:
                out = self._inflater.decompress(pending, CHUNK_SIZE)
            except zlib.error as err:  # type: ignore[misc]  # zlib-ng's stub
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


# The most a member's extended headers (pax records, GNU long names) may hold in all, and
# how many headers one member may chain: they are read whole, and no honest name or record
# list comes near either.
MAX_EXTENDED = 1024 * 1024
MAX_HEADERS = 16
# The kinds of bad header `TarInfo.fromtarfile` raises (tarfile.HeaderError's subclasses,
# which typeshed does not list).
_EOF_HEADER: type[Exception] = tarfile.EOFHeaderError  # type: ignore[attr-defined]
_EMPTY_HEADER: type[Exception] = tarfile.EmptyHeaderError  # type: ignore[attr-defined]
_TRUNCATED_HEADER: type[Exception] = tarfile.TruncatedHeaderError  # type: ignore[attr-defined]
_INVALID_HEADER: type[Exception] = tarfile.InvalidHeaderError  # type: ignore[attr-defined]
_SUBSEQUENT_HEADER: type[Exception] = tarfile.SubsequentHeaderError  # type: ignore[attr-defined]


class TarReader:
    """Reads a tar stream from byte chunks member by member, as `tarfile` 'r|' does, but
    hands out each member's data as views of the chunks it arrived in: nothing is copied on
    the way (an image of a GiB passes through an import twice).

    Headers, pax records and GNU long names are parsed by `tarfile.TarInfo.fromtarfile`,
    which reads them from this object (its `fileobj`); the end of the archive, a header
    that is not a tar header, and truncation are judged as `tarfile` judges them, with its
    `tarfile.ReadError`s."""

    def __init__(self, chunks: Iterable[bytes | memoryview]) -> None:
        self._chunks = iter(chunks)
        self._view = memoryview(b"")
        self._pos = 0
        # What `TarInfo.fromtarfile` takes from a TarFile.
        self.fileobj = self
        self.encoding = tarfile.ENCODING
        self.errors = "surrogateescape"
        self.pax_headers: dict[str, str] = {}
        self.offset = 0  # where the next header starts (set by fromtarfile)
        self._headers = 0  # this member's headers and extended bytes read so far
        self._extended = 0

    def tell(self) -> int:
        return self._pos

    def read(self, size: int) -> bytes:
        """`size` bytes (fewer at the end of the stream), copied: headers only."""
        self._headers += 1
        self._extended += size
        if self._extended > MAX_EXTENDED:
            raise tarfile.ReadError(f"extended headers of {self._extended} bytes are too large")
        if self._headers > 2 * MAX_HEADERS:
            raise tarfile.ReadError(f"a member has more than {MAX_HEADERS} extended headers")
        return b"".join(self._take(size))

    def _take(self, size: int) -> Iterator[memoryview]:
        """The next `size` bytes as views, fewer if the stream ends first."""
        while size > 0:
            if not self._view:
                try:
                    self._view = memoryview(next(self._chunks)).cast("B")
                except StopIteration:
                    return
                continue
            piece = self._view[: min(size, CHUNK_SIZE)]  # big messages: bounded pieces
            self._view = self._view[len(piece) :]
            self._pos += len(piece)
            size -= len(piece)
            yield piece

    def _skip(self, size: int) -> None:
        for piece in self._take(size):
            size -= len(piece)
        if size > 0:
            raise tarfile.ReadError("unexpected end of data")

    def members(self) -> Iterator[tarfile.TarInfo]:
        """Each member's header in turn; the data of the one before is skipped over when
        it was not read (`data`)."""
        while True:
            if self.offset > self._pos:
                self._skip(self.offset - self._pos)
            start = self._pos
            self._headers = self._extended = 0
            try:
                info = tarfile.TarInfo.fromtarfile(self)  # type: ignore[arg-type]
            except _SUBSEQUENT_HEADER as err:
                raise tarfile.ReadError(str(err)) from None
            except (ValueError, IndexError, RecursionError):  # a malformed pax or sparse map
                raise tarfile.ReadError("a member's extended header is malformed") from None
            except _EMPTY_HEADER:
                if start == 0:
                    raise tarfile.ReadError("empty file") from None
                return
            except (_TRUNCATED_HEADER, _INVALID_HEADER) as err:
                if start == 0:  # not a tar at all; past the start: the end, as tar sees it
                    raise tarfile.ReadError(str(err)) from None
                return
            except _EOF_HEADER:
                return
            if info.size < 0 or (
                info.isreg() and not info.issparse() and info.offset_data + info.size > self.offset
            ):  # a pax record changed the size its data occupies (GNU.sparse.realsize alone)
                raise tarfile.ReadError(f"{info.name[:200]}: its size does not match its header")
            yield info

    def data(self, info: tarfile.TarInfo) -> Iterator[memoryview]:
        """The data of `info`, the member just yielded by `members` (a regular file, not
        sparse), as views; tarfile.ReadError when the stream ends inside it."""
        if self._pos != info.offset_data:
            raise tarfile.ReadError(f"{info.name[:200]}: its data was read already")
        left = info.size
        for piece in self._take(left):
            left -= len(piece)
            yield piece
        if left > 0:
            raise tarfile.ReadError("unexpected end of data")

    def drain(self) -> None:
        """Reads the stream to its end (a gzip trailer after the tar's end, say)."""
        self._view = memoryview(b"")
        for _rest in self._chunks:
            pass
