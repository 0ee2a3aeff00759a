"""Pushing an image of a `docker save` tar whose layers are compressed (what `builds export`
writes) straight into the registry, its blobs as they are: no engine, no decompressing to
load, no compressing again to push (SPEC §7).

Every layer file is checked before anything is pushed: its digest as stored, and its
content, decompressed, against the `diff_id` its config names (a layer that is not what
the image says is refused, as `docker load` would refuse it). An import learns those
digests while the archive arrives (`layerscan`); a layer it did not is read from the tar.
Then the layers the registry lacks (HEAD first) are uploaded, several at once, each read
from its place in the tar; the config goes up as a blob, then a Docker v2 manifest naming
them all is put under the new tag.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tarfile
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from client.kernel.errors import InvalidArgument, SlipwayError
from client.kernel.streams import CHUNK_SIZE, iter_chunks
from services.common.oci import Manifest, Registry
from services.common.push import ATTEMPTS, RETRY_DELAYS, transient
from services.registry.imagetar import (
    MANIFEST_JSON,
    member,
    member_bytes,
    member_digest,
    parse_json,
)
from services.registry.layerscan import GZIP_MAGIC, HeldUploads, LayerDigests, layer_digests

DOCKER_V2 = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG = "application/vnd.docker.container.image.v1+json"
GZIP_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
# Layers uploaded at once: the registry hashes and writes each on a core of its own.
UPLOADS = 3

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Layout:
    """One image of the tar: the member holding its config, and its layers' members."""

    config: str
    layers: tuple[str, ...]


def compressed_images(path: Path) -> dict[str, Layout] | None:
    """The images of the `docker save` tar at `path` by id (`sha256:` of the config) when
    every layer file of every image is gzip'd, else None (the engine loads it instead)."""
    found: dict[str, Layout] = {}
    try:
        with tarfile.open(path, mode="r:") as tar:
            members = {m.name.removeprefix("./"): m for m in tar.getmembers() if m.isreg()}
            index = parse_json(member_bytes(tar, members, MANIFEST_JSON), MANIFEST_JSON)
            if not isinstance(index, list):
                return None
            for entry in index:
                if not isinstance(entry, dict):
                    return None
                names = entry.get("Layers")
                if not isinstance(names, list):
                    return None
                config = str(entry.get("Config") or "").removeprefix("./")
                layers = tuple(str(name).removeprefix("./") for name in names)
                if config not in members or not layers:
                    return None
                for layer in layers:
                    if layer not in members or member(tar, members, layer).read(2) != GZIP_MAGIC:
                        return None
                found[member_digest(tar, members, config)] = Layout(config, layers)
    except (tarfile.TarError, EOFError, OSError, InvalidArgument):
        return None  # not an archive to take blob by blob: the engine says what is wrong
    return found


@dataclass(frozen=True)
class Checked:
    """An image of the tar, checked: its config's bytes and its layers' descriptors."""

    config: bytes
    layers: tuple[tuple[str, str, int], ...]
    """(member name, digest as stored, size) of each layer, in order."""


def check_image(
    path: Path, layout: Layout, known: Mapping[str, LayerDigests] | None = None
) -> Checked:
    """Checks the image `layout` of the tar at `path` before anything is pushed: every
    layer must be gzip whose content is the layer its config names. Layers whose digests
    are `known` (scanned as they arrived) are not read again; the others are read whole,
    once. InvalidArgument otherwise, naming the layer."""
    known = known or {}
    with tarfile.open(path, mode="r:") as tar:
        members = {m.name.removeprefix("./"): m for m in tar.getmembers() if m.isreg()}
        config_bytes = member_bytes(tar, members, layout.config)
        config = parse_json(config_bytes, layout.config)
        rootfs = config.get("rootfs") if isinstance(config, dict) else None
        diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
        if not isinstance(diff_ids, list) or len(diff_ids) != len(layout.layers):
            raise InvalidArgument(f"{layout.config[:200]}: its config does not list its layers")
        layers = []
        for name, diff_id in zip(layout.layers, diff_ids, strict=True):
            found = known.get(name) or layer_digests(iter_chunks(member(tar, members, name)), name)
            if found.diff_id != diff_id:
                raise InvalidArgument(
                    f"{name[:200]}: its content does not match the layer its image names "
                    f"(diffID {str(diff_id)[:80]}, content {found.diff_id})"
                )
            layers.append((name, found.digest, found.size))
    return Checked(config_bytes, tuple(layers))


