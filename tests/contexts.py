"""Reading what a rack stored for a build's source, for tests: a context document and
its blobs, through the archive service as a builder reads them."""

from __future__ import annotations

from client.api.archive import ArchiveClient
from client.kernel import entries
from client.kernel.entries import Entry
from client.kernel.streams import reader


def stored_entries(archives: ArchiveClient, archive_id: str) -> list[Entry]:
    """The entries of a stored context, in order."""
    stream = reader(archives.download(archive_id))
    return list(entries.decode(entries.read_lines(stream)))


def stored_files(archives: ArchiveClient, archive_id: str) -> dict[str, bytes]:
    """Every regular file of a stored context, by path, read from its blobs."""
    files = [e for e in stored_entries(archives, archive_id) if e.type == entries.FILE]
    blobs = {d: b"".join(chunks) for d, chunks in archives.read_blobs([e.sha256 for e in files])}
    return {e.path: blobs[e.sha256] for e in files}
