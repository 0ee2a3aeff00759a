"""Hostile input and faults against a real rack (real dockerd, registry and SQLite):
a crafted archive cannot change a file outside the build's scratch folder, and a
database locked mid-build loses no log line."""

from __future__ import annotations

import hashlib
import io
import os
import secrets
import signal
import sqlite3
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from client.kernel import types
from tests.e2e.conftest import SLIPWAY, RackHandle
from tests.e2e.test_cancel_logs import NUMBERED, _library, _running_build
from tests.helpers import eventually, step_output, write_files

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
    rack.ok("apps", "create", app)
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
    rack.ok("apps", "create", app)
    folder = write_files(
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
        # Another process holds the database's write lock for longer than the service waits.
        _hold_write_lock(rack, 25)
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
    assert [text for text in step_output(stored) if NUMBERED.match(text)] == [
        f"line-{i}" for i in range(1, 31)
    ]


def _hold_write_lock(rack: RackHandle, seconds: float) -> None:
    """Locks the rack's database against writes for `seconds`, from another process's
    connection: SQLite's exclusive lock, or PostgreSQL's table locks."""
    if rack.database:
        import psycopg2

        conn = psycopg2.connect(rack.database)
        with conn.cursor() as cur:
            cur.execute("LOCK TABLE builds, log_lines IN EXCLUSIVE MODE")
            time.sleep(seconds)
        conn.rollback()
        conn.close()
        return
    db = sqlite3.connect(rack.data / "metadata" / "metadata.db", timeout=30)
    db.isolation_level = None
    db.execute("BEGIN EXCLUSIVE")
    time.sleep(seconds)
    db.execute("ROLLBACK")
    db.close()


def _stop_registry(rack: RackHandle) -> None:
    """Stops the rack's Distribution registry process for real (SIGTERM, then gone)."""
    pidfile = rack.data / "run" / "distribution.pid"
    pid = int(pidfile.read_text())
    os.kill(pid, signal.SIGTERM)
    eventually(lambda: not Path(f"/proc/{pid}").exists() or _zombie(pid), timeout=20)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


def _restart(rack: RackHandle) -> None:
    """`slipway rack start` again: it starts what is not running (the registry)."""
    rack.ok(
        "rack", "start", "--name", rack.name, "--port", str(rack.port), "--data", str(rack.data)
    )


def _push_app(tmp_path: Path, marker: str) -> Path:
    return write_files(
        tmp_path / "app",
        {
            "convox.yml": "services:\n  web:\n    build: .\n",
            "Dockerfile": f"FROM busybox\nRUN echo started-{marker} && sleep 3 && echo {marker}\n",
        },
    )


def test_a_push_retries_while_the_registry_restarts(rack: RackHandle, tmp_path: Path) -> None:
    marker = secrets.token_hex(4)
    app = f"retry-{marker}"
    rack.ok("apps", "create", app)
    build = subprocess.Popen(
        [SLIPWAY, "build", str(_push_app(tmp_path, marker)), "-a", app],
        env=rack.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        build_id = _running_build(rack, app, f"started-{marker}")
        _stop_registry(rack)
        # The RUN step ends ~3 s after `started`; the push then fails and is retried
        # (1 s, 2 s, 4 s, 8 s apart) while the registry is down for about 6 s.
        time.sleep(6)
    finally:
        _restart(rack)
    try:
        out, err = build.communicate(timeout=300)
    finally:
        if build.poll() is None:
            build.kill()
            build.wait(10)
    assert build.returncode == 0, err
    log = _library(rack).metadata.stream_logs(build_id)
    texts = [line.text for line in log]
    reference = f"{rack.registry}/{app}:web.{build_id}"
    assert any(t.startswith(f"Retrying push of {reference} (attempt 2 of 5): ") for t in texts)
    final = _library(rack).metadata.get_build(build_id)
    assert final.status == types.COMPLETE and final.release


def test_a_registry_that_stays_down_fails_the_build_cleanly(
    rack: RackHandle, tmp_path: Path, docker_client: object
) -> None:
    marker = secrets.token_hex(4)
    app = f"down-{marker}"
    rack.ok("apps", "create", app)
    try:
        _stop_registry(rack)
        res = rack.slipway("build", str(_push_app(tmp_path, marker)), "-a", app, timeout=300)
    finally:
        _restart(rack)
    assert res.code == 1
    assert res.err.strip().splitlines()[-1] == (
        f"ERROR: build failed: cannot push web: registry unreachable at {rack.registry}"
    ) or res.err.strip().splitlines()[-1] == (
        f"ERROR: build failed: registry unreachable at {rack.registry}"
    ), res.err
    assert "Traceback" not in res.err
    builds = rack.ok("builds", "-a", app).splitlines()[1:]
    build_id, status = builds[0].split()[:2]
    assert status == "failed"
    texts = rack.ok("builds", "logs", build_id, "-a", app).splitlines()
    assert sum(t.startswith("Retrying push of ") for t in texts) == 4
    assert build_id not in rack.ok("releases", "-a", app)  # no release of the build
    names = [tag for image in docker_client.images.list() for tag in image.tags]  # type: ignore[attr-defined]
    assert not [n for n in names if n.startswith(f"{rack.registry}/{app}:")]


def test_the_data_folder_is_its_owners_alone(rack: RackHandle, tmp_path: Path) -> None:
    marker = secrets.token_hex(4)
    app = f"modes-{marker}"
    rack.ok("apps", "create", app)
    rack.ok("env", "set", "SECRET=value", "-a", app)
    rack.ok("build", str(_push_app(tmp_path, marker)), "-a", app)
    assert rack.data.stat().st_mode & 0o777 == 0o700
    checked = {
        "metadata.db": False,
        "builder.log": False,
        "token": False,
        "archive": False,
        "ca-key.pem": False,
        "builder-key.pem": False,
        "registry.auth": False,
    }
    if rack.database:
        del checked["metadata.db"]  # the database is PostgreSQL's
    for path in [rack.data, *rack.data.rglob("*")]:
        if path.is_symlink():
            continue
        mode = path.stat().st_mode & 0o777
        assert mode & 0o077 == 0, f"{path.relative_to(rack.data)} is {mode:o}"
        for name in checked:
            if path.name == name or (
                name == "archive" and "archive" in path.parts and path.is_file()
            ):
                checked[name] = True
    assert all(checked.values()), checked


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "_catalog"), ("GET", "busybox/tags/list"), ("POST", "anyapp/blobs/uploads/")],
    ids=["catalog", "tags", "push"],
)
def test_the_rack_registry_refuses_anonymous_requests(
    rack: RackHandle, method: str, path: str
) -> None:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(f"http://{rack.registry}/v2/{path}", method=method)
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(request, timeout=10)
    assert err.value.code == 401
    signed = rack.registry_request(path)
    signed.method = method
    try:
        with urllib.request.urlopen(signed, timeout=10) as resp:
            code = resp.status
    except urllib.error.HTTPError as answered:
        code = answered.code  # a repository that does not exist is 404, not 401
    assert code in (200, 202, 404)
