"""The one registry client against a real Distribution registry (blobs and manifests made
here, no engine needed), an unreachable port, and a server that cuts a blob short."""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import json
import re
import secrets
import threading
from collections.abc import Iterator

import pytest

from client.kernel.errors import Internal, InvalidArgument, NotFound, Unavailable
from client.kernel.streams import CHUNK_SIZE
from services.common.oci import (
    DistributionRegistry,
    Manifest,
    Registry,
    _next_page,
    check_digest,
)
from tests.helpers import free_port

pytestmark = pytest.mark.docker

MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
CONFIG = "application/vnd.docker.container.image.v1+json"


def digest_of(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def repo() -> str:
    return f"oci-{secrets.token_hex(4)}"


@pytest.fixture
def registry(registry_host: str) -> DistributionRegistry:
    return DistributionRegistry(registry_host)


def push_image(registry: Registry, repository: str, tag: str, layer: bytes) -> Manifest:
    """Uploads a config and one layer, then puts a manifest naming them as `tag`."""
    config = json.dumps(
        {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}
    ).encode()
    for blob in (config, layer):
        registry.upload_blob(repository, digest_of(blob), [blob])
    body = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": MANIFEST_V2,
            "config": {"mediaType": CONFIG, "size": len(config), "digest": digest_of(config)},
            "layers": [{"mediaType": LAYER, "size": len(layer), "digest": digest_of(layer)}],
        }
    ).encode()
    manifest = Manifest(digest_of(body), MANIFEST_V2, body)
    registry.put_manifest(repository, tag, manifest)
    return manifest


def test_a_blob_streams_in_and_out_in_pieces(registry: DistributionRegistry) -> None:
    name = repo()
    data = secrets.token_bytes(2 * CHUNK_SIZE + 1000)
    digest = digest_of(data)
    assert not registry.has_blob(name, digest)

    pieces = (data[i : i + 100_000] for i in range(0, len(data), 100_000))
    assert registry.upload_blob(name, digest, pieces) == len(data)

    assert registry.has_blob(name, digest)
    read = list(registry.read_blob(name, digest))
    assert b"".join(read) == data
    assert max(len(p) for p in read) <= CHUNK_SIZE


def test_a_blob_that_is_not_its_digest_is_not_committed(registry: DistributionRegistry) -> None:
    name = repo()
    claimed = digest_of(b"what was promised")
    with pytest.raises(InvalidArgument, match=f"^blob {claimed}: its content has the digest "):
        registry.upload_blob(name, claimed, [b"something else"])
    assert not registry.has_blob(name, claimed)


def test_a_missing_blob_is_not_found_at_once(registry: DistributionRegistry) -> None:
    digest = digest_of(b"never uploaded")
    name = repo()
    with pytest.raises(NotFound, match=f"^blob not found: {name}@{digest}$"):
        registry.read_blob(name, digest)


@pytest.mark.parametrize("digest", ["", "sha256:abc", "md5:" + "a" * 64, "sha256:" + "A" * 64])
def test_malformed_digests_are_refused(registry: DistributionRegistry, digest: str) -> None:
    with pytest.raises(InvalidArgument, match="^invalid digest: "):
        check_digest(digest)
    with pytest.raises(InvalidArgument, match="^invalid digest: "):
        registry.read_blob(repo(), digest)
    with pytest.raises(InvalidArgument, match="^invalid digest: "):
        registry.upload_blob(repo(), digest, [b"x"])


def test_mount_links_a_blob_another_repository_holds(registry: DistributionRegistry) -> None:
    source, target, empty = repo(), repo(), repo()
    data = secrets.token_bytes(1000)
    registry.upload_blob(source, digest_of(data), [data])

    assert registry.mount_blob(target, digest_of(data), source)
    assert registry.has_blob(target, digest_of(data))
    assert not registry.mount_blob(target, digest_of(b"nowhere"), empty)


def test_manifests_and_tags(registry: DistributionRegistry) -> None:
    name = repo()
    assert registry.tags(name) == []
    assert registry.manifest(name, "web.B1") is None

    put = push_image(registry, name, "web.B1", secrets.token_bytes(100))

    got = registry.manifest(name, "web.B1")
    assert got == put
    assert registry.manifest(name, put.digest) == put
    assert registry.tags(name) == ["web.B1"]


def test_untag_keeps_the_other_tags_of_the_manifest(registry: DistributionRegistry) -> None:
    name = repo()
    shared = push_image(registry, name, "web.B1", b"layer one")
    registry.put_manifest(name, "worker.B1", shared)
    other = push_image(registry, name, "web.B2", b"layer two")

    registry.untag(name, "web.B1")
    registry.untag(name, "never.pushed")

    assert sorted(registry.tags(name)) == ["web.B2", "worker.B1"]
    assert registry.manifest(name, "worker.B1") == shared
    assert registry.manifest(name, "web.B2") == other


