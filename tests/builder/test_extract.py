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


def _dir(name: str, mode: int = 0o755) -> Entry:
    def add(tar: tarfile.TarFile) -> None:
        info = tarfile.TarInfo(name)
        info.type = tarfile.DIRTYPE
        info.mode = mode
        tar.addfile(info)

    return add


def test_a_folder_replaced_by_a_repointed_link_never_has_an_outside_file_chmodded(
    layout: tuple[Path, Path],
) -> None:
    outside, dest = layout
    target = outside / "target"
    target.write_text("keep")
    target.chmod(0o600)
    # `x` is a folder (0777, chmodded at the end), then a link through `l`, which points
    # deep inside when `x` is checked and is re-pointed to `.` afterwards: `x` then
    # resolves three levels above the build folder, onto `outside/target`.
    archive = _archive(
        outside,
        _dir("a/b/c"),
        _link("l", "a/b/c"),
        _dir("x", 0o777),
        _link("x", "l/l/l/../../../outside/target"),
        _link("l", "."),
    )
    try:
        _extract(archive, dest)
    except InvalidArgument as err:
        assert str(err).startswith("archive rejected: ")
    assert target.stat().st_mode & 0o777 == 0o600
    assert target.read_text() == "keep"
    assert (dest / "x").is_symlink()


@pytest.mark.parametrize(
    "entries",
    [
        [_link("a", "b"), _link("b", "a"), _file("a/f")],
        [_link("a", "a"), _file("a/f")],
        [_link("a", "a"), _dir("a/b")],
    ],
    ids=["two-link-loop", "self-loop", "self-loop-dir"],
)
def test_symlink_loops_are_rejected_without_a_server_path(
    layout: tuple[Path, Path], entries: list[Entry]
) -> None:
    outside, dest = layout
    with pytest.raises(InvalidArgument) as err:
        _extract(_archive(outside, *entries), dest)
    message = str(err.value)
    assert message.startswith("archive rejected: ")
    assert "Errno" not in message
    assert str(dest) not in message and str(outside) not in message


def test_a_link_loop_as_a_link_target_is_rejected(layout: tuple[Path, Path]) -> None:
    outside, dest = layout
    archive = _archive(outside, _link("a", "b/x"), _link("b", "a/y"), _link("c", "a/z"))
    with pytest.raises(InvalidArgument, match="link points outside the build folder"):
        _extract(archive, dest)


def test_an_oversized_extended_header_is_refused_before_it_is_read(
    layout: tuple[Path, Path],
) -> None:
    outside, dest = layout
    path = outside / "pax.tar.gz"
    with tarfile.open(path, "w:gz", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("x" * (1024 * 1024))
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(InvalidArgument) as err:
        _extract(path, dest)
    message = str(err.value)
    assert message.startswith("archive rejected: an extended header of ")
    assert message.endswith("bytes (the limit is 65536)")
    assert len(message) < 200


def test_a_long_name_is_refused_and_not_echoed(layout: tuple[Path, Path]) -> None:
    outside, dest = layout
    path = outside / "long.tar.gz"
    with tarfile.open(path, "w:gz", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("d/" * 4000 + "f")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(InvalidArgument) as err:
        _extract(path, dest)
    assert str(err.value) == "archive rejected: a path longer than 4096 bytes"


def test_a_long_path_component_is_refused_in_one_short_line(layout: tuple[Path, Path]) -> None:
    outside, dest = layout
    archive = _archive(outside, _file("n" * 300))
    with pytest.raises(InvalidArgument) as err:
        _extract(archive, dest)
    message = str(err.value)
    assert message.startswith("archive rejected: a path component longer than")
    assert len(message) <= 500 and "\n" not in message


def test_a_file_where_a_folder_is_needed_is_rejected(layout: tuple[Path, Path]) -> None:
    outside, dest = layout
    archive = _archive(outside, _file("a"), _file("a/b"))
    with pytest.raises(InvalidArgument, match="archive rejected: a is not a folder: a/b"):
        _extract(archive, dest)
