"""`ContextUpload`, the incremental upload of a folder, against a real in-process archive
server (TLS, token): what it sends, what it skips, how it resumes a cut stream."""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import grpc
import pytest

from client.api.archive import SMALL_BLOB, ArchiveClient, Blob, Committed
from client.api.channel import open_channel
from client.api.upload import ASK_FIRST, ASK_MOST, ContextUpload, Uploaded
from client.cli.digestcache import DigestCache
from client.kernel import entries as ctx
from client.kernel.errors import InvalidArgument, SlipwayError, Unavailable
from services.archive.config import Config
from services.archive.server import create_server
from services.common.server import Server
from tests.contexts import stored_entries, stored_files
from tests.helpers import eventually, settle
from tests.tls import ca, tls_files

#: Longest a finish() may take here before the test calls it hung.
HANG = 10.0


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@contextlib.contextmanager
def archive_server(token: str, data_dir: Path) -> Iterator[Server]:
    config = Config(
        listen="unused",
        token=token,
        data_dir=data_dir,
        max_bytes=64 * 1024 * 1024,
        tls=tls_files(),
    )
    srv = create_server(config, address="127.0.0.1:0")
    try:
        yield srv
    finally:
        srv.stop(0)


@pytest.fixture
def server(token: str, tmp_path: Path) -> Iterator[Server]:
    with archive_server(token, tmp_path / "archive") as srv:
        yield srv


@pytest.fixture
def channel(server: Server, token: str) -> Iterator[grpc.Channel]:
    ch = open_channel(server.address, token, ca=ca())
    yield ch
    ch.close()