def test_a_refused_call_is_internal_and_says_what(registry: DistributionRegistry) -> None:
    name = repo()
    body = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": MANIFEST_V2,
            "config": {"mediaType": CONFIG, "size": 2, "digest": digest_of(b"{}")},
            "layers": [],
        }
    ).encode()
    where = re.escape(f"registry {registry.host}: PUT /v2/{name}/manifests/web.B1: 400 ")
    with pytest.raises(Internal, match=f"^{where}.*MANIFEST_BLOB_UNKNOWN"):
        registry.put_manifest(name, "web.B1", Manifest(digest_of(body), MANIFEST_V2, body))


def test_an_unreachable_registry_is_unavailable() -> None:
    dead = f"127.0.0.1:{free_port()}"
    registry = DistributionRegistry(dead, timeout=5)
    message = f"^registry unreachable at {re.escape(dead)}$"
    digest = digest_of(b"x")
    with pytest.raises(Unavailable, match=message):
        registry.tags("app")
    with pytest.raises(Unavailable, match=message):
        registry.manifest("app", "web.B1")
    with pytest.raises(Unavailable, match=message):
        registry.untag("app", "web.B1")
    with pytest.raises(Unavailable, match=message):
        registry.has_blob("app", digest)
    with pytest.raises(Unavailable, match=message):
        registry.read_blob("app", digest)
    with pytest.raises(Unavailable, match=message):
        registry.upload_blob("app", digest, [b"x"])


class _ShortBlob(http.server.BaseHTTPRequestHandler):
    """Promises a megabyte, sends ten bytes and hangs up."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self.send_response(200)
        self.send_header("Content-Length", str(1 << 20))
        self.end_headers()
        self.wfile.write(b"0123456789")
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        return None


@contextlib.contextmanager
def serving(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
    """A throwaway HTTP server answering with `handler`; yields its `host:port`."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_blob_cut_short_is_unavailable() -> None:
    with serving(_ShortBlob) as host:
        pieces = DistributionRegistry(host, timeout=5).read_blob("app", digest_of(b"x"))
        with pytest.raises(Unavailable, match=f"^registry unreachable at {host}$"):
            list(pieces)


@pytest.mark.parametrize(
    ("link", "path"),
    [
        ('</v2/app/tags/list?last=b&n=2>; rel="next"', "app/tags/list?last=b&n=2"),
        ("", ""),
        ('</v2/app/tags/list?last=b&n=2>; rel="prev"', ""),
    ],
)
def test_next_page_follows_the_link_header(link: str, path: str) -> None:
    assert _next_page(link) == path


class _DamagedBlob(_ShortBlob):
    """Sends a whole body, but not the one the digest names."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self.send_response(200)
        self.send_header("Content-Length", "10")
        self.end_headers()
        self.wfile.write(b"0123456789")


def test_a_blob_that_is_not_its_digest_is_internal() -> None:
    digest = digest_of(b"what was promised")
    with serving(_DamagedBlob) as host:
        pieces = DistributionRegistry(host, timeout=5).read_blob("app", digest)
        assert next(pieces) == b"0123456789"
        with pytest.raises(Internal, match=f"^registry {host}: the blob {digest} has the digest "):
            next(pieces)
        # A reader that checks the bytes itself (an export's) takes them as they come.
        unchecked = DistributionRegistry(host, timeout=5).read_blob("app", digest, verify=False)
        assert list(unchecked) == [b"0123456789"]


class _Storage(http.server.BaseHTTPRequestHandler):
    """Pre-signed storage: serves the blob, and records the Authorization it was sent."""

    seen: list[str | None] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        _Storage.seen.append(self.headers.get("Authorization"))
        self.send_response(200)
        self.send_header("Content-Length", "1")
        self.end_headers()
        self.wfile.write(b"x")

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        return None


def test_credentials_never_follow_a_redirect_to_another_host() -> None:
    from services.common.config import RegistryCredentials

    with serving(_Storage) as storage:

        class Redirecting(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                assert self.headers.get("Authorization", "").startswith("Basic ")
                self.send_response(307)
                self.send_header("Location", f"http://{storage}/signed?X-Amz-Signature=1")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                return None

        with serving(Redirecting) as host:
            registry = DistributionRegistry(host, RegistryCredentials("u", "secret"), timeout=5)
            assert b"".join(registry.read_blob("app", digest_of(b"x"))) == b"x"
    assert _Storage.seen == [None]
