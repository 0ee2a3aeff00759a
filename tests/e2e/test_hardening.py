"""Hostile input and faults against a real rack (real dockerd, registry and SQLite):
a crafted archive cannot change a file outside the build's scratch folder, and a
database locked mid-build loses no log line."""

from __future__ import annotations

import hashlib
import io
import secrets
import sqlite3
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from client.kernel import types
from tests.e2e.conftest import SLIPWAY, RackHandle
from tests.e2e.test_cancel_logs import NUMBERED, _library, _running_build, _write
from tests.helpers import eventually

pytestmark = pytest.mark.docker


def _entry(tar: tarfile.TarFile, name: str, kind: bytes, link: str = "", mode: int = 0o755) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, link, mode
    tar.addfile(info)


def _file(tar: tarfile.TarFile, name: str, text: str) -> None:
    data = text.encode()
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), 0o644
    tar.addfile(info, io.BytesIO(data))


def test_a_repointed_link_cannot_chmod_a_file_outside(rack: RackHandle) -> None:
    marker = secrets.token_hex(4)
    app = f"chmod-{marker}"
    rack.ok("env", "set", "X=1", "-a", app)  # the app exists
    # The scratch folder is <data>/builder/<build>/src: four levels below the data
    # folder's parent, where the victim lives.
    victim = rack.data.parent / f"victim-{marker}"
    victim.write_text("keep")
    victim.chmod(0o600)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        _file(tar, "convox.yml", "services:\n  web:\n    build: .\n")
        _file(tar, "Dockerfile", "FROM busybox\nRUN true\n")
        _entry(tar, "a/b/c/d", tarfile.DIRTYPE)
        _entry(tar, "l", tarfile.SYMTYPE, "a/b/c/d")
        _entry(tar, "x", tarfile.DIRTYPE, mode=0o777)
        _entry(tar, "x", tarfile.SYMTYPE, f"l/l/l/l/../../../../victim-{marker}")
        _entry(tar, "l", tarfile.SYMTYPE, ".")
    data = buf.getvalue()
    library = _library(rack)
    archive = library.archive.upload(
        app, io.BytesIO(data), len(data), hashlib.sha256(data).hexdigest()
    )
    build = library.builder.start_build(types.BuildRequest(app=app, archive=archive))
    final = eventually(lambda: (b := library.metadata.get_build(build.id)).terminal and b, 120)
    assert final.status in (types.COMPLETE, types.FAILED)
    if final.status == types.FAILED:
        assert final.reason.startswith("archive rejected: "), final.reason
        assert str(rack.data) not in final.reason
    assert victim.stat().st_mode & 0o777 == 0o600
    assert victim.read_text() == "keep"


def test_a_database_locked_mid_build_loses_no_log_line(rack: RackHandle, tmp_path: Path) -> None:
    marker = secrets.token_hex(4)
    app = f"locked-{marker}"
    rack.ok("env", "set", "X=1", "-a", app)
    folder = _write(
        tmp_path / "app",
        {
            "convox.yml": "services:\n  web:\n    build: .\n",
            "Dockerfile": (
                f"FROM busybox\nRUN echo started-{marker} && "
                "for i in $(seq 1 30); do echo line-$i; sleep 0.5; done\n"
            ),
        },
    )
    build = subprocess.Popen(
        [SLIPWAY, "build", str(folder), "-a", app],
        env=rack.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        build_id = _running_build(rack, app, f"started-{marker}")
        # Another process holds SQLite's write lock for longer than the service waits.
        db = sqlite3.connect(rack.data / "metadata" / "metadata.db", timeout=30)
        db.isolation_level = None
        db.execute("BEGIN EXCLUSIVE")
        time.sleep(25)
        db.execute("ROLLBACK")
        db.close()
        out, err = build.communicate(timeout=300)
    finally:
        if build.poll() is None:
            build.kill()
            build.wait(10)
    assert build.returncode == 0, err
    library = _library(rack)
    final = library.metadata.get_build(build_id)
    assert final.status == types.COMPLETE and final.release
    stored = [line.text for line in library.metadata.stream_logs(build_id)]
    assert [text for text in stored if NUMBERED.match(text)] == [f"line-{i}" for i in range(1, 31)]
