"""The `Registry` seam: the destination images are pushed to (Distribution now, ECR later),
and the few registry API calls exports and imports need beyond a push."""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import Message
from typing import Protocol

from client.kernel.errors import Internal, Unavailable

log = logging.getLogger(__name__)

MANIFEST_TYPES = (
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.index.v1+json",
)
ACCEPT = {"Accept": ",".join(MANIFEST_TYPES)}
# Registry calls move manifests and mount blobs, never image bytes: a minute is plenty.
HTTP_TIMEOUT = 60


@dataclass(frozen=True)
class Manifest:
    """A manifest as the registry serves it: its bytes must be put back unchanged for the
    digest to hold."""

    digest: str
    media_type: str
    body: bytes


class Registry(Protocol):
    """A registry as pushes, exports and imports need it."""

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


class DistributionRegistry:
    """A Docker Distribution registry over plain HTTP: open, repositories appear on first
    push, deletion enabled (`storage.delete.enabled`)."""

    def __init__(self, host: str, timeout: float = HTTP_TIMEOUT) -> None:
        self._host = host
        self._timeout = timeout

    @property
    def host(self) -> str:
        return self._host

    def prepare(self, repository: str) -> None:
        return None

    def auth(self) -> Mapping[str, str] | None:
        return None

    def _call(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, Message, bytes]:
        """One API call; 404 comes back as a status, other failures raise."""
        url = f"http://{self._host}/v2/{path}"
        request = urllib.request.Request(url, data=body, method=method, headers=dict(headers or {}))
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as resp:
                return resp.status, resp.headers, resp.read()
        except urllib.error.HTTPError as err:
            text = err.read().decode(errors="replace").strip()
            if err.code == 404:
                return 404, err.headers, text.encode()
            raise Internal(
                f"registry {self._host}: {method} /v2/{path}: {err.code} {text}"
            ) from None
        except (urllib.error.URLError, OSError) as err:
            log.warning("registry %s: %s /v2/%s: %s", self._host, method, path, err)
            raise Unavailable(f"registry unreachable at {self._host}") from None

    def tags(self, repository: str) -> list[str]:
        tags: list[str] = []
        path = f"{repository}/tags/list"
        while path:
            status, headers, body = self._call("GET", path)
            if status == 404:
                return tags
            tags.extend(json.loads(body).get("tags") or [])
            path = _next_page(headers.get("Link", ""))
        return tags

    def manifest(self, repository: str, reference: str) -> Manifest | None:
        """The manifest `reference` (a tag or digest) of `repository`, None when missing."""
        status, headers, body = self._call(
            "GET",
            f"{repository}/manifests/{reference}",
            headers=ACCEPT,
        )
        if status == 404:
            return None
        media_type = headers.get("Content-Type") or json.loads(body).get("mediaType", "")
        return Manifest(str(headers.get("Docker-Content-Digest", "")), media_type, body)

    def _put(self, repository: str, tag: str, manifest: Manifest) -> None:
        self._call(
            "PUT",
            f"{repository}/manifests/{tag}",
            body=manifest.body,
            headers={"Content-Type": manifest.media_type},
        )

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
        self._call("DELETE", f"{repository}/manifests/{manifest.digest}")
        for other in others:
            self._put(repository, other, manifest)

    def _digest(self, repository: str, tag: str) -> str:
        status, headers, _ = self._call("HEAD", f"{repository}/manifests/{tag}", headers=ACCEPT)
        return "" if status == 404 else str(headers.get("Docker-Content-Digest", ""))


def _next_page(link: str) -> str:
    """The path of the next page from a `Link: </v2/…>; rel="next"` header, else empty."""
    if 'rel="next"' not in link:
        return ""
    target = link.split(";", 1)[0].strip().strip("<>")
    return target.removeprefix("/v2/")
