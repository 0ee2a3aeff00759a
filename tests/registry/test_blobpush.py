"""services.registry.blobpush against a real Distribution registry: an image of a `docker
save` tar with compressed layers goes up blob by blob, as it is; a layer that is not what
its config says is refused with nothing tagged; blobs the registry holds are not sent."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import secrets
import tarfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

from client.kernel.errors import InvalidArgument, Unavailable
from services.common.oci import DistributionRegistry
from services.registry.blobpush import (
    check_image,
    compressed_images,
    push_image,
    push_with_retries,
)
from services.registry.layerscan import HeldUploads, LayerDigests, Scan


def sha(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def layer_tar(text: str) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        info = tarfile.TarInfo("marker")
        info.size = len(text)
        tar.addfile(info, io.BytesIO(text.encode()))
    return out.getvalue()


def saved(folder: Path, layers: list[bytes], compress: bool = True, lie: bool = False) -> Path:
    """A `docker save` tar of one image of `layers` (gzip'd unless not `compress`)."""
    diff_ids = [sha(layer) for layer in layers]
    if lie:
        diff_ids[0] = sha(b"another layer")
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()  # fmt: skip
    files = {f"{sha(config)[7:]}.json": config}
    names = []
    for layer in layers:
        data = gzip.compress(layer) if compress else layer
        names.append(f"{sha(data)[7:]}/layer.tar")
        files[names[-1]] = data
    index = [{"Config": f"{sha(config)[7:]}.json", "RepoTags": ["app:web.B1"], "Layers": names}]
    files = {"manifest.json": json.dumps(index).encode(), **files}
    path = folder / "image.tar"
    with tarfile.open(path, "w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


class Counting(DistributionRegistry):
    def __init__(self, host: str) -> None:
        super().__init__(host)
        self.uploads: list[str] = []

    def upload_blob(self, repository: str, digest: str, chunks: Iterable[bytes]) -> int:
        self.uploads.append(digest)
        return super().upload_blob(repository, digest, chunks)


def test_compressed_layers_go_up_as_they_are(registry_host: str, tmp_path: Path) -> None:
    registry = Counting(registry_host)
    repo = f"blobs-{secrets.token_hex(4)}"
    layers = [layer_tar("one"), layer_tar("two")]
    path = saved(tmp_path, layers)
    images = compressed_images(path)
    assert images is not None and len(images) == 1
    ((image_id, layout),) = images.items()

    checked = check_image(path, layout)
    manifest = push_image(registry, repo, "web.B1", path, checked)

    doc = json.loads(manifest.body)
    stored = [b"".join(registry.read_blob(repo, d["digest"])) for d in doc["layers"]]
    assert [gzip.decompress(data) for data in stored] == layers  # the gzip'd bytes, as sent
    assert doc["config"]["digest"] == image_id
    assert registry.manifest(repo, "web.B1") is not None
    assert len(registry.uploads) == 3
    push_image(registry, repo, "web.B2", path, checked)
    assert len(registry.uploads) == 3  # every blob was there already


def test_a_layer_its_config_does_not_name_is_refused_and_nothing_is_tagged(
    registry_host: str, tmp_path: Path
) -> None:
    registry = DistributionRegistry(registry_host)
    repo = f"blobs-{secrets.token_hex(4)}"
    path = saved(tmp_path, [layer_tar("one")], lie=True)
    images = compressed_images(path)
    assert images is not None
    with pytest.raises(InvalidArgument, match="does not match the layer its image names"):
        check_image(path, next(iter(images.values())))  # before anything is pushed
    assert registry.tags(repo) == []


def test_plain_layers_are_left_to_the_engine(tmp_path: Path) -> None:
    assert compressed_images(saved(tmp_path, [layer_tar("one")], compress=False)) is None
    (tmp_path / "junk.tar").write_bytes(b"not a tar")
    assert compressed_images(tmp_path / "junk.tar") is None


def test_a_registry_outage_is_tried_again_then_reported(tmp_path: Path) -> None:
    from tests.helpers import free_port

    dead = DistributionRegistry(f"127.0.0.1:{free_port()}")
    path = saved(tmp_path, [layer_tar("one")])
    images = compressed_images(path)
    assert images is not None
    checked = check_image(path, next(iter(images.values())))
    waits: list[float] = []
    with pytest.raises(Unavailable, match="registry unreachable"):
        push_with_retries(dead, "app", "web.B1", path, checked, waits.append)
    assert len(waits) == 4 and sum(waits) >= 10  # 5 attempts over at least 10 s


def test_a_layer_that_compresses_well_is_checked_in_bounded_memory(tmp_path: Path) -> None:
    import tracemalloc

    zeros = io.BytesIO()
    with tarfile.open(fileobj=zeros, mode="w") as tar:
        info = tarfile.TarInfo("zeros")
        info.size = 128 * 1024 * 1024
        tar.addfile(info, io.BytesIO(bytes(info.size)))
    path = saved(tmp_path, [zeros.getvalue()])
    del zeros
    images = compressed_images(path)
    assert images is not None
    tracemalloc.start()
    try:
        check_image(path, next(iter(images.values())))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 32 * 1024 * 1024, peak  # 128 MiB of content, inflated a piece at a time


def test_a_layer_with_garbage_after_its_gzip_stream_is_refused(tmp_path: Path) -> None:
    layer = layer_tar("one")
    path = saved(tmp_path, [layer])
    with tarfile.open(path) as tar:
        parts = [(m.name, tar.extractfile(m).read()) for m in tar]  # type: ignore[union-attr]
    bad = tmp_path / "bad.tar"
    with tarfile.open(bad, "w") as tar:
        for name, data in parts:
            data = data + b"trailing" if name.endswith("layer.tar") else data
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    images = compressed_images(bad)
    assert images is not None
    with pytest.raises(InvalidArgument, match="layer.tar: the layer is not valid gzip"):
        check_image(bad, next(iter(images.values())))


def test_a_malformed_manifest_is_left_to_the_engine(tmp_path: Path) -> None:
    path = tmp_path / "odd.tar"
    with tarfile.open(path, "w") as tar:
        data = json.dumps([{"Config": "c.json", "Layers": 5}]).encode()
        info = tarfile.TarInfo("manifest.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    assert compressed_images(path) is None


# Layers scanned while the archive arrives (services.registry.layerscan).


def scanned(
    path: Path, piece: int = 1000, held: HeldUploads | None = None
) -> dict[str, LayerDigests]:
    """What a Scan learns of the tar at `path`, fed in pieces of `piece` bytes."""
    data = path.read_bytes()
    scan = Scan(held)
    for start in range(0, len(data), piece):
        scan.feed(data[start : start + piece])
    return scan.finish()


def test_a_scan_learns_each_compressed_layer_as_a_read_of_the_file_would(tmp_path: Path) -> None:
    layers = [layer_tar("one"), layer_tar("two" * 5000)]
    path = saved(tmp_path, layers)
    found = scanned(path)
    assert sorted(d.diff_id for d in found.values()) == sorted(sha(layer) for layer in layers)
    images = compressed_images(path)
    assert images is not None
    layout = next(iter(images.values()))
    assert check_image(path, layout, found) == check_image(path, layout)
    with tarfile.open(path) as tar:  # the stored bytes' digest and size, as the tar holds them
        for name, digests in found.items():
            data = tar.extractfile(name).read()  # type: ignore[union-attr]
            assert (digests.digest, digests.size) == (sha(data), len(data))


def test_a_scanned_layer_is_not_read_again(tmp_path: Path) -> None:
    path = saved(tmp_path, [layer_tar("one")])
    images = compressed_images(path)
    assert images is not None
    layout = next(iter(images.values()))
    (name,) = layout.layers
    told = LayerDigests(sha(b"x"), 1, sha(b"x"))
    # What the scan learnt is what is checked: a diff_id it saw differ is refused.
    with pytest.raises(InvalidArgument, match="does not match the layer its image names"):
        check_image(path, layout, {name: told})


def test_a_lying_layer_is_refused_after_a_scan_too(tmp_path: Path) -> None:
    path = saved(tmp_path, [layer_tar("one")], lie=True)
    images = compressed_images(path)
    assert images is not None
    with pytest.raises(InvalidArgument, match="does not match the layer its image names"):
        check_image(path, next(iter(images.values())), scanned(path))


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: b"not a tar at all" * 100,
        lambda data: data[: len(data) // 2],  # cut in the middle
        lambda data: data + b"\x1f\x8b" + b"junk" * 100,  # garbage past the end
    ],
)
def test_a_scan_of_a_damaged_tar_ends_and_keeps_only_what_it_could_check(
    damage: Callable[[bytes], bytes], tmp_path: Path
) -> None:
    path = saved(tmp_path, [layer_tar("one"), layer_tar("two")])
    good = scanned(path)
    path.write_bytes(damage(path.read_bytes()))
    found = scanned(path)  # returns: the feeding side is never left blocked
    assert all(good[name] == digests for name, digests in found.items())


def test_a_layer_that_is_not_valid_gzip_is_left_out_of_the_scan(tmp_path: Path) -> None:
    path = tmp_path / "image.tar"
    with tarfile.open(path, "w") as tar:
        data = b"\x1f\x8b" + b"not deflate" * 100
        info = tarfile.TarInfo("abc/layer.tar")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    assert scanned(path) == {}  # and check_image, reading the file, says what is wrong


def test_missing_layers_go_up_several_at_once(registry_host: str, tmp_path: Path) -> None:
    import threading

    class Watching(Counting):
        def __init__(self, host: str) -> None:
            super().__init__(host)
            self.threads: set[str] = set()

        def upload_blob(self, repository: str, digest: str, chunks: Iterable[bytes]) -> int:
            self.threads.add(threading.current_thread().name)
            return super().upload_blob(repository, digest, chunks)

    registry = Watching(registry_host)
    repo = f"blobs-{secrets.token_hex(4)}"
    layers = [layer_tar(f"layer {n}" * 20000) for n in range(4)]
    path = saved(tmp_path, layers)
    images = compressed_images(path)
    assert images is not None
    checked = check_image(path, next(iter(images.values())), scanned(path))
    manifest = push_image(registry, repo, "web.B1", path, checked)
    doc = json.loads(manifest.body)
    stored = [b"".join(registry.read_blob(repo, d["digest"])) for d in doc["layers"]]
    assert [gzip.decompress(data) for data in stored] == layers  # each from its own span
    assert len([t for t in registry.threads if t.startswith("layer-upload")]) > 1


class PassedUpload:
    """A registry upload passed through as it is; a test's subclass breaks one step."""

    def __init__(self, upload: Any) -> None:
        self.upload = upload

    def send(self, chunks: Iterable[bytes]) -> None:
        self.upload.send(chunks)

    def commit(self, digest: str) -> None:
        self.upload.commit(digest)

    def cancel(self) -> None:
        self.upload.cancel()


def pushed_with_held(
    registry: Counting, repo: str, path: Path, piece: int = 64 * 1024
) -> tuple[dict[str, Any], HeldUploads]:
    """The manifest of the image of the tar at `path`, scanned with uploads held as an
    import does, then pushed; and the HeldUploads (closed)."""
    with HeldUploads(registry, repo) as held:
        found = scanned(path, piece, held)
        images = compressed_images(path)
        assert images is not None
        checked = check_image(path, next(iter(images.values())), found)
        manifest = push_image(registry, repo, "web.B1", path, checked, held)
    return json.loads(manifest.body), held


def test_a_big_layer_sent_as_it_arrives_is_committed_from_its_upload(
    registry_host: str, tmp_path: Path
) -> None:
    registry = Counting(registry_host)
    repo = f"blobs-{secrets.token_hex(4)}"
    layers = [layer_tar(secrets.token_hex(2_000_000)), layer_tar("small")]
    doc, _ = pushed_with_held(registry, repo, saved(tmp_path, layers))
    stored = [b"".join(registry.read_blob(repo, d["digest"])) for d in doc["layers"]]
    assert [gzip.decompress(data) for data in stored] == layers
    big, small = (d["digest"] for d in doc["layers"])
    # The big layer went up as it arrived; the small one and the config from the tar.
    assert sorted(registry.uploads) == sorted([small, doc["config"]["digest"]])


def test_a_layer_whose_upload_cannot_be_committed_goes_up_from_the_spool(
    registry_host: str, tmp_path: Path
) -> None:
    class RefusingCommit(PassedUpload):
        refused: list[str] = []

        def commit(self, digest: str) -> None:
            if not self.refused:  # the first commit only: an outage that passes
                self.refused.append(digest)
                raise Unavailable("registry unreachable at the test's outage")
            self.upload.commit(digest)

    class Refusing(Counting):
        def start_upload(self, repository: str) -> Any:
            return RefusingCommit(super().start_upload(repository))

    registry = Refusing(registry_host)
    repo = f"blobs-{secrets.token_hex(4)}"
    layer = layer_tar(secrets.token_hex(2_000_000))
    doc, _ = pushed_with_held(registry, repo, saved(tmp_path, [layer]))
    (digest,) = (d["digest"] for d in doc["layers"])
    assert RefusingCommit.refused == [digest]  # the upload sent as it arrived
    assert digest in registry.uploads  # then the tar's bytes
    assert gzip.decompress(b"".join(registry.read_blob(repo, digest))) == layer


def test_a_layer_whose_name_claims_another_digest_goes_up_under_its_own(
    registry_host: str, tmp_path: Path
) -> None:
    registry = Counting(registry_host)
    repo = f"blobs-{secrets.token_hex(4)}"
    layer = layer_tar(secrets.token_hex(2_000_000))
    path = saved(tmp_path, [layer])
    false_name = f"{sha(b'another layer')[7:]}/layer.tar"
    with tarfile.open(path) as tar:
        parts = [(m.name, tar.extractfile(m).read()) for m in tar]  # type: ignore[union-attr]
    renamed = {name: false_name for name, _ in parts if name.endswith("/layer.tar")}
    with tarfile.open(path, "w") as tar:
        for name, data in parts:
            if name == "manifest.json":
                index = json.loads(data)
                index[0]["Layers"] = [renamed.get(n, n) for n in index[0]["Layers"]]
                data = json.dumps(index).encode()
            info = tarfile.TarInfo(renamed.get(name, name))
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    doc, _ = pushed_with_held(registry, repo, path)
    (real,) = [sha(data) for name, data in parts if name in renamed]
    assert [d["digest"] for d in doc["layers"]] == [real]
    assert real in registry.uploads  # not the upload sent under the name's claim
    assert not registry.has_blob(repo, sha(b"another layer"))


def test_the_same_layer_name_twice_is_checked_as_the_tar_reads_it(
    registry_host: str, tmp_path: Path
) -> None:
    """Two members named by one digest, the first honest, the second what the config
    names: the pushed layer is the one checked, never an upload of the other."""
    registry = Counting(registry_host)
    repo = f"blobs-{secrets.token_hex(4)}"
    honest, named = layer_tar(secrets.token_hex(2_000_000)), layer_tar("what the config says")
    path = saved(tmp_path, [named])
    with tarfile.open(path) as tar:
        parts = [(m.name, tar.extractfile(m).read()) for m in tar]  # type: ignore[union-attr]
    honest_gz = gzip.compress(honest)
    layer_name = f"{sha(honest_gz)[7:]}/layer.tar"
    with tarfile.open(path, "w") as tar:
        for name, data in parts:
            if name == "manifest.json":
                index = json.loads(data)
                index[0]["Layers"] = [layer_name]
                data = json.dumps(index).encode()
            if name.endswith("/layer.tar"):
                for copy in (honest_gz, data):
                    info = tarfile.TarInfo(layer_name)
                    info.size = len(copy)
                    tar.addfile(info, io.BytesIO(copy))
                continue
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    doc, _ = pushed_with_held(registry, repo, path)
    (digest,) = (d["digest"] for d in doc["layers"])
    assert gzip.decompress(b"".join(registry.read_blob(repo, digest))) == named


def test_a_layer_whose_sending_breaks_off_goes_up_from_the_spool(
    registry_host: str, tmp_path: Path
) -> None:
    class BreakingSend(PassedUpload):
        def send(self, chunks: Iterable[bytes]) -> None:
            next(iter(chunks))
            raise Unavailable("registry unreachable at the test's outage")

    class Breaking(Counting):
        started = 0

        def start_upload(self, repository: str) -> Any:
            self.started += 1
            upload = super().start_upload(repository)
            return BreakingSend(upload) if self.started == 1 else upload

    registry = Breaking(registry_host)
    repo = f"blobs-{secrets.token_hex(4)}"
    layers = [layer_tar(secrets.token_hex(2_000_000)), layer_tar(secrets.token_hex(2_000_001))]
    doc, _ = pushed_with_held(registry, repo, saved(tmp_path, layers))
    stored = [b"".join(registry.read_blob(repo, d["digest"])) for d in doc["layers"]]
    assert [gzip.decompress(data) for data in stored] == layers
    # After the failure no other layer was sent early: both went up from the tar.
    assert {d["digest"] for d in doc["layers"]} <= set(registry.uploads)
