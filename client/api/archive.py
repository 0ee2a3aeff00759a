"""Typed client of the archive service."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO

import grpc
from slipway.archive.v1 import archive_pb2 as pb
from slipway.archive.v1 import archive_pb2_grpc as pb_grpc

from client.api.convert import entry_to_pb
from client.api.grpcerrors import iter_rpc, rpc_errors
from client.kernel import entries as ctx
from client.kernel import types
from client.kernel.entries import Entry
from client.kernel.streams import iter_chunks

#: Digests one FindMissing or ReadBlobs call names at most (the service's limit).
MAX_DIGESTS = 10_000
#: Blobs this small travel whole, many to a message of about SMALL_BATCH bytes.
SMALL_BLOB = 256 * 1024
SMALL_BATCH = 1024 * 1024
#: Entries in one PutContext message: far below gRPC's message limit.
ENTRY_BATCH = 1000


@dataclass(frozen=True)
class Committed:
    """What PutContext answered: the stored context, or what it lacks."""

    id: str
    size: int
    #: Digests of files whose contents the rack lacks (then nothing was stored).
    missing: list[str]


@dataclass(frozen=True)
class Blob:
    """A blob to send: its digest, size and bytes (read when it is sent; from `offset`
    on when resuming a cut upload)."""

    sha256: str
    size: int
    chunks: Callable[[], Iterator[bytes]]
    offset: int = 0


Progress = Callable[[int], None]


def file_digest(fileobj: BinaryIO) -> tuple[int, str]:
    """Size and sha256 hex of a seekable file, read in chunks; rewinds it afterwards."""
    digest = hashlib.sha256()
    size = 0
    fileobj.seek(0)
    for data in iter_chunks(fileobj):
        digest.update(data)
        size += len(data)
    fileobj.seek(0)
    return size, digest.hexdigest()


@dataclass(frozen=True)
class FetchedSource:
    """An archive the rack made from a git repository."""

    id: str
    """The archive id (sha256)."""
    size: int
    """Its size in bytes."""
    commit: str
    """The full sha of the commit it holds."""
    subject: str
    """That commit's subject line."""


