"""Checking, and sending, the compressed layers of an image tar while it arrives (SPEC §7).

An import spools each image tar to disk as its bytes come in. A `Scan` reads the same
bytes in a thread of its own, as a tar stream, and learns for every gzip'd member its
digest and size as stored and the digest of its content (its `diff_id`): by the time the
archive has arrived its layers are known, and they need not be read again to be checked.

A layer file named by its digest (`<hex>/layer.tar`, as `builds export` writes them) that
the registry lacks is also sent to it as it is scanned, into an upload held open
(`HeldUploads`): committed under its digest only once the import has checked the whole
image, cancelled otherwise. Receiving, hashing and pushing overlap; a lying layer leaves no
blob behind.

The scan only saves work: a member it could not read (not gzip, not valid gzip, an image
tar that is no tar at all, too many members) or could not send is simply not in its
result, and is checked and pushed from the spooled file as before, with the same errors.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import re
import tarfile
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import chain
from types import TracebackType
from typing import BinaryIO, cast

from client.kernel.errors import Internal, InvalidArgument, SlipwayError
from client.kernel.streams import iter_chunks, reader
from services.common.oci import BlobUpload, Registry
from services.registry.tarstream import Inflater

GZIP_MAGIC = b"\x1f\x8b"
# An image tar holds a config and a few dozen layers per image: a scan stops remembering
# past this many members (the rest are checked from the file).
MAX_MEMBERS = 4096
# Chunks waiting for the scanning thread: a few MiB at most.
QUEUE_CHUNKS = 8
# Uploads held open at once: past this, layers are pushed from the spooled file.
MAX_HELD = 256
# A layer file that names the digest of its bytes, as `builds export` writes them.
NAMED_LAYER = re.compile(r"^([0-9a-f]{64})/layer\.tar\Z")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LayerDigests:
    """A gzip'd layer file: its digest and size as stored, and the digest of its tar."""

    digest: str
    size: int
    diff_id: str


class LayerHasher:
    """Learns a gzip'd layer's digests from its bytes fed in order, decompressed a bounded
    piece at a time (a layer of zeros stays small in memory). Given the digest its bytes
    are `claimed` to have, it takes that for the stored digest: for a layer sent into an
    upload, whose commit the registry refuses unless the claim holds."""

    def __init__(self, name: str, claimed: str = "") -> None:
        self._name = name
        self._claimed = claimed
        self._stored, self._content = hashlib.sha256(), hashlib.sha256()
        self._size = 0
        self._inflater = Inflater()
        self._error: InvalidArgument | None = None

    def update(self, data: bytes) -> None:
        if not self._claimed:
            self._stored.update(data)
        self._size += len(data)
        if self._error is None:
            try:
                for piece in self._inflater.feed(data):
                    self._content.update(piece)
            except InvalidArgument as err:
                self._error = err

    def result(self) -> LayerDigests:
        """The digests; InvalidArgument, naming the layer, when it is not valid gzip."""
        try:
            if self._error is not None:
                raise self._error
            self._inflater.end()
        except InvalidArgument as err:
            raise InvalidArgument(
                f"{self._name[:200]}: the layer is not valid gzip ({err})"
            ) from None
        stored = self._claimed or f"sha256:{self._stored.hexdigest()}"
        return LayerDigests(stored, self._size, f"sha256:{self._content.hexdigest()}")

    def valid(self) -> LayerDigests | None:
        """The digests, or None when the layer is not valid gzip."""
        try:
            return self.result()
        except InvalidArgument:
            return None


def layer_digests(chunks: Iterable[bytes], name: str) -> LayerDigests:
    """The digests of the gzip'd layer `name` from its bytes (`LayerHasher`)."""
    hasher = LayerHasher(name)
    for data in chunks:
        hasher.update(data)
    return hasher.result()


def claimed_digest(name: str) -> str:
    """The digest a layer file's name claims (`<hex>/layer.tar`), or ""."""
    named = NAMED_LAYER.match(name)
    return f"sha256:{named[1]}" if named else ""


class HeldUploads:
    """The layers an import sent to `repository` of `registry` while its archive arrived,
    held uncommitted by digest until `take`n; whatever is left when the import ends (a
    failure, a layer no image names) is cancelled."""

    def __init__(self, registry: Registry, repository: str) -> None:
        self._registry = registry
        self._repository = repository
        self._held: dict[str, BlobUpload] = {}
        self._lost: dict[str, SlipwayError] = {}
        self._lock = threading.Lock()

    def start(self, name: str) -> BlobUpload | None:
        """An upload for the layer file `name` when it names a digest the registry lacks."""
        claimed = claimed_digest(name)
        if not claimed or len(self._held) >= MAX_HELD:
            return None
        try:
            if self._registry.has_blob(self._repository, claimed):
                return None  # HEAD first: the registry's blob is not sent again
            return self._registry.start_upload(self._repository)
        except SlipwayError as err:
            log.warning("%s not sent as it arrived: %s", name[:200], err)
            return None  # pushed from the spooled file, with retries, or the error then

    def hold(self, digest: str, upload: BlobUpload) -> None:
        with self._lock:
            if digest in self._held:
                upload.cancel()  # the same layer twice: one upload is enough
            else:
                self._held[digest] = upload

    def take(self, digest: str) -> BlobUpload | None:
        """The upload held for `digest`, now the caller's to commit or cancel. Raises what
        made an earlier commit of it fail: its bytes were in that upload alone."""
        with self._lock:
            if digest in self._lost:
                raise self._lost[digest]
            return self._held.pop(digest, None)

    def lose(self, digest: str, error: SlipwayError) -> None:
        """Notes that the upload taken for `digest` could not be committed."""
        with self._lock:
            self._lost[digest] = error

    def __enter__(self) -> HeldUploads:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        with self._lock:
            left, self._held = list(self._held.values()), {}
        for upload in left:
            upload.cancel()


