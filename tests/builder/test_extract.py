"""Safe extraction: every malicious archive is rejected and nothing lands outside."""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from client.kernel.errors import InvalidArgument
from client.kernel.streams import iter_chunks
from services.builder.extract import Limits, extract

LIMITS = Limits(max_bytes=1_000_000, max_files=100)
Entry = Callable[[tarfile.TarFile], None]


def _file(name: str, data: bytes = b"x") -> Entry:
    def add(tar: tarfile.TarFile) -> None:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))

    return add


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> Entry:
    def add(tar: tarfile.TarFile) -> None:
        info = tarfile.TarInfo(name)
        info.type = kind
        info.linkname = target
        tar.addfile(info)

    return add


def _node(name: str, kind: bytes) -> Entry:
    def add(tar: tarfile.TarFile) -> None:
        info = tarfile.TarInfo(name)
        info.type = kind
        tar.addfile(info)

    return add


def _archive(tmp: Path, *entries: Entry) -> Path:
    """Writes a gzip'd tar to a temporary file, entry by entry (no checks on the way)."""
    path = tmp / "archive.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for entry in entries:
            entry(tar)
    return path


def _extract(archive: Path, dest: Path, limits: Limits = LIMITS) -> int:
    with open(archive, "rb") as f:
        return extract(iter_chunks(f, 100), dest, limits)


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.fixture
def layout(tmp_path: Path) -> tuple[Path, Path]:
    """(folder the archive file lives in, the build's src folder inside a scratch dir)."""
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "scratch" / "BTEST" / "src"
    return outside, dest


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([_file("/etc/evil")], "archive rejected: absolute path: /etc/evil"),
        ([_file("../x")], "archive rejected: path escapes the build folder: ../x"),
        ([_file("a/../../x")], "archive rejected: path escapes the build folder: a/../../x"),
        (
            [_link("esc", "../../outside")],
            "archive rejected: link points outside the build folder: esc -> ../../outside",
        ),
        (
            [_link("abs", "/etc/passwd")],
            "archive rejected: link points outside the build folder: abs -> /etc/passwd",
        ),
        (
            [_link("hard", "../../outside/secret", tarfile.LNKTYPE)],
            "archive rejected: path escapes the build folder: ../../outside/secret",
        ),
        (
            [_link("hard", "/etc/passwd", tarfile.LNKTYPE)],
            "archive rejected: absolute path: /etc/passwd",
        ),
        ([_node("dev", tarfile.CHRTYPE)], "archive rejected: device or fifo node: dev"),
        ([_node("blk", tarfile.BLKTYPE)], "archive rejected: device or fifo node: blk"),
        ([_node("pipe", tarfile.FIFOTYPE)], "archive rejected: device or fifo node: pipe"),
        (
            [_file("big", b"x" * 600_000), _file("big2", b"x" * 600_000)],
            "archive rejected: larger than 1000000 bytes once extracted",
        ),
        ([_file(f"f{i}") for i in range(101)], "archive rejected: more than 100 files"),
    ],
    ids=[
        "absolute",
        "dotdot",
        "dotdot-inner",
        "symlink-escape",
        "symlink-absolute",
        "hardlink-escape",
        "hardlink-absolute",
        "chardev",
        "blockdev",
        "fifo",
        "too-big",
        "too-many",
    ],
)
def test_rejects_malicious_archives(
    layout: tuple[Path, Path], entries: list[Entry], message: str
) -> None:
    outside, dest = layout
    (outside / "secret").write_text("secret")
    archive = _archive(outside, *entries)
    before = _tree(outside)
    with pytest.raises(InvalidArgument) as err:
        _extract(archive, dest)
    assert str(err.value) == message
    assert _tree(outside) == before
    assert (outside / "secret").read_text() == "secret"
    scratch = dest.parent.parent
    assert all(str(p).startswith(str(dest)) for p in scratch.rglob("*") if p != dest.parent)


def test_a_symlink_planted_earlier_cannot_carry_a_later_entry_out(
    layout: tuple[Path, Path],
) -> None:
    outside, dest = layout
    # `dir -> .` is inside, and so is `up -> dir/..` when checked; but once both exist,
    # `up` resolves outside and a file under it must not be written.
    archive = _archive(outside, _link("up", "dir/.."), _link("dir", "."), _file("up/evil", b"evil"))
    with pytest.raises(InvalidArgument, match="escapes the build folder"):
        _extract(archive, dest)
    assert not list(dest.parent.parent.parent.rglob("evil"))


def test_writing_over_a_symlink_replaces_it_instead_of_following(
    layout: tuple[Path, Path],
) -> None:
    outside, dest = layout
    archive = _archive(
        outside, _file("target", b"original"), _link("alias", "target"), _file("alias", b"replaced")
    )
    _extract(archive, dest)
    assert (dest / "target").read_bytes() == b"original"
    assert not (dest / "alias").is_symlink()
    assert (dest / "alias").read_bytes() == b"replaced"


def test_good_archive_keeps_symlinks_and_modes(layout: tuple[Path, Path]) -> None:
    outside, dest = layout
    path = outside / "good.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name, data, mode in (
            ("app/run.sh", b"#!/bin/sh\n", 0o755),
            ("app/data.txt", b"hello", 0o644),
        ):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
        _link("app/current", "data.txt")(tar)
        _link("top", "app/run.sh")(tar)
        _link("hard.txt", "app/data.txt", tarfile.LNKTYPE)(tar)
        info = tarfile.TarInfo("./empty")
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
    assert _extract(path, dest) == 6
    assert os.readlink(dest / "app" / "current") == "data.txt"
    assert (dest / "app" / "current").read_text() == "hello"
    assert os.readlink(dest / "top") == "app/run.sh"
    assert os.stat(dest / "app" / "run.sh").st_mode & 0o777 == 0o755
    assert (dest / "hard.txt").read_text() == "hello"
    assert (dest / "empty").is_dir()


def test_not_a_gzipped_tar_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="archive rejected: not a valid gzip'd tar"):
        extract([b"this is not a tarball"], tmp_path / "src", LIMITS)


def test_truncated_archive_is_rejected(layout: tuple[Path, Path]) -> None:
    outside, dest = layout
    archive = _archive(outside, _file("a", os.urandom(50_000)))
    data = archive.read_bytes()
    with pytest.raises(InvalidArgument, match="archive rejected: not a valid gzip'd tar"):
        extract([data[: len(data) // 2]], dest, LIMITS)
