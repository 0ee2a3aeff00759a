"""The one object-store adapter: the `ObjectStore` seam, its filesystem and S3
implementations, and a size limit that wraps either.

Objects are named by their sha256, so an object's id is its content's checksum and two
uploads of the same bytes share one object. A store commits an object only once its size
and sha256 match what the uploader declared; nothing of a failed upload remains.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import logging
import os
import re
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol, cast
from urllib.parse import urlsplit

from client.kernel.errors import InvalidArgument, NotFound, ResourceExhausted, Unavailable

log = logging.getLogger(__name__)

SHA256 = re.compile(r"^[0-9a-f]{64}\Z")


def check_id(value: str, what: str = "archive id") -> str:
    """Returns `value` when it is a lowercase hex sha256, else raises InvalidArgument."""
    if not SHA256.match(value or ""):
        shown = f"{value!r} " if len(value or "") <= 64 else ""  # never echo a huge input
        raise InvalidArgument(f"invalid {what}: {shown}(must be 64 lowercase hex digits)")
    return value


class ObjectStore(Protocol):
    """Content-addressed storage of archives."""

    def put(
        self,
        chunks: Iterable[bytes],
        size: int,
        sha256: str,
        durable: bool = True,
        offset: int = 0,
        keep_partial: bool = False,
    ) -> str:
        """Stores the bytes of `chunks` when they are exactly `size` bytes with digest
        `sha256`, returning the object id (the digest); raises InvalidArgument otherwise,
        leaving nothing behind. `durable=False` skips flushing to disk before the object
        becomes visible (for file blobs, which readers verify as they read). With
        `keep_partial`, a stream cut short keeps what arrived (see `partial_size`), and
        `offset` resumes it: `chunks` then start at that byte."""
        ...

    def partial_size(self, sha256: str) -> int:
        """How many bytes of a cut upload of `sha256` are held to resume from (0: none)."""
        ...

    def drop_leftovers(self, before: float) -> int:
        """Removes what cut or killed uploads left, untouched since `before` (seconds
        since the epoch); returns how many bytes went."""
        ...

    def open(self, object_id: str) -> BinaryIO:
        """The stored object, open for reading; NotFound when there is none."""
        ...

    def stat(self, object_id: str) -> int:
        """The stored object's size in bytes; NotFound when there is none."""
        ...

    def list_objects(self) -> Iterator[StoredObject]:
        """Every stored object, in no particular order."""
        ...

    def delete(self, object_id: str) -> None:
        """Removes the object; nothing when there is none."""
        ...

    def touch(self, object_id: str) -> None:
        """Marks the object as just used, so garbage collection's grace period starts
        again (where the store can do so cheaply)."""
        ...


@dataclass(frozen=True)
class StoredObject:
    """An object as a listing shows it."""

    id: str
    size: int
    #: When it was stored (or last touched), seconds since the epoch.
    modified: float


#: A cut blob keeps what arrived for a resume from this many bytes on.
PARTIAL_MIN = 1024 * 1024


class _Short(InvalidArgument):
    """A blob's stream ended before its declared size."""


