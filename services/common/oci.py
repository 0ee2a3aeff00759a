"""The one client of OCI/Distribution registries: the `Registry` seam the registry service
needs (pushes, exports, imports and rack-to-rack copies), and `DistributionRegistry`, its
implementation on a Docker Distribution registry over HTTP, or HTTPS verified against a
given certificate authority (a rack advertised beyond loopback serves its registry so).

Every call goes through one `_open`, every failure through one table (`_map_errors`), and
one timeout applies to each socket operation: connecting, and each read of a response, so
a blob of any size streams as long as bytes keep coming. Blobs move in 512 KiB pieces and
are never whole in memory.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import logging
import re
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from email.message import Message
from http.client import HTTPResponse
from typing import Protocol, cast

from client.kernel.errors import Internal, InvalidArgument, NotFound, Unavailable
from client.kernel.streams import CHUNK_SIZE
from services.common.config import RegistryCredentials

log = logging.getLogger(__name__)

MANIFEST_TYPES = (
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.index.v1+json",
)
ACCEPT = {"Accept": ",".join(MANIFEST_TYPES)}
# Seconds one socket operation may take (connect, or one read): API calls move manifests
# and mount blobs, and a blob's stream only needs its bytes to keep coming.
HTTP_TIMEOUT = 60
DIGEST = re.compile(r"^sha256:[a-f0-9]{64}\Z")

Body = bytes | Iterable[bytes | memoryview] | None
"""A request's body: bytes, or pieces sent with chunked transfer encoding."""
Headers = Mapping[str, str] | None
Opened = HTTPResponse | None
"""A response open for reading; None for a 404."""
Reply = tuple[int, Message, bytes]
"""A response read whole: status, headers, body."""


def check_digest(digest: str) -> str:
    """Returns `digest` when it is `sha256:` and 64 lowercase hex digits, else raises
    InvalidArgument."""
    if not DIGEST.match(digest or ""):
        raise InvalidArgument(f"invalid digest: {digest!r} (expected sha256:<64 hex digits>)")
    return digest


@dataclass(frozen=True)
class Manifest:
    """A manifest as the registry serves it: its bytes must be put back unchanged for the
    digest to hold."""

    digest: str
    media_type: str
    body: bytes


class Registry(Protocol):
    """A registry as pushes, exports, imports and copies need it."""

    @property
    def host(self) -> str:
        """The host (and port) image references use for it."""
        ...

    def prepare(self, repository: str) -> None:
        """Makes `repository` ready to receive a push (ECR creates it)."""
        ...

    def auth(self) -> Mapping[str, str] | None:
        """Credentials for the engine's push, or None when it needs none."""
        ...

    def tags(self, repository: str) -> list[str]:
        """Every tag of `repository`; empty when it does not exist."""
        ...

    def untag(self, repository: str, tag: str) -> None:
        """Removes `repository:tag` alone: other tags of the same manifest stay."""
        ...

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

    def read_blob(self, repository: str, digest: str, verify: bool = True) -> Iterator[bytes]:
        """The blob's bytes in pieces of at most 512 KiB; NotFound at once when
        `repository` does not hold it. Unless not `verify` (for a reader that checks the
        bytes itself), Internal after the last piece when they are not `digest`'s."""
        ...

    def upload_blob(self, repository: str, digest: str, chunks: Iterable[bytes]) -> int:
        """Uploads the blob `digest` from `chunks` into `repository`, returning its size;
        InvalidArgument, and nothing committed, when the bytes do not match the digest."""
        ...

    def start_upload(self, repository: str) -> BlobUpload:
        """Opens an upload into `repository` for a blob whose digest is known only once its
        bytes are sent: nothing is stored under a digest until `commit`."""
        ...


class BlobUpload(Protocol):
    """An open blob upload (`Registry.start_upload`): its bytes sent, then committed under
    their digest or cancelled."""

    def send(self, chunks: Iterable[bytes | memoryview]) -> None:
        """Sends the blob's bytes, in one request."""
        ...

    def commit(self, digest: str) -> None:
        """Stores what was sent as the blob `digest`; the registry checks the digest."""
        ...

    def cancel(self) -> None:
        """Drops what was sent; never raises (a failure is logged)."""
        ...


