"""`slipway builds export` and `slipway builds import` end to end: a real rack, the real
engine and registry, driven through the `slipway` command, files and shell pipes."""

from __future__ import annotations

import gzip
import json
import os
import pty
import re
import secrets
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.conftest import SLIPWAY, RackHandle, missing_app

pytestmark = pytest.mark.docker

BUILD_ID = re.compile(r"^Build:   (B[A-Z]{10})$", re.M)
IMPORTED = re.compile(r"^Importing build\.\.\. OK, (R[A-Z]{10})\n$")


@dataclass(frozen=True)
class Built:
    app: str
    id: str
    marker: str


def build_app(rack: RackHandle, folder: Path, app: str, dockerfile: str) -> str:
    folder.mkdir(parents=True)
    (folder / "convox.yml").write_text("services:\n  web:\n    build: .\n")
    (folder / "Dockerfile").write_text(dockerfile)
    out = rack.ok("build", str(folder), "-a", app, "-d", "to be moved")
    match = BUILD_ID.search(out)
    assert match, out
    return match.group(1)


@pytest.fixture(scope="module")
def built(rack: RackHandle, tmp_path_factory: pytest.TempPathFactory) -> Built:
    marker = f"moved-{secrets.token_hex(6)}"
    app = f"src-{secrets.token_hex(3)}"
    rack.ok("apps", "create", app)
    dockerfile = f'FROM busybox\nRUN echo {marker} > /marker\nENTRYPOINT ["cat", "/marker"]\n'
    build_id = build_app(rack, tmp_path_factory.mktemp("src") / "app", app, dockerfile)
    return Built(app, build_id, marker)


def docker(*args: str) -> str:
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"docker {' '.join(args)}: {proc.stderr}"
    return proc.stdout


def run_from_registry(rack: RackHandle, app: str, tag: str, min_size: int = 0) -> str:
    """Pulls `{registry}/{app}:{tag}` from the rack's registry afresh and runs it, checking
    the image holds at least `min_size` bytes."""
    ref = f"{rack.registry}/{app}:{tag}"
    subprocess.run(["docker", "rmi", ref], capture_output=True)
    docker("pull", ref)
    try:
        assert int(docker("image", "inspect", "-f", "{{.Size}}", ref)) >= min_size
        return docker("run", "--rm", ref).strip()
    finally:
        docker("rmi", ref)


def registry_tags(rack: RackHandle, app: str) -> list[str]:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(rack.registry_request(f"{app}/tags/list")) as resp:
            return sorted(json.loads(resp.read()).get("tags") or [])
    except urllib.error.HTTPError as err:
        assert err.code == 404
        return []


