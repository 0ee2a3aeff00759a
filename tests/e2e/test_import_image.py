"""`slipway builds import-image` end to end: a real rack, the real engine and registry,
driven through the `slipway` command."""

from __future__ import annotations

import re
import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.conftest import RackHandle, missing_app
from tests.e2e.test_transfer import registry_tags

pytestmark = pytest.mark.docker

IMPORTED = re.compile(r"^Build:   (B[A-Z]{10})\nRelease: (R[A-Z]{10})\n$")


@dataclass(frozen=True)
class Source:
    """An image in the rack's registry under a repository of its own, not in the engine."""

    ref: str
    marker: str


def docker(*args: str, input: str | None = None) -> str:
    proc = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=300, input=input
    )
    assert proc.returncode == 0, f"docker {' '.join(args)}: {proc.stderr}"
    return proc.stdout


def push_source(rack: RackHandle) -> Source:
    marker = f"marker-{secrets.token_hex(6)}"
    ref = f"{rack.registry}/upstream-{secrets.token_hex(3)}:v1"
    dockerfile = f'FROM busybox\nRUN echo {marker} > /marker\nENTRYPOINT ["cat", "/marker"]\n'
    docker("build", "--no-cache", "-t", ref, "-", input=dockerfile)
    docker("push", ref)
    docker("rmi", ref)
    return Source(ref, marker)


@pytest.fixture(scope="module")
def source(rack: RackHandle) -> Source:
    return push_source(rack)


def run_from_registry(rack: RackHandle, app: str, tag: str) -> str:
    """Pulls `{registry}/{app}:{tag}` from the rack's registry afresh and runs it."""
    ref = f"{rack.registry}/{app}:{tag}"
    subprocess.run(["docker", "rmi", ref], capture_output=True)
    docker("pull", ref)
    try:
        return docker("run", "--rm", ref).strip()
    finally:
        docker("rmi", ref)


def info(rack: RackHandle, build: str, app: str) -> dict[str, str]:
    lines = rack.ok("builds", "info", build, "-a", app).splitlines()
    return {key: value.strip() for key, _, value in (line.partition("  ") for line in lines)}


def test_import_image_makes_a_build_of_web_with_a_release(
    rack: RackHandle, source: Source, tmp_path: Path
) -> None:
    app = f"imp-{secrets.token_hex(3)}"

    # Into an app that does not exist: refused before anything is pulled, nothing created.
    refused = rack.slipway("builds", "import-image", source.ref, "-a", app, cwd=tmp_path)
    assert (refused.code, refused.out, refused.err) == (1, "", missing_app(app) + "\n")
    assert app not in rack.apps()
    assert registry_tags(rack, app) == []

    rack.ok("apps", "create", app)
    res = rack.slipway("builds", "import-image", source.ref, "-a", app, cwd=tmp_path)

    assert res.code == 0, res
    assert res.err == "Importing image... OK\n"  # progress goes to stderr off a terminal
    match = IMPORTED.match(res.out)
    assert match, res.out
    build, release = match.groups()
    shown = info(rack, build, app)
    assert (shown["Id"], shown["Status"], shown["Release"]) == (build, "complete", release)
    assert shown["Description"] == f"import-image {source.ref}"
    logs = rack.ok("builds", "logs", build, "-a", app).splitlines()
    target = f"{rack.registry}/{app}:web.{build}"
    assert logs[0] == f"Running: docker pull {source.ref}"
    assert f"Running: docker tag {source.ref} {target}" in logs
    assert f"Running: docker push {target}" in logs
    releases = rack.ok("releases", "-a", app).splitlines()
    assert len(releases) == 2 and releases[1].split()[:2] == [release, build]
    assert run_from_registry(rack, app, f"web.{build}") == source.marker


def test_a_manifest_service_keeps_its_own_image_and_id_prints_the_release(
    rack: RackHandle, source: Source, tmp_path: Path
) -> None:
    other = push_source(rack)
    app = f"imp-{secrets.token_hex(3)}"
    rack.ok("apps", "create", app)
    (tmp_path / "convox.yml").write_text(
        f"services:\n  web:\n    build: .\n  worker:\n    image: {other.ref}\n"
    )

    res = rack.slipway("builds", "import-image", source.ref, "-a", app, "--id", cwd=tmp_path)

    assert res.code == 0, res
    release = res.out.strip()
    assert re.fullmatch(r"R[A-Z]{10}", release), res.out
    match = IMPORTED.match(res.err.removeprefix("Importing image... OK\n"))
    assert match and match.group(2) == release, res.err
    build = match.group(1)
    assert run_from_registry(rack, app, f"web.{build}") == source.marker
    assert run_from_registry(rack, app, f"worker.{build}") == other.marker


def test_a_missing_image_fails_and_records_nothing(rack: RackHandle, tmp_path: Path) -> None:
    app = f"imp-{secrets.token_hex(3)}"
    missing = f"{rack.registry}/nosuch-{secrets.token_hex(3)}:v1"
    rack.ok("apps", "create", app)

    res = rack.slipway("builds", "import-image", missing, "-a", app, cwd=tmp_path)

    assert res.code == 1 and res.out == "", res
    assert "Traceback" not in res.err
    assert res.err.startswith("Importing image... \nERROR: cannot pull "), res.err
    assert "manifest unknown" in res.err.splitlines()[-1]
    assert rack.ok("builds", "-a", app).splitlines()[1:] == []  # no build recorded
    assert rack.ok("releases", "-a", app).splitlines()[1:] == []
    assert registry_tags(rack, app) == []

    no_manifest = rack.slipway("builds", "import-image", missing, "-a", app, "-m", "nope.yml")
    assert (no_manifest.code, no_manifest.err) == (1, "ERROR: no such file: nope.yml\n")
