"""services.registry.blobsave: a `docker save` tar made from registry blobs, sized before
its bytes are read; None for images the engine must save instead."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Iterator
from typing import Any

import pytest

from services.common.oci import Manifest
from services.registry.blobsave import save_from_blobs

DOCKER_V2 = "application/vnd.docker.distribution.manifest.v2+json"
GZIP_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
CONFIG = "application/vnd.docker.container.image.v1+json"


def digest(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


class Blobs:
    """A registry that holds a few manifests and blobs, and counts blob reads."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self.manifests: dict[str, Manifest] = {}
        self.reads: list[str] = []

    def add(self, data: bytes, media_type: str = GZIP_LAYER) -> dict[str, Any]:
        self.blobs[digest(data)] = data
        return {"mediaType": media_type, "digest": digest(data), "size": len(data)}

    def image(self, tag: str, layers: list[bytes], media_type: str = DOCKER_V2) -> None:
        config = self.add(json.dumps({"tag": tag}).encode(), CONFIG)
        doc = {
            "mediaType": media_type,
            "config": config,
            "layers": [self.add(layer) for layer in layers],
        }
        body = json.dumps(doc).encode()
        self.manifests[tag] = Manifest(digest(body), media_type, body)

    def manifest(self, repository: str, reference: str) -> Manifest | None:
        return self.manifests.get(reference)

    def read_blob(self, repository: str, blob: str, verify: bool = True) -> Iterator[bytes]:
        assert not verify  # the export's reader checks the layers
        self.reads.append(blob)
        data = self.blobs[blob]
        return iter([data[: len(data) // 2], data[len(data) // 2 :]])


def test_the_tar_is_sized_up_front_shares_layers_and_reads_blobs_only_when_streamed() -> None:
    registry = Blobs()
    base, web, worker = b"\x1f\x8bbase" * 300, b"\x1f\x8bweb", b"\x1f\x8bworker" * 1000
    registry.image("web.B1", [base, web])
    registry.image("worker.B1", [base, worker])
    tags = {"web.B1": "app:web.B1", "worker.B1": "app:worker.B1"}

    saved = save_from_blobs(registry, "app", tags, 1_700_000_000)  # type: ignore[arg-type]

    assert saved is not None and registry.reads == []
    data = b"".join(saved.chunks())
    assert len(data) == saved.size
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar}  # type: ignore[union-attr]
    names = list(files)
    assert names[0] == "manifest.json"
    index = json.loads(files["manifest.json"])
    assert [image["RepoTags"] for image in index] == [["app:web.B1"], ["app:worker.B1"]]
    assert index[0]["Layers"][0] == index[1]["Layers"][0]  # the shared layer
    assert len([n for n in names if n.endswith("/layer.tar")]) == 3  # stored once
    for layer in (base, web, worker):
        assert files[f"{digest(layer).removeprefix('sha256:')}/layer.tar"] == layer
    assert registry.reads.count(digest(base)) == 1


@pytest.mark.parametrize(
    "case",
    ["index", "zstd layer", "missing", "no layers", "artifact config", "sha512 digest"],
)
def test_images_the_engine_must_save_give_none(case: str) -> None:
    registry = Blobs()
    if case == "index":
        registry.image("web.B1", [b"x"], media_type="application/vnd.oci.image.index.v1+json")
    elif case == "zstd layer":
        registry.image("web.B1", [b"x"])
        doc = json.loads(registry.manifests["web.B1"].body)
        doc["layers"][0]["mediaType"] = "application/vnd.oci.image.layer.v1.tar+zstd"
        body = json.dumps(doc).encode()
        registry.manifests["web.B1"] = Manifest(digest(body), DOCKER_V2, body)
    elif case == "no layers":
        registry.image("web.B1", [])
    elif case in ("artifact config", "sha512 digest"):
        registry.image("web.B1", [b"x"])
        doc = json.loads(registry.manifests["web.B1"].body)
        if case == "artifact config":
            doc["config"]["mediaType"] = "application/vnd.example.artifact+json"
        else:
            doc["layers"][0]["digest"] = "sha512:" + "a" * 128
        body = json.dumps(doc).encode()
        registry.manifests["web.B1"] = Manifest(digest(body), DOCKER_V2, body)
    assert save_from_blobs(registry, "app", {"web.B1": "app:web.B1"}, 0) is None  # type: ignore[arg-type]
