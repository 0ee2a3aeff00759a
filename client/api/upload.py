"""The incremental upload of a folder (SPEC §7): walk and hash, ask what the rack lacks,
send only that, commit the entry list.

`ContextUpload.scan` walks the folder (digests from the cache where files are unchanged)
and, every few hundred files, asks the rack which of their contents it lacks; those start
streaming at once on a thread of their own, so walking, hashing and sending overlap and
no temporary archive is ever written. `finish` waits for the last blob and commits the
list. A stream cut on the way is resumed: the rack is asked again what it lacks, and what
arrived whole is not sent again.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from client.api.archive import ArchiveClient, Blob
from client.kernel import context as packing
from client.kernel import entries as ctx
from client.kernel.entries import Entry
from client.kernel.errors import InvalidArgument, SlipwayError, Unavailable

log = logging.getLogger(__name__)

#: Files hashed between two FindMissing calls.
ASK_EVERY = 500
#: Times a cut stream is resumed before the upload gives up.
RESUMES = 5
CHUNK = 512 * 1024

Progress = Callable[[int], None]


@dataclass
class Uploaded:
    """What an upload did."""

    id: str = ""
    entries: int = 0
    #: Bytes of the context's files.
    bytes: int = 0
    #: Files read to hash them (not found in the digest cache).
    read: int = 0
    #: File contents sent, and their bytes.
    sent_files: int = 0
    sent_bytes: int = 0
    resumed: int = 0
    missing: dict[str, Entry] = field(default_factory=dict, repr=False)


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
        self._full: dict[str, str] = {}  # digest -> a file holding it
        self._lacked: set[str] = set()
        self._queue: queue.Queue[Blob | None] = queue.Queue()
        self._sender: threading.Thread | None = None
        self._error: BaseException | None = None
        self._lock = threading.Lock()
        self._progress: Progress | None = None
        self._unreported = 0

    # -- phase 1 -----------------------------------------------------------------------

    def scan(self) -> None:
        """Walks and hashes the folder, sending what the rack lacks as it is found."""
        batch: list[str] = []
        for item in packing.scan(self.folder, self.manifest, self.cache):
            entry = item.entry
            self._entries.append(entry)
            if entry.type != ctx.FILE:
                continue
            self.result.bytes += entry.size
            self.result.read += item.read
            if entry.sha256 not in self._full:
                self._full[entry.sha256] = item.full
                batch.append(entry.sha256)
                self.result.missing.setdefault(entry.sha256, entry)
            if len(batch) >= ASK_EVERY:
                self._ask(batch)
                batch = []
        if batch:
            self._ask(batch)
        self.result.entries = len(self._entries)
        # What was not reported missing is stored already.
        self.result.missing = {d: e for d, e in self.result.missing.items() if d in self._lacked}
        self._queue.put(None)

    def _ask(self, digests: list[str]) -> None:
        for digest in self.archive.find_missing(digests):
            self._lacked.add(digest)
            self._send(digest)

    def _send(self, digest: str) -> None:
        if self._sender is None:
            self._sender = threading.Thread(target=self._run, name="upload", daemon=True)
            self._sender.start()
        entry = self.result.missing[digest]
        self._queue.put(self._blob(entry))

    def _blob(self, entry: Entry) -> Blob:
        full = self._full[entry.sha256]

        def chunks() -> Iterator[bytes]:
            left = entry.size
            fd = os.open(full, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            with os.fdopen(fd, "rb", buffering=0) as handle:
                while left > 0:
                    data = handle.read(min(CHUNK, left))
                    if not data:
                        break
                    left -= len(data)
                    yield data
                if left or handle.read(1):
                    self._fail(_Changed(entry.path))
                    raise _Changed(entry.path)

        return Blob(entry.sha256, entry.size, chunks)

    def _blobs(self) -> Iterator[Blob]:
        while (blob := self._queue.get()) is not None:
            yield blob

    def _run(self) -> None:
        try:
            self.archive.put_blobs(self._blobs(), self._advance)
        except BaseException as err:  # noqa: BLE001 - reported by finish()
            self._fail(err)
            while self._queue.get() is not None:  # let scan() finish queueing
                pass

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
        """Bytes of the file contents the rack lacked."""
        return sum(e.size for e in self.result.missing.values())

    def finish(self, progress: Progress | None = None) -> Uploaded:
        """Waits for the contents still on their way (resuming a cut stream), then
        commits the entry list; returns what was done."""
        with self._lock:
            self._progress = progress
            already, self._unreported = self._unreported, 0
        if progress and already:
            progress(already)
        if self._sender is not None:
            self._sender.join()
        self._check(self._error)
        for attempt in range(1, RESUMES + 1):
            if self._error is None:
                break
            self.result.resumed = attempt
            log.info("upload cut (%s); resuming, attempt %d", self._error, attempt)
            time.sleep(min(0.2 * attempt, 1.0))
            self._error = None
            try:
                lacking = self.archive.find_missing(list(self.result.missing))
                blobs = [self._blob(self.result.missing[d]) for d in lacking]
                self.archive.put_blobs(blobs, self._advance)
            except SlipwayError as err:
                self._fail(err)  # a _Changed the blobs raised on the way stays first
            self._check(self._error)
        if self._error is not None:
            raise self._error
        self.result.sent_files = len(self.result.missing)
        try:
            self.result.id, _size = self.archive.put_context(self.app, self._entries)
        except InvalidArgument as err:
            raise self._explained(err) from None
        return self.result

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
            for digest, entry in self.result.missing.items():
                if digest.startswith(prefix):
                    return InvalidArgument(
                        f"{ctx.shown(entry.path)} changed while it was being uploaded"
                        f" ({text[19:]}); build again"
                    )
        return err
