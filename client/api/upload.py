"""The incremental upload of a folder (SPEC §7): walk and hash, ask what the rack lacks,
send only that, commit the entry list.

`ContextUpload.scan` walks the folder (digests from the cache where files are unchanged)
and, every few hundred files it had to read, asks the rack which of their contents it
lacks; those start streaming at once on a thread of their own, so walking, hashing and
sending overlap and no temporary archive is ever written. `finish` waits for the last
blob and commits the list; the rack answers the commit with any other contents it lacks
(files whose digests came from the cache, say, on a rack that never saw them), which are
sent before it commits again. So a rebuild with nothing changed is one call. A stream cut
on the way is resumed: the rack is asked again what it lacks, and what arrived whole is
not sent again.
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from client.api.archive import ArchiveClient, Blob
from client.kernel import context as packing
from client.kernel import entries as ctx
from client.kernel.entries import Entry
from client.kernel.errors import InvalidArgument, NotFound, SlipwayError, Unavailable

log = logging.getLogger(__name__)

#: Files read between two FindMissing calls: few at first, so sending starts early.
ASK_FIRST = 256
ASK_MOST = 4096
#: Times a cut stream is resumed before the upload gives up.
RESUMES = 5
CHUNK = 512 * 1024

Progress = Callable[[int], None]


@dataclass
class Uploaded:
    """What an upload did; the counts grow as it goes, for a progress display to read."""

    id: str = ""
    entries: int = 0
    #: The context's files, and their bytes.
    files: int = 0
    bytes: int = 0
    #: Files read to hash them (not found in the digest cache), and their bytes.
    read: int = 0
    read_bytes: int = 0
    #: File contents sent, and their bytes.
    sent_files: int = 0
    sent_bytes: int = 0
    resumed: int = 0


class _Changed(Exception):
    """A file changed between its hashing and its sending."""


class ContextUpload:
    """One folder's upload to one rack."""

    def __init__(
        self,
        archive: ArchiveClient,
        app: str,
        folder: str | os.PathLike[str],
        manifest: str = packing.DEFAULT_MANIFEST,
        cache: packing.DigestCache | None = None,
    ) -> None:
        self.archive = archive
        self.app = app
        self.folder = os.fspath(folder)
        self.manifest = manifest
        self.cache = cache
        self.result = Uploaded()
        self._entries: list[Entry] = []
        #: Each distinct content: an entry holding it and its file.
        self._by_digest: dict[str, tuple[Entry, str]] = {}
        #: The digests the rack said it lacks, in order.
        self._lacking: dict[str, None] = {}
        self._queue: queue.Queue[Blob | None] = queue.Queue()
        self._sender: threading.Thread | None = None
        self._error: BaseException | None = None
        self._lock = threading.Lock()
        self._progress: Progress | None = None
        self._unreported = 0

    # -- phase 1 -----------------------------------------------------------------------

    def scan(self) -> None:
        """Walks and hashes the folder. The files it had to read (new or changed since
        the digest cache saw them) are asked about as it goes, and what the rack lacks of
        them starts on its way at once; a digest from the cache is left to PutContext."""
        try:
            self._walk()
        finally:
            self._queue.put(None)  # the stream ends, however the walk did

    def _walk(self) -> None:
        batch: list[str] = []
        ask_at = ASK_FIRST
        for item in packing.scan(self.folder, self.manifest, self.cache):
            entry = item.entry
            self._entries.append(entry)
            self.result.entries += 1
            if entry.type != ctx.FILE:
                continue
            self.result.files += 1
            self.result.bytes += entry.size
            self.result.read += item.read
            self.result.read_bytes += entry.size if item.read else 0
            if entry.sha256 not in self._by_digest:
                self._by_digest[entry.sha256] = (entry, item.full)
                if item.read:
                    batch.append(entry.sha256)
            if len(batch) >= ask_at:
                self._ask(batch)
                batch, ask_at = [], min(ask_at * 2, ASK_MOST)
        if batch:
            self._ask(batch)

    def _ask(self, digests: list[str]) -> None:
        for digest in self.archive.find_missing(digests):
            if self._sender is None:
                self._sender = threading.Thread(target=self._run, name="upload", daemon=True)
                self._sender.start()
            self._lacking[digest] = None
            self._queue.put(self._blob(digest))

    def _blob(self, digest: str, offset: int = 0) -> Blob:
        entry, full = self._by_digest[digest]

        def chunks() -> Iterator[bytes]:
            left = entry.size - offset
            fd = os.open(full, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            with os.fdopen(fd, "rb", buffering=0) as handle:
                handle.seek(offset)
                while left > 0:
                    data = handle.read(min(CHUNK, left))
                    if not data:
                        break
                    left -= len(data)
                    yield data
                if left or handle.read(1):
                    self._fail(_Changed(entry.path))
                    raise _Changed(entry.path)

        return Blob(digest, entry.size, chunks, offset)

    def _blobs(self) -> Iterator[Blob]:
        while (blob := self._queue.get()) is not None:
            yield blob

    def _run(self) -> None:
        try:
            self.archive.put_blobs(self._blobs(), self._advance)
        except BaseException as err:  # noqa: BLE001 - reported by finish()
            self._fail(err)  # scan() queues on (the queue never blocks it); finish() resends

    def _fail(self, err: BaseException) -> None:
        with self._lock:
            if self._error is None:
                self._error = err

    def _advance(self, sent: int) -> None:
        with self._lock:
            self.result.sent_bytes += sent
            if self._progress is None:
                self._unreported += sent
                return
            progress = self._progress
        progress(sent)

    # -- phase 2 -----------------------------------------------------------------------

    @property
    def to_send(self) -> int:
        """Bytes of the file contents the rack is known to lack."""
        return sum(self._by_digest[d][0].size for d in self._lacking)

    def finish(self, progress: Progress | None = None) -> Uploaded:
        """Waits for the contents still on their way (resuming a cut stream), then
        commits the entry list, sending first whatever else the rack says it lacks."""
        with self._lock:
            self._progress = progress
            already, self._unreported = self._unreported, 0
        if progress and already:
            progress(already)
        if self._sender is not None:
            self._sender.join()
        if self._error is not None:
            self._check(self._error)
            self.result.resumed += 1
            self._resend(list(self._lacking))
        if not self._lacking:
            known = self._stored_already()
            if known:
                self.result.id = known
                return self.result
        sent_for_commit: set[str] = set()
        try:
            while True:
                done = self.archive.put_context(self.app, self._entries)
                if not done.missing:
                    self.result.id = done.id
                    self.result.sent_files = len(self._lacking)
                    return self.result
                if any(d not in self._by_digest for d in done.missing):
                    raise Unavailable("the rack asked for contents this folder does not hold")
                # The rack names what it lacks a batch at a time; a digest it names again
                # after it was sent means it cannot keep it.
                again = sent_for_commit.intersection(done.missing)
                if len(again) == len(done.missing) and again:
                    raise Unavailable("the rack still lacks file contents it was sent; try again")
                for digest in done.missing:
                    self._lacking[digest] = None
                self._resend(done.missing, known_missing=True)
                sent_for_commit.update(done.missing)
        except InvalidArgument as err:
            raise self._explained(err) from None

    def _stored_already(self) -> str:
        """The id of this very context when the rack stores it already (a rebuild with
        nothing changed), else empty. The id is the sha256 of the document the rack would
        store; a context it stores names only blobs it keeps."""
        digest = hashlib.sha256()
        try:
            for line in ctx.encode(ctx.check_entry(e) for e in self._entries):
                digest.update(line)
        except InvalidArgument:
            return ""  # PutContext says what is wrong
        try:
            self.archive.stat(digest.hexdigest())
        except NotFound:
            return ""
        return digest.hexdigest()

    def _resend(self, digests: list[str], known_missing: bool = False) -> None:
        """Sends the blobs of `digests` the rack lacks, resuming a cut stream: after a
        cut the rack is asked again; what arrived whole is not sent again, and a large
        blob cut halfway goes on from the last byte the rack holds."""
        held = dict.fromkeys(digests, 0)
        for attempt in range(RESUMES + 1):
            if attempt or not known_missing:
                held = self.archive.lacking(list(held))
            self._error = None
            try:
                blobs = [self._blob(d, offset) for d, offset in held.items()]
                self.archive.put_blobs(blobs, self._advance)
                return
            except SlipwayError as err:
                self._fail(err)  # a _Changed the blobs raised on the way stays first
            self._check(self._error)
            self.result.resumed += 1
            log.info("upload cut (%s); resuming, attempt %d", self._error, attempt + 1)
            time.sleep(min(0.2 * (attempt + 1), 1.0))
        raise Unavailable(f"the upload was cut {RESUMES + 1} times: {self._error}")

    def _check(self, err: BaseException | None) -> None:
        """Raises what no resume can help; a cut stream (Unavailable) is left to resume."""
        if err is None or isinstance(err, Unavailable):
            return
        if isinstance(err, _Changed):
            raise InvalidArgument(
                f"{ctx.shown(str(err))} changed while it was being uploaded; build again"
            ) from None
        if isinstance(err, InvalidArgument):
            raise self._explained(err) from None
        if isinstance(err, SlipwayError):
            raise err
        raise Unavailable(f"the upload stopped: {err}") from None

    def _explained(self, err: InvalidArgument) -> InvalidArgument:
        """A refused blob named by the file it came from."""
        text = str(err)
        if text.startswith("blob "):
            prefix = text[5:17]
            for digest, (entry, _full) in self._by_digest.items():
                if digest.startswith(prefix):
                    return InvalidArgument(
                        f"{ctx.shown(entry.path)} changed while it was being uploaded"
                        f" ({text[19:]}); build again"
                    )
        return err
