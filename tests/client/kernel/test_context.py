"""Packing a source folder: what goes in, in what form, and in how much memory."""

from __future__ import annotations

import gc
import hashlib
import io
import os
import socket
import tarfile
import tempfile
import tracemalloc
from pathlib import Path

import pytest

from client.kernel.context import always_included, manifest_dockerfiles, pack
from client.kernel.errors import InvalidArgument

MANIFEST = """
services:
  web:
    build: .
  api:
    build:
      path: api
      manifest: Dockerfile.api
  worker:
    build: worker
  db:
    image: postgres
"""


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def _pack(root: Path, manifest: str = "convox.yml") -> tuple[dict[str, tarfile.TarInfo], bytes]:
    out = io.BytesIO()
    size, sha = pack(root, out, manifest)
    data = out.getvalue()
    assert size == len(data)
    assert sha == hashlib.sha256(data).hexdigest()
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        members = {m.name: m for m in tar.getmembers()}
    return members, data


def test_ignored_files_are_left_out(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "app.py": "x",
            "notes.md": "x",
            "src/deep/readme.md": "x",
            "node_modules/a/b.js": "x",
            ".git/HEAD": "x",
            ".dockerignore": "*.md\nnode_modules\n",
        },
    )
    members, _ = _pack(tmp_path)
    assert sorted(members) == [
        ".dockerignore",
        ".git",
        ".git/HEAD",
        "app.py",
        "src",
        "src/deep",
        "src/deep/readme.md",
    ]


def test_manifest_dockerfiles_and_dockerignore_always_go_in(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "convox.yml": MANIFEST,
            "Dockerfile": "FROM busybox",
            "api/Dockerfile.api": "FROM busybox",
            "api/code.py": "x",
            "worker/Dockerfile": "FROM busybox",
            "other": "x",
            ".dockerignore": "convox.yml\nDockerfile\napi\nworker\n.dockerignore\nother\n",
        },
    )
    members, _ = _pack(tmp_path)
    assert sorted(members) == [
        ".dockerignore",
        "Dockerfile",
        "api",
        "api/Dockerfile.api",
        "convox.yml",
        "worker",
        "worker/Dockerfile",
    ]
    assert members["api/Dockerfile.api"].isreg()


def test_other_manifest_name(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "deploy/other.yml": "services:\n  web:\n    build: web\n",
            "web/Dockerfile": "FROM busybox",
            ".dockerignore": "*\n",
        },
    )
    members, _ = _pack(tmp_path, "deploy/other.yml")
    assert sorted(members) == [
        ".dockerignore",
        "deploy",
        "deploy/other.yml",
        "web",
        "web/Dockerfile",
    ]


def test_manifest_dockerfiles(tmp_path: Path) -> None:
    (tmp_path / "convox.yml").write_text(MANIFEST)
    assert manifest_dockerfiles(tmp_path / "convox.yml") == [
        "./Dockerfile",
        "api/Dockerfile.api",
        "worker/Dockerfile",
    ]
    assert always_included(tmp_path) == [
        ".dockerignore",
        "Dockerfile",
        "api/Dockerfile.api",
        "convox.yml",
        "worker/Dockerfile",
    ]


@pytest.mark.parametrize("text", [None, "services: [unclosed", "just a string", "services: 3"])
def test_missing_or_broken_manifest_is_not_an_error(tmp_path: Path, text: str | None) -> None:
    _write(tmp_path, {"app.py": "x"})
    if text is not None:
        (tmp_path / "convox.yml").write_text(text)
    members, _ = _pack(tmp_path)
    assert "app.py" in members


def test_outside_paths_are_not_forced(tmp_path: Path) -> None:
    (tmp_path / "convox.yml").write_text("services:\n  web:\n    build: ../elsewhere\n")
    assert always_included(tmp_path) == [".dockerignore", "convox.yml"]


