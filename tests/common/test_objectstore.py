"""FileStore and SizeLimit against a real temporary folder."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from client.kernel.errors import InvalidArgument, NotFound
from services.common.objectstore import FileStore, SizeLimit


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def files_under(root: Path) -> list[Path]:
    """Every regular file below `root`: committed objects and temp files alike."""
    return [Path(d) / f for d, _, names in os.walk(root) for f in names]


@pytest.fixture
def store(tmp_path: Path) -> FileStore:
    return FileStore(tmp_path / "archive")


def test_put_commits_content_addressed_object(store: FileStore) -> None:
    data = os.urandom(300_000)
    object_id = store.put([data[:100_000], data[100_000:]], len(data), sha(data))
    assert object_id == sha(data)
    assert files_under(store.root) == [store.root / "objects" / object_id[:2] / object_id]
    assert store.stat(object_id) == len(data)
    with store.open(object_id) as f:
        assert f.read() == data


def test_same_bytes_twice_are_stored_once(store: FileStore) -> None:
    data = b"same source"
    first = store.put([data], len(data), sha(data))
    second = store.put([data[:4], data[4:]], len(data), sha(data))
    assert first == second
    assert len(files_under(store.root)) == 1


def test_empty_archive(store: FileStore) -> None:
    object_id = store.put([], 0, sha(b""))
    assert store.stat(object_id) == 0


def test_checksum_mismatch_leaves_nothing(store: FileStore) -> None:
    data = b"x" * 1000
    wrong = sha(b"something else")
    mismatch = f"checksum mismatch: expected {wrong}, got {sha(data)}"
    with pytest.raises(InvalidArgument, match=mismatch):
        store.put([data], len(data), wrong)
    assert files_under(store.root) == []


def test_oversize_stream_stops_early_and_leaves_nothing(store: FileStore) -> None:
    sent: list[int] = []

    def chunks() -> Iterator[bytes]:
        for i in range(10):
            sent.append(i)
            yield b"y" * 100

    with pytest.raises(InvalidArgument, match="archive larger than declared size"):
        store.put(chunks(), 250, sha(b"y" * 250))
    assert sent == [0, 1, 2]  # the fourth chunk was never asked for
    assert files_under(store.root) == []


def test_truncated_stream_leaves_nothing(store: FileStore) -> None:
    data = b"z" * 1000
    with pytest.raises(InvalidArgument, match="size mismatch: expected 1000 bytes, got 600"):
        store.put([data[:600]], len(data), sha(data))
    assert files_under(store.root) == []


def test_broken_stream_leaves_nothing(store: FileStore) -> None:
    def chunks() -> Iterator[bytes]:
        yield b"a" * 100
        raise ConnectionError("sender went away")

    with pytest.raises(ConnectionError):
        store.put(chunks(), 200, sha(b"a" * 200))
    assert files_under(store.root) == []


def test_unknown_object_is_not_found(store: FileStore) -> None:
    missing = sha(b"never stored")
    with pytest.raises(NotFound, match=f"archive not found: {missing}"):
        store.stat(missing)
    with pytest.raises(NotFound, match=f"archive not found: {missing}"):
        store.open(missing)


def test_malformed_ids_are_refused(store: FileStore) -> None:
    with pytest.raises(InvalidArgument, match="invalid archive id"):
        store.open("../../etc/passwd")
    with pytest.raises(InvalidArgument, match="invalid sha256"):
        store.put([b""], 0, sha(b"").upper())
    assert files_under(store.root) == []


def test_size_limit_refuses_before_reading(store: FileStore) -> None:
    def chunks() -> Iterator[bytes]:
        raise AssertionError("no byte should be read")
        yield b""  # pragma: no cover

    limited = SizeLimit(store, max_bytes=10)
    with pytest.raises(InvalidArgument, match="archive too large: 11 bytes, the limit is 10"):
        limited.put(chunks(), 11, sha(b"x" * 11))
    assert limited.put([b"x" * 10], 10, sha(b"x" * 10)) == sha(b"x" * 10)


def test_a_huge_id_is_refused_without_being_echoed() -> None:
    from client.kernel.errors import InvalidArgument
    from services.common.objectstore import check_id

    with pytest.raises(InvalidArgument) as err:
        check_id("a" * 20_000)
    assert str(err.value) == "invalid archive id: (must be 64 lowercase hex digits)"
    with pytest.raises(InvalidArgument, match="invalid archive id: 'xyz' "):
        check_id("xyz")


def test_a_full_disk_names_the_archive_store(tmp_path: Path) -> None:
    import errno
    import hashlib

    from client.kernel.errors import ResourceExhausted
    from services.common.objectstore import FileStore

    store = FileStore(tmp_path / "archives")

    def chunks() -> Iterator[bytes]:
        yield b"x" * 10
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path))

    with pytest.raises(ResourceExhausted) as err:
        store.put(chunks(), 20, hashlib.sha256(b"x" * 20).hexdigest())
    assert str(err.value) == "no space left on device for the archive store"
    assert list((tmp_path / "archives" / "tmp").iterdir()) == []


def test_listing_touching_and_deleting(store: FileStore) -> None:
    import time

    old = time.time() - 3600
    ids = [store.put(iter([d]), len(d), sha(d), durable=False) for d in (b"a", b"bb")]
    for object_id in ids:
        os.utime(store._path(object_id), (old, old))
    listed = {o.id: o for o in store.list_objects()}
    assert set(listed) == set(ids) and listed[ids[1]].size == 2
    assert all(abs(o.modified - old) < 1 for o in listed.values())
    store.touch(ids[0])
    assert {o.id: o.modified > old + 60 for o in store.list_objects()} == {
        ids[0]: True,
        ids[1]: False,
    }
    store.delete(ids[1])
    store.delete(ids[1])
    assert [o.id for o in store.list_objects()] == [ids[0]]


def test_a_cut_upload_keeps_its_part_only_when_asked_and_large(store: FileStore) -> None:
    import time

    data = os.urandom(3 * 1024 * 1024)
    digest = sha(data)
    with pytest.raises(InvalidArgument, match="size mismatch"):
        store.put(iter([data[:2_000_000]]), len(data), digest, keep_partial=True)
    assert store.partial_size(digest) == 2_000_000
    # A stream that breaks (a cancelled call) keeps its part too; a bad one does not.

    def broken() -> Iterator[bytes]:
        yield data[2_000_000:2_500_000]
        raise ConnectionError("cut")

    with pytest.raises(ConnectionError):
        store.put(broken(), len(data), digest, offset=2_000_000, keep_partial=True)
    assert store.partial_size(digest) == 2_500_000
    assert store.put(iter([data[2_500_000:]]), len(data), digest, offset=2_500_000) == digest
    assert store.partial_size(digest) == 0
    with store.open(digest) as stored:
        assert stored.read() == data
    # Without keep_partial (archives, contexts), a cut leaves nothing.
    other = os.urandom(2 * 1024 * 1024)
    with pytest.raises(InvalidArgument):
        store.put(iter([other[:1_500_000]]), len(other), sha(other))
    assert store.partial_size(sha(other)) == 0
    with pytest.raises(InvalidArgument):
        store.put(iter([other[:1_500_000]]), len(other), sha(other), keep_partial=True)
    assert store.drop_leftovers(time.time() + 1) == 1_500_000
    assert store.partial_size(sha(other)) == 0
