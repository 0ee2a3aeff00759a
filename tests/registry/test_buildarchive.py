"""The export format's pieces on their own: build.json, tar and gzip streams, image tars,
and which service each image of an archive belongs to. No engine, registry or gRPC."""

from __future__ import annotations

import gzip as gziplib
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from client.api.metadata import log_batches
from client.kernel import types
from client.kernel.errors import InvalidArgument
from client.kernel.streams import iter_chunks
from services.registry import buildarchive
from services.registry.buildarchive import (
    BuildRecord,
    decode_build,
    encode_build,
    parse_time,
    rfc3339,
    unpack,
    write_archive,
)
from services.registry.export import services_of
from services.registry.imagetar import DOCKER, OCI, kind_of, retag, saved_images, split_name
from services.registry.imports import plan
from services.registry.tarstream import TarWriter, file_info, gunzip, gzip


def tar_bytes(entries: list[tuple[str, bytes]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def chunks_of(data: bytes, size: int = 1000) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


# Times and build.json.


def test_times_are_rfc3339_as_convox_writes_them() -> None:
    assert rfc3339(0) == "0001-01-01T00:00:00Z"
    assert rfc3339(1709287200.5) == "2024-03-01T10:00:00.500000Z"
    assert parse_time("2024-03-01T10:00:00.500000Z") == 1709287200.5
    assert parse_time("2024-03-01T10:00:00.123456789Z") == pytest.approx(1709287200.123456)
    assert parse_time("2024-03-01T11:00:00+01:00") == 1709287200
    assert parse_time("0001-01-01T00:00:00Z") == 0
    assert parse_time(None) == 0 and parse_time("") == 0 and parse_time(12.5) == 12.5
    with pytest.raises(InvalidArgument, match="not an RFC 3339 time"):
        parse_time("yesterday")


def test_build_json_round_trip() -> None:
    build = types.Build(
        id="BABCDEFGHIJ",
        app="web",
        status="complete",
        description="d",
        release="RABCDEFGHIJ",
        manifest="services: {}\n",
        entrypoint="cat /x",
        git_sha="f" * 40,
        started=1709287200.25,
        ended=1709287260.75,
    )
    doc = json.loads(encode_build(build, "one\ntwo\n"))
    assert doc["git-sha"] == "f" * 40 and doc["started"] == "2024-03-01T10:00:00.250000Z"
    record = decode_build(encode_build(build, "one\ntwo\n"))
    assert record == BuildRecord(
        id="BABCDEFGHIJ",
        app="web",
        status="complete",
        description="d",
        entrypoint="cat /x",
        git_sha="f" * 40,
        logs="one\ntwo\n",
        manifest="services: {}\n",
        release="RABCDEFGHIJ",
        started=1709287200.25,
        ended=1709287260.75,
    )
    assert record.log_lines == ["one", "two"]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"[1]", "not a JSON object"),
        (b"{", "invalid build.json: Expecting"),
        (b'{"id": "../x"}', "invalid build id"),
        (b'{"id": "B1\\n"}', "invalid build id"),
        (b'{"app": "a"}', "invalid build id ''"),
        (b'{"id": "B1", "logs": ["a"]}', "'logs' is not a string"),
    ],
)
def test_bad_build_json(data: bytes, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        decode_build(data)


# Tar and gzip streams.


def test_the_archive_streams_in_bounded_chunks(tmp_path: Path) -> None:
    image = tmp_path / "image.tar"
    image.write_bytes(os.urandom(3 * 1024 * 1024 + 7))
    with open(image, "rb") as source:
        chunks = list(
            write_archive(b'{"id": "B1"}', "app.B1.tar", iter_chunks(source), image.stat().st_size)
        )
    assert all(0 < len(c) <= 512 * 1024 for c in chunks)
    raw = gziplib.decompress(b"".join(chunks))
    assert len(raw) % tarfile.RECORDSIZE == 0
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == ["build.json", "app.B1.tar"]
        assert tar.extractfile(members[1]).read() == image.read_bytes()  # type: ignore[union-attr]


def test_a_member_must_be_the_size_it_announces() -> None:
    writer = TarWriter()
    with pytest.raises(InvalidArgument, match="3 bytes instead of 4"):
        list(writer.member(file_info("x", 4, 0), [b"abc"]))
    with pytest.raises(InvalidArgument, match="more than its 2 bytes"):
        list(writer.member(file_info("y", 2, 0), [b"abc"]))


def test_gunzip() -> None:
    data = os.urandom(100_000) + b"z" * 2_000_000
    assert b"".join(gunzip(chunks_of(b"".join(gzip([data]))))) == data
    two = gziplib.compress(b"one") + gziplib.compress(b"two")
    assert b"".join(gunzip(chunks_of(two, 7))) == b"onetwo"
    assert b"".join(gunzip([b"plain ", b"tar"])) == b"plain tar"
    with pytest.raises(InvalidArgument, match="^the archive is empty$"):
        list(gunzip([b"", b""]))
    whole = gziplib.compress(data)
    with pytest.raises(InvalidArgument, match="^the archive is truncated"):
        list(gunzip(chunks_of(whole[:-1])))
    bad = whole[:-8] + bytes([whole[-8] ^ 1]) + whole[-7:]
    with pytest.raises(InvalidArgument, match="^the archive is corrupt: .*incorrect data check"):
        list(gunzip(chunks_of(bad)))


def test_unpack_spools_image_tars_and_skips_the_rest(tmp_path: Path) -> None:
    archive = gziplib.compress(
        tar_bytes(
            [
                ("./build.json", b"{}"),
                ("notes.txt", b"ignored"),
                ("nested/x.tar", b"ignored too"),
                ("web.B1.tar", b"w" * 5000),
                ("worker.B1.tar", b"k" * 10),
            ]
        )
    )
    found = unpack(chunks_of(archive), tmp_path)
    assert found.build_json == b"{}"
    assert {name: path.read_bytes() for name, path in found.tars.items()} == {
        "web.B1.tar": b"w" * 5000,
        "worker.B1.tar": b"k" * 10,
    }


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([("build.json", b"{}"), ("build.json", b"{}")], "holds build.json twice"),
        ([("a.tar", b""), ("./a.tar", b"")], "holds a.tar twice"),
        ([("build.json", b"x" * 101)], "build.json is too large"),
    ],
)
def test_unpack_refuses(
    entries: list[tuple[str, bytes]], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(buildarchive, "MAX_BUILD_JSON", 100)
    with pytest.raises(InvalidArgument, match=message):
        unpack([gziplib.compress(tar_bytes(entries))], tmp_path)


def test_unpack_reads_to_the_gzip_trailer(tmp_path: Path) -> None:
    archive = gziplib.compress(tar_bytes([("build.json", b"{}")]))
    with pytest.raises(InvalidArgument, match="truncated"):
        unpack([archive[:-3]], tmp_path)


# Image tars.


def saved_tar(tags: dict[str, list[str]]) -> bytes:
    """A `docker save`-shaped tar: one config per image, a shared layer, manifest.json."""
    entries = [("shared/layer.tar", b"L" * 3000)]
    manifest = []
    for config, repo_tags in tags.items():
        entries.append((f"{config}.json", config.encode()))
        manifest.append({"Config": f"{config}.json", "RepoTags": repo_tags, "Layers": []})
    entries.append(("manifest.json", json.dumps(manifest).encode()))
    entries.append(("repositories", json.dumps({"r/app": {"web.B1": "x"}}).encode()))
    return tar_bytes(entries)


def test_retag_renames_images_and_copies_everything_else() -> None:
    source = saved_tar({"c1": ["r/app:web.B1", "r/app:worker.B1"], "c2": ["other:tag"]})
    names = {"r/app:web.B1": "app:web.B1", "r/app:worker.B1": "app:worker.B1"}

    copied = b"".join(retag(chunks_of(source, 999), names.get))

    with tarfile.open(fileobj=io.BytesIO(copied)) as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
        repositories = json.loads(tar.extractfile("repositories").read())  # type: ignore[union-attr]
        assert tar.extractfile("shared/layer.tar").read() == b"L" * 3000  # type: ignore[union-attr]
    assert [m["RepoTags"] for m in manifest] == [["app:web.B1", "app:worker.B1"], None]
    assert repositories == {"app": {"web.B1": "x"}}


def test_image_tar_kinds_and_ids(tmp_path: Path) -> None:
    saved = tmp_path / "saved.tar"
    saved.write_bytes(saved_tar({"c1": ["r/app:web.B1"]}))
    oci = tmp_path / "oci.tar"
    oci.write_bytes(tar_bytes([("oci-layout", b"{}"), ("index.json", b"{}")]))
    other = tmp_path / "other.tar"
    other.write_bytes(tar_bytes([("x", b"")]))
    assert (kind_of(saved), kind_of(oci)) == (DOCKER, OCI)
    with pytest.raises(InvalidArgument, match="not an image tar"):
        kind_of(other)
    import hashlib

    [image] = saved_images(saved)
    assert image.id == "sha256:" + hashlib.sha256(b"c1").hexdigest()
    assert image.repo_tags == ("r/app:web.B1",)
    assert split_name("127.0.0.1:5000/app:web.B1") == ("127.0.0.1:5000/app", "web.B1")
    assert split_name("127.0.0.1:5000/app") == ("127.0.0.1:5000/app", "")


def test_plan_finds_each_services_image(tmp_path: Path) -> None:
    saved = tmp_path / "saved.tar"
    saved.write_bytes(
        saved_tar({"c1": ["reg:5000/app:web.B1", "app:worker.B1"], "c2": ["app:old.B0"]})
    )
    oci = tmp_path / "oci.tar"
    oci.write_bytes(tar_bytes([("oci-layout", b"{}")]))
    record = BuildRecord(id="B1", app="app")

    sources = plan(record, {"app.B1.tar": saved, "cache.B1.tar": oci})

    assert [(s.service, s.kind, s.name) for s in sources] == [
        ("cache", OCI, "cache.B1.tar"),
        ("web", DOCKER, "app.B1.tar"),
        ("worker", DOCKER, "app.B1.tar"),
    ]
    assert sources[1].image == sources[2].image != ""
    with pytest.raises(InvalidArgument, match="must be named <service>.B1.tar"):
        plan(record, {"cache.B2.tar": oci})
    with pytest.raises(InvalidArgument, match="two images for service web"):
        plan(record, {"app.B1.tar": saved, "web.B1.tar": oci})
    with pytest.raises(InvalidArgument, match="invalid service name 'Web'"):
        plan(record, {"Web.B1.tar": oci})
    with pytest.raises(InvalidArgument, match="no image tagged <service>.B9"):
        plan(BuildRecord(id="B9", app="app"), {"app.B1.tar": saved})


def test_services_of_a_build_come_from_its_tags() -> None:
    tags = ["web.B1", "worker.B1", "web.B2", "latest", "a.b.B1"]
    assert services_of(tags, "B1") == ["web", "worker"]


def test_log_batches_stay_small() -> None:
    lines = ["x" * 400_000] * 5 + ["tail"]
    batches = list(log_batches(lines))
    assert [len(b) for b in batches] == [2, 2, 2]
    assert [line for b in batches for line in b] == lines


@pytest.mark.parametrize(
    "module",
    [
        "services.registry.export",
        "services.registry.imports",
        "services.registry.buildarchive",
        "services.registry.imagetar",
        "services.registry.tarstream",
        "services.registry.records",
    ],
)
def test_transfer_cores_import_no_grpc(module: str) -> None:
    probe = (
        f"import sys, {module}\n"
        "print(','.join(sorted(m for m in sys.modules if m == 'grpc' or m.endswith('_pb2'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_unpack_scans_the_compressed_layers_of_each_image_tar(tmp_path: Path) -> None:
    layer = gziplib.compress(b"a layer" * 1000)
    image = tar_bytes([("manifest.json", b"[]"), ("abc/layer.tar", layer), ("c.json", b"{}")])
    archive = gziplib.compress(tar_bytes([("build.json", b"{}"), ("web.B1.tar", image)]))
    found = unpack(chunks_of(archive), tmp_path)
    (digests,) = found.layers["web.B1.tar"].values()
    assert digests.digest == f"sha256:{hashlib.sha256(layer).hexdigest()}"
    assert digests.diff_id == f"sha256:{hashlib.sha256(b'a layer' * 1000).hexdigest()}"
    assert list(found.layers["web.B1.tar"]) == ["abc/layer.tar"]
