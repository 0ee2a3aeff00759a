"""`slipway build` end to end: a real rack, the real engine, a real registry, SQLite."""

from __future__ import annotations

import json
import re
import secrets
import subprocess
from pathlib import Path

import pytest

from tests.e2e.conftest import RackHandle, missing_app
from tests.helpers import run_docker, write_files

pytestmark = pytest.mark.docker

BUILD_ID = re.compile(r"^Build:   (B[A-Z]{10})$", re.M)
RELEASE_ID = re.compile(r"^Release: (R[A-Z]{10})$", re.M)


@pytest.fixture(scope="module")
def base_image(rack: RackHandle) -> str:
    """An image in the rack's registry for an `image:` service to pull."""
    marker = secrets.token_hex(4)
    ref = f"{rack.registry}/base:{marker}"
    build = subprocess.run(
        ["docker", "build", "-t", ref, "-"],
        input=f"FROM busybox\nRUN echo base-{marker} > /base\n",
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr
    run_docker("push", ref)
    run_docker("rmi", ref)
    return ref


def test_two_service_app_builds_pushes_and_releases(
    rack: RackHandle, base_image: str, tmp_path: Path
) -> None:
    marker = secrets.token_hex(6)
    app = f"two-{marker[:6]}"
    src = write_files(
        tmp_path / "app",
        {
            "convox.yml": f"services:\n  web:\n    build: .\n  cache:\n    image: {base_image}\n",
            "Dockerfile": (
                "FROM busybox\n"
                "COPY message.txt /message.txt\n"
                f"RUN echo made-by-run-{marker} >> /message.txt\n"
                'ENTRYPOINT ["cat", "/message.txt"]\n'
            ),
            "message.txt": f"copied-{marker}\n",
            "ignored.log": "must not reach the rack\n",
            ".dockerignore": "*.log\n",
        },
    )
    created = rack.slipway("apps", "create", app)
    # Off a terminal the progress goes to stderr.
    assert (created.code, created.out, created.err) == (0, "", f"Creating {app}... OK\n")

    res = rack.slipway("build", str(src), "-a", app, "-d", "first build")

    assert res.code == 0, res
    # Off a terminal the status lines go to stderr, and stdout carries the build log.
    assert res.err.splitlines() == [
        "Packaging source... OK",
        "Uploading source... OK",
        "Starting build... OK",
    ]
    out = res.out
    lines = out.splitlines()
    assert lines[0] == "Building: ."
    assert f"Running: docker pull {base_image}" in lines
    build_id = BUILD_ID.search(out).group(1)  # type: ignore[union-attr]
    release_id = RELEASE_ID.search(out).group(1)  # type: ignore[union-attr]
    assert lines[-2:] == [f"Build:   {build_id}", f"Release: {release_id}"]
    assert f"Running: docker push {rack.registry}/{app}:web.{build_id}" in lines

    # The pushed image comes back from the registry and does what its Dockerfile says.
    web = f"{rack.registry}/{app}:web.{build_id}"
    subprocess.run(["docker", "rmi", web], capture_output=True)
    run_docker("pull", web)
    printed = run_docker("run", "--rm", web)
    assert printed.splitlines() == [f"copied-{marker}", f"made-by-run-{marker}"]
    listing = run_docker("run", "--rm", "--entrypoint", "ls", web, "-a", "/")
    assert "ignored.log" not in listing

    cache = f"{rack.registry}/{app}:cache.{build_id}"
    run_docker("pull", cache)
    assert run_docker("run", "--rm", cache, "cat", "/base").startswith("base-")

    # builds: SPEC's columns, two spaces apart.
    table = rack.ok("builds", "-a", app).splitlines()
    assert re.match(r"^ID {11}STATUS {4}RELEASE {6}STARTED +ELAPSED  DESCRIPTION$", table[0]), (
        table[0]
    )
    row = re.split(r"  +", table[1])
    assert row[:3] == [build_id, "complete", release_id]
    assert row[-1] == "first build"
    assert re.fullmatch(r"\d+s|\d+m\d+s", row[-2])

    info = rack.ok("builds", "info", build_id, "-a", app).splitlines()
    assert info[0] == f"Id           {build_id}"
    assert info[1] == "Status       complete"
    assert info[2] == f"Release      {release_id}"
    assert info[3] == "Description  first build"
    assert info[6] == "Builder      builder-1"  # the rack's one builder took it from the queue
    assert [line.split()[0] for line in info] == [
        "Id",
        "Status",
        "Release",
        "Description",
        "Started",
        "Elapsed",
        "Builder",
        "Images",
        "cache",
        "web",
    ]
    # The images the build pushed, as `docker pull` takes them.
    assert info[-2:] == [
        f"  cache  {rack.registry}/{app}:cache.{build_id}",
        f"  web    {rack.registry}/{app}:web.{build_id}",
    ]
    shown = json.loads(rack.ok("builds", "info", build_id, "-a", app, "--json"))
    assert shown["images"] == {
        "cache": f"{rack.registry}/{app}:cache.{build_id}",
        "web": f"{rack.registry}/{app}:web.{build_id}",
    }
    assert (shown["id"], shown["status"], shown["release"]) == (build_id, "complete", release_id)
    assert shown["builder"] == "builder-1"

    logs = rack.ok("builds", "logs", build_id, "-a", app).splitlines()
    assert "Building: ." in logs
    assert any(f"made-by-run-{marker}" in line or "RUN echo" in line for line in logs)
    assert f"Running: docker push {web}" in logs


def test_failing_run_step_fails_the_build(rack: RackHandle, tmp_path: Path) -> None:
    app = f"broken-{secrets.token_hex(3)}"
    src = write_files(
        tmp_path / "app",
        {
            "convox.yml": "services:\n  web:\n    build: .\n",
            "Dockerfile": "FROM busybox\nRUN echo about-to-fail && exit 3\n",
        },
    )
    rack.ok("apps", "create", app)

    res = rack.slipway("build", str(src), "-a", app)

    assert res.code == 1
    assert "Traceback" not in res.err
    reason = "executor failed running [/bin/sh -c echo about-to-fail && exit 3]: exit code: 3"
    assert res.err.strip().splitlines()[-1] == f"ERROR: build failed: {reason}"
    build_id = re.search(r"\b(B[A-Z]{10})\b", rack.ok("builds", "-a", app).splitlines()[1]).group(1)  # type: ignore[union-attr]
    info = rack.ok("builds", "info", build_id, "-a", app)
    assert "Status       failed" in info
    assert f"Reason       {reason}" in info
    logs = rack.ok("builds", "logs", build_id, "-a", app).splitlines()
    # BuildKit's plain progress: the failing step, its output, its error.
    step = next(line for line in logs if line.endswith("RUN echo about-to-fail && exit 3"))
    number = step.split()[0]
    assert re.match(r"^#\d+ \[2/2\] RUN echo about-to-fail && exit 3$", step)
    assert any(re.match(rf"^{number} \d+\.\d{{3}} about-to-fail$", line) for line in logs)
    assert f"{number} ERROR: {reason}" in logs
    assert logs[-1] == f"ERROR: {reason}"


def test_unknown_build_and_app_say_so(rack: RackHandle, tmp_path: Path) -> None:
    res = rack.slipway("builds", "info", "BNOSUCHBUILD", "-a", "nosuchapp")
    assert (res.code, res.err.strip()) == (1, "ERROR: build not found: BNOSUCHBUILD")
    res = rack.slipway("builds", "-a", "nosuchapp")
    assert (res.code, res.err.strip()) == (1, "ERROR: app not found: nosuchapp")
    assert "Traceback" not in res.err
    # Neither a build nor a deploy creates the app: both stop before anything is packed.
    src = write_files(
        tmp_path / "app",
        {"convox.yml": "services:\n  web:\n    build: .\n", "Dockerfile": "FROM busybox\n"},
    )
    for command in ("build", "deploy"):
        res = rack.slipway(command, str(src), "-a", "nosuchapp")
        assert (res.code, res.out, res.err) == (1, "", missing_app("nosuchapp") + "\n")
    assert "nosuchapp" not in rack.apps()


def test_missing_manifest_fails_with_clear_reason(rack: RackHandle, tmp_path: Path) -> None:
    app = f"nomanifest-{secrets.token_hex(3)}"
    rack.ok("apps", "create", app)
    src = write_files(tmp_path / "app", {"Dockerfile": "FROM busybox\n"})
    res = rack.slipway("build", str(src), "-a", app)
    # Checked on the client, before `Packaging source...`: nothing is sent or started.
    assert (res.code, res.out, res.err) == (1, "", "ERROR: no such file: convox.yml\n")
    assert json.loads(rack.ok("builds", "-a", app, "--json")) == []


def test_wrong_token_is_unauthorized(rack: RackHandle) -> None:
    env = dict(rack.env, SLIPWAY_TOKEN="not-the-token")
    res = RackHandle(rack.name, rack.port, rack.data, env).slipway("builds", "-a", "x")
    assert (res.code, res.err.strip()) == (1, "ERROR: unauthorized")


def test_rack_status_reports_every_part(rack: RackHandle) -> None:
    out = rack.ok("rack", "status", "--name", rack.name)
    for part in ("engine", "distribution", "metadata", "archive", "registry", "builder-1"):
        assert re.search(rf"^{part}\s+running\b", out, re.M), out
    assert re.search(r"^builder-1\s+running\s+127\.0\.0\.1:\d+ pid \d+ engine \S+ idle$", out, re.M)
