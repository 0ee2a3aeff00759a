"""`create_server`: the archive service wired to its store, used by `__main__` and tests."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from slipway.archive.v1 import archive_pb2 as pb
from slipway.archive.v1 import archive_pb2_grpc as pb_grpc

from client.kernel.entries import Limits
from services.archive.config import Config
from services.archive.core import Archives, Fetcher
from services.archive.gitfetch import Git
from services.archive.servicer import ArchiveServicer
from services.common.objectstore import FileStore, ObjectStore, S3Store, SizeLimit
from services.common.server import Server, build_server

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["ArchiveService"].full_name


@dataclass(frozen=True)
class Deps:
    """What the service runs on; tests swap these."""

    store: ObjectStore
    fetcher: Fetcher


def default_deps(config: Config) -> Deps:
    """The S3 bucket when configured, else the filesystem store under the data folder;
    and the `git` command."""
    store: ObjectStore
    if config.archive_url:
        s3 = S3Store.from_url(config.archive_url)
        s3.check()
        store = s3
    else:
        store = FileStore(config.data_dir)
    return Deps(store=store, fetcher=Git(config.git_timeout))


def create_server(config: Config, deps: Deps | None = None, address: str | None = None) -> Server:
    """A started archive server on `address` (default: the configured one)."""
    deps = deps or default_deps(config)
    archives = Archives(
        SizeLimit(deps.store, config.max_bytes),
        deps.fetcher,
        config.scratch_dir,
        Limits(max_bytes=config.max_bytes, max_files=config.max_files),
    )
    archives.sweep()

    def register(server: grpc.Server) -> None:
        pb_grpc.add_ArchiveServiceServicer_to_server(ArchiveServicer(archives), server)

    return build_server(
        token=config.token,
        tls=config.tls,
        address=address or config.listen,
        register=register,
        service_names=[SERVICE_NAME],
    )
