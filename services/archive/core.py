"""The archive domain: checks an upload's header and chunks, then hands them to a store."""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Protocol, cast

from client.kernel import entries as ctx
from client.kernel.context import DEFAULT_MANIFEST, Scanned, scan
from client.kernel.entries import Entry, Limits, Tree
from client.kernel.errors import Internal, InvalidArgument, NotFound
from client.kernel.streams import iter_chunks
from client.kernel.types import Garbage, check_app_name
from services.archive.gitfetch import Checkout, redact
from services.common.objectstore import ObjectStore, StoredObject, check_id

log = logging.getLogger(__name__)

# Senders keep chunks at most 1 MiB (common.proto); the slack tolerates a sender that
# rounds up, while still refusing a runaway message long before gRPC's own limit.
MAX_CHUNK = 1024 * 1024 + 64 * 1024
# Archive ids one collection may keep.
MAX_KEEP = 1_000_000
# Digests one FindMissing or ReadBlobs call may name.
MAX_DIGESTS = 10_000
# The most entries of a context, unless configured.
DEFAULT_MAX_FILES = 100_000


@dataclass(frozen=True)
class BlobHeader:
    """What the chunks of one blob are: all of it, or from `offset` on (a resume)."""

    sha256: str
    size: int
    offset: int = 0


@dataclass(frozen=True)
class SmallBlob:
    """A blob sent whole in one message."""

    sha256: str
    data: bytes


@dataclass(frozen=True)
class Committed:
    """A stored context, or the digests of the blobs it lacks."""

    info: ArchiveInfo | None = None
    missing: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class GarbageOptions:
    """How to collect garbage."""

    grace_seconds: float = 24 * 3600.0
    automatic: bool = False


# Where the time of the last collection is kept, beside the scratch folder.
GC_MARKER = "gc-last"
# An automatic collection runs at most this often, in seconds.
AUTOMATIC_EVERY = 24 * 3600.0


