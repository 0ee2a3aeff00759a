"""Archive messages to domain values and back; the only module here that knows the protos."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from slipway.archive.v1 import archive_pb2 as pb
from slipway.common.v1 import common_pb2

from client.kernel.errors import InvalidArgument
from services.archive.core import ArchiveInfo, GitArchive, GitRequest, UploadHeader


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
    return pb.DownloadResponse(chunk=common_pb2.Chunk(data=data))


def stat_response(info: ArchiveInfo) -> pb.StatArchiveResponse:
    return pb.StatArchiveResponse(id=info.id, size=info.size)


def git_request(req: pb.FetchGitRequest) -> GitRequest:
    return GitRequest(app=req.app, url=req.url, ref=req.ref, manifest=req.manifest)


def fetch_git_response(fetched: GitArchive) -> pb.FetchGitResponse:
    return pb.FetchGitResponse(
        id=fetched.id, size=fetched.size, commit=fetched.commit, subject=fetched.subject
    )
