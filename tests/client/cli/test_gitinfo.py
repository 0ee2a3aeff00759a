"""The default build description from git."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from client.cli.gitinfo import describe


def _git(folder: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(folder), *args], capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    folder = tmp_path / "repo"
    folder.mkdir()
    _git(folder, "init", "-q")
    _git(folder, "config", "user.email", "t@example.com")
    _git(folder, "config", "user.name", "T")
    (folder / "app").mkdir()
    (folder / "app" / "main.py").write_text("print(1)\n")
    _git(folder, "add", ".")
    _git(folder, "commit", "-q", "-m", "fix header\n\nbody text")
    return folder


def test_clean_tree(repo: Path) -> None:
    sha = _git(repo, "rev-parse", "HEAD")
    assert describe(repo) == (sha, f"build {sha[:10]} fix header")
    assert describe(repo / "app") == (sha, f"build {sha[:10]} fix header")


def test_dirty_or_untracked_tree(repo: Path) -> None:
    (repo / "new.txt").write_text("x")
    assert describe(repo) is None
    (repo / "new.txt").unlink()
    (repo / "app" / "main.py").write_text("print(2)\n")
    assert describe(repo) is None


def test_not_a_repository(tmp_path: Path) -> None:
    assert describe(tmp_path) is None
    assert describe(tmp_path / "missing") is None


def test_git_missing(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    assert describe(repo) is None