class ArchiveClient:
    """Upload and download of source archives."""

    service = "archive"

    def __init__(self, channel: grpc.Channel, address: str = "") -> None:
        self._stub = pb_grpc.ArchiveServiceStub(channel)
        self.address = address

    def upload(
        self,
        app: str,
        fileobj: BinaryIO,
        size: int,
        sha256: str,
        progress: Progress | None = None,
    ) -> str:
        """Streams `fileobj` (whose size and sha256 are known) up; returns the archive id.

        `progress` is called with the number of bytes sent in each chunk."""

        def requests() -> Iterator[pb.UploadRequest]:
            yield pb.UploadRequest(header=pb.UploadHeader(app=app, size=size, sha256=sha256))
            for data in iter_chunks(fileobj):
                request = pb.UploadRequest()
                request.chunk.data = data  # in place: Chunk(...) would copy it again
                yield request
                if progress:
                    progress(len(data))

        with rpc_errors(self.address, self.service):
            resp = self._stub.Upload(requests())
        return str(resp.id)

    def upload_file(
        self, app: str, path: str | os.PathLike[str], progress: Progress | None = None
    ) -> str:
        """Uploads a file from disk, computing its size and digest first."""
        with open(path, "rb") as fileobj:
            size, sha = file_digest(fileobj)
            return self.upload(app, fileobj, size, sha, progress)

    def download(self, archive_id: str) -> Iterator[bytes]:
        """The archive's bytes, chunk by chunk."""
        stream = self._stub.Download(pb.DownloadRequest(id=archive_id))
        for resp in iter_rpc(stream, self.address, self.service):
            yield resp.chunk.data

    def stat(self, archive_id: str) -> int:
        """The stored archive's size; NotFound when it is not stored."""
        with rpc_errors(self.address, self.service):
            return int(self._stub.StatArchive(pb.StatArchiveRequest(id=archive_id)).size)

    def fetch_git(self, app: str, url: str, ref: str = "", manifest: str = "") -> FetchedSource:
        """Has the rack clone `url` at `ref` (default: the remote HEAD) and store its work
        tree as an archive; InvalidArgument says why it could not."""
        request = pb.FetchGitRequest(app=app, url=url, ref=ref, manifest=manifest)
        with rpc_errors(self.address, self.service):
            resp = self._stub.FetchGit(request)
        return FetchedSource(
            id=str(resp.id), size=int(resp.size), commit=str(resp.commit), subject=str(resp.subject)
        )

    # -- the incremental upload ------------------------------------------------------------

    def find_missing(self, digests: list[str]) -> list[str]:
        """The digests of `digests` the rack lacks, in their order."""
        return list(self.lacking(digests))

    def lacking(self, digests: list[str]) -> dict[str, int]:
        """The digests of `digests` the rack lacks, in their order, each with the bytes
        of it a cut upload left on the rack (0: none): a resume starts there."""
        missing: dict[str, int] = {}
        with rpc_errors(self.address, self.service):
            for start in range(0, len(digests), MAX_DIGESTS):
                batch = digests[start : start + MAX_DIGESTS]
                resp = self._stub.FindMissing(pb.FindMissingRequest(sha256=batch))
                held = {p.sha256: int(p.offset) for p in resp.partial}
                for digest in resp.missing:
                    missing[digest] = held.get(digest, 0)
        return missing

    def put_blobs(self, blobs: Iterable[Blob], progress: Progress | None = None) -> int:
        """Streams each blob (header, then chunks); returns how many the rack stored."""

        def requests() -> Iterator[pb.PutBlobsRequest]:
            small: list[pb.SmallBlob] = []
            held = 0
            for blob in blobs:
                if blob.size <= SMALL_BLOB and not blob.offset:
                    data = b"".join(blob.chunks())
                    small.append(pb.SmallBlob(sha256=blob.sha256, data=data))
                    held += len(data)
                    if held >= SMALL_BATCH:
                        yield pb.PutBlobsRequest(small=pb.SmallBlobs(blobs=small))
                        if progress:
                            progress(held)
                        small, held = [], 0
                    continue
                header = pb.BlobHeader(sha256=blob.sha256, size=blob.size, offset=blob.offset)
                yield pb.PutBlobsRequest(header=header)
                for data in blob.chunks():
                    request = pb.PutBlobsRequest()
                    request.chunk.data = data  # in place: Chunk(...) would copy it again
                    yield request
                    if progress:
                        progress(len(data))
            if small:
                yield pb.PutBlobsRequest(small=pb.SmallBlobs(blobs=small))
                if progress:
                    progress(held)

        with rpc_errors(self.address, self.service):
            return int(self._stub.PutBlobs(requests()).blobs)

    def put_context(self, app: str, entries: Iterable[Entry]) -> Committed:
        """Commits a context's entry list: its archive id and stored size, or (with
        nothing stored) the digests of the files whose contents the rack lacks."""

        def requests() -> Iterator[pb.PutContextRequest]:
            yield pb.PutContextRequest(header=pb.ContextHeader(app=app))
            batch: list[pb.Entry] = []
            for e in entries:
                batch.append(entry_to_pb(e))
                if len(batch) >= ENTRY_BATCH:
                    yield pb.PutContextRequest(entries=pb.Entries(entries=batch))
                    batch = []
            if batch:
                yield pb.PutContextRequest(entries=pb.Entries(entries=batch))

        with rpc_errors(self.address, self.service):
            resp = self._stub.PutContext(requests())
        return Committed(str(resp.id), int(resp.size), list(resp.missing))

    def collect_garbage(
        self, keep: Sequence[str], grace: float, automatic: bool = False
    ) -> types.Garbage:
        """Removes the archives not in `keep` and the blobs no kept context names, older
        than `grace` seconds; `automatic` at most once a day."""

        def requests() -> Iterator[pb.CollectGarbageRequest]:
            options = pb.GarbageOptions(grace_seconds=grace, automatic=automatic)
            yield pb.CollectGarbageRequest(options=options)
            for start in range(0, len(keep), MAX_DIGESTS):
                ids = list(keep[start : start + MAX_DIGESTS])
                yield pb.CollectGarbageRequest(keep=pb.ArchiveIds(ids=ids))

        with rpc_errors(self.address, self.service):
            resp = self._stub.CollectGarbage(requests())
        return types.Garbage(
            removed=int(resp.removed),
            removed_bytes=int(resp.removed_bytes),
            kept=int(resp.kept),
            kept_bytes=int(resp.kept_bytes),
            skipped=bool(resp.skipped),
        )

    def read_blobs(self, digests: Sequence[str]) -> Iterator[tuple[str, Iterator[bytes]]]:
        """Each blob asked for, in order, as (digest, its chunks); read a blob's chunks
        before asking for the next blob."""
        for start in range(0, len(digests), MAX_DIGESTS):
            batch = list(digests[start : start + MAX_DIGESTS])
            stream = self._stub.ReadBlobs(pb.ReadBlobsRequest(sha256=batch))
            yield from _blobs(iter_rpc(stream, self.address, self.service))


def _blobs(responses: Iterator[pb.ReadBlobsResponse]) -> Iterator[tuple[str, Iterator[bytes]]]:
    pending: list[pb.ReadBlobsResponse] = []

    def take() -> pb.ReadBlobsResponse | None:
        return pending.pop() if pending else next(responses, None)

    while (resp := take()) is not None:
        if resp.WhichOneof("part") != "header":
            raise ctx.reject("the archive service sent bytes without a blob header")
        header = resp.header

        def chunks(size: int = header.size) -> Iterator[bytes]:
            left = size
            while left > 0:
                nxt = take()
                if nxt is None or nxt.WhichOneof("part") != "chunk":
                    raise ctx.reject("the archive service cut a blob short")
                left -= len(nxt.chunk.data)
                yield nxt.chunk.data

        body = chunks()
        yield str(header.sha256), body
        for _ in body:  # what the caller left unread
            pass
