"""The incremental upload RPCs (FindMissing, PutBlobs, PutContext, ReadBlobs) through an
in-process gRPC server with TLS and the typed client."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from slipway.archive.v1 import archive_pb2 as pb
from slipway.archive.v1 import archive_pb2_grpc as pb_grpc
from slipway.common.v1 import common_pb2

from client.api.archive import ArchiveClient, Blob
from client.api.channel import open_channel
from client.api.grpcerrors import rpc_errors
from client.kernel import entries as ctx
from client.kernel.entries import Entry
from client.kernel.errors import Internal, InvalidArgument, NotFound
from services.archive.config import Config
from services.archive.server import create_server
from services.common.server import Server
from tests.contexts import stored_entries, stored_files
from tests.tls import ca, tls_files

MAX_BYTES = 16 * 1024 * 1024
MAX_FILES = 10


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def blob(data: bytes, digest: str | None = None, size: int | None = None) -> Blob:
    """A blob of `data` in chunks of at most 300 KB, declared as `digest` and `size`."""
    pieces = [data[i : i + 300_000] for i in range(0, len(data), 300_000)]
    return Blob(
        sha(data) if digest is None else digest,
        len(data) if size is None else size,
        lambda: iter(pieces),
    )


def file_entry(path: str, data: bytes, mode: int = 0o644, mtime: int = 0) -> Entry:
    return Entry(path, ctx.FILE, mode, len(data), mtime, sha(data))


def objects(data_dir: Path) -> set[str]:
    """The names of every committed object."""
    return {p.name for p in (data_dir / "objects").rglob("*") if p.is_file()}


def leftovers(data_dir: Path) -> list[Path]:
    """What the store left in its temporary folder."""
    return list((data_dir / "tmp").iterdir())


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "archive"


@pytest.fixture
def server(token: str, data_dir: Path) -> Iterator[Server]:
    config = Config(
        listen="unused",
        token=token,
        data_dir=data_dir,
        max_bytes=MAX_BYTES,
        max_files=MAX_FILES,
        tls=tls_files(),
    )
    srv = create_server(config, address="127.0.0.1:0")
    yield srv
    srv.stop(0)


@pytest.fixture
def channel(server: Server, token: str) -> Iterator[grpc.Channel]:
    ch = open_channel(server.address, token, ca=ca())
    yield ch
    ch.close()


@pytest.fixture
def archives(server: Server, channel: grpc.Channel) -> ArchiveClient:
    return ArchiveClient(channel, server.address)


@pytest.fixture
def stub(channel: grpc.Channel) -> pb_grpc.ArchiveServiceStub:
    return pb_grpc.ArchiveServiceStub(channel)


# -- FindMissing -------------------------------------------------------------------------


def test_find_missing_lists_only_what_is_not_stored_in_order(archives: ArchiveClient) -> None:
    stored = [b"one", b"two", b""]
    assert archives.put_blobs([blob(d) for d in stored]) == 3
    absent = [sha(b"absent %d" % i) for i in range(4)]
    asked = [absent[2], sha(b"one"), absent[0], sha(b""), absent[3], sha(b"two"), absent[1]]
    assert archives.find_missing(asked) == [absent[2], absent[0], absent[3], absent[1]]
    assert archives.find_missing([sha(d) for d in stored]) == []
    assert archives.find_missing([]) == []


def test_find_missing_refuses_an_invalid_digest(
    archives: ArchiveClient, stub: pb_grpc.ArchiveServiceStub
) -> None:
    for bad in ("ABC", sha(b"x").upper(), "../" + sha(b"x")[3:], sha(b"x") + "0", ""):
        with pytest.raises(InvalidArgument, match="invalid sha256"):
            archives.find_missing([sha(b"fine"), bad])


def test_find_missing_refuses_more_than_ten_thousand_digests(
    stub: pb_grpc.ArchiveServiceStub,
) -> None:
    digests = [sha(b"%d" % i) for i in range(10_001)]
    with pytest.raises(InvalidArgument, match="too many digests"), rpc_errors():
        stub.FindMissing(pb.FindMissingRequest(sha256=digests))
    with rpc_errors():
        resp = stub.FindMissing(pb.FindMissingRequest(sha256=digests[:10_000]))
    assert list(resp.missing) == digests[:10_000]


def test_the_client_batches_more_than_ten_thousand_digests(archives: ArchiveClient) -> None:
    archives.put_blobs([blob(b"kept")])
    digests = [sha(b"%d" % i) for i in range(10_500)]
    digests.insert(10_200, sha(b"kept"))
    assert archives.find_missing(digests) == [d for d in digests if d != sha(b"kept")]


# -- PutBlobs and ReadBlobs --------------------------------------------------------------


def read_all(archives: ArchiveClient, digests: list[str]) -> list[tuple[str, bytes]]:
    return [(d, b"".join(chunks)) for d, chunks in archives.read_blobs(digests)]


def test_put_blobs_stores_several_blobs_and_read_blobs_returns_them_in_order(
    archives: ArchiveClient, data_dir: Path
) -> None:
    big = os.urandom(1_300_000)
    small = os.urandom(1000)
    empty = b""
    middle = os.urandom(70_000)
    sent: list[int] = []
    count = archives.put_blobs([blob(big), blob(empty), blob(small), blob(middle)], sent.append)
    assert count == 4
    assert sum(sent) == len(big) + len(small) + len(middle)
    assert objects(data_dir) == {sha(big), sha(small), sha(empty), sha(middle)}
    assert leftovers(data_dir) == []
    assert archives.find_missing([sha(big), sha(empty), sha(small), sha(middle)]) == []

    order = [sha(small), sha(empty), sha(big), sha(middle), sha(small)]
    got = read_all(archives, order)
    assert [d for d, _ in got] == order
    assert [data for _, data in got] == [small, empty, big, middle, small]


def test_read_blobs_of_an_unknown_digest_is_not_found(archives: ArchiveClient) -> None:
    archives.put_blobs([blob(b"here")])
    unknown = sha(b"never uploaded")
    with pytest.raises(NotFound, match=unknown):
        read_all(archives, [unknown])
    with pytest.raises(NotFound, match=unknown):
        read_all(archives, [sha(b"here"), unknown])
    with pytest.raises(InvalidArgument, match="invalid sha256"):
        read_all(archives, ["not-a-digest"])


def test_a_damaged_blob_is_not_sent_and_is_removed(archives: ArchiveClient, data_dir: Path) -> None:
    good, data = os.urandom(1000), os.urandom(100_000)
    archives.put_blobs([blob(good), blob(data)])
    path = data_dir / "objects" / sha(data)[:2] / sha(data)
    path.chmod(0o600)
    path.write_bytes(b"X" + data[1:])  # the disk flipped a byte
    got: list[tuple[str, bytes]] = []
    with pytest.raises(Internal, match=f"blob {sha(data)[:12]}.* damaged"):
        for digest, chunks in archives.read_blobs([sha(good), sha(data)]):
            got.append((digest, b"".join(chunks)))
    assert got[0] == (sha(good), good)
    # Removed, so the next upload sends it again.
    assert archives.find_missing([sha(good), sha(data)]) == [sha(data)]
    archives.put_blobs([blob(data)])
    assert read_all(archives, [sha(data)]) == [(sha(data), data)]


def test_read_blobs_refuses_more_than_ten_thousand_digests(
    stub: pb_grpc.ArchiveServiceStub,
) -> None:
    digests = [sha(b"%d" % i) for i in range(10_001)]
    with pytest.raises(InvalidArgument, match="too many digests"), rpc_errors():
        list(stub.ReadBlobs(pb.ReadBlobsRequest(sha256=digests)))


def raw_put_blobs(
    stub: pb_grpc.ArchiveServiceStub, requests: list[pb.PutBlobsRequest]
) -> pb.PutBlobsResponse:
    with rpc_errors():
        return stub.PutBlobs(iter(requests))


def blob_header(data: bytes, size: int | None = None, digest: str = "") -> pb.PutBlobsRequest:
    size = len(data) if size is None else size
    return pb.PutBlobsRequest(header=pb.BlobHeader(sha256=digest or sha(data), size=size))


def blob_chunk(data: bytes) -> pb.PutBlobsRequest:
    return pb.PutBlobsRequest(chunk=common_pb2.Chunk(data=data))


def small_blobs(*blobs: tuple[str, bytes]) -> pb.PutBlobsRequest:
    return pb.PutBlobsRequest(
        small=pb.SmallBlobs(blobs=[pb.SmallBlob(sha256=d, data=b) for d, b in blobs])
    )


def test_a_blob_lying_about_its_digest_is_refused_and_not_kept(
    archives: ArchiveClient, data_dir: Path
) -> None:
    good = os.urandom(300_000)  # large enough to go with a header and chunks
    data = os.urandom(700_000)
    lie = sha(b"what the client claims")
    after = os.urandom(400_000)
    with pytest.raises(InvalidArgument, match=f"blob {lie[:12]}: checksum mismatch"):
        archives.put_blobs([blob(good), blob(data, digest=lie), blob(after)])
    # The good blob before it stays; the lie is stored under no name, nor is what follows.
    assert archives.find_missing([sha(good), lie, sha(data), sha(after)]) == [
        lie,
        sha(data),
        sha(after),
    ]
    assert objects(data_dir) == {sha(good)}
    assert leftovers(data_dir) == []
    assert read_all(archives, [sha(good)]) == [(sha(good), good)]
    with pytest.raises(NotFound):
        read_all(archives, [lie])


def test_a_small_blob_lying_about_its_digest_is_refused_and_not_kept(
    archives: ArchiveClient, data_dir: Path
) -> None:
    small = [os.urandom(100) for _ in range(3)]
    lie = sha(b"claimed")
    with pytest.raises(InvalidArgument, match=f"blob {lie[:12]}: checksum mismatch"):
        archives.put_blobs([blob(small[0]), blob(small[1], digest=lie), blob(small[2])])
    assert lie not in objects(data_dir) and sha(small[1]) not in objects(data_dir)
    assert archives.find_missing([lie, sha(small[1])]) == [lie, sha(small[1])]
    assert leftovers(data_dir) == []


def test_blobs_before_a_lie_in_the_same_stream_are_kept(
    stub: pb_grpc.ArchiveServiceStub, archives: ArchiveClient, data_dir: Path
) -> None:
    first, second, big = b"first", b"", os.urandom(600_000)
    lie = sha(b"not these bytes")
    with pytest.raises(InvalidArgument, match=f"blob {lie[:12]}: checksum mismatch"):
        raw_put_blobs(
            stub,
            [
                small_blobs((sha(first), first), (sha(second), second)),
                blob_header(big),
                blob_chunk(big[:300_000]),
                blob_chunk(big[300_000:]),
                small_blobs((lie, b"some bytes"), (sha(b"late"), b"late")),
            ],
        )
    assert objects(data_dir) == {sha(first), sha(second), sha(big)}
    assert archives.find_missing([sha(first), sha(second), sha(big), lie, sha(b"late")]) == [
        lie,
        sha(b"late"),
    ]
    assert leftovers(data_dir) == []
    got = read_all(archives, [sha(big), sha(second), sha(first)])
    assert got == [(sha(big), big), (sha(second), second), (sha(first), first)]


@pytest.mark.parametrize(
    ("declared", "chunks", "reason"),
    [
        # one chunk past the declared size
        (5, [b"0123456789"], "archive larger than declared size"),
        # fewer bytes, stream ends
        (20, [b"0123456789"], "size mismatch: expected 20 bytes, got 10"),
        # fewer bytes, the next blob's header comes
        (20, [b"01234", b"56789", "header"], "size mismatch: expected 20 bytes, got 10"),
        # fewer bytes, small blobs come
        (20, [b"01234", b"56789", "small"], "size mismatch: expected 20 bytes, got 10"),
        # more bytes, in a chunk of their own (the declared digest is of all ten)
        (5, [b"01234", b"56789"], "checksum mismatch"),
    ],
)
def test_a_blob_of_another_size_than_declared_is_refused(
    stub: pb_grpc.ArchiveServiceStub,
    archives: ArchiveClient,
    data_dir: Path,
    declared: int,
    chunks: list[bytes | str],
    reason: str,
) -> None:
    data = b"0123456789"
    nxt = b"the next blob"
    requests = [blob_header(data, size=declared)]
    for part in chunks:
        if part == "header":
            requests += [blob_header(nxt), blob_chunk(nxt)]
        elif part == "small":
            requests.append(small_blobs((sha(nxt), nxt)))
        else:
            assert isinstance(part, bytes)
            requests.append(blob_chunk(part))
    with pytest.raises(InvalidArgument, match=f"blob {sha(data)[:12]}: {reason}"):
        raw_put_blobs(stub, requests)
    assert archives.find_missing([sha(data), sha(nxt)]) == [sha(data), sha(nxt)]
    assert objects(data_dir) == set()
    assert leftovers(data_dir) == []


def test_a_large_blob_of_another_size_than_declared_is_refused(
    archives: ArchiveClient, data_dir: Path
) -> None:
    data = os.urandom(600_000)
    with pytest.raises(InvalidArgument, match="archive larger than declared size"):
        archives.put_blobs([blob(data, size=len(data) - 1)])
    with pytest.raises(InvalidArgument, match=f"expected {len(data) + 1} bytes, got {len(data)}"):
        archives.put_blobs([blob(data, size=len(data) + 1)])
    assert archives.find_missing([sha(data)]) == [sha(data)]
    assert objects(data_dir) == set()
    assert leftovers(data_dir) == []


def test_put_blobs_chunk_before_a_header_is_refused(
    stub: pb_grpc.ArchiveServiceStub, archives: ArchiveClient, data_dir: Path
) -> None:
    data = b"some bytes"
    with pytest.raises(InvalidArgument, match="each blob must start with a header"):
        raw_put_blobs(stub, [blob_chunk(data), blob_header(data), blob_chunk(data)])
    with pytest.raises(InvalidArgument, match="each blob must start with a header"):
        raw_put_blobs(stub, [small_blobs((sha(b"x"), b"x")), blob_chunk(data)])
    with pytest.raises(InvalidArgument, match="a header or a chunk"):
        raw_put_blobs(stub, [pb.PutBlobsRequest()])
    with pytest.raises(InvalidArgument, match="invalid size: -1"):
        raw_put_blobs(stub, [pb.PutBlobsRequest(header=pb.BlobHeader(sha256=sha(b""), size=-1))])
    with pytest.raises(InvalidArgument, match="invalid sha256"):
        raw_put_blobs(stub, [pb.PutBlobsRequest(header=pb.BlobHeader(sha256="x" * 64, size=0))])
    with pytest.raises(InvalidArgument, match="invalid sha256"):
        raw_put_blobs(stub, [small_blobs(("../" + sha(data)[3:], data))])
    assert archives.find_missing([sha(data)]) == [sha(data)]
    assert objects(data_dir) == {sha(b"x")}  # the small blob before the stray chunk
    # An empty stream stores nothing and is no error.
    resp = raw_put_blobs(stub, [])
    assert (resp.blobs, resp.bytes) == (0, 0)


def test_put_blobs_counts_what_it_stored(stub: pb_grpc.ArchiveServiceStub) -> None:
    a, b = os.urandom(3000), b""
    resp = raw_put_blobs(
        stub,
        [
            blob_header(a),
            blob_chunk(a[:1000]),
            blob_chunk(a[1000:]),
            blob_header(b),
            small_blobs((sha(b"xy"), b"xy"), (sha(b""), b"")),
        ],
    )
    assert (resp.blobs, resp.bytes) == (4, 3002)


# -- PutContext ----------------------------------------------------------------------------

APP_PY = b"print('hello')\n"
README = b"# readme\n"
EMPTY = b""


def good_entries() -> list[Entry]:
    """A small tree in the order a checked tree lists it (parents first, names sorted)."""
    return [
        Entry("Dockerfile", ctx.FILE, 0o644, 20, 1_700_000_000_000_000_001, sha(b"F" * 20)),
        Entry("README", ctx.SYMLINK, 0o777, 0, 0, target="docs/README.md"),
        Entry("docs", ctx.DIR, 0o755, 0, 5),
        file_entry("docs/README.md", README),
        file_entry("docs/empty", EMPTY, mode=0o600),
        file_entry("docs/same-as-readme", README),
    ]


def upload_good_blobs(archives: ArchiveClient) -> None:
    archives.put_blobs([blob(b"F" * 20), blob(README), blob(EMPTY)])


def test_put_context_stores_the_document_and_returns_its_sha256(
    archives: ArchiveClient, data_dir: Path
) -> None:
    upload_good_blobs(archives)
    entries = good_entries()
    done = archives.put_context("app", entries)
    assert done.missing == []
    archive_id, size = done.id, done.size
    document = b"".join(archives.download(archive_id))
    assert sha(document) == archive_id
    assert len(document) == size
    assert document.startswith(ctx.MAGIC)
    assert archive_id in objects(data_dir)
    assert stored_entries(archives, archive_id) == entries
    assert stored_files(archives, archive_id) == {
        "Dockerfile": b"F" * 20,
        "docs/README.md": README,
        "docs/empty": EMPTY,
        "docs/same-as-readme": README,
    }
    # The same list again is the same context.
    assert archives.put_context("app", entries) == done
    assert archives.put_context("", entries).id == archive_id
    assert objects(data_dir) == {archive_id, sha(b"F" * 20), sha(README), sha(EMPTY)}


def test_put_context_normalises_modes_and_sorts_children(archives: ArchiveClient) -> None:
    upload_good_blobs(archives)
    entries = [
        Entry("z", ctx.DIR, 0o40755),
        file_entry("z/b", README, mode=0o4755),
        file_entry("z/a", EMPTY, mode=0o100644),
        file_entry("a", README),
    ]
    archive_id = archives.put_context("app", entries).id
    assert stored_entries(archives, archive_id) == [
        Entry("a", ctx.FILE, 0o644, len(README), 0, sha(README)),
        Entry("z", ctx.DIR, 0o755),
        Entry("z/a", ctx.FILE, 0o644, 0, 0, sha(EMPTY)),
        Entry("z/b", ctx.FILE, 0o755, len(README), 0, sha(README)),
    ]


def test_put_context_in_several_batches(
    archives: ArchiveClient, stub: pb_grpc.ArchiveServiceStub
) -> None:
    upload_good_blobs(archives)
    entries = good_entries()

    def requests() -> Iterator[pb.PutContextRequest]:
        yield pb.PutContextRequest(header=pb.ContextHeader(app="app"))
        for e in entries:
            yield pb.PutContextRequest(entries=pb.Entries(entries=[entry_message(e)]))

    with rpc_errors():
        resp = stub.PutContext(requests())
    assert resp.id == archives.put_context("app", entries).id != ""


def entry_message(e: Entry, kind: int | None = None) -> pb.Entry:
    types = {ctx.FILE: pb.ENTRY_TYPE_FILE, ctx.DIR: pb.ENTRY_TYPE_DIR}
    types[ctx.SYMLINK] = pb.ENTRY_TYPE_SYMLINK
    return pb.Entry(
        path=e.path,
        type=types[e.type] if kind is None else kind,
        mode=e.mode,
        size=e.size,
        mtime_ns=e.mtime,
        sha256=e.sha256,
        target=e.target,
    )


def raw_put_context(
    stub: pb_grpc.ArchiveServiceStub, requests: list[pb.PutContextRequest]
) -> pb.PutContextResponse:
    with rpc_errors():
        return stub.PutContext(iter(requests))


def context_header(app: str = "app") -> pb.PutContextRequest:
    return pb.PutContextRequest(header=pb.ContextHeader(app=app))


def context_entries(*msgs: pb.Entry) -> pb.PutContextRequest:
    return pb.PutContextRequest(entries=pb.Entries(entries=list(msgs)))


def refused(
    archives: ArchiveClient, data_dir: Path, send: Callable[[], object], reason: str
) -> None:
    """`send` is refused with `reason` and stores nothing."""
    before = objects(data_dir)
    with pytest.raises(InvalidArgument, match=reason):
        send()
    assert objects(data_dir) == before
    assert leftovers(data_dir) == []


def test_put_context_answers_the_blobs_it_lacks_and_stores_nothing(
    archives: ArchiveClient, data_dir: Path
) -> None:
    upload_good_blobs(archives)
    first, second = b"not uploaded", b"nor this"
    entries = [
        *good_entries(),
        file_entry("docs/zz-new", first),
        file_entry("docs/zz-same", first),
        file_entry("new", second),
    ]
    before = objects(data_dir)
    done = archives.put_context("app", entries)
    # Each lacking digest once, in the checked list's order (docs/ before new).
    assert done.missing == [sha(first), sha(second)]
    assert (done.id, done.size) == ("", 0)
    assert objects(data_dir) == before
    assert leftovers(data_dir) == []
    # Once they are sent, the same list commits.
    archives.put_blobs([blob(first), blob(second)])
    done = archives.put_context("app", entries)
    assert done.missing == [] and done.id
    assert stored_files(archives, done.id)["docs/zz-same"] == first


def test_put_context_answers_missing_blobs_in_the_lists_order(
    archives: ArchiveClient,
) -> None:
    data = [b"blob %d" % i for i in range(5)]
    entries = [file_entry(f"f{i}", d) for i, d in enumerate(data)]
    archives.put_blobs([blob(data[1]), blob(data[3])])
    assert archives.put_context("app", entries).missing == [sha(data[i]) for i in (0, 2, 4)]


def test_put_context_refuses_an_entry_whose_size_is_not_its_blobs(
    archives: ArchiveClient, data_dir: Path
) -> None:
    upload_good_blobs(archives)
    wrong = Entry("docs/README.md", ctx.FILE, 0o644, len(README) + 1, 0, sha(README))
    entries = [e if e.path != wrong.path else wrong for e in good_entries()]
    refused(
        archives,
        data_dir,
        lambda: archives.put_context("app", entries),
        f"docs/README.md is {len(README) + 1} bytes, its blob {len(README)}",
    )
    # The same digest listed twice with two sizes: the second one is caught too.
    twice = [file_entry("a", README), Entry("b", ctx.FILE, 0o644, 1, 0, sha(README))]
    refused(archives, data_dir, lambda: archives.put_context("app", twice), "b is 1 bytes")


@pytest.mark.parametrize(
    ("hostile", "reason"),
    [
        ([file_entry("/etc/passwd", README)], "absolute path: /etc/passwd"),
        ([file_entry("../outside", README)], "path escapes the build folder: ../outside"),
        (
            [Entry("docs", ctx.DIR, 0o755), file_entry("docs/../../x", README)],
            "path escapes the build folder",
        ),
        (
            [Entry("out", ctx.SYMLINK, 0o777, target="../../etc")],
            "link points outside the build folder: out -> ../../etc",
        ),
        (
            [Entry("abs", ctx.SYMLINK, 0o777, target="/etc/passwd")],
            "link points outside the build folder",
        ),
        (
            # a link that stays in, and one that leaves through it
            [
                Entry("d", ctx.DIR, 0o755),
                Entry("d/up", ctx.SYMLINK, 0o777, target=".."),
                Entry("d/out", ctx.SYMLINK, 0o777, target="up/../x"),
            ],
            "link points outside the build folder: d/out",
        ),
        (
            [Entry("l", ctx.SYMLINK, 0o777, target="d"), file_entry("l/x", README)],
            "through a link",
        ),
        ([file_entry("x", README), file_entry("x", README)], "a path listed twice: x"),
        ([file_entry("d/x", README)], "comes before its folder"),
        ([Entry("a/./b", ctx.DIR)], "not clean"),
        ([Entry("", ctx.DIR)], "an empty path"),
        ([Entry("bad", ctx.FILE, 0o644, 3, 0, "ABC")], "an invalid sha256 for bad"),
        ([Entry("neg", ctx.FILE, 0o644, -1, 0, sha(b""))], "an invalid size or time: neg"),
        (
            [
                Entry("huge-1", ctx.FILE, 0o644, MAX_BYTES // 2 + 1, 0, sha(b"huge")),
                Entry("huge-2", ctx.FILE, 0o644, MAX_BYTES // 2 + 1, 0, sha(b"huge")),
            ],
            f"larger than {MAX_BYTES} bytes once extracted",
        ),
        (
            [file_entry(f"f{i}", README) for i in range(MAX_FILES + 1)],
            f"more than {MAX_FILES} files",
        ),
    ],
)
def test_put_context_refuses_hostile_entry_lists(
    archives: ArchiveClient, data_dir: Path, hostile: list[Entry], reason: str
) -> None:
    upload_good_blobs(archives)
    refused(
        archives,
        data_dir,
        lambda: archives.put_context("app", hostile),
        f"archive rejected: .*{reason}",
    )


def test_put_context_accepts_max_files_entries(archives: ArchiveClient) -> None:
    upload_good_blobs(archives)
    entries = [file_entry(f"f{i}", README) for i in range(MAX_FILES)]
    archive_id = archives.put_context("app", entries).id
    assert len(stored_entries(archives, archive_id)) == MAX_FILES


def test_put_context_refuses_an_entry_of_no_known_type(
    stub: pb_grpc.ArchiveServiceStub, archives: ArchiveClient, data_dir: Path
) -> None:
    upload_good_blobs(archives)
    device = pb.Entry(path="dev/null", type=pb.ENTRY_TYPE_UNSPECIFIED, mode=0o666)
    for msgs in ([device], [entry_message(Entry("dev", ctx.DIR, 0o755)), device]):
        refused(
            archives,
            data_dir,
            lambda msgs=msgs: raw_put_context(stub, [context_header(), context_entries(*msgs)]),
            "archive rejected: unsupported entry type: dev",
        )
    unknown = pb.Entry(path="x", type=42)  # type: ignore[arg-type]
    refused(
        archives,
        data_dir,
        lambda: raw_put_context(stub, [context_header(), context_entries(unknown)]),
        "unsupported entry type: x",
    )


def test_put_context_must_start_with_a_header(
    stub: pb_grpc.ArchiveServiceStub, archives: ArchiveClient, data_dir: Path
) -> None:
    upload_good_blobs(archives)
    batch = context_entries(entry_message(file_entry("a", README)))
    for requests, reason in (
        ([batch, context_header()], "a context must start with a header"),
        ([], "a context must start with a header"),
        ([pb.PutContextRequest()], "a context must start with a header"),
        ([context_header(), batch, context_header()], "one header, then only entries"),
    ):
        refused(
            archives, data_dir, lambda requests=requests: raw_put_context(stub, requests), reason
        )
    refused(
        archives,
        data_dir,
        lambda: raw_put_context(stub, [context_header("Bad App"), batch]),
        "invalid app name",
    )


def test_an_empty_context_is_stored(
    stub: pb_grpc.ArchiveServiceStub, archives: ArchiveClient
) -> None:
    resp = raw_put_context(stub, [context_header()])
    assert resp.id == sha(ctx.MAGIC)
    assert stored_entries(archives, resp.id) == []


# -- resuming a blob cut halfway ------------------------------------------------------------


def _raw_put(stub: pb_grpc.ArchiveServiceStub, *messages: pb.PutBlobsRequest) -> None:
    with rpc_errors():
        stub.PutBlobs(iter(messages))


def _chunks(data: bytes, size: int = 512 * 1024) -> list[pb.PutBlobsRequest]:
    return [
        pb.PutBlobsRequest(chunk=common_pb2.Chunk(data=data[i : i + size]))
        for i in range(0, len(data), size)
    ]


def test_a_blob_cut_halfway_resumes_from_the_last_byte_held(
    archives: ArchiveClient, stub: pb_grpc.ArchiveServiceStub, data_dir: Path
) -> None:
    data = os.urandom(3 * 1024 * 1024 + 123)
    digest = sha(data)
    header = pb.PutBlobsRequest(header=pb.BlobHeader(sha256=digest, size=len(data)))
    held = 2 * 1024 * 1024
    with pytest.raises(InvalidArgument, match="size mismatch"):
        _raw_put(stub, header, *_chunks(data[:held]))
    assert archives.lacking([digest]) == {digest: held}
    assert digest not in objects(data_dir)

    # A resume at another byte than the rack holds is refused, and keeps what it holds.
    wrong = pb.PutBlobsRequest(header=pb.BlobHeader(sha256=digest, size=len(data), offset=5))
    with pytest.raises(InvalidArgument, match="cannot resume"):
        _raw_put(stub, wrong, *_chunks(data[5:]))
    assert archives.lacking([digest]) == {digest: held}

    resume = pb.PutBlobsRequest(header=pb.BlobHeader(sha256=digest, size=len(data), offset=held))
    _raw_put(stub, resume, *_chunks(data[held:]))
    assert archives.find_missing([digest]) == []
    assert read_all(archives, [digest]) == [(digest, data)]


def test_a_resume_with_other_bytes_is_refused_and_drops_the_part(
    archives: ArchiveClient, stub: pb_grpc.ArchiveServiceStub, data_dir: Path
) -> None:
    data = os.urandom(2 * 1024 * 1024)
    digest = sha(data)
    header = pb.PutBlobsRequest(header=pb.BlobHeader(sha256=digest, size=len(data)))
    with pytest.raises(InvalidArgument):
        _raw_put(stub, header, *_chunks(data[: 1024 * 1024 + 10]))
    assert archives.lacking([digest]) == {digest: 1024 * 1024 + 10}
    tail = os.urandom(len(data) - (1024 * 1024 + 10))  # not the blob's own bytes
    resume = pb.PutBlobsRequest(
        header=pb.BlobHeader(sha256=digest, size=len(data), offset=1024 * 1024 + 10)
    )
    with pytest.raises(InvalidArgument, match="checksum mismatch"):
        _raw_put(stub, resume, *_chunks(tail))
    assert archives.lacking([digest]) == {digest: 0}
    assert digest not in objects(data_dir)


def test_a_small_cut_keeps_nothing(
    archives: ArchiveClient, stub: pb_grpc.ArchiveServiceStub
) -> None:
    data = os.urandom(600_000)
    digest = sha(data)
    header = pb.PutBlobsRequest(header=pb.BlobHeader(sha256=digest, size=len(data)))
    with pytest.raises(InvalidArgument):
        _raw_put(stub, header, *_chunks(data[:500_000]))
    assert archives.lacking([digest]) == {digest: 0}