def pipe(rack: RackHandle, command: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Runs a shell pipeline of `slipway` commands with the rack's environment."""
    env = dict(rack.env, SLIPWAY=SLIPWAY)
    return subprocess.run(
        ["bash", "-c", f"set -o pipefail; {command}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_export_to_a_file_and_import_into_another_app(
    rack: RackHandle, built: Built, tmp_path: Path
) -> None:
    archive = tmp_path / "build.tgz"

    exported = rack.slipway("builds", "export", built.id, "-a", built.app, "-f", str(archive))

    assert (exported.code, exported.out, exported.err) == (0, "", "Exporting build... OK\n")
    with tarfile.open(fileobj=gzip.open(archive)) as tar:
        names = tar.getnames()
        record = json.loads(tar.extractfile("build.json").read())  # type: ignore[union-attr]
    assert names == ["build.json", f"{built.app}.{built.id}.tar"]
    assert (record["id"], record["app"], record["status"]) == (built.id, built.app, "complete")
    assert "Building: ." in record["logs"]

    target = f"dst-{secrets.token_hex(3)}"
    # Into an app that does not exist: refused before the archive is read, nothing created.
    refused = rack.slipway("builds", "import", "-a", target, "-f", str(archive))
    assert (refused.code, refused.out, refused.err) == (1, "", missing_app(target) + "\n")
    assert target not in rack.apps()
    assert registry_tags(rack, target) == []

    rack.ok("apps", "create", target)
    imported = rack.slipway("builds", "import", "-a", target, "-f", str(archive))

    assert imported.code == 0 and imported.out == "", imported
    release = IMPORTED.match(imported.err)
    assert release, imported.err
    listing = rack.ok("builds", "-a", target).splitlines()
    assert len(listing) == 2 and listing[1].split()[1:3] == ["complete", release.group(1)]
    new_id = listing[1].split()[0]
    assert new_id != built.id and listing[1].endswith("to be moved")
    original_log = rack.ok("builds", "logs", built.id, "-a", built.app)
    assert rack.ok("builds", "logs", new_id, "-a", target) == original_log
    assert registry_tags(rack, target) == [f"web.{new_id}"]
    assert run_from_registry(rack, target, f"web.{new_id}") == built.marker
    # No builder of the rack ran the imported build: it has none (the original has its own).
    shown = json.loads(rack.ok("builds", "info", new_id, "-a", target, "--json"))
    assert shown["builder"] == ""
    assert "Builder" not in rack.ok("builds", "info", new_id, "-a", target)
    assert json.loads(rack.ok("builds", "info", built.id, "-a", built.app, "--json"))["builder"]


def test_export_piped_into_import(rack: RackHandle, built: Built) -> None:
    target = f"pipe-{secrets.token_hex(3)}"
    rack.ok("apps", "create", target)

    done = pipe(
        rack,
        f'"$SLIPWAY" builds export {built.id} -a {built.app} '
        f'| "$SLIPWAY" builds import -a {target} --id',
    )

    assert done.returncode == 0, done.stderr
    assert re.fullmatch(r"R[A-Z]{10}\n", done.stdout), done.stdout
    # Both commands write their `label... ` then `OK` to the same stderr: interleaved.
    release = done.stdout.strip()
    rest = done.stderr.replace("Exporting build... ", "", 1).replace("Importing build... ", "", 1)
    assert sorted(rest.splitlines()) == ["OK", f"OK, {release}"], done.stderr
    new_id = rack.ok("builds", "-a", target).splitlines()[1].split()[0]
    assert run_from_registry(rack, target, f"web.{new_id}") == built.marker


def test_export_refuses_a_terminal(rack: RackHandle, built: Built) -> None:
    leader, follower = pty.openpty()
    try:
        proc = subprocess.run(
            [SLIPWAY, "builds", "export", built.id, "-a", built.app],
            env=rack.env,
            stdout=follower,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    finally:
        os.close(follower)
        os.close(leader)
    assert proc.returncode == 1
    assert proc.stderr == "ERROR: pipe this command into a file or specify --file\n"


def test_import_refuses_a_terminal(rack: RackHandle) -> None:
    app = f"never-{secrets.token_hex(3)}"
    rack.ok("apps", "create", app)
    leader, follower = pty.openpty()
    try:
        proc = subprocess.run(
            [SLIPWAY, "builds", "import", "-a", app],
            env=rack.env,
            stdin=follower,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        os.close(follower)
        os.close(leader)
    assert proc.returncode == 1
    assert proc.stderr == ("ERROR: pipe an exported build into this command or specify --file\n")


def test_errors_leave_nothing_behind(rack: RackHandle, built: Built, tmp_path: Path) -> None:
    archive = tmp_path / "none.tgz"
    missing = rack.slipway("builds", "export", "BNOSUCHBUIL", "-a", built.app, "-f", str(archive))
    assert missing.code == 1
    assert missing.err.splitlines()[-1] == "ERROR: build not found: BNOSUCHBUIL"
    assert not archive.exists()
    # A file already there survives a failed export, and no partial file is left beside it.
    archive.write_bytes(b"keep me")
    again = rack.slipway("builds", "export", "BNOSUCHBUIL", "-a", built.app, "-f", str(archive))
    assert again.code == 1
    assert archive.read_bytes() == b"keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["none.tgz"]
    nowhere = rack.slipway("builds", "import", "-a", built.app, "-f", str(tmp_path / "no.tgz"))
    assert (nowhere.code, nowhere.err.strip()) == (1, f"ERROR: no such file: {tmp_path}/no.tgz")
    unwritable = tmp_path / "missing-dir" / "x.tgz"
    cannot = rack.slipway("builds", "export", built.id, "-a", built.app, "-f", str(unwritable))
    assert cannot.code == 1
    assert cannot.err.strip() == f"ERROR: cannot write {unwritable}: No such file or directory"
    archive.unlink()

    target = f"bad-{secrets.token_hex(3)}"
    rack.ok("apps", "create", target)
    garbage = tmp_path / "garbage.tgz"
    garbage.write_bytes(gzip.compress(b"this is no tar" * 1000))
    bad = rack.slipway("builds", "import", "-a", target, "-f", str(garbage))
    assert bad.code == 1
    assert bad.err.splitlines()[-1] == "ERROR: invalid archive: invalid header"
    assert "Traceback" not in bad.err
    assert rack.ok("builds", "-a", target).splitlines()[1:] == []  # no build recorded
    assert registry_tags(rack, target) == []

    # An export that fails half-way through a pipe fails the import too.
    broken = pipe(
        rack,
        f'head -c 1000 < <("$SLIPWAY" builds export {built.id} -a {built.app}) '
        f'| "$SLIPWAY" builds import -a {target}',
    )
    assert broken.returncode == 1
    assert "ERROR: the archive is truncated: the gzip stream ends early\n" in broken.stderr
    assert "Traceback" not in broken.stderr
    assert registry_tags(rack, target) == []


# A wrapper that runs the `slipway` command, then writes its peak resident memory (VmHWM,
# in KiB) to the file SLIPWAY_HWM_FILE names.
HWM_WRAPPER = """
import atexit, os, sys

def report():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                with open(os.environ["SLIPWAY_HWM_FILE"], "w") as out:
                    out.write(line.split()[1])

atexit.register(report)
from client.cli.main import main
sys.exit(main())
"""
LAYER_MB = 200


def vm_hwm_mib(status: Path) -> int:
    for line in status.read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) // 1024
    raise AssertionError(f"no VmHWM in {status}")


def test_a_large_build_moves_with_flat_client_memory(rack: RackHandle, tmp_path: Path) -> None:
    app = f"big-{secrets.token_hex(3)}"
    dockerfile = (
        "FROM busybox\n"
        # A fresh layer every run: the marker keeps the builder's cache out of it.
        f"RUN head -c {LAYER_MB * 1000 * 1000} /dev/urandom > /big && echo {app} > /marker\n"
        'ENTRYPOINT ["cat", "/marker"]\n'
    )
    rack.ok("apps", "create", app)
    started = time.monotonic()
    build_id = build_app(rack, tmp_path / "big", app, dockerfile)
    wrapper = tmp_path / "hwm.py"
    wrapper.write_text(HWM_WRAPPER)
    py = f'"{sys.executable}" {wrapper}'
    target = f"{app}-copy"
    rack.ok("apps", "create", target)

    done = pipe(
        rack,
        f"SLIPWAY_HWM_FILE={tmp_path}/export.kb {py} builds export {build_id} -a {app} "
        f"| SLIPWAY_HWM_FILE={tmp_path}/import.kb {py} builds import -a {target} --id",
    )

    assert done.returncode == 0, done.stderr
    peaks = {
        side: int((tmp_path / f"{side}.kb").read_text()) // 1024 for side in ("export", "import")
    }
    baseline = pipe(rack, f"SLIPWAY_HWM_FILE={tmp_path}/list.kb {py} builds -a {app}")
    assert baseline.returncode == 0, baseline.stderr
    idle = int((tmp_path / "list.kb").read_text()) // 1024
    # A client holding even a quarter of the layer would show; flat clients stay near idle.
    for side, peak in peaks.items():
        assert peak < idle + LAYER_MB // 4, f"{side} peaked at {peak} MiB (idle {idle} MiB)"
    # The registry service streamed the same bytes both ways (its peak covers its whole life).
    service = (rack.data / "run" / "registry.pid").read_text().strip()
    peaks["registry service"] = vm_hwm_mib(Path(f"/proc/{service}/status"))
    assert peaks["registry service"] < LAYER_MB * 3 // 4, peaks
    new_id = rack.ok("builds", "-a", target).splitlines()[1].split()[0]
    assert run_from_registry(rack, target, f"web.{new_id}", LAYER_MB * 1000 * 1000) == app
    print(f"moved {LAYER_MB} MB in {time.monotonic() - started:.0f}s; peaks {peaks}, idle {idle}")
