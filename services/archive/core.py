"""The archive domain: checks an upload's header and chunks, then hands them to a store."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from client.errors import InvalidArgument
from client.types import check_app_name
from services.archive.store import ObjectStore, check_id

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


def _checked_chunks(chunks: Iterable[bytes]) -> Iterator[bytes]:
    for data in chunks:
        if len(data) > MAX_CHUNK:
            raise InvalidArgument(f"chunk too large: {len(data)} bytes, at most {MAX_CHUNK}")
        yield data


class Archives:
    """Uploads, downloads and stats of source archives over an ObjectStore."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store

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
