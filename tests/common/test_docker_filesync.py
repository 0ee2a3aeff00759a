"""FileSync: what a build session lends the engine, in fsutil's order, with its filters,
over a real gRPC channel playing the engine's part."""

from __future__ import annotations

import os
import queue
import stat
import threading
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from slipway.buildkit import filesync_pb2_grpc

from client.kernel.errors import InvalidArgument
from services.common.docker.filesync import (
    DATA_CHUNK,
    FileSync,
    Packet,
    entries,
    go_mode,
)
from tests.helpers import eventually


def _tree(root: Path) -> Path:
    (root / "a").mkdir()
    (root / "a" / "x.txt").write_text("x")
    (root / "a-b").write_text("dash")
    (root / "B").write_text("upper")
    (root / "Dockerfile").write_text("FROM busybox\n")
    (root / ".dockerignore").write_text("*.log\n")
    (root / "keep.log").write_text("k")
    (root / "drop.log").write_text("d")
    (root / "sub").mkdir()
    (root / "sub" / "deep").mkdir()
    (root / "sub" / "deep" / "f").write_text("f")
    (root / "link").symlink_to("a/x.txt")
    return root


def _paths(root: Path, **filters: list[str]) -> list[str]:
    return [s.path for s in entries(str(root), **filters)]


def test_go_file_modes() -> None:
    assert go_mode(stat.S_IFDIR | 0o755) == (1 << 31) | 0o755
    assert go_mode(stat.S_IFLNK | 0o777) == (1 << 27) | 0o777
    assert go_mode(stat.S_IFREG | 0o644) == 0o644
    assert go_mode(stat.S_IFREG | stat.S_ISUID | 0o755) == (1 << 23) | 0o755
    assert go_mode(stat.S_IFDIR | stat.S_ISVTX | 0o1777) == (1 << 31) | (1 << 20) | 0o777


