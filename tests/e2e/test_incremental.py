"""The incremental upload end to end (SPEC §7): `slipway build` against a real rack sends
only the file contents the rack lacks, the builder assembles the context from the blob
store, and `slipway rack gc` removes what no build needs."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import secrets
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import RackHandle
from tests.helpers import run_docker, write_files

pytestmark = pytest.mark.docker

BUILD_ID = re.compile(r"^Build:   (B[A-Z]{10})$", re.M)
# The client's account of an upload, logged with SLIPWAY_DEBUG=1.
UPLOADED = re.compile(
    r"uploaded (?P<id>[0-9a-f]{64}): (?P<entries>\d+) entries, (?P<bytes>\d+) bytes; "
    r"(?P<read>\d+) files read, (?P<sent>\d+) sent \((?P<sent_bytes>\d+) bytes\)"
)


def objects(rack: RackHandle) -> set[str]:
    """The ids of everything in the rack's archive store."""
    root = rack.data / "archive" / "objects"
    return {p.name for p in root.glob("*/*")}


def build(rack: RackHandle, src: Path, app: str) -> tuple[str, dict[str, int], str]:
    """Builds `src`: the build id, the upload's figures and the archive id."""
    debug = dataclasses.replace(rack, env={**rack.env, "SLIPWAY_DEBUG": "1"})
    res = debug.slipway("build", str(src), "-a", app)
    assert res.code == 0, f"{res.out}\n{res.err[-3000:]}"
    # The status lines, among the debug records on stderr.
    status = [line for line in res.err.splitlines() if line.endswith("... OK")]
    assert status == ["Packaging source... OK", "Uploading source... OK", "Starting build... OK"]
    match = UPLOADED.search(res.err)
    assert match, res.err[-3000:]
    figures = {k: int(v) for k, v in match.groupdict().items() if k != "id"}
    return BUILD_ID.search(res.out).group(1), figures, match["id"]  # type: ignore[union-attr]


def show(rack: RackHandle, app: str, build_id: str) -> str:
    image = f"{rack.registry}/{app}:web.{build_id}"
    subprocess.run(["docker", "rmi", image], capture_output=True)
    run_docker("pull", image)
    return run_docker("run", "--rm", image)


def test_only_what_the_rack_lacks_travels_and_the_image_has_it_all(
    rack: RackHandle, tmp_path: Path
) -> None:
    app = f"inc-{secrets.token_hex(3)}"
    files = {f"data/{i:03}.txt": f"file {i} {secrets.token_hex(8)}\n" for i in range(120)}
    big = os.urandom(3 * 1024 * 1024 + 17)  # several chunks
    src = write_files(
        tmp_path / "app",
        {
            **files,
            # Contents no other test sends: every one of them is new to the rack.
            "convox.yml": f"# {app}\nservices:\n  web:\n    build: .\n",
            "Dockerfile": f"FROM busybox\n# {app}\nCOPY . /ctx\n"
            "CMD cat /ctx/data/007.txt && md5sum /ctx/big.bin\n",
            "copy.txt": files["data/001.txt"],  # same contents as another file: sent once
        },
    )
    (src / "big.bin").write_bytes(big)
    os.symlink("data/007.txt", src / "link")
    total = sum(len(t) for t in files.values()) + len(big)
    rack.ok("apps", "create", app)

    first, sent, archive = build(rack, src, app)
    assert sent["sent"] == 120 + 1 + 2  # every distinct content, once
    assert sent["sent_bytes"] >= total
    assert archive in objects(rack)
    md5 = subprocess.run(["md5sum"], input=big, capture_output=True).stdout.split()[0].decode()
    assert show(rack, app, first).split() == [
        "file",
        "7",
        files["data/007.txt"].split()[2],
        md5,
        "/ctx/big.bin",
    ]

    # Nothing changed: no file is read again (the digest cache), none is sent, nothing
    # new is stored; the build names the very same context.
    before = objects(rack)
    second, again, same = build(rack, src, app)
    assert (again["read"], again["sent"], again["sent_bytes"]) == (0, 0, 0)
    assert same == archive and objects(rack) == before

    # One small file changed: that file alone travels.
    changed = src / "data" / "007.txt"
    changed.write_text("changed!\n")
    third, once, other = build(rack, src, app)
    assert (once["read"], once["sent"], once["sent_bytes"]) == (1, 1, len("changed!\n"))
    assert objects(rack) - before == {other, _sha(b"changed!\n")}
    assert show(rack, app, third).split()[0] == "changed!"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_rack_gc_removes_what_no_build_needs(rack: RackHandle, tmp_path: Path) -> None:
    app = f"gc-{secrets.token_hex(3)}"
    src = write_files(
        tmp_path / "app",
        {
            "convox.yml": "services:\n  web:\n    build: .\n",
            "Dockerfile": "FROM busybox\nCOPY keep.txt /keep.txt\nCMD cat /keep.txt\n",
            "keep.txt": f"kept {secrets.token_hex(8)}\n",
        },
    )
    rack.ok("apps", "create", app)
    build_id, _sent, archive = build(rack, src, app)
    # What an abandoned upload leaves: a blob no context names, long ago.
    orphan = secrets.token_bytes(64)
    digest = _sha(orphan)
    path = rack.data / "archive" / "objects" / digest[:2] / digest
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(orphan)
    old = time.time() - 3 * 24 * 3600
    os.utime(path, (old, old))

    gc = rack.slipway("rack", "gc")  # the default grace: a day
    assert gc.code == 0, gc.err
    # The status line on stderr (stdout is not a terminal here), the figures on stdout.
    assert gc.err == "Collecting garbage... OK\n"
    assert re.match(r"Removed \d+ unused objects \(.*\); kept \d+ \(.*\)$", gc.out.strip())
    assert digest not in objects(rack)
    assert archive in objects(rack)  # a build names it

    # With no grace, everything no build names goes, and builds still work after it.
    out = rack.ok("rack", "gc", "--grace", "0s")
    assert out.startswith("Removed ")
    assert archive in objects(rack) and _sha((src / "keep.txt").read_bytes()) in objects(rack)
    again, _sent, same = build(rack, src, app)
    assert same == archive
    assert show(rack, app, again) == (src / "keep.txt").read_text()

    bad = rack.slipway("rack", "gc", "--grace", "soon")
    assert bad.code == 1 and bad.err.startswith("ERROR: invalid duration")
