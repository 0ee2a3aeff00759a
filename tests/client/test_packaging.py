"""`pip install slipway` is the CLI alone: the client imports nothing from the rack extra.

The client's modules are imported in a subprocess whose import system refuses the rack's
dependencies, as on a machine where only the base dependencies are installed."""

from __future__ import annotations

import importlib.metadata
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Top-level modules a CLI-only install lacks: the services' (the `rack` extra and what it
# brings) and the code generator's (grpc tries grpc_tools and does without it).
RACK_ONLY = (
    "docker",
    "peewee",
    "playhouse",
    "psycopg2",
    "boto3",
    "botocore",
    "grpc_reflection",
    "grpc_tools",
)
# Distributions the base install must not carry.
RACK_DISTRIBUTIONS = ("docker", "peewee", "psycopg2-binary", "boto3", "grpcio-reflection")

# A meta-path finder ahead of every other that refuses RACK_ONLY.
PRELUDE = f"""
import sys

class _Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {RACK_ONLY!r}:
            raise ImportError(f"{{name}} is not installed (CLI-only install)")
        return None

sys.meta_path.insert(0, _Refuse())
"""

IMPORT_ALL = """
import importlib, json, pkgutil, sys
before = set(sys.modules)
import client

names = sorted(m.name for m in pkgutil.walk_packages(client.__path__, "client."))
for name in names:
    importlib.import_module(name)
third_party = sorted({
    m.split(".")[0] for m in set(sys.modules) - before
    if m.split(".")[0] not in sys.stdlib_module_names and m.split(".")[0] != "client"
})
print(json.dumps({"modules": names, "third_party": third_party}))
"""


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", PRELUDE + code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
    assert match, requirement
    return re.sub(r"[-_.]+", "-", match.group(0)).lower()


def _project() -> dict[str, object]:
    with open(ROOT / "pyproject.toml", "rb") as f:
        project = tomllib.load(f)["project"]
    assert isinstance(project, dict)
    return project


def _base() -> set[str]:
    return {_name(r) for r in _project()["dependencies"]}  # type: ignore[attr-defined]


def _extra(name: str) -> set[str]:
    extras = _project()["optional-dependencies"]
    return {_name(r) for r in extras[name]}  # type: ignore[index]


def _closure(names: set[str]) -> set[str]:
    """The installed distributions `names` bring, following their (non-extra) requirements."""
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for req in importlib.metadata.requires(name) or []:
            if "extra ==" not in req:
                todo.append(_name(req))
    return seen


def test_the_prelude_refuses_the_rack_dependencies() -> None:
    result = _run("import docker")
    assert result.returncode != 0
    assert "docker is not installed (CLI-only install)" in result.stderr


def test_every_client_module_imports_without_the_rack_dependencies() -> None:
    result = _run(IMPORT_ALL)
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    for expected in ("client.kernel.errors", "client.api.channel", "client.cli.main"):
        assert expected in found["modules"]
    assert any(m.startswith("client.cli.commands.") for m in found["modules"])
    assert "client.cli.localrack.engine" in found["modules"]
    # What the client does import is covered by the base dependencies.
    provided = _closure(_base()) | {"slipway"}
    owners = importlib.metadata.packages_distributions()
    # Modules no distribution owns (Cython's runtime modules) are skipped.
    for module in found["third_party"]:
        dists = {_name(d) for d in owners.get(module, [])}
        assert not dists or dists & provided, (
            f"{module} (from {dists}) is not in the base dependencies"
        )


def test_slipway_help_runs_without_the_rack_dependencies() -> None:
    result = _run("from client.cli.main import main\nraise SystemExit(main(['--help']))")
    assert result.returncode == 0, result.stderr
    reference = subprocess.run(
        [str(Path(sys.executable).with_name("slipway")), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.stdout == reference.stdout
    assert "usage" in result.stdout.lower()


def test_a_local_rack_without_the_docker_sdk_is_a_clear_error() -> None:
    code = (
        "from client.cli.localrack import engine\n"
        "from client.kernel.errors import Unavailable\n"
        "try:\n"
        "    engine.engine_answers()\n"
        "except Unavailable as err:\n"
        "    print(err)\n"
    )
    result = _run(code)
    assert result.returncode == 0, result.stderr
    assert "install slipway[rack]" in result.stdout


def test_base_dependencies_are_the_cli_and_the_rack_extra_adds_the_services() -> None:
    base, rack, dev = _base(), _extra("rack"), _extra("dev")
    for dist in RACK_DISTRIBUTIONS:
        assert dist not in base, f"{dist} is a base dependency"
        assert dist in rack, f"{dist} is missing from the rack extra"
    for dist in ("grpcio", "protobuf", "rich", "pyyaml"):
        assert dist in base
    assert "slipway" in dev, "dev must include the rack extra"
    for tool in ("pytest", "mypy", "ruff", "import-linter", "mypy-protobuf", "grpcio-tools"):
        assert tool in dev


@pytest.mark.parametrize("module", ["docker", "peewee", "psycopg2", "boto3"])
def test_what_the_services_import_is_in_the_rack_extra(module: str) -> None:
    dists = {_name(d) for d in importlib.metadata.packages_distributions().get(module, [])}
    assert dists & _extra("rack"), f"{module} ({dists}) is not in the rack extra"