class FileStore:
    """Objects as files `objects/<first two hex>/<sha256>` under a root folder.

    An upload is written to `tmp/` (same filesystem, so the final `os.replace` is atomic)
    while it is hashed, and only renamed into place once it is verified."""

    #: Stats are cheap: a context's blobs can be checked one by one.
    local = True

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._objects = self.root / "objects"
        self._objects_name = str(self._objects)
        self._tmp = self.root / "tmp"
        self._objects.mkdir(parents=True, exist_ok=True)
        self._tmp.mkdir(parents=True, exist_ok=True)

    def _name(self, object_id: str) -> str:
        """The object's file, as a string (a hot path: FindMissing stats thousands)."""
        check_id(object_id)
        return os.path.join(self._objects_name, object_id[:2], object_id)

    def _path(self, object_id: str) -> Path:
        check_id(object_id)
        return self._objects / object_id[:2] / object_id

    def _partial(self, sha256: str) -> str:
        return os.path.join(self._tmp, f"partial-{check_id(sha256, 'sha256')}")

    def partial_size(self, sha256: str) -> int:
        try:
            return os.stat(self._partial(sha256)).st_size
        except FileNotFoundError:
            return 0

    def drop_leftovers(self, before: float) -> int:
        dropped = 0
        for path in self._tmp.glob("*"):
            if not path.name.startswith(("partial-", "upload-")):
                continue  # git fetches keep their folders here, and sweep them themselves
            with contextlib.suppress(FileNotFoundError):
                st = path.stat()
                if st.st_mtime < before and path.is_file():
                    path.unlink()
                    dropped += st.st_size
        return dropped

    def put(
        self,
        chunks: Iterable[bytes],
        size: int,
        sha256: str,
        durable: bool = True,
        offset: int = 0,
        keep_partial: bool = False,
    ) -> str:
        check_id(sha256, "sha256")
        digest = hashlib.sha256()
        if offset:
            tmp_name = self._partial(sha256)
            try:
                fd = os.open(tmp_name, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
            except FileNotFoundError:
                raise InvalidArgument(f"nothing of blob {sha256[:12]} to resume") from None
            with os.fdopen(os.dup(fd), "rb") as held:  # what arrived before the cut
                for data in iter(lambda: held.read(1024 * 1024), b""):
                    digest.update(data)
            if os.fstat(fd).st_size != offset:
                os.close(fd)
                raise InvalidArgument(f"blob {sha256[:12]} cannot resume at byte {offset}")
            os.lseek(fd, 0, os.SEEK_END)
        else:
            fd, tmp_name = tempfile.mkstemp(dir=self._tmp, prefix="upload-")
        written = offset
        try:
            with os.fdopen(fd, "wb") as out:
                for data in chunks:
                    # Stop at the first byte past the declared size: no need to read the rest.
                    if written + len(data) > size:
                        raise InvalidArgument("archive larger than declared size")
                    digest.update(data)
                    out.write(data)
                    written += len(data)
                out.flush()
                if durable:
                    os.fsync(out.fileno())
            if written != size:
                raise _Short(f"size mismatch: expected {size} bytes, got {written}")
            actual = digest.hexdigest()
            if actual != sha256:
                raise InvalidArgument(f"checksum mismatch: expected {sha256}, got {actual}")
            final = self._path(sha256)
            try:
                stored = final.stat().st_size
            except FileNotFoundError:
                stored = -1
            if stored == size:
                log.info("archive %s already stored", sha256)
                os.unlink(tmp_name)
                return sha256
            if stored >= 0:  # cut short by a crash before it was flushed: replaced
                log.warning("archive %s was stored damaged (%d bytes): replaced", sha256, stored)
            final.parent.mkdir(exist_ok=True)
            os.chmod(tmp_name, 0o400)  # read-only, and the owner's alone
            os.replace(tmp_name, final)
            log.info("stored archive %s (%d bytes)", sha256, size)
            return sha256
        except BaseException as err:
            # A bad stream leaves nothing. A short one (cut, or cancelled) leaves what
            # arrived, when asked to and when it is worth resuming from.
            cut = not isinstance(err, InvalidArgument) or isinstance(err, _Short)
            try:
                if keep_partial and cut and written >= PARTIAL_MIN:
                    os.replace(tmp_name, self._partial(sha256))
                    log.info("kept %d bytes of blob %s to resume", written, sha256)
                else:
                    os.unlink(tmp_name)
            except FileNotFoundError:
                pass
            if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
                raise ResourceExhausted("no space left on device for the archive store") from None
            raise

    def open(self, object_id: str) -> BinaryIO:
        try:
            return open(self._path(object_id), "rb")
        except FileNotFoundError:
            raise NotFound.of("archive", object_id) from None

    def stat(self, object_id: str) -> int:
        try:
            return os.stat(self._name(object_id)).st_size
        except FileNotFoundError:
            raise NotFound.of("archive", object_id) from None

    def list_objects(self) -> Iterator[StoredObject]:
        for folder in sorted(self._objects.iterdir()):
            if not folder.is_dir():
                continue
            for path in folder.iterdir():
                if not SHA256.match(path.name):
                    continue
                try:
                    st = path.stat()
                except FileNotFoundError:
                    continue
                yield StoredObject(path.name, st.st_size, st.st_mtime)

    def delete(self, object_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(object_id).unlink()

    def touch(self, object_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.utime(self._name(object_id))


class SizeLimit:
    """An ObjectStore refusing archives larger than `max_bytes` before reading any byte."""

    def __init__(self, inner: ObjectStore, max_bytes: int) -> None:
        self.inner = inner
        self.max_bytes = max_bytes
        self.local = bool(getattr(inner, "local", False))

    def put(
        self,
        chunks: Iterable[bytes],
        size: int,
        sha256: str,
        durable: bool = True,
        offset: int = 0,
        keep_partial: bool = False,
    ) -> str:
        if size > self.max_bytes:
            raise InvalidArgument(
                f"archive too large: {size} bytes, the limit is {self.max_bytes} bytes"
            )
        return self.inner.put(chunks, size, sha256, durable, offset, keep_partial)

    def partial_size(self, sha256: str) -> int:
        return self.inner.partial_size(sha256)

    def drop_leftovers(self, before: float) -> int:
        return self.inner.drop_leftovers(before)

    def open(self, object_id: str) -> BinaryIO:
        return self.inner.open(object_id)

    def stat(self, object_id: str) -> int:
        return self.inner.stat(object_id)

    def list_objects(self) -> Iterator[StoredObject]:
        return self.inner.list_objects()

    def delete(self, object_id: str) -> None:
        self.inner.delete(object_id)

    def touch(self, object_id: str) -> None:
        self.inner.touch(object_id)


#: S3 uploads go in parts of this size (S3's least is 5 MiB): memory stays at one part.
PART_SIZE = 8 * 1024 * 1024


def parse_s3_url(url: str) -> tuple[str, str]:
    """`s3://bucket[/prefix]` -> (bucket, prefix ending in `/` or empty)."""
    parts = urlsplit(url)
    bucket = parts.netloc
    if parts.scheme != "s3" or not _BUCKET.match(bucket):
        raise InvalidArgument("invalid archives URL: want s3://BUCKET[/PREFIX]")
    prefix = parts.path.strip("/")
    return bucket, f"{prefix}/" if prefix else ""


_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]\Z")


class S3Store:
    """Objects as `PREFIX/objects/<sha256>` in an S3 bucket, through boto3 (the usual AWS
    environment, `AWS_ENDPOINT_URL` included).

    An upload is streamed to `PREFIX/tmp/<random>` (multipart past one part, so memory
    holds one part at most) while it is hashed; only once its size and sha256 match is it
    copied under its content address, so no unverified byte is ever visible there. The
    temporary object is removed whatever happens (a bucket lifecycle rule on `tmp/` catches
    what a killed process leaves)."""

    def __init__(self, bucket: str, prefix: str = "", client: Any = None) -> None:
        self.bucket = bucket
        self.prefix = prefix
        if client is None:
            import boto3  # the rack extra's; only racks with S3 archives need it

            client = boto3.client("s3")
        self._s3 = client

    @classmethod
    def from_url(cls, url: str) -> S3Store:
        bucket, prefix = parse_s3_url(url)
        return cls(bucket, prefix)

    def check(self) -> None:
        """Unavailable unless the bucket answers (at start, so a typo fails at once)."""
        with self._errors("the bucket"):
            self._s3.head_bucket(Bucket=self.bucket)

    def _key(self, object_id: str) -> str:
        return f"{self.prefix}objects/{check_id(object_id)}"

    def partial_size(self, sha256: str) -> int:
        return 0  # a cut upload to S3 starts again (its multipart upload is aborted)

    def drop_leftovers(self, before: float) -> int:
        return 0  # `PREFIX/tmp/`: a bucket lifecycle rule expires what a killed upload left

    def put(
        self,
        chunks: Iterable[bytes],
        size: int,
        sha256: str,
        durable: bool = True,
        offset: int = 0,
        keep_partial: bool = False,
    ) -> str:
        # S3 is durable once it answers: `durable` changes nothing; nothing partial is kept.
        check_id(sha256, "sha256")
        if offset:
            raise InvalidArgument(f"nothing of blob {sha256[:12]} to resume")
        tmp = f"{self.prefix}tmp/{uuid.uuid4().hex}"
        digest = hashlib.sha256()
        written = 0
        buffer = bytearray()
        upload: str | None = None
        parts: list[dict[str, Any]] = []
        stored = False
        try:
            for data in chunks:
                if written + len(data) > size:
                    raise InvalidArgument("archive larger than declared size")
                digest.update(data)
                written += len(data)
                buffer += data
                while len(buffer) >= PART_SIZE:
                    if upload is None:
                        with self._errors("an upload"):
                            upload = self._s3.create_multipart_upload(Bucket=self.bucket, Key=tmp)[
                                "UploadId"
                            ]
                    parts.append(self._part(tmp, upload, len(parts) + 1, buffer[:PART_SIZE]))
                    del buffer[:PART_SIZE]
            if written != size:
                raise InvalidArgument(f"size mismatch: expected {size} bytes, got {written}")
            actual = digest.hexdigest()
            if actual != sha256:
                raise InvalidArgument(f"checksum mismatch: expected {sha256}, got {actual}")
            if self._exists(self._key(sha256)):
                log.info("archive %s already stored", sha256)
                return sha256
            with self._errors("an upload"):
                stored = True  # removing a temporary object that never landed is harmless
                if upload is None:
                    self._s3.put_object(Bucket=self.bucket, Key=tmp, Body=bytes(buffer))
                else:
                    if buffer:
                        parts.append(self._part(tmp, upload, len(parts) + 1, buffer))
                    self._s3.complete_multipart_upload(
                        Bucket=self.bucket,
                        Key=tmp,
                        UploadId=upload,
                        MultipartUpload={"Parts": parts},
                    )
                    upload = None
                # Verified: now, and only now, visible under its content address.
                self._s3.copy({"Bucket": self.bucket, "Key": tmp}, self.bucket, self._key(sha256))
            log.info("stored archive %s (%d bytes) in s3://%s", sha256, size, self.bucket)
            return sha256
        finally:
            self._discard(tmp, upload, stored)

    def _part(self, key: str, upload: str, number: int, data: bytes | bytearray) -> dict[str, Any]:
        with self._errors("an upload"):
            resp = self._s3.upload_part(
                Bucket=self.bucket, Key=key, UploadId=upload, PartNumber=number, Body=bytes(data)
            )
        return {"PartNumber": number, "ETag": resp["ETag"]}

    def _discard(self, key: str, upload: str | None, stored: bool) -> None:
        try:
            if upload is not None:
                self._s3.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload)
            if stored:
                self._s3.delete_object(Bucket=self.bucket, Key=key)
        except Exception as err:  # the upload's own outcome matters more than a leftover
            log.warning("could not remove the temporary upload %s: %s", key, _short(err))

    def _exists(self, key: str) -> bool:
        try:
            with self._errors("an archive"):
                self._s3.head_object(Bucket=self.bucket, Key=key)
        except NotFound:
            return False
        return True

    def open(self, object_id: str) -> BinaryIO:
        key = self._key(object_id)
        try:
            with self._errors("an archive"):
                body = self._s3.get_object(Bucket=self.bucket, Key=key)["Body"]
        except NotFound:
            raise NotFound.of("archive", object_id) from None
        return cast(BinaryIO, _Stream(body))

    def stat(self, object_id: str) -> int:
        key = self._key(object_id)
        try:
            with self._errors("an archive"):
                return int(self._s3.head_object(Bucket=self.bucket, Key=key)["ContentLength"])
        except NotFound:
            raise NotFound.of("archive", object_id) from None

    def list_objects(self) -> Iterator[StoredObject]:
        pages = self._s3.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=f"{self.prefix}objects/"
        )
        with self._errors("the listing"):
            for page in pages:
                for item in page.get("Contents", ()):
                    name = str(item["Key"]).rsplit("/", 1)[-1]
                    if SHA256.match(name):
                        yield StoredObject(
                            name, int(item["Size"]), item["LastModified"].timestamp()
                        )

    def delete(self, object_id: str) -> None:
        with self._errors("an archive"):
            self._s3.delete_object(Bucket=self.bucket, Key=self._key(object_id))

    def touch(self, object_id: str) -> None:
        """Renews the object's time: S3's only way is a copy onto itself (one request;
        asked only for what a client is about to rely on)."""
        key = self._key(object_id)
        with self._errors("an archive"):
            self._s3.copy_object(
                Bucket=self.bucket,
                Key=key,
                CopySource={"Bucket": self.bucket, "Key": key},
                MetadataDirective="REPLACE",
            )

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        """S3's failures as Slipway's: a missing key NotFound, the rest Unavailable."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            yield
        except ClientError as err:
            code = str(err.response.get("Error", {}).get("Code", ""))
            if what == "the bucket" or code == "NoSuchBucket":
                raise Unavailable(f"S3 bucket {self.bucket} is not usable ({code})") from None
            if code in ("404", "NoSuchKey", "NotFound"):
                raise NotFound(f"{what} not found") from None
            raise Unavailable(f"S3 refused {what} in {self.bucket}: {code}") from None
        except BotoCoreError as err:
            raise Unavailable(f"S3 unreachable for {what}: {_short(err)}") from None


def _short(err: BaseException) -> str:
    text = str(err)
    return text if len(text) <= 200 else text[:200] + "…"


class _Stream(io.RawIOBase):
    """A streamed S3 object body as a readable binary file (read as the caller reads)."""

    def __init__(self, body: Any) -> None:
        self._body = body

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def read(self, size: int = -1) -> bytes:
        from botocore.exceptions import BotoCoreError

        try:
            return bytes(self._body.read(None if size is None or size < 0 else size))
        except BotoCoreError as err:  # a stream cut mid-read, a read timeout
            raise Unavailable(f"S3 stopped sending an archive: {_short(err)}") from None

    def close(self) -> None:
        if not self.closed:
            self._body.close()
        super().close()
