"""BuildKit builds on a real rack (SPEC §4 Engine, Secrets; §3 log prefixes): cache and
bind mounts, secrets that reach a RUN step and nothing else, parallel stages, and the
per-service prefixes of a build of several images."""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import RackHandle
from tests.helpers import build_id_of, eventually, pull_back, run_docker, write_files

pytestmark = pytest.mark.docker

STEP_OUTPUT = r"#\d+ \d+\.\d{3} "


def _app(rack: RackHandle, prefix: str) -> str:
    """A new app's name, the app created on `rack` (nothing creates one implicitly)."""
    name = f"{prefix}-{secrets.token_hex(3)}"
    rack.ok("apps", "create", name)
    return name


def _files_hold(folder: Path, needle: bytes) -> list[str]:
    """The files under `folder` whose bytes contain `needle`, read piece by piece."""
    found = []
    for path in folder.rglob("*"):
        if not path.is_file() or path.is_symlink():
            continue
        tail = b""
        with path.open("rb") as handle:
            while piece := handle.read(1 << 20):
                if needle in tail + piece:
                    found.append(str(path))
                    break
                tail = piece[-len(needle) :]
    return found


def _stream_holds(command: list[str], needle: bytes) -> bool:
    """True when the output of `command` contains `needle`, read as it streams."""
    proc = subprocess.Popen(command, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    tail, hit = b"", False
    while piece := proc.stdout.read(1 << 20):
        if needle in tail + piece:
            hit = True
        tail = piece[-len(needle) :]
    assert proc.wait() == 0
    return hit


def test_a_cache_mount_persists_between_builds(rack: RackHandle, tmp_path: Path) -> None:
    app = _app(rack, "cachemount")
    token = secrets.token_hex(8)
    mount = "--mount=type=cache,target=/root/.cache"
    first = write_files(
        tmp_path / "one",
        {
            "convox.yml": "services:\n  web:\n    build: .\n",
            "Dockerfile": f"FROM busybox\nRUN {mount} echo {token} > /root/.cache/seen\n",
        },
    )
    rack.ok("build", str(first), "-a", app)
    second = write_files(
        tmp_path / "two",
        {
            "convox.yml": "services:\n  web:\n    build: .\n",
            # The command names the token: the step itself must not come from the layer
            # cache of an earlier run (a cache mount's content is not part of its key).
            "Dockerfile": f"FROM busybox\nRUN {mount} cp /root/.cache/seen /seen # {token}\n",
        },
    )
    build_id = build_id_of(rack.ok("build", str(second), "-a", app))
    image = pull_back(rack.registry, app, "web", build_id)
    assert run_docker("run", "--rm", image, "cat", "/seen").strip() == token
    # The cache mount is not part of the image.
    assert "seen" not in run_docker("run", "--rm", image, "ls", "-a", "/root")


def test_a_bind_mount_from_another_stage(rack: RackHandle, tmp_path: Path) -> None:
    app = _app(rack, "bindmount")
    marker = secrets.token_hex(6)
    src = write_files(
        tmp_path / "app",
        {
            "convox.yml": "services:\n  web:\n    build: .\n",
            "Dockerfile": (
                f"FROM busybox AS tools\nRUN echo tool-{marker} > /tool\n"
                "FROM busybox\n"
                "RUN --mount=type=bind,from=tools,source=/tool,target=/mnt/tool "
                "cp /mnt/tool /copied\n"
            ),
        },
    )
    build_id = build_id_of(rack.ok("build", str(src), "-a", app))
    image = pull_back(rack.registry, app, "web", build_id)
    assert run_docker("run", "--rm", image, "cat", "/copied").strip() == f"tool-{marker}"
    assert "tool" not in run_docker("run", "--rm", image, "ls", "/")


def test_a_secret_reaches_its_step_and_nothing_else(rack: RackHandle, tmp_path: Path) -> None:
    app = _app(rack, "secret")
    value = f"s3cr3t-{secrets.token_hex(12)}"
    secret_file = tmp_path / "token.txt"
    secret_file.write_text(value)
    src = write_files(
        tmp_path / "app",
        {
            "convox.yml": "services:\n  web:\n    build: .\n",
            "Dockerfile": (
                "FROM busybox\n"
                "RUN --mount=type=secret,id=tok,required=true "
                "sh -c 'echo value: $(cat /run/secrets/tok); "
                f"sha256sum /run/secrets/tok | cut -c1-64 > /sum' # {secrets.token_hex(4)}\n"
            ),
        },
    )
    out = rack.ok("build", str(src), "-a", app, "--secret", f"id=tok,src={secret_file}")
    build_id = build_id_of(out)
    # The step used it: its digest is in the image.
    image = pull_back(rack.registry, app, "web", build_id)
    digest = hashlib.sha256(value.encode()).hexdigest()
    assert run_docker("run", "--rm", image, "cat", "/sum").strip() == digest
    # The step printed it, and the log shows it masked, live and stored.
    assert re.search(rf"^{STEP_OUTPUT}value: \*\*\*\*$", out, re.M), out
    logs = rack.ok("builds", "logs", build_id, "-a", app)
    assert "value: ****" in logs and value not in logs and value not in out
    # Not in any layer of the pushed image, nor anywhere in the rack's data folder (the
    # metadata database, service logs, archives, the registry's storage).
    assert not _stream_holds(["docker", "save", image], value.encode())
    assert _files_hold(rack.data, value.encode()) == []
    # An export of the build (a gzip'd tar, read uncompressed) does not carry it either.
    export = tmp_path / "build.tgz"
    rack.ok("builds", "export", build_id, "-a", app, "-f", str(export))
    assert not _stream_holds(["gzip", "-dc", str(export)], value.encode())


def test_a_secret_from_the_environment(rack: RackHandle, tmp_path: Path) -> None:
    app = _app(rack, "secretenv")
    value = secrets.token_hex(10)
    src = write_files(
        tmp_path / "app",
        {
            "convox.yml": "services:\n  web:\n    build: .\n",
            "Dockerfile": (
                "FROM busybox\nRUN --mount=type=secret,id=api,required=true "
                f"sh -c 'sha256sum /run/secrets/api | cut -c1-64 > /sum' # {secrets.token_hex(4)}\n"
            ),
        },
    )
    env_rack = RackHandle(rack.name, rack.port, rack.data, {**rack.env, "API_TOKEN": value})
    build_id = build_id_of(
        env_rack.ok("build", str(src), "-a", app, "--secret", "id=api,env=API_TOKEN")
    )
    image = pull_back(rack.registry, app, "web", build_id)
    assert (
        run_docker("run", "--rm", image, "cat", "/sum").strip()
        == hashlib.sha256(value.encode()).hexdigest()
    )


def test_a_missing_secret_fails_the_build_cleanly(rack: RackHandle, tmp_path: Path) -> None:
    app = _app(rack, "nosecret")
    src = write_files(
        tmp_path / "app",
        {
            "convox.yml": "services:\n  web:\n    build: .\n",
            "Dockerfile": (
                "FROM busybox\nRUN --mount=type=secret,id=tok,required=true cat /run/secrets/tok\n"
            ),
        },
    )
    res = rack.slipway("build", str(src), "-a", app)
    assert res.code == 1 and "Traceback" not in res.err
    assert (
        res.err.strip().splitlines()[-1] == "ERROR: build failed: secret tok not found: not found"
    )
    assert rack.slipway("releases", "-a", app).out.strip().splitlines()[1:] == []


def test_bad_secret_flags_fail_before_anything_is_sent(rack: RackHandle, tmp_path: Path) -> None:
    app = _app(rack, "badsecret")
    src = write_files(tmp_path / "app", {"convox.yml": "services:\n  web:\n    build: .\n"})
    for flag, message in (
        ("tok", "invalid --secret: want id=ID,src=FILE or id=ID,env=VAR"),
        ("id=tok,src=/nonexistent/file", "secret tok: cannot read file: No such file or directory"),
        ("id=tok,env=SLIPWAY_NO_SUCH_VAR", "secret tok: $SLIPWAY_NO_SUCH_VAR is not set"),
        ("id=bad id,env=HOME", "invalid secret id: 'bad id'"),
    ):
        res = rack.slipway("build", str(src), "-a", app, "--secret", flag)
        assert res.code == 1 and "Traceback" not in res.err, res.err
        assert res.err.strip().splitlines()[-1].startswith(f"ERROR: {message}"), res.err
        assert "Packaging source" not in res.out


def test_independent_stages_build_in_parallel(rack: RackHandle, tmp_path: Path) -> None:
    app = _app(rack, "stages")
    src = write_files(
        tmp_path / "app",
        {
            "convox.yml": "services:\n  web:\n    build: .\n",
            "Dockerfile": (
                "FROM busybox AS a\nRUN sleep 3 && echo a > /a\n"
                "FROM busybox AS b\nRUN sleep 3 && echo b > /b\n"
                "FROM busybox\nCOPY --from=a /a /a\nCOPY --from=b /b /b\n"
            ),
        },
    )
    began = time.monotonic()
    out = rack.ok("build", str(src), "-a", app, "--no-cache")
    took = time.monotonic() - began
    lines = out.splitlines()
    a = next(line.split()[0] for line in lines if line.endswith("RUN sleep 3 && echo a > /a"))
    b = next(line.split()[0] for line in lines if line.endswith("RUN sleep 3 && echo b > /b"))
    started = [i for i, line in enumerate(lines) if line.split()[0] in (a, b) and "RUN" in line]
    done = [i for i, line in enumerate(lines) if line.startswith((f"{a} DONE ", f"{b} DONE "))]
    # Both sleeps began before either ended: the stages overlapped.
    assert len(started) == 2 and len(done) == 2 and max(started) < min(done)
    seconds = [float(lines[i].split()[-1].rstrip("s")) for i in done]
    print(f"\ntwo 3 s stages: steps took {seconds} s; whole build {took:.1f} s (measured)")


def test_several_images_prefix_every_engine_line(rack: RackHandle, tmp_path: Path) -> None:
    app = _app(rack, "prefixes")
    src = write_files(
        tmp_path / "app",
        {
            "convox.yml": (
                "services:\n  web:\n    build: web\n  worker:\n    build: worker\n"
                "  also:\n    build: web\n"
            ),
            "web/Dockerfile": "FROM busybox\nRUN echo web-says-hi\n",
            "worker/Dockerfile": "FROM busybox\nRUN echo worker-says-hi\n",
        },
    )
    out = rack.ok("build", str(src), "-a", app, "--no-cache")
    build_id = build_id_of(out)
    logs = rack.ok("builds", "logs", build_id, "-a", app).splitlines()
    # The builder's own lines carry no prefix; every engine line carries its service (an
    # image built once for two services carries the first one's name).
    assert sorted(line for line in logs if line.startswith("Building: ")) == [
        "Building: web",
        "Building: worker",
    ]
    assert any(re.match(rf"^web \| {STEP_OUTPUT}web-says-hi$", line) for line in logs), logs
    assert any(re.match(rf"^worker \| {STEP_OUTPUT}worker-says-hi$", line) for line in logs)
    assert any(re.match(r"^web \| #\d+ DONE \d+\.\d+s$", line) for line in logs)
    stray = [line for line in logs if line.startswith(("#", "also | #"))]
    assert stray == []
    # A build of one image has no prefixes.
    single = write_files(
        tmp_path / "single",
        {"convox.yml": "services:\n  web:\n    build: .\n", "Dockerfile": "FROM busybox\n"},
    )
    out = rack.ok("build", str(single), "-a", app)
    assert re.search(r"^#\d+ \[internal\] load ", out, re.M) and " | " not in out


def test_a_builder_on_a_fresh_engine_gets_cache_hits_from_the_registry(
    rack: RackHandle, tmp_path: Path, second_engine: str
) -> None:
    from client.cli.localrack.layout import BuilderSlot, Layout
    from client.cli.localrack.rack import _service_env

    app = _app(rack, "cachefrom")
    marker = secrets.token_hex(6)
    src = write_files(
        tmp_path / "app",
        {
            "convox.yml": "services:\n  web:\n    build: .\n",
            "Dockerfile": f"FROM busybox\nRUN echo built-{marker} > /m\nCOPY f /f\n",
            "f": marker,
        },
    )
    rack.ok("build", str(src), "-a", app)  # by the rack's own builder, on the first engine

    # A second builder of the same rack, on the fresh engine: it never built the app,
    # and its engine has none of the app's layers.
    token = (rack.data / "token").read_text().strip()
    port = next(p for p in range(rack.port + 20, rack.port + 200) if _free(p))
    slot = BuilderSlot(9, f"127.0.0.1:{port}", second_engine)
    env = _service_env("builder", Layout(rack.name, rack.port, rack.data), token, "", slot)
    env.update(SLIPWAY_SCRATCH_DIR=str(tmp_path / "scratch2"))
    log = (tmp_path / "builder2.log").open("wb")
    builder = subprocess.Popen(
        [sys.executable, "-m", "services.builder"], env=env, stdout=log, stderr=log
    )
    try:
        second = RackHandle(
            rack.name,
            rack.port,
            rack.data,
            {**rack.env, "SLIPWAY_HOST": f"127.0.0.1:{port}", "SLIPWAY_TOKEN": token},
        )
        eventually(lambda: second.slipway("builds", "-a", app).code == 0, timeout=60)
        # The rack's queue goes to whichever builder claims first: builder-1 is paused
        # (well inside its lease) so that the fresh engine's builder takes this build.
        first = int((rack.data / "run" / "builder.pid").read_text())
        os.kill(first, signal.SIGSTOP)
        try:
            out = second.ok("build", str(src), "-a", app)
        finally:
            os.kill(first, signal.SIGCONT)
        lines = out.splitlines()
        step = next(line for line in lines if line.endswith(f"RUN echo built-{marker} > /m"))
        assert f"{step.split()[0]} CACHED" in lines, out
        build_id = build_id_of(out)
        image = pull_back(rack.registry, app, "web", build_id)
        assert run_docker("run", "--rm", image, "cat", "/m").strip() == f"built-{marker}"
    finally:
        builder.terminate()
        builder.wait(30)
        log.close()


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
