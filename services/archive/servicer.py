"""The ArchiveService gRPC servicer: translates messages and calls the domain core."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import grpc
from slipway.archive.v1 import archive_pb2 as pb
from slipway.archive.v1 import archive_pb2_grpc as pb_grpc

from client.kernel.streams import iter_chunks
from services.archive import convert
from services.archive.core import Archives


class ArchiveServicer(pb_grpc.ArchiveServiceServicer):
    """Upload, Download, StatArchive, FetchGit and the incremental upload (FindMissing,
    PutBlobs, PutContext, ReadBlobs) over an `Archives` core."""

    def __init__(self, archives: Archives) -> None:
        self.archives = archives

    def Upload(  # noqa: N802 - gRPC method name
        self, request_iterator: Iterator[pb.UploadRequest], context: grpc.ServicerContext
    ) -> pb.UploadResponse:
        header, chunks = convert.split_upload(request_iterator)
        return convert.upload_response(self.archives.upload(header, chunks))

    def Download(  # noqa: N802 - gRPC method name
        self, request: pb.DownloadRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.DownloadResponse]:
        with self.archives.open(request.id) as fileobj:
            for data in iter_chunks(fileobj):
                yield convert.download_response(data)

    def StatArchive(  # noqa: N802 - gRPC method name
        self, request: pb.StatArchiveRequest, context: grpc.ServicerContext
    ) -> pb.StatArchiveResponse:
        return convert.stat_response(self.archives.stat(request.id))

    def FindMissing(  # noqa: N802 - gRPC method name
        self, request: pb.FindMissingRequest, context: grpc.ServicerContext
    ) -> pb.FindMissingResponse:
        found = self.archives.missing_from(list(request.sha256))
        return pb.FindMissingResponse(
            missing=[d for d, _held in found],
            partial=[pb.Partial(sha256=d, offset=held) for d, held in found if held],
        )

    def PutBlobs(  # noqa: N802 - gRPC method name
        self, request_iterator: Iterator[pb.PutBlobsRequest], context: grpc.ServicerContext
    ) -> pb.PutBlobsResponse:
        stored = self.archives.put_blobs(convert.blob_parts(request_iterator))
        return convert.put_blobs_response(stored)

    def PutContext(  # noqa: N802 - gRPC method name
        self, request_iterator: Iterator[pb.PutContextRequest], context: grpc.ServicerContext
    ) -> pb.PutContextResponse:
        app, entries = convert.split_context(request_iterator)
        return convert.put_context_response(self.archives.put_context(app, entries))

    def ReadBlobs(  # noqa: N802 - gRPC method name
        self, request: pb.ReadBlobsRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.ReadBlobsResponse]:
        for part in self.archives.read_blobs(list(request.sha256)):
            yield convert.read_blobs_response(part)

    def CollectGarbage(  # noqa: N802 - gRPC method name
        self, request_iterator: Iterator[pb.CollectGarbageRequest], context: grpc.ServicerContext
    ) -> pb.CollectGarbageResponse:
        options, keep = convert.split_garbage(request_iterator)
        # Every id is read before anything is removed: a cut stream removes nothing.
        return convert.garbage_response(self.archives.collect(options, list(keep)))

    def FetchGit(  # noqa: N802 - gRPC method name
        self, request: pb.FetchGitRequest, context: grpc.ServicerContext
    ) -> pb.FetchGitResponse:
        cancelled = threading.Event()
        context.add_callback(cancelled.set)  # the caller went away: stop git
        fetched = self.archives.fetch_git(convert.git_request(request), cancelled)
        return convert.fetch_git_response(fetched)
