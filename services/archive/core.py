"""The archive domain: checks an upload's header and chunks, then hands them to a store."""

from __future__ import annotations

import hashlib
import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from client.kernel import entries as ctx
from client.kernel.context import DEFAULT_MANIFEST, scan
from client.kernel.entries import Entry, Limits, Tree
from client.kernel.errors import InvalidArgument, NotFound
from client.kernel.streams import iter_chunks
from client.kernel.types import check_app_name
from services.archive.gitfetch import Checkout, redact
from services.common.objectstore import ObjectStore, check_id

log = logging.getLogger(__name__)

# Senders keep chunks at most 1 MiB (common.proto); the slack tolerates a sender that
# rounds up, while still refusing a runaway message long before gRPC's own limit.
MAX_CHUNK = 1024 * 1024 + 64 * 1024
# Digests one FindMissing or ReadBlobs call may name.
MAX_DIGESTS = 10_000
# The most entries of a context, unless configured.
DEFAULT_MAX_FILES = 100_000


@dataclass(frozen=True)
class BlobHeader:
    """What the chunks of one blob are."""

    sha256: str
    size: int


@dataclass(frozen=True)
class PutBlobs:
    """What a PutBlobs stream stored."""

    blobs: int
    bytes: int


@dataclass(frozen=True)
class UploadHeader:
    """What an uploader declares before sending bytes."""

    app: str
    size: int
    sha256: str


@dataclass(frozen=True)
class ArchiveInfo:
    """A stored archive."""

    id: str
    size: int


@dataclass(frozen=True)
class GitRequest:
    """A repository to fetch into an archive."""

    app: str
    url: str
    ref: str = ""
    """A branch, tag or commit; empty for the remote HEAD."""
    manifest: str = DEFAULT_MANIFEST
    """The manifest the build reads: packed even when `.dockerignore` excludes it."""


@dataclass(frozen=True)
class GitArchive:
    """A stored archive of a repository's work tree, and the commit it holds."""

    id: str
    size: int
    commit: str
    subject: str


class Fetcher(Protocol):
    """Clones repositories (`gitfetch.Git`)."""

    def clone(
        self, url: str, ref: str, dest: Path, cancelled: threading.Event | None = None
    ) -> Checkout:
        """Checks `ref` of `url` out into `dest` without any `.git`; InvalidArgument with
        the reason when it cannot."""
        ...


# Prefix of the temporary folders git fetches work in, under the scratch folder.
FETCH_PREFIX = "git-"


def _checked_chunks(chunks: Iterable[bytes]) -> Iterator[bytes]:
    for data in chunks:
        if len(data) > MAX_CHUNK:
            raise InvalidArgument(f"chunk too large: {len(data)} bytes, at most {MAX_CHUNK}")
        yield data