def test_symlinks_stay_symlinks(tmp_path: Path) -> None:
    _write(tmp_path, {"real/file.txt": "hello"})
    (tmp_path / "to-file").symlink_to("real/file.txt")
    (tmp_path / "to-dir").symlink_to("real")
    (tmp_path / "outside").symlink_to("/etc/passwd")
    members, _ = _pack(tmp_path)
    assert members["to-file"].issym() and members["to-file"].linkname == "real/file.txt"
    assert members["to-dir"].issym() and "to-dir/file.txt" not in members
    assert members["outside"].issym() and members["outside"].linkname == "/etc/passwd"


def test_entries_are_relative_and_owned_by_root(tmp_path: Path) -> None:
    _write(tmp_path, {"a/b.txt": "content"})
    (tmp_path / "a" / "b.txt").chmod(0o640)
    members, _ = _pack(tmp_path)
    info = members["a/b.txt"]
    assert (info.uid, info.gid, info.uname, info.gname) == (0, 0, "", "")
    assert info.mode & 0o777 == 0o640 and info.size == len("content")
    assert all(not name.startswith(("/", "./")) for name in members)


def test_sockets_are_left_out(tmp_path: Path) -> None:
    _write(tmp_path, {"app.py": "x"})
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(tmp_path / "agent.sock"))
        members, _ = _pack(tmp_path)
    assert sorted(members) == ["app.py"]


def test_packing_is_deterministic(tmp_path: Path) -> None:
    _write(tmp_path, {"b": "1", "a/c": "2", "a/b": "3"})
    first = _pack(tmp_path)[1]
    assert _pack(tmp_path)[1] == first
    with tarfile.open(fileobj=io.BytesIO(first), mode="r:gz") as tar:
        assert tar.getnames() == ["a", "a/b", "a/c", "b"]


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="no such directory"):
        pack(tmp_path / "nope", io.BytesIO())


def test_bad_dockerignore_is_reported(tmp_path: Path) -> None:
    _write(tmp_path, {".dockerignore": "ok\n[\n"})
    with pytest.raises(InvalidArgument, match=r"\.dockerignore: syntax error in pattern: \["):
        pack(tmp_path, io.BytesIO())


def test_memory_stays_flat(tmp_path: Path) -> None:
    """A 50 MB file is streamed through: Python's heap never holds more than a few chunks."""
    big = tmp_path / "big.bin"
    with open(big, "wb") as f:
        for _ in range(50):
            f.write(os.urandom(1 << 20))
    gc.collect()
    with tempfile.TemporaryFile() as out:
        tracemalloc.start()
        try:
            size, _ = pack(tmp_path, out)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert out.tell() == size
    assert peak < 4 * 1024 * 1024, f"peak {peak} bytes while packing 50 MB"


def test_bad_regexp_is_reported_when_used(tmp_path: Path) -> None:
    """Like Docker, a pattern whose regexp Go rejects fails only once a path meets it."""
    _write(tmp_path, {"app.py": "x", ".dockerignore": "app.py\n!a\\q\n"})
    with pytest.raises(InvalidArgument, match=r"^\.dockerignore: syntax error in pattern: a\\q$"):
        pack(tmp_path, io.BytesIO())
    (tmp_path / ".dockerignore").write_text("!a\\q\n")
    members, _ = _pack(tmp_path)
    assert sorted(members) == [".dockerignore", "app.py"]


def test_reincluded_entries_come_with_their_folders(tmp_path: Path) -> None:
    """Docker sends `dir/keep` alone and its receiver creates `dir`; the archive holds `dir`
    itself, so it is a tree whatever extracts it. A wildcard exception such as `!**/keep`
    does not reach into a pruned folder (the classic builder's rule)."""
    _write(tmp_path, {"dir/keep": "x", "dir/drop": "x", "other/sub/keep": "x"})
    (tmp_path / ".dockerignore").write_text("dir\nother\n!dir/keep\n!**/keep\n")
    members, _ = _pack(tmp_path)
    assert sorted(members) == [".dockerignore", "dir", "dir/keep"]
    assert members["dir"].isdir()