@contextlib.contextmanager
def _map_errors(host: str, method: str, url: str) -> Iterator[None]:
    """The one table from what urllib and http.client raise to Slipway errors: an HTTP
    error answer is Internal (the registry is there and refused), anything else that
    breaks the exchange (refused, reset, timed out, cut short) is Unavailable."""
    path = urllib.parse.urlsplit(url).path
    try:
        yield
    except urllib.error.HTTPError as err:  # an URLError and an OSError too: it comes first
        text = err.read().decode(errors="replace").strip()
        err.close()
        raise Internal(f"registry {host}: {method} {path}: {err.code} {text}") from None
    except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
        reason = err.reason if isinstance(err, urllib.error.URLError) else err
        if isinstance(reason, ssl.SSLError):
            why = getattr(reason, "verify_message", "") or reason.reason or "TLS handshake failed"
            raise Unavailable(f"cannot verify registry at {host}: {why}") from None
        log.warning("registry %s: %s %s: %s", host, method, path, err)
        raise Unavailable(f"registry unreachable at {host}") from None


class DistributionRegistry:
    """A Docker Distribution registry: repositories appear on first push, deletion enabled
    (`storage.delete.enabled`). Plain HTTP unless `tls` is given: then HTTPS, the
    registry's certificate verified with that context."""

    def __init__(
        self,
        host: str,
        credentials: RegistryCredentials | None = None,
        timeout: float = HTTP_TIMEOUT,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self._host = host
        self._credentials = credentials
        self._timeout = timeout
        self._tls = tls
        self._opener = urllib.request.build_opener(
            *([urllib.request.HTTPSHandler(context=tls)] if tls is not None else [])
        )

    @property
    def host(self) -> str:
        return self._host

    def prepare(self, repository: str) -> None:
        return None

    def auth(self) -> Mapping[str, str] | None:
        return self._credentials.engine_auth() if self._credentials else None

    # The plumbing.

    def _url(self, path: str) -> str:
        scheme = "https" if self._tls is not None else "http"
        return f"{scheme}://{self._host}/v2/{path}"

    def _location(self, headers: Message) -> str:
        """An upload's absolute URL from a `Location` header, relative or not."""
        return urllib.parse.urljoin(self._url(""), str(headers.get("Location")))

    def _open(self, method: str, url: str, body: Body = None, headers: Headers = None) -> Opened:
        """One API call, its response open for reading; None for a 404, other failures
        raise. The caller closes the response."""
        # http.client sends each piece of an iterable body as it is: views of bytes too.
        data = cast(bytes | Iterable[bytes] | None, body)
        request = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
        if self._credentials is not None and urllib.parse.urlsplit(url).netloc == self._host:
            # Never to another host, a redirect's included (ECR and S3-backed registries
            # send blob reads to pre-signed storage URLs, which refuse a second credential).
            request.add_unredirected_header("Authorization", self._credentials.header())
        with _map_errors(self._host, method, url):
            try:
                return self._opener.open(request, timeout=self._timeout)  # type: ignore[no-any-return]
            except urllib.error.HTTPError as err:
                if err.code != 404:
                    raise
                err.close()
                return None

    def _call(self, method: str, url: str, body: Body = None, headers: Headers = None) -> Reply:
        """One API call, read whole (manifests and empty bodies only); 404 is a status."""
        resp = self._open(method, url, body, headers)
        if resp is None:
            return 404, Message(), b""
        with resp, _map_errors(self._host, method, url):
            return resp.status, resp.headers, resp.read()

    # Tags and manifests.

    def tags(self, repository: str) -> list[str]:
        tags: list[str] = []
        path = f"{repository}/tags/list"
        while path:
            status, headers, body = self._call("GET", self._url(path))
            if status == 404:
                return tags
            tags.extend(json.loads(body).get("tags") or [])
            path = _next_page(headers.get("Link", ""))
        return tags

    def manifest(self, repository: str, reference: str) -> Manifest | None:
        status, headers, body = self._call(
            "GET", self._url(f"{repository}/manifests/{reference}"), headers=ACCEPT
        )
        if status == 404:
            return None
        media_type = headers.get("Content-Type") or _media_type(body)
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

    def untag(self, repository: str, tag: str) -> None:
        # Distribution 2.x deletes manifests, not tags: delete the manifest, then put it
        # back under every other tag that named it.
        manifest = self.manifest(repository, tag)
        if manifest is None:
            return
        others = [
            other
            for other in self.tags(repository)
            if other != tag and self._digest(repository, other) == manifest.digest
        ]
        self._call("DELETE", self._url(f"{repository}/manifests/{manifest.digest}"))
        for other in others:
            self.put_manifest(repository, other, manifest)

    def _digest(self, repository: str, tag: str) -> str:
        url = self._url(f"{repository}/manifests/{tag}")
        status, headers, _ = self._call("HEAD", url, headers=ACCEPT)
        return "" if status == 404 else str(headers.get("Docker-Content-Digest", ""))

    # Blobs.

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
            _Upload(self, self._location(headers)).cancel()
        return False

    def read_blob(self, repository: str, digest: str, verify: bool = True) -> Iterator[bytes]:
        check_digest(digest)
        url = self._url(f"{repository}/blobs/{digest}")
        resp = self._open("GET", url)
        if resp is None:
            raise NotFound(f"blob not found: {repository}@{digest}")
        return self._pieces(resp, url, digest, verify)

    def _pieces(self, resp: HTTPResponse, url: str, digest: str, verify: bool) -> Iterator[bytes]:
        """The response's bytes; a body cut short is Unavailable (http.client ends a short
        read quietly), one that is not `digest`'s is Internal, after its last piece, when
        `verify`."""
        hasher = hashlib.sha256() if verify else None
        with resp:
            while True:
                with _map_errors(self._host, "GET", url):
                    data = resp.read(CHUNK_SIZE)
                    if not data and resp.length:
                        raise http.client.IncompleteRead(b"", resp.length)
                if not data:
                    break
                if hasher is not None:
                    hasher.update(data)
                yield data
        if hasher is None:
            return
        actual = f"sha256:{hasher.hexdigest()}"
        if actual != digest:
            raise Internal(f"registry {self._host}: the blob {digest} has the digest {actual}")

    def upload_blob(self, repository: str, digest: str, chunks: Iterable[bytes]) -> int:
        check_digest(digest)
        upload = self.start_upload(repository)
        hasher = hashlib.sha256()
        size = 0

        def hashed() -> Iterator[bytes]:
            nonlocal size
            for data in chunks:
                hasher.update(data)
                size += len(data)
                yield data

        try:
            upload.send(hashed())
            actual = f"sha256:{hasher.hexdigest()}"
            if actual != digest:
                raise InvalidArgument(f"blob {digest}: its content has the digest {actual}")
            upload.commit(digest)
        except BaseException:
            upload.cancel()
            raise
        return size

    def start_upload(self, repository: str) -> _Upload:
        status, headers, _ = self._call("POST", self._url(f"{repository}/blobs/uploads/"), b"")
        if status != 202 or not headers.get("Location"):
            raise Internal(f"registry {self._host}: no upload of {repository} opened ({status})")
        return _Upload(self, self._location(headers))


class _Upload:
    """An upload session of a Distribution registry, at the URL its `Location` names."""

    def __init__(self, registry: DistributionRegistry, location: str) -> None:
        self._registry = registry
        self._location = location

    def send(self, chunks: Iterable[bytes | memoryview]) -> None:
        # One PATCH streams every piece (chunked transfer encoding), as `docker push` does.
        status, headers, _ = self._registry._call(
            "PATCH",
            self._location,
            body=chunks,
            headers={"Content-Type": "application/octet-stream"},
        )
        if status != 202:
            raise Unavailable(
                f"registry {self._registry.host}: the upload was not taken ({status})"
            )
        if headers.get("Location"):
            self._location = self._registry._location(headers)

    def commit(self, digest: str) -> None:
        check_digest(digest)
        sep = "&" if urllib.parse.urlsplit(self._location).query else "?"
        query = urllib.parse.urlencode({"digest": digest})
        try:
            status, _, _ = self._registry._call("PUT", f"{self._location}{sep}{query}", b"")
        except Internal as err:
            if "DIGEST_INVALID" in str(err):  # the distribution API's code for it
                raise InvalidArgument(
                    f"blob {digest}: its content does not match its digest"
                ) from None
            raise
        if status != 201:
            raise Internal(f"registry {self._registry.host}: {digest} not committed ({status})")

    def cancel(self) -> None:
        try:
            self._registry._call("DELETE", self._location)
        except (Internal, Unavailable) as err:
            log.warning("cannot cancel the upload %s: %s", self._location, err)


def _media_type(body: bytes) -> str:
    """A manifest's `mediaType` field, for a registry that sent no Content-Type."""
    try:
        data = json.loads(body)
    except ValueError:
        return ""
    return str(data.get("mediaType", "")) if isinstance(data, dict) else ""


def _next_page(link: str) -> str:
    """The path of the next page from a `Link: </v2/…>; rel="next"` header, else empty."""
    if 'rel="next"' not in link:
        return ""
    target = link.split(";", 1)[0].strip().strip("<>")
    return target.removeprefix("/v2/")
