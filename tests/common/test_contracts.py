"""The import-linter contracts in pyproject.toml hold on the tree and catch a broken layer.

Each check runs `lint-imports` on a copy of the source tree, so a deliberately bad import
never touches the real one."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _copy_tree(dest: Path) -> Path:
    for folder in ("client", "services", "protos"):
        shutil.copytree(ROOT / folder, dest / folder, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", dest / "pyproject.toml")
    return dest


def _lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    """`lint-imports` with the copy's pyproject.toml, resolving its packages from the copy
    (PYTHONPATH comes before the editable install's finder)."""
    env = {**os.environ, "PYTHONPATH": f"{tree}{os.pathsep}{tree / 'protos'}"}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _append(path: Path, line: str) -> None:
    with path.open("a") as out:
        out.write(f"\n{line}\n")


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return _copy_tree(tmp_path / "src")


def test_contracts_hold_on_the_tree(tree: Path) -> None:
    result = _lint_imports(tree)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_the_copy_is_what_gets_checked(tree: Path) -> None:
    """The failing checks below mean something only if the copy, not the worktree, is read."""
    probe = "import client, services; print(client.__file__); print(services.__file__)"
    env = {**os.environ, "PYTHONPATH": f"{tree}{os.pathsep}{tree / 'protos'}"}
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=tree, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert all(line.startswith(str(tree)) for line in out.stdout.split()), out.stdout


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        (
            "services/archive/servicer.py",
            "from client.cli import render",
            "services never import the CLI",
        ),
        (
            "services/registry/servicer.py",
            "from services.builder import core",
            "services are independent (they share only services.common)",
        ),
        (
            "client/kernel/types.py",
            "import grpc",
            "the kernel is grpc-free and imports nothing above it",
        ),
        (
            "client/kernel/errors.py",
            "from client.api import channel",
            "the kernel is grpc-free and imports nothing above it",
        ),
        (
            "client/api/builder.py",
            "from client.cli import config",
            "the client library does not import the CLI",
        ),
        (
            "services/common/logs.py",
            "from services.metadata import store",
            "services.common imports no individual service",
        ),
        (
            "services/builder/core.py",
            "from slipway.builder.v1 import builder_pb2",
            "domain cores import neither grpc nor generated protobuf code",
        ),
        (
            "services/metadata/store.py",
            "import grpc",
            "domain cores import neither grpc nor generated protobuf code",
        ),
    ],
)
def test_a_forbidden_import_breaks_its_contract(
    tree: Path, module: str, line: str, contract: str
) -> None:
    _append(tree / module, line)
    result = _lint_imports(tree)
    assert result.returncode != 0, result.stdout
    broken = [
        c.removesuffix(" BROKEN") for c in result.stdout.splitlines() if c.endswith(" BROKEN")
    ]
    assert contract in broken, result.stdout