def push_with_retries(
    registry: Registry,
    repository: str,
    tag: str,
    path: Path,
    image: Checked,
    sleep: Callable[[float], None] = time.sleep,
    held: HeldUploads | None = None,
) -> Manifest:
    """`push_image`, tried again on a passing registry failure as every push is (SPEC §6:
    ATTEMPTS in all, RETRY_DELAYS apart, each retry logged); blobs already up are not sent
    again."""
    reference = f"{registry.host}/{repository}:{tag}"
    for attempt in range(1, ATTEMPTS + 1):
        try:
            return push_image(registry, repository, tag, path, image, held)
        except SlipwayError as err:
            if attempt == ATTEMPTS or not transient(err):
                raise
            log.warning(
                "Retrying push of %s (attempt %d of %d): %s", reference, attempt + 1, ATTEMPTS, err
            )
            sleep(RETRY_DELAYS[min(attempt - 1, len(RETRY_DELAYS) - 1)])
    raise AssertionError("unreachable")  # the loop returns or raises


def push_image(
    registry: Registry,
    repository: str,
    tag: str,
    path: Path,
    image: Checked,
    held: HeldUploads | None = None,
) -> Manifest:
    """Puts the checked `image` of the tar at `path` as `repository:tag`, uploading only
    the blobs the registry lacks (HEAD first): a layer sent as the archive arrived is
    committed from the upload `held` for it, the others (and one whose commit failed) go
    up from the tar, up to UPLOADS at once. Returns the manifest put."""
    with tarfile.open(path, mode="r:") as tar:
        members = {m.name.removeprefix("./"): m for m in tar.getmembers() if m.isreg()}
    missing = {
        digest: members[name]
        for name, digest, _size in image.layers
        if not registry.has_blob(repository, digest)
    }
    for digest in list(missing):
        sent = held.take(digest) if held is not None else None
        if sent is None:
            continue
        try:
            sent.commit(digest)
        except SlipwayError as err:
            log.warning("layer %s sent as it arrived not committed: %s", digest, err)
            sent.cancel()  # it goes up from the tar instead
            continue
        except BaseException:
            sent.cancel()
            raise
        del missing[digest]

    def upload(digest: str) -> int:
        info = missing[digest]
        return registry.upload_blob(repository, digest, _span(path, info.offset_data, info.size))

    if missing:
        pool = ThreadPoolExecutor(min(UPLOADS, len(missing)), "layer-upload")
        try:
            for _sent in pool.map(upload, missing):
                pass
        finally:
            pool.shutdown(cancel_futures=True)  # after a failure, start no other upload
    config_digest = f"sha256:{hashlib.sha256(image.config).hexdigest()}"
    if not registry.has_blob(repository, config_digest):
        registry.upload_blob(repository, config_digest, [image.config])
    body = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": DOCKER_V2,
            "config": {"mediaType": CONFIG, "size": len(image.config), "digest": config_digest},
            "layers": [
                {"mediaType": GZIP_LAYER, "size": size, "digest": digest}
                for _name, digest, size in image.layers
            ],
        }
    ).encode()
    manifest = Manifest(f"sha256:{hashlib.sha256(body).hexdigest()}", DOCKER_V2, body)
    registry.put_manifest(repository, tag, manifest)
    return manifest


def _span(path: Path, offset: int, size: int) -> Iterator[bytes]:
    """The `size` bytes of the file at `path` from `offset`, in chunks (a member's data,
    read by a handle of its own)."""
    with open(path, "rb") as source:
        source.seek(offset)
        while size > 0:
            data = source.read(min(size, CHUNK_SIZE))
            if not data:
                raise InvalidArgument(f"{path.name}: the image tar ends early")
            size -= len(data)
            yield data