class Scan:
    """Writes one image tar fed chunk by chunk (`feed`) to `out` and scans it, in a thread,
    sending the layers `held` starts uploads for; `finish` waits for it and gives the
    layers it learnt by member name. Always `finish` a scan, also when the stream failed:
    that ends its thread.

    The bytes of a layer sent as it arrives are not written (a hole is left in `out`,
    after its first bytes): only its upload holds them, which is why such a layer is
    committed from that upload or not at all."""

    def __init__(self, out: BinaryIO, held: HeldUploads | None = None) -> None:
        self._out = out
        self._held = held
        self._chunks: queue.Queue[bytes | None] = queue.Queue(QUEUE_CHUNKS)
        self._found: dict[str, LayerDigests] = {}
        #: Bytes pulled from the feed so far, and the ranges of them not to write.
        self._pulled = 0
        self._holes: list[tuple[int, int]] = []
        self._error: OSError | None = None
        self._thread = threading.Thread(target=self._run, name="layer-scan", daemon=True)
        self._thread.start()

    def feed(self, data: bytes) -> None:
        self._chunks.put(data)

    def finish(self) -> dict[str, LayerDigests]:
        """The layers learnt; Internal when the image tar could not be written."""
        self._chunks.put(None)
        self._thread.join()
        if self._error is None:
            try:
                self._out.truncate(self._pulled)  # a hole at the end has its length too
            except OSError as err:
                self._error = err
        if self._error is not None:
            raise Internal(f"cannot spool the archive: {self._error.strerror or self._error}")
        return self._found

    def _incoming(self) -> Iterator[bytes]:
        while (data := self._chunks.get()) is not None:
            self._write(data)
            yield data

    def _write(self, data: bytes) -> None:
        start = self._pulled
        self._pulled += len(data)
        if self._error is not None:
            return
        view = memoryview(data)
        try:
            for low, high in _outside(start, self._pulled, self._holes):
                self._out.seek(low)
                self._out.write(view[low - start : high - start])
        except OSError as err:
            self._error = err
        self._holes = [hole for hole in self._holes if hole[1] > self._pulled]

    def _run(self) -> None:
        incoming = self._incoming()
        try:
            with tarfile.open(fileobj=reader(incoming), mode="r|") as tar:
                for count, info in enumerate(tar):
                    if count >= MAX_MEMBERS:
                        break
                    if info.isreg():
                        self._member(tar, info)
        except (tarfile.TarError, EOFError, OSError) as err:
            log.debug("image tar not scanned to its end: %s", err)
        finally:
            for _rest in incoming:  # the rest is written, and the feeding side never blocks
                pass

    def _member(self, tar: tarfile.TarFile, info: tarfile.TarInfo) -> None:
        source = cast(BinaryIO, tar.extractfile(info))
        head = source.read(len(GZIP_MAGIC))
        if head != GZIP_MAGIC:
            return  # a config, manifest.json, or a layer the engine must load
        name = info.name.removeprefix("./")
        upload = self._held.start(name) if self._held is not None else None
        # A layer sent is hashed by the registry, which refuses to commit it under a
        # digest its name claims falsely; any other is hashed here.
        hasher = LayerHasher(name, claimed_digest(name) if upload is not None else "")
        broken: list[BaseException] = []

        def hashed() -> Iterator[bytes]:
            try:
                for data in chain([head], iter_chunks(source)):
                    hasher.update(data)
                    yield data
            except (tarfile.TarError, EOFError, OSError) as err:
                # The image tar broke off: the upload's request still ends cleanly, so that
                # its cancelling is the registry's last word on it.
                broken.append(err)

        pieces = hashed()
        if upload is not None:
            # What the feed has not given yet of this layer is the upload's alone.
            self._holes.append((max(self._pulled, info.offset_data), info.offset_data + info.size))
            try:
                upload.send(pieces)
            except SlipwayError as err:
                log.warning("%s not sent as it arrived: %s", name[:200], err)
                upload.cancel()
                upload = None
            except BaseException:
                upload.cancel()
                raise
        for _rest in pieces:  # what no upload took
            pass
        digests = hasher.valid()
        if broken:
            digests = None
        if digests is None:  # broken off, or not valid gzip (checked again from the file)
            if upload is not None:
                upload.cancel()
            if broken:
                raise broken[0]
            return
        self._found[name] = digests
        if upload is not None and self._held is not None:
            self._held.hold(digests.digest, upload)


def _outside(start: int, end: int, holes: list[tuple[int, int]]) -> Iterator[tuple[int, int]]:
    """The parts of [start, end) that no hole (sorted, apart) covers."""
    for low, high in holes:
        if high <= start or low >= end:
            continue
        if low > start:
            yield start, low
        start = max(start, high)
    if start < end:
        yield start, end
