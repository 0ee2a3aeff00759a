"""Typed client of the archive service."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

import grpc
from slipway.archive.v1 import archive_pb2 as pb
from slipway.archive.v1 import archive_pb2_grpc as pb_grpc
from slipway.common.v1 import common_pb2

from client.api.grpcerrors import iter_rpc, rpc_errors
from client.kernel.streams import iter_chunks

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
                yield pb.UploadRequest(chunk=common_pb2.Chunk(data=data))
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
