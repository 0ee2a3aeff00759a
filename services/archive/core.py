"""The archive domain: checks an upload's header and chunks, then hands them to a store."""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from client.kernel.context import DEFAULT_MANIFEST, pack
from client.kernel.errors import InvalidArgument
from client.kernel.streams import iter_chunks
from client.kernel.types import check_app_name
from services.archive.gitfetch import Checkout, redact
from services.common.objectstore import ObjectStore, check_id

log = logging.getLogger(__name__)

# Senders keep chunks at most 1 MiB (common.proto); the slack tolerates a sender that
# rounds up, while still refusing a runaway message long before gRPC's own limit.
MAX_CHUNK = 1024 * 1024 + 64 * 1024


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

    def __init__(self, store: ObjectStore, fetcher: Fetcher, scratch: Path) -> None:
        self.store = store
        self.fetcher = fetcher
        self.scratch = scratch

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
            with tempfile.TemporaryFile(dir=work, prefix="archive-") as tarball:
                try:
                    size, digest = pack(source, tarball, request.manifest or DEFAULT_MANIFEST)
                except InvalidArgument as err:
                    message = str(err).replace(str(source), redact(request.url))
                    raise InvalidArgument(message) from None
                tarball.seek(0)
                archive_id = self.store.put(iter_chunks(tarball), size, digest)
        finally:
            shutil.rmtree(work, onerror=_log_leftover)
        log.info(
            "fetched %s%s for app %s: commit %s, archive %s (%d bytes) in %.1fs",
            redact(request.url),
            f"#{request.ref}" if request.ref else "",
            request.app or "-",
            checkout.commit,
            archive_id,
            size,
            time.monotonic() - started,
        )
        return GitArchive(archive_id, size, checkout.commit, checkout.subject)

    def sweep(self) -> None:
        """Removes fetch folders a previous run left (it was killed mid-fetch)."""
        if not self.scratch.is_dir():
            return
        for leftover in self.scratch.glob(f"{FETCH_PREFIX}*"):
            log.info("removing %s, left by an interrupted fetch", leftover)
            shutil.rmtree(leftover, onerror=_log_leftover)


def _log_leftover(_func: object, path: str, exc_info: object) -> None:
    log.warning("cannot remove %s: %s", path, exc_info)
