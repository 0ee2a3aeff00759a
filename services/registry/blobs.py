"""The `BlobRegistry` seam: a registry's manifests and blobs one by one, as rack-to-rack copies
need them. Blobs stream in and out in 512 KiB pieces and are never whole in memory."""

from __future__ import annotations

import hashlib
import logging
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator, Mapping
from email.message import Message
from http.client import HTTPResponse
from typing import Protocol

from client.kernel.errors import Internal, InvalidArgument, NotFound, Unavailable
from client.kernel.streams import CHUNK_SIZE
from services.registry.registries import ACCEPT, HTTP_TIMEOUT, Manifest

log = logging.getLogger(__name__)

DIGEST = re.compile(r"^sha256:[a-f0-9]{64}\Z")


def check_digest(digest: str) -> str:
    """Returns `digest` when it is `sha256:` and 64 lowercase hex digits, else raises
    InvalidArgument."""
    if not DIGEST.match(digest or ""):
        raise InvalidArgument(f"invalid digest: {digest!r} (expected sha256:<64 hex digits>)")
    return digest


class BlobRegistry(Protocol):
    """Manifests and blobs of a registry's repositories."""

    def manifest(self, repository: str, reference: str) -> Manifest | None:
        """The manifest `reference` (a tag or digest) of `repository`, None when missing."""
        ...

    def put_manifest(self, repository: str, tag: str, manifest: Manifest) -> None:
        """Puts `manifest`, its bytes unchanged, as `repository:tag`; every blob it names must
        be in `repository` already."""
        ...

    def has_blob(self, repository: str, digest: str) -> bool:
        """Whether `repository` holds the blob `digest`."""
        ...

    def mount_blob(self, repository: str, digest: str, source: str) -> bool:
        """Links the blob `digest` of repository `source` into `repository` without moving
        its bytes; False when `source` does not hold it."""
        ...

    def read_blob(self, repository: str, digest: str) -> Iterator[bytes]:
        """The blob's bytes in pieces of at most 512 KiB; NotFound at once when
        `repository` does not hold it."""
        ...

    def upload_blob(self, repository: str, digest: str, chunks: Iterable[bytes]) -> int:
        """Uploads the blob `digest` from `chunks` into `repository`, returning its size;
        InvalidArgument, and nothing committed, when the bytes do not match the digest."""
        ...


