"""Small helpers shared by the tests."""

from __future__ import annotations

import os
import re
import secrets
import socket
import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def eventually(check: Callable[[], T], timeout: float = 30.0, interval: float = 0.1) -> T:
    """Calls `check` until it returns a truthy value without raising, or `timeout` passes;
    then returns that value or raises the last failure."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        try:
            value = check()
            if value:
                return value
            last = AssertionError(f"condition still false: {value!r}")
        except (AssertionError, Exception) as err:  # noqa: BLE001 - re-raised below
            last = err
        if time.monotonic() >= deadline:
            assert last is not None
            raise last
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def remove_images_of(registry: str) -> None:
    """Removes every local image name under `registry/` (what a test rack's builds and
    pushes left in the shared engine), so test runs do not fill the disk."""
    import subprocess

    names = subprocess.run(
        ["docker", "images", "--format", "{{.Repository}}:{{.Tag}}"],
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.split()
    mine = [name for name in names if name.startswith(f"{registry}/")]
    for first in range(0, len(mine), 100):
        subprocess.run(
            ["docker", "rmi", "-f", *mine[first : first + 100]], capture_output=True, timeout=300
        )


def push_image(registry_host: str, image: str, repository: str, tag: str) -> list[object]:
    """Pushes the local `image` as `{registry_host}/{repository}:{tag}` through the common
    Pusher and the real engine, as a builder does; returns every event."""
    from client.cli.localrack.engine import docker_host
    from services.common.docker.engine import DockerEngine
    from services.common.push import Destination, Pusher

    engine = DockerEngine(docker_host())
    try:
        return list(Pusher(engine, Destination(registry_host)).push(image, repository, tag))
    finally:
        engine.close()


_ENGINE_OUTPUT = re.compile(r"^(?:[a-z][a-z0-9-]* \| )?#\d+ \d+\.\d{3} ")


def step_output(lines: Iterable[str]) -> list[str]:
    """Build log lines with BuildKit's step number and offset (and a service prefix)
    taken off the output of RUN steps: `web | #5 0.231 hi` reads `hi`."""
    return [_ENGINE_OUTPUT.sub("", line) for line in lines]


BUILD_ID = re.compile(r"^Build:   (B[A-Z]{10})$", re.M)


def write_files(folder: Path, files: dict[str, str]) -> Path:
    """Writes `{relative path: text}` under `folder` (making parents); returns `folder`."""
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return folder


def run_docker(*args: str) -> str:
    """Runs the `docker` CLI against the machine's engine; asserts it succeeded."""
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"docker {' '.join(args)}: {proc.stderr}"
    return proc.stdout


def build_id_of(out: str) -> str:
    """The build id a `slipway build` printed (`Build:   B…`)."""
    match = BUILD_ID.search(out)
    assert match, out
    return match.group(1)


def pull_back(registry: str, app: str, service: str, build_id: str) -> str:
    """Pulls `{registry}/{app}:{service}.{build}` back from the registry (dropping any local
    copy first); returns the reference."""
    ref = f"{registry}/{app}:{service}.{build_id}"
    subprocess.run(["docker", "rmi", ref], capture_output=True)
    run_docker("pull", ref)
    return ref


def settle(root: Path, seconds: float = 10.0) -> None:
    """Dates every file below `root` `seconds` ago (links themselves, not followed): a
    file changed in the last clock ticks before a walk is hashed but never remembered in
    the digest cache (racy-clean), and tests of the cache want settled files."""
    when = time.time_ns() - int(seconds * 1e9)
    for path in [root, *root.rglob("*")]:
        os.utime(path, ns=(when, when), follow_symlinks=False)


def app_name(rack: Any = None) -> str:
    """A fresh app name; the app is created on `rack` (anything with a `metadata` client)
    when given: builds move only into apps that exist."""
    name = f"app{secrets.token_hex(4)}"
    if rack is not None:
        rack.metadata.create_app(name)
    return name
