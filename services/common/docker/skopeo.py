"""Loading an OCI-archive tar into the engine with skopeo, which verifies every blob's
digest on the way (the engine's own `docker load` takes only the `docker save` layout)."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from pathlib import Path

from client.kernel.errors import InvalidArgument, Unavailable
from services.common.docker.errors import ENGINE_DOWN, unreachable

log = logging.getLogger(__name__)

# How long skopeo may take to load one OCI archive into the engine.
SKOPEO_TIMEOUT = 3600


def load_oci_archive(host: str, archive: Path, name: str) -> None:
    """Loads the one-image OCI archive `archive` into the engine at `host` as `name`
    (`repository:tag`); InvalidArgument when the archive is bad."""
    skopeo = shutil.which("skopeo")
    if skopeo is None:
        raise Unavailable("skopeo not found: it loads OCI archives (apt-get install skopeo)")
    argv = [
        skopeo,
        "--insecure-policy",
        "copy",
        "--quiet",
        "--dest-daemon-host",
        host,
        f"oci-archive:{archive}",
        f"docker-daemon:{name}",
    ]
    # skopeo unpacks the archive into TMPDIR: keep that next to the archive, on disk.
    env = dict(os.environ, TMPDIR=str(archive.parent))
    try:
        done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=SKOPEO_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise Unavailable(f"loading {archive.name} took over {SKOPEO_TIMEOUT}s") from None
    if done.returncode != 0:
        text = " ".join(done.stderr.strip().splitlines()[-1:]) or f"status {done.returncode}"
        if any(marker in text.lower() for marker in ENGINE_DOWN):
            log.warning("skopeo: engine at %s: %s", host, text)
            raise unreachable(host)
        raise InvalidArgument(text)