@pytest.fixture
def archives(server: Server, channel: grpc.Channel) -> ArchiveClient:
    return ArchiveClient(channel, server.address)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A small source folder: nested folders, a multi-chunk file, an empty file, two files
    with the same contents and a symlink."""
    root = tmp_path / "src"
    (root / "app" / "lib").mkdir(parents=True)
    (root / "Dockerfile").write_bytes(b"FROM busybox\nCOPY . /app\n")
    (root / "app" / "main.py").write_bytes(b"print('hello')\n")
    (root / "app" / "lib" / "big.bin").write_bytes(os.urandom(1_200_000))
    (root / "app" / "lib" / "mid.bin").write_bytes(os.urandom(90_000))
    (root / "app" / "empty").write_bytes(b"")
    (root / "copy-1.txt").write_bytes(b"the same contents\n")
    (root / "app" / "copy-2.txt").write_bytes(b"the same contents\n")
    (root / "link").symlink_to("app/main.py")
    settle(root)
    return root


def folder_files(root: Path) -> dict[str, bytes]:
    """Every regular file below `root` (links not followed), by relative path."""
    files: dict[str, bytes] = {}
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            files[path.relative_to(root).as_posix()] = path.read_bytes()
    return files


def distinct(files: dict[str, bytes]) -> dict[str, bytes]:
    """The distinct contents of `files`, by digest."""
    return {sha(data): data for data in files.values()}


def upload(
    archives: ArchiveClient | object, root: Path, cache: DigestCache | None = None
) -> Uploaded:
    job = ContextUpload(archives, "app", root, cache=cache)  # type: ignore[arg-type]
    job.scan()
    return job.finish()


def finish_within(job: ContextUpload, seconds: float = HANG) -> Uploaded:
    """`job.finish()`, failing the test (rather than hanging it) when it does not return."""
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            outcome["done"] = job.finish()
        except BaseException as err:  # noqa: BLE001 - re-raised below
            outcome["error"] = err

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"finish() did not return within {seconds}s"
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["done"]  # type: ignore[return-value]


def check_stored(archives: ArchiveClient, result: Uploaded, root: Path) -> None:
    """The stored context is the folder: its files byte for byte, its link, its folders."""
    assert stored_files(archives, result.id) == folder_files(root)
    entries = stored_entries(archives, result.id)
    assert len(entries) == result.entries
    kinds = {e.path: e.type for e in entries}
    for path in root.rglob("*"):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            assert kinds.pop(rel) == ctx.SYMLINK
        elif path.is_dir():
            assert kinds.pop(rel) == ctx.DIR
        else:
            assert kinds.pop(rel) == ctx.FILE
    assert kinds == {}
    links = {e.path: e.target for e in entries if e.type == ctx.SYMLINK}
    assert links == {"link": "app/main.py"}
    document = b"".join(archives.download(result.id))
    assert sha(document) == result.id


class Recording:
    """An ArchiveClient that records the digests of every put_blobs call it passes on."""

    def __init__(self, real: ArchiveClient) -> None:
        self.real = real
        self.calls: list[list[str]] = []
        self.asked: list[int] = []
        self.commits = 0
        #: put_blobs calls under way.
        self.active = 0

    def find_missing(self, digests: list[str]) -> list[str]:
        self.asked.append(len(digests))
        return self.real.find_missing(digests)

    def put_context(self, app: str, entries: Iterable[ctx.Entry]) -> Committed:
        self.commits += 1
        return self.real.put_context(app, entries)

    def __getattr__(self, name: str) -> object:  # stat and the rest: as they are
        return getattr(self.real, name)

    def put_blobs(
        self, blobs: Iterable[Blob], progress: Callable[[int], None] | None = None
    ) -> int:
        call: list[str] = []
        self.calls.append(call)

        def recorded() -> Iterator[Blob]:
            for blob in blobs:
                call.append(blob.sha256)
                yield blob

        self.active += 1
        try:
            return self.real.put_blobs(recorded(), progress)
        finally:
            self.active -= 1

    def sent(self) -> list[str]:
        return [d for call in self.calls for d in call]


# -- what is sent ------------------------------------------------------------------------


def test_first_upload_sends_every_distinct_content(archives: ArchiveClient, folder: Path) -> None:
    files = folder_files(folder)
    contents = distinct(files)
    assert len(contents) == len(files) - 1  # the two copies share one
    client = Recording(archives)
    progress: list[int] = []
    job = ContextUpload(client, "app", folder)  # type: ignore[arg-type]
    job.scan()
    assert job.to_send == sum(len(d) for d in contents.values())
    result = job.finish(progress.append)

    assert result.sent_files == len(contents)
    assert result.sent_bytes == sum(len(d) for d in contents.values())
    assert sum(progress) == result.sent_bytes
    assert result.bytes == sum(len(d) for d in files.values())
    assert result.read == len(files)
    assert result.resumed == 0
    assert sorted(client.sent()) == sorted(contents)  # each content once
    assert result.entries == len(list(folder.rglob("*")))
    check_stored(archives, result, folder)


def test_an_unchanged_folder_sends_nothing_the_second_time(
    archives: ArchiveClient, folder: Path
) -> None:
    first = upload(archives, folder)
    client = Recording(archives)
    second = upload(client, folder)
    assert second.id == first.id
    assert (second.sent_files, second.sent_bytes) == (0, 0)
    assert client.calls == []  # no stream opened at all
    assert second.entries == first.entries and second.bytes == first.bytes
    check_stored(archives, second, folder)


def test_only_the_changed_file_is_sent(archives: ArchiveClient, folder: Path) -> None:
    first = upload(archives, folder)
    changed = b"print('hello, again')\n"
    (folder / "app" / "main.py").write_bytes(changed)
    client = Recording(archives)
    second = upload(client, folder)
    assert second.id != first.id
    assert client.sent() == [sha(changed)]
    assert (second.sent_files, second.sent_bytes) == (1, len(changed))
    assert stored_files(archives, second.id)["app/main.py"] == changed
    check_stored(archives, second, folder)
    # The first context still reads as it was.
    assert stored_files(archives, first.id)["app/main.py"] == b"print('hello')\n"


def test_files_with_the_same_contents_are_sent_once(
    archives: ArchiveClient, tmp_path: Path
) -> None:
    root = tmp_path / "dups"
    (root / "sub").mkdir(parents=True)
    same = os.urandom(50_000)
    for name in ("a", "b", "sub/c", "sub/d"):
        (root / name).write_bytes(same)
    (root / "other").write_bytes(b"other")
    client = Recording(archives)
    result = upload(client, root)
    assert sorted(client.sent()) == sorted([sha(same), sha(b"other")])
    assert (result.sent_files, result.sent_bytes) == (2, len(same) + 5)
    assert result.bytes == 4 * len(same) + 5
    assert stored_files(archives, result.id) == folder_files(root)


def test_a_folder_of_many_files_is_asked_about_in_batches(
    archives: ArchiveClient, tmp_path: Path
) -> None:
    root = tmp_path / "many"
    root.mkdir()
    for i in range(1100):
        (root / f"f{i:04}").write_bytes(b"file %d\n" % (i % 1050))
    client = Recording(archives)
    result = upload(client, root)
    # Asked a batch at a time, the first small, none past the most; one stream, fed
    # while the walk went on.
    assert client.asked[0] == ASK_FIRST and len(client.asked) > 1
    assert max(client.asked) <= ASK_MOST and sum(client.asked) == 1050
    assert len(client.calls) == 1
    assert result.sent_files == 1050
    assert stored_files(archives, result.id) == folder_files(root)
    again = upload(Recording(archives), root)
    assert (again.id, again.sent_files, again.sent_bytes) == (result.id, 0, 0)


def test_the_digest_cache_spares_reading_unchanged_files(
    archives: ArchiveClient, folder: Path, tmp_path: Path
) -> None:
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache"), "HOME": str(tmp_path / "home")}
    nfiles = len(folder_files(folder))
    with DigestCache.open(env, str(folder)) as cache:
        first = upload(archives, folder, cache)
    assert first.read == nfiles
    assert (tmp_path / "cache" / "slipway" / "digests.sqlite").is_file()

    client = Recording(archives)
    with DigestCache.open(env, str(folder)) as cache:
        second = upload(client, folder, cache)
    assert second.read == 0
    assert second.id == first.id
    assert (second.sent_files, second.sent_bytes) == (0, 0)
    # Nothing to ask about or send, and the rack stores this very context: no commit.
    assert client.asked == [] and client.calls == [] and client.commits == 0

    # A changed file is read again (and only it), and sent.
    changed = b"FROM busybox:latest\n"
    (folder / "Dockerfile").write_bytes(changed)
    with DigestCache.open(env, str(folder)) as cache:
        third = upload(client, folder, cache)
    assert third.read == 1
    assert client.sent() == [sha(changed)]
    check_stored(archives, third, folder)


def test_digests_from_the_cache_a_rack_lacks_are_sent_when_it_asks(
    archives: ArchiveClient, folder: Path, tmp_path: Path, token: str
) -> None:
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache"), "HOME": str(tmp_path / "home")}
    with DigestCache.open(env, str(folder)) as cache:
        first = upload(archives, folder, cache)
    contents = distinct(folder_files(folder))
    # Another rack, which never saw these files: nothing is read, the commit says what
    # it lacks, that is sent, and the commit goes through.
    with (
        archive_server(token, tmp_path / "other") as other,
        open_channel(other.address, token, ca=ca()) as channel,
    ):
        fresh = ArchiveClient(channel, other.address)
        client = Recording(fresh)
        with DigestCache.open(env, str(folder)) as cache:
            result = upload(client, folder, cache)
        assert result.read == 0
        assert result.id == first.id
        assert sorted(client.sent()) == sorted(contents)
        assert result.sent_files == len(contents)
        assert result.sent_bytes == sum(len(d) for d in contents.values())
        assert client.commits == 2
        check_stored(fresh, result, folder)


def test_a_failed_scan_leaves_no_stream_open(archives: ArchiveClient, tmp_path: Path) -> None:
    root = tmp_path / "bad"
    root.mkdir()
    for i in range(ASK_FIRST + 10):
        (root / f"a{i:04}").write_bytes(b"%d" % i)
    (root / os.fsdecode(b"z\xff")).write_bytes(b"a name that is not UTF-8")
    client = Recording(archives)
    job = ContextUpload(client, "app", root)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="not UTF-8"):
        job.scan()
    assert client.calls  # sending had started
    # The stream the scan started ends: no thread left waiting for blobs forever, no
    # call left open on the rack.
    eventually(lambda: client.active == 0, timeout=5)


# -- a cut stream ------------------------------------------------------------------------


class CutOnce(Recording):
    """Its first put_blobs passes the real client the first blob whole and the first
    part of the second, then the stream ends short; it reports the stream cut. (Both
    must be large: small blobs travel whole, many to a message.)"""

    def __init__(self, real: ArchiveClient) -> None:
        super().__init__(real)
        self.half = 0

    def put_blobs(
        self, blobs: Iterable[Blob], progress: Callable[[int], None] | None = None
    ) -> int:
        if self.calls:
            return super().put_blobs(blobs, progress)
        stream = iter(blobs)
        whole, cut = next(stream), next(stream)
        assert min(whole.size, cut.size) > SMALL_BLOB
        self.calls.append([whole.sha256, cut.sha256])

        def part() -> Iterator[bytes]:
            data = next(iter(cut.chunks()))
            self.half = len(data) // 2
            yield data[: self.half]

        try:
            self.real.put_blobs([whole, Blob(cut.sha256, cut.size, part)], progress)
        except InvalidArgument as err:  # the rack refused the short blob
            assert "size mismatch" in str(err)
        else:
            raise AssertionError("the rack stored a short blob")
        raise Unavailable("cut")


def test_a_cut_stream_is_resumed_without_sending_whole_blobs_again(
    archives: ArchiveClient, folder: Path
) -> None:
    # The first two contents in the walk's order: large, and sent with chunks.
    (folder / "0-first.bin").write_bytes(os.urandom(SMALL_BLOB + 50_000))
    (folder / "0-second.bin").write_bytes(os.urandom(900_000))
    contents = distinct(folder_files(folder))
    client = CutOnce(archives)
    job = ContextUpload(client, "app", folder)  # type: ignore[arg-type]
    job.scan()
    result = finish_within(job)

    assert result.resumed >= 1
    assert len(client.calls) >= 2
    whole, cut = client.calls[0]
    assert (whole, cut) == (
        sha((folder / "0-first.bin").read_bytes()),
        sha((folder / "0-second.bin").read_bytes()),
    )
    # What arrived whole is not sent again; the cut blob and the rest are.
    assert whole not in client.sent()[2:]
    assert cut in client.calls[1]
    assert sorted(client.sent()[2:]) == sorted(d for d in contents if d != whole)
    assert result.sent_files == len(contents)
    total = sum(len(d) for d in contents.values())
    assert client.half > 0
    assert result.sent_bytes == total + client.half
    assert archives.find_missing(list(contents)) == []
    check_stored(archives, result, folder)


class CutAfterSending(Recording):
    """Its first put_blobs sends the whole stream, then reports the connection lost while
    the answer was awaited."""

    def put_blobs(
        self, blobs: Iterable[Blob], progress: Callable[[int], None] | None = None
    ) -> int:
        first = not self.calls
        stored = super().put_blobs(blobs, progress)
        if first:
            raise Unavailable("cut")
        return stored


def test_a_stream_cut_after_its_last_blob_is_resumed(archives: ArchiveClient, folder: Path) -> None:
    contents = distinct(folder_files(folder))
    client = CutAfterSending(archives)
    job = ContextUpload(client, "app", folder)  # type: ignore[arg-type]
    job.scan()
    result = finish_within(job)
    assert result.resumed == 1
    # Everything had arrived: the resume finds nothing missing and sends nothing again.
    assert sorted(client.sent()) == sorted(contents)
    check_stored(archives, result, folder)


# -- a file changed on the way ---------------------------------------------------------


class Gated(Recording):
    """Holds the blob stream until `open` is set."""

    def __init__(self, real: ArchiveClient) -> None:
        super().__init__(real)
        self.open = threading.Event()

    def put_blobs(
        self, blobs: Iterable[Blob], progress: Callable[[int], None] | None = None
    ) -> int:
        assert self.open.wait(HANG)
        return super().put_blobs(blobs, progress)


@pytest.mark.parametrize("new_size", [5, 200_000])
def test_a_file_changed_in_size_after_scan_fails_the_upload(
    archives: ArchiveClient, folder: Path, new_size: int
) -> None:
    client = Gated(archives)
    job = ContextUpload(client, "app", folder)  # type: ignore[arg-type]
    job.scan()
    target = folder / "app" / "lib" / "mid.bin"
    scanned = sha(target.read_bytes())
    target.write_bytes(os.urandom(new_size))
    client.open.set()
    with pytest.raises(InvalidArgument, match=r"app/lib/mid\.bin changed") as caught:
        finish_within(job)
    assert "build again" in str(caught.value)
    # Nothing was stored under the digest the file was scanned with.
    assert archives.find_missing([scanned]) == [scanned]


def test_a_file_changed_in_contents_but_not_size_fails_the_upload(
    archives: ArchiveClient, folder: Path
) -> None:
    client = Gated(archives)
    job = ContextUpload(client, "app", folder)  # type: ignore[arg-type]
    job.scan()
    target = folder / "app" / "main.py"
    scanned = sha(target.read_bytes())
    target.write_bytes(b"print('HELLO')\n")  # the same size
    client.open.set()
    with pytest.raises(InvalidArgument, match=r"app/main\.py changed"):
        finish_within(job)
    assert archives.find_missing([scanned]) == [scanned]


def test_errors_the_rack_gives_are_not_resumed(archives: ArchiveClient, folder: Path) -> None:
    class Refusing(Recording):
        def put_context(self, app: str, entries: Iterable[ctx.Entry]) -> Committed:
            raise InvalidArgument("archive rejected: no")

    client = Refusing(archives)
    job = ContextUpload(client, "app", folder)  # type: ignore[arg-type]
    job.scan()
    with pytest.raises(SlipwayError, match="archive rejected: no"):
        finish_within(job)
    assert len(client.calls) == 1


class CutPartway(Recording):
    """Its first put_blobs passes the real client the first 3 MiB of the first blob (as
    the stream of a big blob cut by a dropped connection), then reports the cut."""

    held = 3 * 1024 * 1024

    def put_blobs(
        self, blobs: Iterable[Blob], progress: Callable[[int], None] | None = None
    ) -> int:
        if self.calls:
            return super().put_blobs(blobs, progress)
        big = next(iter(blobs))
        self.calls.append([big.sha256])

        def part() -> Iterator[bytes]:
            sent = 0
            for data in big.chunks():
                yield data[: self.held - sent]
                sent += len(data)
                if sent >= self.held:
                    return

        with pytest.raises(InvalidArgument, match="size mismatch"):
            self.real.put_blobs([Blob(big.sha256, big.size, part)], progress)
        raise Unavailable("cut")


def test_a_big_file_cut_halfway_goes_on_from_where_it_was_cut(
    archives: ArchiveClient, tmp_path: Path
) -> None:
    folder = tmp_path / "big"
    folder.mkdir()
    (folder / "convox.yml").write_text("services:\n  web:\n    build: .\n")
    (folder / "Dockerfile").write_text("FROM busybox\n")
    data = os.urandom(5 * 1024 * 1024 + 7)
    (folder / "0-big.bin").write_bytes(data)
    client = CutPartway(archives)
    job = ContextUpload(client, "app", folder)  # type: ignore[arg-type]
    job.scan()
    result = finish_within(job)
    assert result.resumed == 1
    assert client.calls[0] == [sha(data)] and sha(data) in client.calls[1]
    # The first 3 MiB went once: the resume sent only the rest of the big file.
    small = len(b"services:\n  web:\n    build: .\n") + len(b"FROM busybox\n")
    assert result.sent_bytes == len(data) + small
    stored = stored_files(archives, result.id)
    assert stored["0-big.bin"] == data and set(stored) == {"0-big.bin", "convox.yml", "Dockerfile"}
