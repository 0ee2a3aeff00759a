"""The build context goes to the engine exactly as the client sent it."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

from client.kernel.streams import reader
from services.common.docker.streams import context_tar


def _tree(root: Path) -> Path:
    ctx = root / "src" / "app"
    (ctx / "sub").mkdir(parents=True)
    (ctx / "Dockerfile").write_text("FROM busybox\n")
    (ctx / "sub" / "data.txt").write_text("data\n")
    (ctx / "ignored-by-docker-py.log").write_text("kept: the client already filtered\n")
    (ctx / ".dockerignore").write_text("*.log\n")
    os.symlink("sub/data.txt", ctx / "link")
    os.chown(ctx / "sub" / "data.txt", 1000, 1000)  # the engine must see root's files
    (root / "src" / "Dockerfile.outside").write_text("FROM busybox\nCOPY . /ctx\n")
    return ctx


def test_every_file_goes_as_is_owned_by_root(tmp_path: Path) -> None:
    ctx = _tree(tmp_path)
    with context_tar(str(ctx), str(ctx / "Dockerfile")) as (chunks, name):
        with tarfile.open(fileobj=reader(chunks), mode="r|") as tar:
            members = {m.name: m for m in tar.getmembers()}
    assert name == "Dockerfile"
    assert set(members) == {
        ".dockerignore",
        "Dockerfile",
        "ignored-by-docker-py.log",
        "link",
        "sub",
        "sub/data.txt",
    }
    assert members["link"].issym() and members["link"].linkname == "sub/data.txt"
    assert {(m.uid, m.gid) for m in members.values()} == {(0, 0)}


def test_a_dockerfile_outside_the_context_is_added_under_a_generated_name(
    tmp_path: Path,
) -> None:
    ctx = _tree(tmp_path)
    outside = tmp_path / "src" / "Dockerfile.outside"
    with context_tar(str(ctx), str(outside)) as (chunks, name):
        with tarfile.open(fileobj=reader(chunks), mode="r|") as tar:
            names = []
            for member in tar:
                names.append(member.name)
                if member.name == name:
                    extracted = tar.extractfile(member)
                    assert extracted is not None
                    assert extracted.read() == outside.read_bytes()
    assert name.startswith(".dockerfile.") and name in names
    assert "Dockerfile.outside" not in names
