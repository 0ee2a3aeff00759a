"""Checking, and sending, the compressed layers of an image tar while it arrives (SPEC §7).

An import spools each image tar to disk as its bytes come in. A `Scan` reads the same
bytes in a thread of its own, as a tar stream, and learns for every gzip'd member its
digest and size as stored and the digest of its content (its `diff_id`): by the time the
archive has arrived its layers are known, and they need not be read again to be checked.

A big layer file named by its digest (`<hex>/layer.tar`, as `builds export` writes them)
that the registry lacks is also sent to it as it is scanned, into an upload held open
(`HeldUploads`) when the digest computed here is the one its name gives: committed only once
the import has checked the whole image, cancelled otherwise. Receiving, hashing and pushing
overlap; a lying layer leaves no blob behind.

The scan only saves work: the spooled tar holds every byte. A member it could not read
(not gzip, not valid gzip, an image tar that is no tar at all, too many members) or could
not send is simply not in its result or not held, and is checked and pushed from the
spooled file as before, with the same errors.
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

from client.kernel.errors import InvalidArgument, SlipwayError
from services.common.oci import BlobUpload, Registry
from services.registry.tarstream import Inflater, TarReader

GZIP_MAGIC = b"\x1f\x8b"
# An image tar holds a config and a few dozen layers per image: a scan stops remembering
# past this many members (the rest are checked from the file).
MAX_MEMBERS = 4096
# Chunks waiting for the scanning thread: a few MiB at most.
QUEUE_CHUNKS = 8
# Uploads started per import: past this, layers are pushed from the spooled file.
MAX_HELD = 256
# Layers smaller than this are pushed from the spooled file: sending them early gains
# little, and each costs two requests more.
MIN_SENT = 1024 * 1024
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
    piece at a time (a layer of zeros stays small in memory)."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._stored, self._content = hashlib.sha256(), hashlib.sha256()
        self._size = 0
        self._inflater = Inflater()
        self._error: InvalidArgument | None = None

    def update(self, data: bytes | memoryview) -> None:
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
        stored = f"sha256:{self._stored.hexdigest()}"
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
    failure, a layer no image names) is cancelled. After a failure to start or send one,
    no other is sent early (the registry is in trouble: the push from the spool retries)."""

    def __init__(self, registry: Registry, repository: str) -> None:
        self._registry = registry
        self._repository = repository
        self._held: dict[str, BlobUpload] = {}
        self._started = 0
        self._failed = False
        self._lock = threading.Lock()

    def start(self, name: str, size: int) -> BlobUpload | None:
        """An upload for the big layer file `name` when it names a digest the registry
        lacks."""
        claimed = claimed_digest(name)
        with self._lock:
            if not claimed or size < MIN_SENT or self._failed or self._started >= MAX_HELD:
                return None
            self._started += 1
        try:
            if self._registry.has_blob(self._repository, claimed):
                return None  # HEAD first: the registry's blob is not sent again
            return self._registry.start_upload(self._repository)
        except SlipwayError as err:
            self.failed(name, err)
            return None

    def failed(self, name: str, error: SlipwayError) -> None:
        """Notes that the layer `name` could not be sent as it arrived."""
        log.warning("%s not sent as it arrived: %s", name[:200], error)
        with self._lock:
            self._failed = True

    def hold(self, digest: str, upload: BlobUpload) -> None:
        with self._lock:
            if digest in self._held:
                upload.cancel()  # the same layer twice: one upload is enough
            else:
                self._held[digest] = upload

    def take(self, digest: str) -> BlobUpload | None:
        """The upload held for `digest`, now the caller's to commit or cancel."""
        with self._lock:
            return self._held.pop(digest, None)

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
    """Scans one image tar fed chunk by chunk (`feed`), in a thread, sending the layers
    `held` starts uploads for; `finish` waits for it and gives the layers it learnt by
    member name. Always `finish` a scan, also when the stream failed: that ends its
    thread."""

    def __init__(self, held: HeldUploads | None = None) -> None:
        self._held = held
        self._chunks: queue.Queue[bytes | memoryview | None] = queue.Queue(QUEUE_CHUNKS)
        self._found: dict[str, LayerDigests] = {}
        self._ended = False  # the feed's end was read
        self._thread = threading.Thread(target=self._run, name="layer-scan", daemon=True)
        self._thread.start()

    def feed(self, data: bytes | memoryview) -> None:
        self._chunks.put(data)

    def finish(self) -> dict[str, LayerDigests]:
        self._chunks.put(None)
        self._thread.join()
        return self._found

    def _incoming(self) -> Iterator[bytes | memoryview]:
        while (data := self._chunks.get()) is not None:
            yield data
        self._ended = True

    def _run(self) -> None:
        try:
            tar = TarReader(self._incoming())
            for count, info in enumerate(tar.members()):
                if count >= MAX_MEMBERS:
                    break
                if info.isreg() and not info.issparse():
                    self._member(tar, info)
        except Exception as err:  # noqa: BLE001 - whatever it is, the file is checked again
            log.debug("image tar not scanned to its end: %s", err)
        finally:
            while not self._ended and self._chunks.get() is not None:
                pass  # the rest: the feeding side never blocks

    def _member(self, tar: TarReader, info: tarfile.TarInfo) -> None:
        source = tar.data(info)
        head: list[bytes | memoryview] = []
        while sum(map(len, head)) < len(GZIP_MAGIC) and (piece := next(source, None)):
            head.append(piece)
        if b"".join(bytes(piece[:2]) for piece in head)[:2] != GZIP_MAGIC:
            return  # a config, manifest.json, or a layer the engine must load
        name = info.name.removeprefix("./")
        upload = self._held.start(name, info.size) if self._held is not None else None
        hasher = LayerHasher(name)
        broken: list[BaseException] = []

        def hashed() -> Iterator[bytes | memoryview]:
            try:
                for data in chain(head, source):
                    hasher.update(data)
                    yield data
            except Exception as err:  # noqa: BLE001 - raised again below
                # The image tar broke off: the upload's request still ends cleanly, so that
                # its cancelling is the registry's last word on it.
                broken.append(err)

        pieces = hashed()
        if upload is not None:
            try:
                upload.send(pieces)
            except SlipwayError as err:
                upload.cancel()
                upload = None
                if self._held is not None:
                    self._held.failed(name, err)
            except BaseException:
                upload.cancel()
                raise
        for _rest in pieces:  # what no upload took
            pass
        digests = None if broken else hasher.valid()
        if upload is not None and (digests is None or digests.digest != claimed_digest(name)):
            upload.cancel()  # broken off, not valid gzip, or not the digest its name gives
            upload = None
        if broken:
            raise broken[0]
        if digests is None:
            return  # not valid gzip: checked again from the file, where the error is raised
        self._found[name] = digests
        if upload is not None and self._held is not None:
            self._held.hold(digests.digest, upload)
