"""Archive messages to domain values and back; the only module here that knows the protos."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from slipway.archive.v1 import archive_pb2 as pb

from client.api.convert import entry_from_pb
from client.kernel.entries import Entry
from client.kernel.errors import InvalidArgument
from client.kernel.types import Garbage
from services.archive.core import (
    ArchiveInfo,
    BlobHeader,
    Committed,
    GarbageOptions,
    GitArchive,
    GitRequest,
    PutBlobs,
    SmallBlob,
    UploadHeader,
)


def split_upload(requests: Iterable[pb.UploadRequest]) -> tuple[UploadHeader, Iterator[bytes]]:
    """The header of an upload stream and an iterator over the bytes of its chunks."""
    stream = iter(requests)
    first = next(stream, None)
    if first is None or first.WhichOneof("part") != "header":
        raise InvalidArgument("upload must start with a header")
    header = UploadHeader(app=first.header.app, size=first.header.size, sha256=first.header.sha256)

    def chunks() -> Iterator[bytes]:
        for req in stream:
            if req.WhichOneof("part") != "chunk":
                raise InvalidArgument("upload must send one header, then only chunks")
            yield req.chunk.data

    return header, chunks()


def upload_response(info: ArchiveInfo) -> pb.UploadResponse:
    return pb.UploadResponse(id=info.id, size=info.size)


def download_response(data: bytes) -> pb.DownloadResponse:
    response = pb.DownloadResponse()
    response.chunk.data = data  # in place: Chunk(...) would copy it again
    return response


def stat_response(info: ArchiveInfo) -> pb.StatArchiveResponse:
    return pb.StatArchiveResponse(id=info.id, size=info.size)


def git_request(req: pb.FetchGitRequest) -> GitRequest:
    return GitRequest(app=req.app, url=req.url, ref=req.ref, manifest=req.manifest)


def fetch_git_response(fetched: GitArchive) -> pb.FetchGitResponse:
    return pb.FetchGitResponse(
        id=fetched.id, size=fetched.size, commit=fetched.commit, subject=fetched.subject
    )


def blob_parts(
    requests: Iterable[pb.PutBlobsRequest],
) -> Iterator[BlobHeader | SmallBlob | bytes]:
    """A PutBlobs stream as blob headers and the bytes that follow each, and small blobs."""
    for req in requests:
        part = req.WhichOneof("part")
        if part == "header":
            yield BlobHeader(
                sha256=req.header.sha256, size=req.header.size, offset=req.header.offset
            )
        elif part == "chunk":
            yield req.chunk.data
        elif part == "small":
            for blob in req.small.blobs:
                yield SmallBlob(sha256=blob.sha256, data=blob.data)
        else:
            raise InvalidArgument("a PutBlobs message must be a header or a chunk")


def put_blobs_response(stored: PutBlobs) -> pb.PutBlobsResponse:
    return pb.PutBlobsResponse(blobs=stored.blobs, bytes=stored.bytes)


def split_context(requests: Iterable[pb.PutContextRequest]) -> tuple[str, Iterator[Entry]]:
    """The app of a PutContext stream and its entries, in order."""
    stream = iter(requests)
    first = next(stream, None)
    if first is None or first.WhichOneof("part") != "header":
        raise InvalidArgument("a context must start with a header")

    def entries() -> Iterator[Entry]:
        for req in stream:
            if req.WhichOneof("part") != "entries":
                raise InvalidArgument("a context must send one header, then only entries")
            for msg in req.entries.entries:
                yield entry_from_pb(msg)

    return first.header.app, entries()


def put_context_response(done: Committed) -> pb.PutContextResponse:
    if done.info is None:
        return pb.PutContextResponse(missing=done.missing)
    return pb.PutContextResponse(id=done.info.id, size=done.info.size)


def read_blobs_response(part: BlobHeader | bytes) -> pb.ReadBlobsResponse:
    if isinstance(part, BlobHeader):
        return pb.ReadBlobsResponse(header=pb.BlobHeader(sha256=part.sha256, size=part.size))
    response = pb.ReadBlobsResponse()
    response.chunk.data = part  # in place: Chunk(...) would copy it again
    return response


def split_garbage(
    requests: Iterable[pb.CollectGarbageRequest],
) -> tuple[GarbageOptions, Iterator[str]]:
    """The options of a CollectGarbage stream and the archive ids it keeps."""
    stream = iter(requests)
    first = next(stream, None)
    if first is None or first.WhichOneof("part") != "options":
        raise InvalidArgument("a collection must start with its options")
    options = GarbageOptions(
        grace_seconds=first.options.grace_seconds, automatic=first.options.automatic
    )

    def keep() -> Iterator[str]:
        for req in stream:
            if req.WhichOneof("part") != "keep":
                raise InvalidArgument("a collection must send its options, then only ids")
            yield from req.keep.ids

    return options, keep()


def garbage_response(done: Garbage) -> pb.CollectGarbageResponse:
    return pb.CollectGarbageResponse(
        removed=done.removed,
        removed_bytes=done.removed_bytes,
        kept=done.kept,
        kept_bytes=done.kept_bytes,
        skipped=done.skipped,
    )
