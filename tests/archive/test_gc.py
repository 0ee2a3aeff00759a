"""Garbage collection of the archive store: archives no build names and blobs no kept
context names go, once older than the grace period; the rest stays."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from client.kernel.entries import DIR, FILE, Entry, Limits
from client.kernel.errors import InvalidArgument
from services.archive.core import Archives, BlobHeader, GarbageOptions
from services.archive.gitfetch import Git
from services.common.objectstore import FileStore

DAY = 24 * 3600.0


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Clock:
    """Real time, moved on by `later` seconds."""

    def __init__(self) -> None:
        self.later = 0.0

    def __call__(self) -> float:
        return time.time() + self.later


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def archives(tmp_path: Path, clock: Clock) -> Archives:
    store = FileStore(tmp_path / "store")
    return Archives(store, Git(60), tmp_path / "store" / "tmp", Limits(1 << 30, 1000), clock)


def put(archives: Archives, *contents: bytes) -> None:
    parts: list[BlobHeader | bytes] = []
    for data in contents:
        parts += [BlobHeader(sha(data), len(data)), data]
    archives.put_blobs(parts)


def context(archives: Archives, files: dict[str, bytes]) -> str:
    put(archives, *files.values())
    entries = [Entry("src", DIR, 0o755)] + [
        Entry(f"src/{name}", FILE, 0o644, len(data), 0, sha(data)) for name, data in files.items()
    ]
    done = archives.put_context("app", entries)
    assert done.info is not None
    return done.info.id


def stored(archives: Archives) -> set[str]:
    return {o.id for o in archives.store.list_objects()}


def age(archives: Archives, seconds: float) -> None:
    """Makes every stored object `seconds` older."""
    root = Path(archives.store.root) / "objects"  # type: ignore[attr-defined]
    for path in root.glob("*/*"):
        st = path.stat()
        os.utime(path, (st.st_atime - seconds, st.st_mtime - seconds))


def test_unnamed_archives_and_their_blobs_go_kept_ones_and_shared_blobs_stay(
    archives: Archives,
) -> None:
    kept = context(archives, {"a": b"shared", "b": b"only kept"})
    gone = context(archives, {"a": b"shared", "c": b"only gone"})
    put(archives, b"an upload never committed")
    gone_size = archives.store.stat(gone)
    age(archives, 2 * DAY)
    done = archives.collect(GarbageOptions(grace_seconds=DAY), [kept])
    assert stored(archives) == {kept, sha(b"shared"), sha(b"only kept")}
    assert (done.removed, done.kept) == (3, 3)
    assert done.removed_bytes == gone_size + len(b"only gone") + len(b"an upload never committed")


def test_nothing_younger_than_the_grace_period_goes(archives: Archives) -> None:
    recent = context(archives, {"x": b"recent"})
    put(archives, b"uploading now")
    done = archives.collect(GarbageOptions(grace_seconds=DAY), [])
    assert done.removed == 0
    assert {recent, sha(b"recent"), sha(b"uploading now")} <= stored(archives)


def test_a_young_context_keeps_its_old_blobs(archives: Archives) -> None:
    put(archives, b"old content")
    age(archives, 2 * DAY)
    young = context(archives, {"f": b"old content"})  # not built yet: no build names it
    # FindMissing renewed the blob's time when the client learnt the rack had it; age it
    # again, as if that were long ago, to check the young context alone keeps it.
    path = archives.store._path(sha(b"old content"))  # type: ignore[attr-defined]
    os.utime(path, (time.time() - 2 * DAY, time.time() - 2 * DAY))
    archives.collect(GarbageOptions(grace_seconds=DAY), [])
    assert {young, sha(b"old content")} <= stored(archives)


def test_find_missing_renews_what_a_client_will_rely_on(archives: Archives) -> None:
    put(archives, b"reused")
    age(archives, 2 * DAY)
    assert archives.missing([sha(b"reused")]) == []
    archives.collect(GarbageOptions(grace_seconds=DAY), [])
    assert sha(b"reused") in stored(archives)


def test_grace_zero_removes_everything_unnamed(archives: Archives) -> None:
    kept = context(archives, {"k": b"kept"})
    context(archives, {"g": b"gone"})
    archives.collect(GarbageOptions(grace_seconds=0), [kept])
    assert stored(archives) == {kept, sha(b"kept")}


def test_automatic_runs_at_most_daily(archives: Archives, clock: Clock) -> None:
    context(archives, {"a": b"one"})
    first = archives.collect(GarbageOptions(grace_seconds=0, automatic=True), [])
    assert not first.skipped and first.removed == 2
    context(archives, {"a": b"two"})
    clock.later += 3600
    second = archives.collect(GarbageOptions(grace_seconds=0, automatic=True), [])
    assert second.skipped and len(stored(archives)) == 2
    # An explicit run is never skipped; an automatic one runs again a day later.
    clock.later += DAY
    third = archives.collect(GarbageOptions(grace_seconds=0, automatic=True), [])
    assert not third.skipped and stored(archives) == set()


def test_bad_options_and_ids_are_refused(archives: Archives) -> None:
    with pytest.raises(InvalidArgument, match="grace"):
        archives.collect(GarbageOptions(grace_seconds=-1), [])
    with pytest.raises(InvalidArgument, match="archive id"):
        archives.collect(GarbageOptions(grace_seconds=0), ["../../etc"])


def test_what_cut_uploads_left_goes_after_the_grace_period(archives: Archives) -> None:
    data = os.urandom(2 * 1024 * 1024)
    parts: list[BlobHeader | bytes] = [BlobHeader(sha(data), len(data)), data[: 1024 * 1024 + 1]]
    with pytest.raises(InvalidArgument, match="size mismatch"):
        archives.put_blobs(parts)
    assert archives.missing_from([sha(data)]) == [(sha(data), 1024 * 1024 + 1)]
    archives.collect(GarbageOptions(grace_seconds=DAY), [])
    assert archives.missing_from([sha(data)]) == [(sha(data), 1024 * 1024 + 1)]  # young
    done = archives.collect(GarbageOptions(grace_seconds=0), [])
    assert archives.missing_from([sha(data)]) == [(sha(data), 0)]
    assert done.removed_bytes >= 1024 * 1024 + 1


def test_a_damaged_blob_heals_on_the_next_upload(archives: Archives) -> None:
    data = b"contents that get damaged on disk"
    kept = context(archives, {"f": data})
    path = archives.store._path(sha(data))  # type: ignore[attr-defined]
    path.chmod(0o600)
    path.write_bytes(b"X" * len(data))  # same size, other bytes
    with pytest.raises(Exception, match="damaged"):
        list(archives.read_blobs([sha(data)]))
    # Removed: the context is no longer whole, so a client's shortcut misses it and its
    # commit is told what to send again.
    from client.kernel.errors import NotFound

    with pytest.raises(NotFound):
        archives.stat(kept)
    entries = [Entry("src", DIR, 0o755), Entry("src/f", FILE, 0o644, len(data), 0, sha(data))]
    assert archives.put_context("app", entries).missing == [sha(data)]
    put(archives, data)
    assert archives.put_context("app", entries).info is not None
    assert archives.stat(kept).id == kept


def test_a_blob_cut_short_by_a_crash_is_replaced(archives: Archives) -> None:
    data = b"a blob the machine lost half of"
    put(archives, data)
    path = archives.store._path(sha(data))  # type: ignore[attr-defined]
    path.chmod(0o600)
    path.write_bytes(data[:10])
    entries = [Entry("f", FILE, 0o644, len(data), 0, sha(data))]
    assert archives.put_context("app", entries).missing == [sha(data)]
    put(archives, data)
    assert path.read_bytes() == data


def test_a_blob_that_only_looks_like_a_context_does_not_stop_collection(
    archives: Archives,
) -> None:
    fake = b"slipway-context 1\nnot an entry\n"
    put(archives, fake)
    put(archives, b"old")
    age(archives, 2 * DAY)
    done = archives.collect(GarbageOptions(grace_seconds=DAY), [sha(fake)])
    assert done.removed == 1 and stored(archives) == {sha(fake)}


def test_collection_waits_for_uploads_under_way(archives: Archives) -> None:
    import threading

    put(archives, b"in use")
    age(archives, 2 * DAY)
    started = threading.Event()
    release = threading.Event()
    result: list[object] = []

    def upload() -> Iterator[BlobHeader | bytes]:
        started.set()
        release.wait(5)
        yield BlobHeader(sha(b"new"), 3)
        yield b"new"

    uploading = threading.Thread(target=lambda: archives.put_blobs(upload()))
    uploading.start()
    started.wait(5)
    collecting = threading.Thread(
        target=lambda: result.append(archives.collect(GarbageOptions(grace_seconds=0), []))
    )
    collecting.start()
    collecting.join(0.5)
    assert collecting.is_alive()  # the upload holds it off
    release.set()
    uploading.join(5)
    collecting.join(5)
    assert result and sha(b"new") not in stored(archives)  # collected after, grace 0