def test_everything_in_walk_order_parents_first_names_as_bytes(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    assert _paths(root) == [
        ".dockerignore",
        "B",
        "Dockerfile",
        "a",
        "a/x.txt",
        "a-b",
        "drop.log",
        "keep.log",
        "link",
        "sub",
        "sub/deep",
        "sub/deep/f",
    ]


def test_stats_describe_entries_as_go_does(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    os.chmod(root / "a-b", 0o640)
    got = {s.path: s for s in entries(str(root))}
    assert got["a-b"].mode == 0o640 and got["a-b"].size == 4
    assert got["a-b"].modTime == os.lstat(root / "a-b").st_mtime_ns
    assert got["a"].mode & (1 << 31) and got["a"].size == 0
    assert got["link"].mode & (1 << 27) and got["link"].linkname == "a/x.txt"
    assert all(s.uid == 0 and s.gid == 0 for s in got.values())


def test_exclude_patterns_have_dockerignore_semantics(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    paths = _paths(root, excludes=["*.log", "!keep.log", "Dockerfile", ".dockerignore", "sub"])
    assert paths == ["B", "a", "a/x.txt", "a-b", "keep.log", "link"]


def test_followpaths_send_only_those_with_their_folders(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    assert _paths(root, followpaths=["Dockerfile", "Dockerfile.dockerignore"]) == ["Dockerfile"]
    assert _paths(root, followpaths=["sub/deep/f"]) == ["sub", "sub/deep", "sub/deep/f"]
    # A followed symlink brings what it points at, inside the folder.
    assert _paths(root, followpaths=["link"]) == ["a", "a/x.txt", "link"]


def test_a_followed_link_out_of_the_folder_is_not_followed(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "secret").write_text("outside")
    (root / "Dockerfile").symlink_to("../secret")
    (root / "abs").symlink_to(str(tmp_path / "secret"))
    assert _paths(root, followpaths=["Dockerfile", "abs"]) == ["Dockerfile", "abs"]


def test_include_patterns_keep_what_they_match_and_below(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    assert _paths(root, includes=["sub"]) == ["sub", "sub/deep", "sub/deep/f"]
    assert _paths(root, includes=["a/*.txt", "*.log"], excludes=["drop.log"]) == [
        "a",
        "a/x.txt",
        "keep.log",
    ]


def test_a_bad_pattern_is_an_invalid_argument(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="exclude patterns"):
        list(entries(str(_tree(tmp_path)), excludes=["["]))


# --- over gRPC, the test playing the engine -----------------------------------------------


@pytest.fixture
def channel(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[grpc.Channel, Path]]:
    (tmp_path / "root").mkdir()
    root = _tree(tmp_path / "root")
    big = os.urandom(DATA_CHUNK * 3 + 17)
    (root / "big").write_bytes(big)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    filesync_pb2_grpc.add_FileSyncServicer_to_server(
        FileSync({"context": str(root), "dockerfile": str(root)}, "test"), server
    )
    sock = tmp_path / "fs.sock"
    server.add_insecure_port(f"unix:{sock}")
    server.start()
    chan = grpc.insecure_channel(f"unix:{sock}")
    request.node.server = server
    try:
        yield chan, root
    finally:
        chan.close()
        server.stop(None)


class _Engine:
    """The receiver's side of a diff-copy, as the engine plays it."""

    def __init__(self, chan: grpc.Channel, metadata: list[tuple[str, str]]) -> None:
        self.outgoing: queue.Queue[Packet | None] = queue.Queue()
        stub = filesync_pb2_grpc.FileSyncStub(chan)
        self.incoming = stub.DiffCopy(self._send(), metadata=metadata, timeout=30)

    def _send(self) -> Iterator[Packet]:
        while (packet := self.outgoing.get()) is not None:
            yield packet

    def stats(self) -> list[Packet]:
        got = []
        for packet in self.incoming:
            if packet.type == Packet.PACKET_STAT and not packet.HasField("stat"):
                return got
            got.append(packet)
        raise AssertionError("the stream ended before the last STAT")

    def fetch(self, ident: int) -> bytes:
        self.outgoing.put(Packet(type=Packet.PACKET_REQ, ID=ident))
        data = b""
        for packet in self.incoming:
            assert packet.type == Packet.PACKET_DATA, packet
            assert packet.ID == ident
            if not packet.data:
                return data
            assert len(packet.data) <= DATA_CHUNK
            data += packet.data
        raise AssertionError("the stream ended inside a file")

    def finish(self) -> list[Packet]:
        self.outgoing.put(Packet(type=Packet.PACKET_FIN))
        rest = list(self.incoming)
        self.outgoing.put(None)
        return rest


def test_a_diff_copy_sends_stats_then_the_files_asked_for(
    channel: tuple[grpc.Channel, Path],
) -> None:
    chan, root = channel
    engine = _Engine(chan, [("dir-name", "context"), ("exclude-patterns", "*.log")])
    stats = engine.stats()
    paths = [p.stat.path for p in stats]
    assert "keep.log" not in paths and "big" in paths
    ids = {p.stat.path: i for i, p in enumerate(stats)}
    assert engine.fetch(ids["big"]) == (root / "big").read_bytes()
    assert engine.fetch(ids["a/x.txt"]) == b"x"
    assert [p.type for p in engine.finish()] == [Packet.PACKET_FIN]


def test_a_folder_not_lent_is_refused(channel: tuple[grpc.Channel, Path]) -> None:
    chan, _ = channel
    engine = _Engine(chan, [("dir-name", "/etc")])
    with pytest.raises(grpc.RpcError) as err:
        engine.stats()
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    engine.outgoing.put(None)


def test_asking_for_a_folder_or_an_unknown_id_is_an_error(
    channel: tuple[grpc.Channel, Path],
) -> None:
    chan, _ = channel
    engine = _Engine(chan, [("dir-name", "context")])
    stats = engine.stats()
    folder = next(i for i, p in enumerate(stats) if p.stat.path == "a")
    engine.outgoing.put(Packet(type=Packet.PACKET_REQ, ID=folder))
    reply = next(iter(engine.incoming))
    assert reply.type == Packet.PACKET_ERR and reply.data == f"invalid file id {folder}".encode()
    engine.outgoing.put(None)


def test_a_file_swapped_for_a_link_after_the_walk_is_not_read_through(
    channel: tuple[grpc.Channel, Path], tmp_path: Path
) -> None:
    chan, root = channel
    outside = tmp_path / "outside.txt"
    outside.write_text("host file")
    engine = _Engine(chan, [("dir-name", "context")])
    stats = engine.stats()
    ident = next(i for i, p in enumerate(stats) if p.stat.path == "a-b")
    (root / "a-b").unlink()
    (root / "a-b").symlink_to(outside)
    engine.outgoing.put(Packet(type=Packet.PACKET_REQ, ID=ident))
    reply = next(iter(engine.incoming))
    assert reply.type == Packet.PACKET_ERR
    assert reply.data.startswith(b"cannot read a-b: ")
    assert b"host file" not in reply.data and str(tmp_path).encode() not in reply.data
    engine.outgoing.put(None)


def test_a_bad_exclude_pattern_ends_the_transfer_with_its_reason(
    channel: tuple[grpc.Channel, Path],
) -> None:
    chan, _ = channel
    engine = _Engine(chan, [("dir-name", "context"), ("exclude-patterns", "[")])
    replies = list(engine.incoming)
    assert [p.type for p in replies] == [Packet.PACKET_ERR]
    assert replies[0].data.startswith(b"exclude patterns: ")
    engine.outgoing.put(None)


def test_stopping_the_server_ends_a_transfer_left_open(
    channel: tuple[grpc.Channel, Path], request: pytest.FixtureRequest
) -> None:
    chan, _ = channel
    engine = _Engine(chan, [("dir-name", "context")])
    engine.stats()  # and never a REQ or FIN: the handler waits on the engine
    assert any(t.name.startswith("session-test") for t in threading.enumerate())
    assert request.node.server.stop(None).wait(5)
    eventually(lambda: not any(t.name.startswith("session-test") for t in threading.enumerate()))
    engine.outgoing.put(None)