class DistributionBlobs:
    """`BlobRegistry` on a Docker Distribution registry over plain HTTP."""

    def __init__(self, host: str, timeout: float = HTTP_TIMEOUT) -> None:
        self._host = host
        self._timeout = timeout

    @property
    def host(self) -> str:
        return self._host

    def _url(self, path: str) -> str:
        return f"http://{self._host}/v2/{path}"

    def _open(
        self,
        method: str,
        url: str,
        body: bytes | Iterable[bytes] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> HTTPResponse | None:
        """One API call, its response open for reading; None for a 404, other failures
        raise. The caller closes the response."""
        request = urllib.request.Request(url, data=body, method=method, headers=dict(headers or {}))
        path = urllib.parse.urlsplit(url).path
        try:
            return urllib.request.urlopen(request, timeout=self._timeout)  # type: ignore[no-any-return]
        except urllib.error.HTTPError as err:
            text = err.read().decode(errors="replace").strip()
            err.close()
            if err.code == 404:
                return None
            raise Internal(f"registry {self._host}: {method} {path}: {err.code} {text}") from None
        except (urllib.error.URLError, OSError) as err:
            log.warning("registry %s: %s %s: %s", self._host, method, path, err)
            raise Unavailable(f"registry unreachable at {self._host}") from None

    def _call(
        self,
        method: str,
        url: str,
        body: bytes | Iterable[bytes] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, Message, bytes]:
        """One API call, read whole (manifests and empty bodies only); 404 is a status."""
        resp = self._open(method, url, body, headers)
        if resp is None:
            return 404, Message(), b""
        with resp:
            return resp.status, resp.headers, resp.read()

    def manifest(self, repository: str, reference: str) -> Manifest | None:
        status, headers, body = self._call(
            "GET", self._url(f"{repository}/manifests/{reference}"), headers=ACCEPT
        )
        if status == 404:
            return None
        media_type = headers.get("Content-Type") or ""
        return Manifest(str(headers.get("Docker-Content-Digest", "")), media_type, body)

    def put_manifest(self, repository: str, tag: str, manifest: Manifest) -> None:
        status, _, _ = self._call(
            "PUT",
            self._url(f"{repository}/manifests/{tag}"),
            body=manifest.body,
            headers={"Content-Type": manifest.media_type},
        )
        if status == 404:
            raise Internal(f"registry {self._host}: cannot put the manifest {repository}:{tag}")

    def has_blob(self, repository: str, digest: str) -> bool:
        status, _, _ = self._call("HEAD", self._url(f"{repository}/blobs/{digest}"))
        return status == 200

    def mount_blob(self, repository: str, digest: str, source: str) -> bool:
        query = urllib.parse.urlencode({"mount": digest, "from": source})
        status, headers, _ = self._call(
            "POST", self._url(f"{repository}/blobs/uploads/?{query}"), b""
        )
        if status == 201:
            return True
        # The registry opened an upload instead of mounting: `source` lacks the blob.
        if headers.get("Location"):
            self._cancel(self._location(headers))
        return False

    def read_blob(self, repository: str, digest: str) -> Iterator[bytes]:
        check_digest(digest)
        resp = self._open("GET", self._url(f"{repository}/blobs/{digest}"))
        if resp is None:
            raise NotFound(f"blob not found: {repository}@{digest}")
        return self._pieces(resp, digest)

    def _pieces(self, resp: HTTPResponse, digest: str) -> Iterator[bytes]:
        with resp:
            while True:
                try:
                    data = resp.read(CHUNK_SIZE)
                except OSError as err:
                    log.warning("registry %s: reading %s: %s", self._host, digest, err)
                    raise Unavailable(f"registry unreachable at {self._host}") from None
                if not data:
                    return
                yield data

    def upload_blob(self, repository: str, digest: str, chunks: Iterable[bytes]) -> int:
        check_digest(digest)
        status, headers, _ = self._call("POST", self._url(f"{repository}/blobs/uploads/"), b"")
        if status != 202 or not headers.get("Location"):
            raise Internal(f"registry {self._host}: no upload of {repository} opened ({status})")
        location = self._location(headers)
        hasher = hashlib.sha256()
        size = 0

        def hashed() -> Iterator[bytes]:
            nonlocal size
            for data in chunks:
                hasher.update(data)
                size += len(data)
                yield data

        try:
            # One PATCH streams every piece (chunked transfer encoding), as `docker push` does.
            _, headers, _ = self._call(
                "PATCH",
                location,
                body=hashed(),
                headers={"Content-Type": "application/octet-stream"},
            )
            location = self._location(headers) if headers.get("Location") else location
            actual = f"sha256:{hasher.hexdigest()}"
            if actual != digest:
                raise InvalidArgument(f"blob {digest}: its content has the digest {actual}")
            sep = "&" if urllib.parse.urlsplit(location).query else "?"
            query = urllib.parse.urlencode({"digest": digest})
            status, _, _ = self._call("PUT", f"{location}{sep}{query}", b"")
            if status != 201:
                raise Internal(f"registry {self._host}: {digest} not committed ({status})")
        except BaseException:
            self._cancel(location)
            raise
        return size

    def _location(self, headers: Message) -> str:
        """An upload's absolute URL from a `Location` header, relative or not."""
        return urllib.parse.urljoin(f"http://{self._host}/v2/", str(headers.get("Location")))

    def _cancel(self, location: str) -> None:
        try:
            self._call("DELETE", location)
        except (Internal, Unavailable) as err:
            log.warning("cannot cancel the upload %s: %s", location, err)
