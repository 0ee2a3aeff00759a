"""The S3 object store against moto in server mode (a real HTTP endpoint): verified before
visible, multipart past one part, streamed reads, nothing left by a bad upload."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator

import pytest

from client.kernel.errors import InvalidArgument, NotFound, Unavailable
from services.common import objectstore
from services.common.objectstore import S3Store, parse_s3_url
from tests.conftest import S3Endpoint


@pytest.fixture
def store(s3: S3Endpoint) -> S3Store:
    return S3Store(s3.bucket(), "racks/one/", s3.client())


def _keys(store: S3Store) -> list[str]:
    listed = store._s3.list_objects_v2(Bucket=store.bucket)
    return sorted(item["Key"] for item in listed.get("Contents", []))


def _uploads(store: S3Store) -> list[str]:
    return [
        u["Key"] for u in store._s3.list_multipart_uploads(Bucket=store.bucket).get("Uploads", [])
    ]


def _chunks(data: bytes, size: int = 1 << 20) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def test_a_small_archive_is_stored_under_its_sha256(store: S3Store) -> None:
    data = b"hello archive"
    digest = hashlib.sha256(data).hexdigest()
    assert store.put(_chunks(data), len(data), digest) == digest
    assert _keys(store) == [f"racks/one/objects/{digest}"]
    assert store.stat(digest) == len(data)
    with store.open(digest) as body:
        assert body.read() == data


def test_a_large_archive_goes_up_in_parts_and_reads_back_as_a_stream(
    store: S3Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(objectstore, "PART_SIZE", 5 * 1024 * 1024)  # S3's least part
    data = os.urandom(12 * 1024 * 1024 + 123)
    digest = hashlib.sha256(data).hexdigest()
    parts: list[int] = []
    upload_part = store._s3.upload_part

    def counting(**kwargs: object) -> object:
        parts.append(int(kwargs["PartNumber"]))  # type: ignore[call-overload]
        return upload_part(**kwargs)

    monkeypatch.setattr(store._s3, "upload_part", counting)
    store.put(_chunks(data), len(data), digest)
    assert parts == [1, 2, 3]
    assert _keys(store) == [f"racks/one/objects/{digest}"] and _uploads(store) == []
    with store.open(digest) as body:
        read = [body.read(1 << 20) for _ in range(13)]
    assert b"".join(read) == data and all(len(piece) <= 1 << 20 for piece in read)


@pytest.mark.parametrize(
    ("declared", "digest", "message"),
    [
        (-1, None, "size mismatch"),  # more than sent
        (10, None, "larger than declared"),
        (None, "0" * 64, "checksum mismatch"),
    ],
)
def test_a_bad_upload_leaves_nothing(
    store: S3Store,
    monkeypatch: pytest.MonkeyPatch,
    declared: int | None,
    digest: str | None,
    message: str,
) -> None:
    monkeypatch.setattr(objectstore, "PART_SIZE", 5 * 1024 * 1024)
    data = os.urandom(6 * 1024 * 1024)  # past one part: a multipart upload to abort
    size = {None: len(data), -1: len(data) + 100}.get(declared, declared)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match=message):
        store.put(_chunks(data), size, digest or hashlib.sha256(data).hexdigest())
    assert _keys(store) == [] and _uploads(store) == []


def test_the_same_bytes_twice_are_one_object(store: S3Store) -> None:
    data = b"same"
    digest = hashlib.sha256(data).hexdigest()
    store.put([data], 4, digest)
    store.put([data], 4, digest)
    assert _keys(store) == [f"racks/one/objects/{digest}"]


def test_a_missing_archive_is_not_found(store: S3Store) -> None:
    with pytest.raises(NotFound, match="archive not found"):
        store.open("a" * 64)
    with pytest.raises(NotFound, match="archive not found"):
        store.stat("a" * 64)
    with pytest.raises(InvalidArgument):
        store.stat("../../etc/passwd")


def test_a_missing_bucket_is_unavailable_at_start(s3: S3Endpoint) -> None:
    with pytest.raises(Unavailable, match="bucket no-such-bucket"):
        S3Store("no-such-bucket", "", s3.client()).check()


def test_an_unreachable_endpoint_is_unavailable(s3: S3Endpoint) -> None:
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url="http://127.0.0.1:1",
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="y",
    )
    with pytest.raises(Unavailable, match="S3 unreachable"):
        S3Store("bucket", "", client).stat("a" * 64)


@pytest.mark.parametrize(
    ("url", "expected"),
    [("s3://bucket", ("bucket", "")), ("s3://my.bucket/a/b/", ("my.bucket", "a/b/"))],
)
def test_s3_urls(url: str, expected: tuple[str, str]) -> None:
    assert parse_s3_url(url) == expected


@pytest.mark.parametrize("url", ["s3://", "gs://bucket", "s3://UPPER", "bucket/prefix"])
def test_bad_s3_urls_are_refused(url: str) -> None:
    with pytest.raises(InvalidArgument, match="invalid archives URL"):
        parse_s3_url(url)


def test_listing_and_deleting_for_garbage_collection(store: S3Store) -> None:
    import time

    ids = []
    for data in (b"one", b"two", b""):
        digest = hashlib.sha256(data).hexdigest()
        store.put(_chunks(data), len(data), digest, durable=False)
        ids.append(digest)
    listed = {o.id: o for o in store.list_objects()}
    assert set(listed) == set(ids)
    assert listed[ids[0]].size == 3 and abs(listed[ids[0]].modified - time.time()) < 300
    store.touch(ids[0])  # nothing to do on S3, and no error
    store.delete(ids[1])
    store.delete(ids[1])  # gone already: nothing
    assert {o.id for o in store.list_objects()} == {ids[0], ids[2]}
    with pytest.raises(NotFound):
        store.stat(ids[1])
    # S3 keeps no part of a cut upload: nothing to resume, nothing left to drop.
    assert store.partial_size(ids[1]) == 0 and store.drop_leftovers(time.time()) == 0
    with pytest.raises(InvalidArgument, match="nothing of blob"):
        store.put(_chunks(b"wo"), 3, ids[1], offset=1)
