"""A build's images as a `docker save` tar made straight from the registry's blobs: each
layer goes out as the registry stores it (compressed), never pulled into an engine,
decompressed or compressed again (SPEC §7). `docker load` takes gzip-compressed layer files
in this layout as it takes plain ones.

The tar is `manifest.json` first (so a reader knows the images before their bytes), then
for each image its config `<hex>.json` and its layers `<hex>/layer.tar`, each blob once
however many images share it. Every size is known from the manifests before a byte is read, so the
tar's size is too: the export streams it without spooling.
"""

from __future__ import annotations

import json
import logging
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from client.kernel.errors import InvalidArgument
from services.common.oci import Registry, check_digest
from services.registry.tarstream import BLOCK, RECORD, TarWriter, file_info

log = logging.getLogger(__name__)

IMAGE_MANIFESTS = (
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
)
IMAGE_CONFIGS = (
    "application/vnd.docker.container.image.v1+json",
    "application/vnd.oci.image.config.v1+json",
)
# Layers `docker load` reads as they are: gzip'd or plain tars.
LOADABLE_LAYERS = (
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.docker.image.rootfs.diff.tar",
)
# A manifest lists a few dozen layers; anything far past that is not one of ours.
MAX_LAYERS = 1000


@dataclass(frozen=True)
class Member:
    """One file of the tar: its name, its size, and where its bytes come from."""

    name: str
    size: int
    read: Callable[[], Iterator[bytes]]


@dataclass(frozen=True)
class SavedBuild:
    """The tar of a build's images: its size, and its bytes on demand."""

    size: int
    members: tuple[Member, ...]
    mtime: float

    def chunks(self) -> Iterator[bytes]:
        tar = TarWriter()
        for member in self.members:
            yield from tar.member(file_info(member.name, member.size, self.mtime), member.read())
        yield tar.end()


def _hex(digest: str) -> str:
    return check_digest(digest).removeprefix("sha256:")


def _descriptor(item: Any) -> tuple[str, int, str]:
    if not isinstance(item, dict):
        raise ValueError("not a descriptor")
    digest, size = str(item.get("digest", "")), item.get("size")
    if not isinstance(size, int) or size < 0:
        raise ValueError("no size")
    return digest, size, str(item.get("mediaType", ""))


def save_from_blobs(
    registry: Registry, app: str, tags: dict[str, str], mtime: float
) -> SavedBuild | None:
    """The `docker save` tar of the images `registry` holds in `app` under `tags` (tag →
    the name the tar gives it, `repository:tag`), or None when one of them is not a plain
    image manifest whose layers `docker load` reads as they are (an index, say): the
    caller then saves through the engine."""
    images: list[dict[str, Any]] = []
    blobs: dict[str, Member] = {}

    def blob(digest: str, name: str, size: int) -> Member:
        def read() -> Iterator[bytes]:
            # Not hashed on the way out: whoever reads the export checks every layer
            # (an import, or `docker load` against the config's diff_ids).
            return registry.read_blob(app, digest, verify=False)

        return blobs.setdefault(digest, Member(name, size, read))

    for tag, name in tags.items():
        manifest = registry.manifest(app, tag)
        if manifest is None or manifest.media_type not in IMAGE_MANIFESTS:
            return None
        try:
            doc = json.loads(manifest.body)
            config_digest, config_size, config_type = _descriptor(doc.get("config"))
            layers = [_descriptor(item) for item in doc.get("layers") or []]
            for digest in (config_digest, *(d for d, _, _ in layers)):
                check_digest(digest)
        except (ValueError, AttributeError, TypeError, InvalidArgument):
            return None
        if config_type not in IMAGE_CONFIGS:
            return None
        if not layers or len(layers) > MAX_LAYERS:
            return None
        if any(media_type not in LOADABLE_LAYERS for _, _, media_type in layers):
            return None
        config = blob(config_digest, f"{_hex(config_digest)}.json", config_size)
        names = [blob(d, f"{_hex(d)}/layer.tar", size).name for d, size, _ in layers]
        images.append({"Config": config.name, "RepoTags": [name], "Layers": names})
    index = json.dumps(images).encode()
    members = (Member("manifest.json", len(index), lambda: iter([index])), *blobs.values())
    size = sum(_header(m, mtime) + m.size + (-m.size % BLOCK) for m in members)
    size += 2 * BLOCK
    size += -size % RECORD
    log.info("saving %d images of %s from %d registry blobs", len(images), app, len(blobs))
    return SavedBuild(size, members, mtime)


def _header(member: Member, mtime: float) -> int:
    """The bytes of `member`'s header, as TarWriter writes it."""
    return len(file_info(member.name, member.size, mtime).tobuf(tarfile.PAX_FORMAT))