class Archives:
    """Uploads, downloads and stats of source archives over an ObjectStore."""

    def __init__(
        self,
        store: ObjectStore,
        fetcher: Fetcher,
        scratch: Path,
        limits: Limits | None = None,
    ) -> None:
        self.store = store
        self.fetcher = fetcher
        self.scratch = scratch
        self.limits = limits or Limits(max_bytes=2 * 1024**3, max_files=DEFAULT_MAX_FILES)

    # -- the incremental upload ----------------------------------------------------------

    def missing(self, digests: list[str]) -> list[str]:
        """The digests among `digests` the store lacks, in their order."""
        if len(digests) > MAX_DIGESTS:
            raise InvalidArgument(f"too many digests in one call: at most {MAX_DIGESTS}")
        found: list[str] = []
        for digest in digests:
            if not self._has(check_id(digest, "sha256")):
                found.append(digest)
        return found

    def _has(self, digest: str) -> bool:
        try:
            self.store.stat(digest)
        except NotFound:
            return False
        return True

    def put_blobs(self, parts: Iterable[BlobHeader | bytes]) -> PutBlobs:
        """Stores each blob of the stream (a header, then its bytes) as soon as it is
        whole and verified; a blob that is not is refused, those before it stay."""
        stream = iter(parts)
        blobs = total = 0
        pending: list[BlobHeader | bytes] = []
        while True:
            header = pending.pop() if pending else next(stream, None)
            if header is None:
                break
            if not isinstance(header, BlobHeader):
                raise InvalidArgument("each blob must start with a header")
            check_id(header.sha256, "sha256")
            if header.size < 0:
                raise InvalidArgument(f"invalid size: {header.size} (must be 0 or more)")

            def body(size: int = header.size) -> Iterator[bytes]:
                left = size
                while left > 0:
                    part = next(stream, None)
                    if part is None:
                        return  # short: the store says so
                    if isinstance(part, BlobHeader):
                        pending.append(part)
                        return
                    if len(part) > MAX_CHUNK:
                        raise InvalidArgument(
                            f"chunk too large: {len(part)} bytes, at most {MAX_CHUNK}"
                        )
                    left -= len(part)
                    yield part

            try:
                self.store.put(body(), header.size, header.sha256)
            except InvalidArgument as err:
                raise InvalidArgument(f"blob {header.sha256[:12]}: {err}") from None
            blobs += 1
            total += header.size
        return PutBlobs(blobs, total)

    def put_context(self, app: str, entries: Iterable[Entry]) -> ArchiveInfo:
        """Checks the entry list and that every file's blob is stored with its size, then
        stores the list; its id names the build's source."""
        if app:
            check_app_name(app)
        tree = Tree(entries, self.limits)
        sizes: dict[str, int] = {}
        for entry in tree:
            if entry.type != ctx.FILE:
                continue
            known = sizes.get(entry.sha256)
            if known is None:
                try:
                    known = sizes[entry.sha256] = self.store.stat(entry.sha256)
                except NotFound:
                    raise ctx.reject(
                        f"the contents of {ctx.shown(entry.path)} were not uploaded"
                    ) from None
            if known != entry.size:
                raise ctx.reject(f"{ctx.shown(entry.path)} is {entry.size} bytes, its blob {known}")
        return self._store_tree(tree, app)

    def _store_tree(self, tree: Tree, app: str) -> ArchiveInfo:
        digest = hashlib.sha256()
        size = 0
        for line in ctx.encode(tree):
            digest.update(line)
            size += len(line)
        archive_id = self.store.put(ctx.encode(tree), size, digest.hexdigest())
        log.info(
            "context for app %s: archive %s (%d entries, %d bytes of files)",
            app or "-",
            archive_id,
            len(tree),
            tree.bytes,
        )
        return ArchiveInfo(id=archive_id, size=size)

    def read_blobs(self, digests: list[str]) -> Iterator[BlobHeader | bytes]:
        """Each blob's header, then its bytes, in the order asked."""
        if len(digests) > MAX_DIGESTS:
            raise InvalidArgument(f"too many digests in one call: at most {MAX_DIGESTS}")
        for digest in digests:
            check_id(digest, "sha256")
        for digest in digests:
            with self.store.open(digest) as fileobj:
                size = self.store.stat(digest)
                yield BlobHeader(digest, size)
                yield from iter_chunks(fileobj)

    def upload(self, header: UploadHeader, chunks: Iterable[bytes]) -> ArchiveInfo:
        """Stores the archive once its bytes match the header; nothing otherwise."""
        if header.app:
            check_app_name(header.app)
        check_id(header.sha256, "sha256")
        if header.size < 0:
            raise InvalidArgument(f"invalid size: {header.size} (must be 0 or more)")
        archive_id = self.store.put(_checked_chunks(chunks), header.size, header.sha256)
        log.info("upload for app %s: archive %s", header.app or "-", archive_id)
        return ArchiveInfo(id=archive_id, size=header.size)

    def open(self, archive_id: str) -> BinaryIO:
        """The archive's bytes, open for reading."""
        return self.store.open(check_id(archive_id))

    def stat(self, archive_id: str) -> ArchiveInfo:
        """The archive's id and size; NotFound when it is not stored."""
        return ArchiveInfo(id=archive_id, size=self.store.stat(check_id(archive_id)))

    def fetch_git(
        self, request: GitRequest, cancelled: threading.Event | None = None
    ) -> GitArchive:
        """Clones the repository into a temporary folder, packs its work tree as
        `slipway build` packs a folder, and stores the tarball like an upload. Nothing is
        left behind but the stored archive, whatever happens."""
        if request.app:
            check_app_name(request.app)
        self.scratch.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        work = Path(tempfile.mkdtemp(dir=self.scratch, prefix=FETCH_PREFIX))
        try:
            source = work / "source"
            checkout = self.fetcher.clone(request.url, request.ref, source, cancelled)
            try:
                info = self._store_folder(source, request.app, request.manifest)
            except InvalidArgument as err:
                message = str(err).replace(str(source), redact(request.url))
                raise InvalidArgument(message) from None
        finally:
            shutil.rmtree(work, onerror=_log_leftover)
        log.info(
            "fetched %s%s for app %s: commit %s, archive %s (%d bytes) in %.1fs",
            redact(request.url),
            f"#{request.ref}" if request.ref else "",
            request.app or "-",
            checkout.commit,
            info.id,
            info.size,
            time.monotonic() - started,
        )
        return GitArchive(info.id, info.size, checkout.commit, checkout.subject)

    def _store_folder(self, folder: Path, app: str, manifest: str) -> ArchiveInfo:
        """Stores a folder as `slipway build` uploads it: its entry list checked first,
        then its files as blobs (those the store lacks), then the list."""
        scanned = list(scan(folder, manifest or DEFAULT_MANIFEST))
        tree = Tree((item.entry for item in scanned), self.limits)
        for item in scanned:
            entry = item.entry
            if entry.type == ctx.FILE and not self._has(entry.sha256):
                with open(item.full, "rb") as data:
                    self.store.put(iter_chunks(data), entry.size, entry.sha256)
        return self.put_context(app, tree)

    def sweep(self) -> None:
        """Removes fetch folders a previous run left (it was killed mid-fetch)."""
        if not self.scratch.is_dir():
            return
        for leftover in self.scratch.glob(f"{FETCH_PREFIX}*"):
            log.info("removing %s, left by an interrupted fetch", leftover)
            shutil.rmtree(leftover, onerror=_log_leftover)


def _log_leftover(_func: object, path: str, exc_info: object) -> None:
    log.warning("cannot remove %s: %s", path, exc_info)
