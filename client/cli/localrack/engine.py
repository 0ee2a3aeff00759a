"""The Docker engine a local rack builds with, and the `busybox:latest` base image.

When no engine answers at `DOCKER_HOST` (default `unix:///var/run/docker.sock`), start
`dockerd` as root with Slipway's own data and exec roots and wait for it. No Docker Hub is
reachable here, so `busybox:latest` is made from Debian's static busybox binary.
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

from client.kernel.errors import Unavailable

log = logging.getLogger(__name__)

DEFAULT_SOCKET = "unix:///var/run/docker.sock"
DATA_ROOT = Path("/var/lib/slipway/docker")
EXEC_ROOT = Path("/var/run/slipway/docker")
LOG_FILE = Path("/var/log/slipway/dockerd.log")
PID_FILE = Path("/var/run/slipway/dockerd.pid")
BUSYBOX = "/bin/busybox"


def _engine(host: str) -> Any:
    """The rack's Docker engine adapter, imported when a local rack needs it: importing
    the CLI never imports docker-py, and `pip install slipway` (the CLI alone) has none
    (it comes with the `rack` extra)."""
    try:
        from services.common.docker.engine import DockerEngine
    except ImportError as err:
        raise Unavailable(
            f"the Docker SDK is not installed ({err}): install slipway[rack] to run a local rack"
        ) from None
    return DockerEngine(host)


def docker_host() -> str:
    return os.environ.get("DOCKER_HOST") or DEFAULT_SOCKET


def engine_answers(host: str | None = None) -> bool:
    engine = _engine(host or docker_host())
    try:
        return engine.answers(timeout=5)
    finally:
        engine.close()


def ensure_engine(timeout: float = 60.0) -> str:
    """Returns DOCKER_HOST once an engine answers there, starting dockerd if needed."""
    host = docker_host()
    if engine_answers(host):
        return host
    if not host.startswith("unix://"):
        raise Unavailable(f"Docker engine unreachable at {host}")
    dockerd = shutil.which("dockerd")
    if dockerd is None:
        raise Unavailable(f"Docker engine unreachable at {host} and dockerd is not installed")
    if os.geteuid() != 0:
        raise Unavailable(f"Docker engine unreachable at {host}; starting dockerd needs root")
    for folder in (DATA_ROOT, EXEC_ROOT, LOG_FILE.parent, PID_FILE.parent):
        folder.mkdir(parents=True, exist_ok=True)
    log.info("starting dockerd at %s", host)
    with open(LOG_FILE, "ab") as out:
        subprocess.Popen(
            [
                dockerd,
                "--data-root",
                str(DATA_ROOT),
                "--exec-root",
                str(EXEC_ROOT),
                "-H",
                host,
                "--pidfile",
                str(PID_FILE),
            ],
            stdout=out,
            stderr=out,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if engine_answers(host):
            return host
        time.sleep(0.5)
    raise Unavailable(f"dockerd did not answer at {host} within {timeout:.0f}s (see {LOG_FILE})")


def seed_busybox(host: str | None = None, ref: str = "busybox:latest") -> bool:
    """Imports `busybox:latest` from the static busybox binary unless the engine has it.

    Returns True when it imported the image."""
    engine = _engine(host or docker_host())
    try:
        if engine.image_id(ref) is not None:
            return False
        if not os.path.exists(BUSYBOX):
            raise Unavailable(f"{BUSYBOX} is missing: install Debian's busybox-static")
        with tempfile.NamedTemporaryFile(suffix=".tar") as tar_file:
            _write_busybox_rootfs(tar_file)
            tar_file.flush()
            repo, _, tag = ref.partition(":")
            engine.import_rootfs(
                Path(tar_file.name),
                repo,
                tag or "latest",
                changes=[
                    'CMD ["sh"]',
                    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                ],
            )
        return True
    finally:
        engine.close()


def _write_busybox_rootfs(fileobj) -> None:  # type: ignore[no-untyped-def]
    """A root filesystem: /bin/busybox, a link per applet, and the usual empty folders."""
    applets = subprocess.run(
        [BUSYBOX, "--list"], check=True, capture_output=True, text=True
    ).stdout.split()
    with tarfile.open(fileobj=fileobj, mode="w") as tar:
        for folder, mode in (
            ("bin", 0o755),
            ("etc", 0o755),
            ("tmp", 0o1777),
            ("root", 0o700),
            ("var", 0o755),
            ("usr", 0o755),
        ):
            info = tarfile.TarInfo(folder)
            info.type, info.mode = tarfile.DIRTYPE, mode
            tar.addfile(info)
        tar.add(BUSYBOX, arcname="bin/busybox")
        for applet in applets:
            if applet == "busybox" or "/" in applet:
                continue
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type, link.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(link)
        for name, text in (
            ("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"),
            ("etc/group", "root:x:0:\n"),
        ):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)

            tar.addfile(info, io.BytesIO(data))


def main() -> int:
    """`python -m client.cli.localrack.engine`: start the engine if needed and seed busybox."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        host = ensure_engine()
        seeded = seed_busybox(host)
    except Unavailable as err:
        print(f"ERROR: {err}")
        return 1
    print(f"Docker engine: {host}; busybox:latest {'seeded' if seeded else 'present'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