class _Shared:
    """A readers-writer lock: uploads and reads share it, garbage collection takes it
    alone, so no upload sees a collection halfway and none is missed by one."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writing = False

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: not self._writing)
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                self._cond.notify_all()

    @contextlib.contextmanager
    def alone(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: not self._writing)
            self._writing = True  # new readers wait from now on
            self._cond.wait_for(lambda: self._readers == 0)
        try:
            yield
        finally:
            with self._cond:
                self._writing = False
                self._cond.notify_all()


def _read_time(path: Path) -> float:
    try:
        return float(path.read_text().strip())
    except (OSError, ValueError):
        return 0.0


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
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.fetcher = fetcher
        self.scratch = scratch
        self.limits = limits or Limits(max_bytes=2 * 1024**3, max_files=DEFAULT_MAX_FILES)
        self.clock = clock
        self._collecting = threading.Lock()
        self._gc = _Shared()
        #: Contexts found whole by `stat`; forgotten whenever this service removes a blob.
        self._whole_ids: set[str] = set()

    # -- the incremental upload ----------------------------------------------------------

    def missing(self, digests: list[str]) -> list[str]:
        """The digests among `digests` the store lacks, in their order."""
        return [d for d, _held in self.missing_from(digests)]

    def missing_from(self, digests: list[str]) -> list[tuple[str, int]]:
        """The digests among `digests` the store lacks, in their order, each with the
        bytes a cut upload left of it (0: none)."""
        if len(digests) > MAX_DIGESTS:
            raise InvalidArgument(f"too many digests in one call: at most {MAX_DIGESTS}")
        found: list[tuple[str, int]] = []
        with self._gc.shared():
            for digest in digests:
                if not self._has(check_id(digest, "sha256")):
                    found.append((digest, self.store.partial_size(digest)))
        return found

    def _has(self, digest: str) -> bool:
        try:
            self.store.stat(digest)
        except NotFound:
            return False
        # A client now counts on it: its grace period starts again.
        self.store.touch(digest)
        return True

    def put_blobs(self, parts: Iterable[BlobHeader | SmallBlob | bytes]) -> PutBlobs:
        """Stores each blob of the stream (a header then its bytes, or a small blob
        whole) as soon as it is whole and verified; a blob that is not is refused, those
        before it stay."""
        with self._gc.shared():
            return self._put_blobs(iter(parts))

    def _put_blobs(self, stream: Iterator[BlobHeader | SmallBlob | bytes]) -> PutBlobs:
        blobs = total = 0
        pending: list[BlobHeader | SmallBlob | bytes] = []
        while True:
            header = pending.pop() if pending else next(stream, None)
            if header is None:
                break
            if isinstance(header, SmallBlob):
                self._put_blob(iter((header.data,)), len(header.data), header.sha256)
            elif isinstance(header, BlobHeader):
                body = self._body(stream, header.size - max(header.offset, 0), pending)
                self._put_blob(body, header.size, header.sha256, header.offset)
            else:
                raise InvalidArgument("each blob must start with a header")
            blobs += 1
            total += header.size if isinstance(header, BlobHeader) else len(header.data)
        return PutBlobs(blobs, total)

    @staticmethod
    def _body(
        stream: Iterator[BlobHeader | SmallBlob | bytes],
        size: int,
        pending: list[BlobHeader | SmallBlob | bytes],
    ) -> Iterator[bytes]:
        """The chunks of one blob: `size` bytes, or less when the next blob starts (then
        kept in `pending`) or the stream ends; the store says what is wrong with that."""
        left = size
        while left > 0:
            part = next(stream, None)
            if part is None:
                return
            if not isinstance(part, bytes):
                pending.append(part)
                return
            if len(part) > MAX_CHUNK:
                raise InvalidArgument(f"chunk too large: {len(part)} bytes, at most {MAX_CHUNK}")
            left -= len(part)
            yield part

    def _put_blob(self, chunks: Iterator[bytes], size: int, sha256: str, offset: int = 0) -> None:
        check_id(sha256, "sha256")
        if size < 0:
            raise InvalidArgument(f"invalid size: {size} (must be 0 or more)")
        if not 0 <= offset <= size:
            raise InvalidArgument(f"invalid offset: {offset} (a blob of {size} bytes)")
        try:
            # Not flushed one by one (a flush per small file would cost more than the
            # upload): ReadBlobs verifies every blob it sends instead. A cut keeps what
            # arrived, for the client to resume from.
            self.store.put(chunks, size, sha256, durable=False, offset=offset, keep_partial=True)
        except InvalidArgument as err:
            raise InvalidArgument(f"blob {sha256[:12]}: {err}") from None

    def put_context(self, app: str, entries: Iterable[Entry]) -> Committed:
        """Checks the entry list; stores it once every file's blob is stored with its
        size, else answers the digests it lacks (the first MAX_DIGESTS of them)."""
        if app:
            check_app_name(app)
        tree = Tree(entries, self.limits)
        with self._gc.shared():
            missing = self._lacking(tree)
            if missing:
                return Committed(missing=missing)
            return Committed(info=self._store_tree(tree, app))

    def _lacking(self, tree: Tree) -> list[str]:
        """The digests of the tree's files the store lacks (the first MAX_DIGESTS). A
        stored blob of another size than its entry is checked: damaged (a crash cut it
        short), it is removed and lacking; whole, the entry lies and is refused."""
        sizes: dict[str, int] = {}
        missing: list[str] = []
        for entry in tree:
            if entry.type != ctx.FILE:
                continue
            known = sizes.get(entry.sha256)
            if known is None:
                try:
                    known = self.store.stat(entry.sha256)
                except NotFound:
                    known = -1
                if known >= 0 and known != entry.size and self._damaged(entry.sha256):
                    known = -1
                sizes[entry.sha256] = known
                if known < 0 and len(missing) < MAX_DIGESTS:
                    missing.append(entry.sha256)
            if known >= 0 and known != entry.size:
                raise ctx.reject(f"{ctx.shown(entry.path)} is {entry.size} bytes, its blob {known}")
        return missing

    def _damaged(self, digest: str) -> bool:
        """Whether the stored blob does not hash to its name; if so it is removed."""
        check = hashlib.sha256()
        try:
            with self.store.open(digest) as fileobj:
                for data in iter_chunks(fileobj):
                    check.update(data)
        except NotFound:
            return True
        if check.hexdigest() == digest:
            return False
        log.error("blob %s is damaged: removed", digest)
        self.store.delete(digest)
        self._whole_ids.clear()
        return True

    def _store_tree(self, tree: Tree, app: str) -> ArchiveInfo:
        digest = hashlib.sha256()
        size = 0
        for line in ctx.encode(tree):
            digest.update(line)
            size += len(line)
        archive_id = digest.hexdigest()
        if not self._has(archive_id):  # the same context again: stored already
            archive_id = self.store.put(ctx.encode(tree), size, archive_id)
        log.info(
            "context for app %s: archive %s (%d entries, %d bytes of files)",
            app or "-",
            archive_id,
            len(tree),
            tree.bytes,
        )
        return ArchiveInfo(id=archive_id, size=size)

    def read_blobs(self, digests: list[str]) -> Iterator[BlobHeader | bytes]:
        """Each blob's header, then its bytes, in the order asked; each verified as it
        goes: one that does not match its digest (damaged on disk) is removed, so the
        next upload sends it again, and the read fails."""
        if len(digests) > MAX_DIGESTS:
            raise InvalidArgument(f"too many digests in one call: at most {MAX_DIGESTS}")
        for digest in digests:
            check_id(digest, "sha256")
        for digest in digests:
            with self.store.open(digest) as fileobj:
                size = self.store.stat(digest)
                yield BlobHeader(digest, size)
                check = hashlib.sha256()
                for data in iter_chunks(fileobj):
                    check.update(data)
                    yield data
            if check.hexdigest() != digest:
                log.error("blob %s is damaged: removed", digest)
                self.store.delete(digest)
                self._whole_ids.clear()
                raise Internal(
                    f"the rack's copy of a file (blob {digest[:12]}) was damaged and is "
                    "removed; build again to send it anew"
                )

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
        """The archive's id and size; NotFound when it is not stored. A client about to
        build it counts on it: its grace period starts again."""
        with self._gc.shared():
            info = ArchiveInfo(id=archive_id, size=self.store.stat(check_id(archive_id)))
            if getattr(self.store, "local", False) and archive_id not in self._whole_ids:
                if not self._whole(archive_id):
                    raise NotFound.of("archive", archive_id)
                self._whole_ids.add(archive_id)  # until this service removes a blob
            self.store.touch(archive_id)
        return info

    def _whole(self, archive_id: str) -> bool:
        """Whether every blob a stored context names is stored (true of a tarball). On a
        local store this costs a stat a file; a blob found damaged and removed makes its
        contexts not whole, so a client sends it again."""
        try:
            for digest in self._named_by(archive_id):
                self.store.stat(digest)
        except NotFound:
            return False
        return True

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
        scanned: list[Scanned] = []
        files = size = 0
        for item in scan(folder, manifest or DEFAULT_MANIFEST):
            # The limits as the walk goes: a huge repository is not hashed whole first.
            files += 1
            size += item.entry.size
            if files > self.limits.max_files:
                raise ctx.reject(f"more than {self.limits.max_files} files")
            if size > self.limits.max_bytes:
                raise ctx.reject(f"larger than {self.limits.max_bytes} bytes once extracted")
            scanned.append(item)
        tree = Tree((item.entry for item in scanned), self.limits)
        with self._gc.shared():
            for item in scanned:
                entry = item.entry
                if entry.type == ctx.FILE and not self._has(entry.sha256):
                    with open(item.full, "rb") as data:
                        self.store.put(iter_chunks(data), entry.size, entry.sha256, durable=False)
            return self._store_tree(tree, app)

    # -- garbage ------------------------------------------------------------------------

    def collect(self, options: GarbageOptions, keep: Iterable[str]) -> Garbage:
        """Removes the archives not in `keep` and the blobs no kept context names, once
        older than the grace period. An automatic run happens at most once a day."""
        if not 0 <= options.grace_seconds < float("inf"):
            raise InvalidArgument("the grace period must be 0 seconds or more")
        with self._collecting, self._gc.alone():
            now = self.clock()
            marker = self.scratch.parent / GC_MARKER
            if options.automatic and now - _read_time(marker) < AUTOMATIC_EVERY:
                return Garbage(skipped=True)
            kept_ids = {check_id(i) for i in keep}
            if len(kept_ids) > MAX_KEEP:
                raise InvalidArgument(f"too many archives to keep: at most {MAX_KEEP}")
            objects = list(self.store.list_objects())
            young = {o.id for o in objects if now - o.modified < options.grace_seconds}
            named: set[str] = set()
            for object_id in kept_ids | young:
                named |= self._named_by(object_id)
            kept: list[StoredObject] = []
            doomed: list[StoredObject] = []
            for obj in objects:
                keep_it = obj.id in kept_ids or obj.id in young or obj.id in named
                (kept if keep_it else doomed).append(obj)
            if doomed:
                self._whole_ids.clear()
            for obj in doomed:
                self.store.delete(obj.id)
            left = self.store.drop_leftovers(now - options.grace_seconds)
            stats = Garbage(
                removed=len(doomed),
                removed_bytes=sum(o.size for o in doomed) + left,
                kept=len(kept),
                kept_bytes=sum(o.size for o in kept),
            )
            self.scratch.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text(f"{now}\n")
        log.info(
            "garbage: removed %d objects (%d bytes), kept %d (%d bytes)",
            stats.removed,
            stats.removed_bytes,
            stats.kept,
            stats.kept_bytes,
        )
        return stats

    def _is_context(self, object_id: str) -> bool:
        try:
            with self.store.open(object_id) as fileobj:
                return ctx.is_document(fileobj.read(len(ctx.MAGIC)))
        except NotFound:
            return False

    def _named_by(self, object_id: str) -> set[str]:
        """The blobs a stored context names; none for a blob, a tarball or nothing."""
        if not self._is_context(object_id):
            return set()
        with self.store.open(object_id) as fileobj:
            try:
                return {
                    e.sha256
                    for e in ctx.decode(ctx.read_lines(io.BufferedReader(cast(Any, fileobj))))
                    if e.type == ctx.FILE
                }
            except InvalidArgument:
                # A file's contents may look like a context; one that does not read as
                # one names nothing (it is kept or removed as any blob is).
                log.warning("object %s starts like a context but is none", object_id)
                return set()

    def sweep(self) -> None:
        """Removes fetch folders a previous run left (it was killed mid-fetch)."""
        if not self.scratch.is_dir():
            return
        for leftover in self.scratch.glob(f"{FETCH_PREFIX}*"):
            log.info("removing %s, left by an interrupted fetch", leftover)
            shutil.rmtree(leftover, onerror=_log_leftover)


def _log_leftover(_func: object, path: str, exc_info: object) -> None:
    log.warning("cannot remove %s: %s", path, exc_info)
