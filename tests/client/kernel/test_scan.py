"""Walking and hashing a folder for an incremental upload: `scan` sends the tree `pack`
archives, each file with its sha256, read again only when the digest cache cannot vouch
for it."""

from __future__ import annotations

import hashlib
import io
import os
import sqlite3
import stat
import tarfile
import time
from contextlib import closing
from pathlib import Path

import pytest

from client.cli.digestcache import FILE_NAME, DigestCache, cache_dir
from client.kernel.context import Scanned, file_sha256, pack, scan
from client.kernel.entries import DIR, FILE, SYMLINK, Limits, Tree
from client.kernel.errors import InvalidArgument

MANIFEST = """
services:
  web:
    build: .
  api:
    build:
      path: api
      manifest: Dockerfile.api
  db:
    image: postgres
"""

DOCKERIGNORE = "**/*.md\n!README.md\nnode_modules\nDockerfile\napi\n"

#: What `slipway build` sends for the folder `_project` makes, in order.
EXPECTED = [
    ".dockerignore",
    "Dockerfile",
    "README.md",
    "api",
    "api/Dockerfile.api",
    "convox.yml",
    "empty",
    "link",
    "src",
    "src/a.py",
    "src/deep",
    "src/deep/keep.py",
    "src/deep/nested",
    "src/deep/nested/z.txt",
    "src/empty.txt",
    "src/to-keep",
]


def _write(root: Path, files: dict[str, bytes]) -> None:
    """Writes the files, dated ten seconds ago: a file changed in the last few clock
    ticks before a walk is never remembered (racy-clean), and these are settled."""
    settled = time.time_ns() - 10_000_000_000
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        os.utime(path, ns=(settled, settled))


def _project(root: Path) -> Path:
    _write(
        root,
        {
            "convox.yml": MANIFEST.encode(),
            ".dockerignore": DOCKERIGNORE.encode(),
            "Dockerfile": b"FROM busybox\n",  # ignored, yet named by the manifest
            "README.md": b"# read me\n",  # excluded by **/*.md, back by the exception
            "notes.md": b"notes",
            "api/Dockerfile.api": b"FROM busybox\n",
            "api/code.py": b"print('api')\n",
            "src/a.py": b"print('a')\n",
            "src/empty.txt": b"",
            "src/deep/keep.py": os.urandom(2_500_000),  # more than one read's chunk
            "src/deep/notes.md": b"deep notes",
            "src/deep/nested/z.txt": b"z",
            "node_modules/x/y.js": b"js",
        },
    )
    (root / "empty").mkdir()
    (root / "link").symlink_to("src")
    (root / "src" / "to-keep").symlink_to("deep/keep.py")
    (root / "src" / "a.py").chmod(0o755)
    return root


def _pack_members(root: Path) -> list[tarfile.TarInfo]:
    out = io.BytesIO()
    pack(root, out)
    with tarfile.open(fileobj=io.BytesIO(out.getvalue()), mode="r:gz") as tar:
        return tar.getmembers()


def _scan(root: Path, cache: DigestCache | None = None) -> dict[str, Scanned]:
    return {s.entry.path: s for s in scan(root, cache=cache)}


def _files(scanned: dict[str, Scanned]) -> dict[str, Scanned]:
    return {p: s for p, s in scanned.items() if s.entry.type == FILE}


def _env(tmp_path: Path) -> dict[str, str]:
    return {"XDG_CACHE_HOME": str(tmp_path / "cache"), "HOME": str(tmp_path / "home")}


def _cached_scan(tmp_path: Path, root: Path) -> dict[str, Scanned]:
    with DigestCache.open(_env(tmp_path), str(root)) as cache:
        return _scan(root, cache)


def _set_mtime(path: Path, mtime_ns: int) -> None:
    os.utime(path, ns=(mtime_ns, mtime_ns), follow_symlinks=False)


# -- the walk -----------------------------------------------------------------------------


def test_scan_walks_like_pack(tmp_path: Path) -> None:
    root = _project(tmp_path / "ctx")
    members = _pack_members(root)
    scanned = list(scan(root))
    assert [m.name for m in members] == EXPECTED
    assert [s.entry.path for s in scanned] == [m.name for m in members]
    for member, item in zip(members, scanned, strict=True):
        entry = item.entry
        if member.isdir():
            assert entry.type == DIR and item.full == "" and not item.read
        elif member.issym():
            assert entry.type == SYMLINK and entry.target == member.linkname
            assert entry.mode == 0o777 and item.full == ""
        else:
            assert member.isreg() and entry.type == FILE
            assert entry.size == member.size
            assert item.full == os.path.join(os.path.abspath(root), entry.path)
            assert item.read
        if not member.issym():
            assert entry.mode == member.mode & 0o777
        assert entry.mtime == os.lstat(root / entry.path).st_mtime_ns
    assert {s.entry.path: s.entry.mode for s in scanned}["src/a.py"] == 0o755


def test_scan_with_another_manifest(tmp_path: Path) -> None:
    root = tmp_path / "ctx"
    _write(
        root,
        {
            "deploy/other.yml": b"services:\n  web:\n    build: web\n",
            "web/Dockerfile": b"FROM busybox",
            "web/code": b"x",
            ".dockerignore": b"*\n",
        },
    )
    out = io.BytesIO()
    pack(root, out, "deploy/other.yml")
    with tarfile.open(fileobj=io.BytesIO(out.getvalue()), mode="r:gz") as tar:
        names = tar.getnames()
    assert (
        [s.entry.path for s in scan(root, "deploy/other.yml")]
        == names
        == [
            ".dockerignore",
            "deploy",
            "deploy/other.yml",
            "web",
            "web/Dockerfile",
        ]
    )


def test_scanned_entries_make_a_tree(tmp_path: Path) -> None:
    """What the client sends passes the rack's checks, in the order the rack lists it."""
    root = _project(tmp_path / "ctx")
    entries = [s.entry for s in scan(root)]
    tree = Tree(entries, Limits(max_bytes=10 << 20, max_files=100))
    assert list(tree) == entries


def test_digests_are_sha256_of_the_bytes(tmp_path: Path) -> None:
    root = _project(tmp_path / "ctx")
    files = _files(_scan(root))
    assert sorted(files) == [
        ".dockerignore",
        "Dockerfile",
        "README.md",
        "api/Dockerfile.api",
        "convox.yml",
        "src/a.py",
        "src/deep/keep.py",
        "src/deep/nested/z.txt",
        "src/empty.txt",
    ]
    for path, item in files.items():
        data = (root / path).read_bytes()
        assert item.entry.sha256 == hashlib.sha256(data).hexdigest(), path
        assert item.entry.size == len(data)
    assert files["src/empty.txt"].entry.sha256 == hashlib.sha256(b"").hexdigest()


def test_hard_links_share_a_digest_and_are_read_once(tmp_path: Path) -> None:
    root = tmp_path / "ctx"
    _write(root, {"a/one": b"same bytes", "other": b"other bytes"})
    os.link(root / "a" / "one", root / "two")
    files = _files(_scan(root))
    digest = hashlib.sha256(b"same bytes").hexdigest()
    assert files["a/one"].entry.sha256 == files["two"].entry.sha256 == digest
    assert files["other"].entry.sha256 == hashlib.sha256(b"other bytes").hexdigest()
    assert (files["a/one"].read, files["two"].read, files["other"].read) == (True, False, True)


def test_file_sha256(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"hello")
    assert file_sha256(str(tmp_path / "f")) == (5, hashlib.sha256(b"hello").hexdigest())
    (tmp_path / "l").symlink_to("f")
    with pytest.raises(OSError):
        file_sha256(str(tmp_path / "l"))


def test_scan_of_a_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="no such directory"):
        list(scan(tmp_path / "nope"))
    (tmp_path / "file").write_bytes(b"x")
    with pytest.raises(InvalidArgument, match="no such directory"):
        list(scan(tmp_path / "file"))


# -- the digest cache ---------------------------------------------------------------------


def test_a_second_scan_reads_nothing(tmp_path: Path) -> None:
    root = _project(tmp_path / "ctx")
    first = _cached_scan(tmp_path, root)
    assert all(s.read for s in _files(first).values())
    assert (tmp_path / "cache" / "slipway" / FILE_NAME).is_file()

    second = _cached_scan(tmp_path, root)
    assert list(second) == list(first)
    assert [s.entry for s in second.values()] == [s.entry for s in first.values()]
    assert not any(s.read for s in second.values())
    # and it stays so
    assert not any(s.read for s in _cached_scan(tmp_path, root).values())


def test_a_cache_that_is_not_closed_learns_nothing(tmp_path: Path) -> None:
    """Digests are written back at close: an upload that died leaves no half-written rows."""
    root = _project(tmp_path / "ctx")
    unclosed = DigestCache.open(_env(tmp_path), str(root))
    try:
        _scan(root, unclosed)
        assert all(s.read for s in _files(_cached_scan(tmp_path, root)).values())
    finally:
        unclosed.close()


def test_a_new_mtime_is_read_again(tmp_path: Path) -> None:
    root = _project(tmp_path / "ctx")
    first = _cached_scan(tmp_path, root)
    path = root / "src" / "a.py"
    before = os.stat(path)
    path.write_bytes(b"print('b')\n")  # same size
    _set_mtime(path, before.st_mtime_ns + 1_234_567_891)
    assert os.stat(path).st_size == before.st_size

    second = _cached_scan(tmp_path, root)
    changed = second["src/a.py"]
    assert changed.read
    assert changed.entry.sha256 == hashlib.sha256(b"print('b')\n").hexdigest()
    assert changed.entry.sha256 != first["src/a.py"].entry.sha256
    assert changed.entry.mtime == before.st_mtime_ns + 1_234_567_891
    assert [p for p, s in _files(second).items() if s.read] == ["src/a.py"]
    # the new digest is what is remembered
    third = _cached_scan(tmp_path, root)
    assert not third["src/a.py"].read
    assert third["src/a.py"].entry.sha256 == changed.entry.sha256


def test_a_new_size_is_read_again(tmp_path: Path) -> None:
    root = _project(tmp_path / "ctx")
    _cached_scan(tmp_path, root)
    path = root / "src" / "deep" / "nested" / "z.txt"
    before = os.stat(path)
    path.write_bytes(b"zz")
    _set_mtime(path, before.st_mtime_ns)  # only the size tells
    assert os.stat(path).st_ino == before.st_ino

    second = _cached_scan(tmp_path, root)
    changed = second["src/deep/nested/z.txt"]
    assert changed.read
    assert (changed.entry.size, changed.entry.sha256) == (2, hashlib.sha256(b"zz").hexdigest())
    assert [p for p, s in _files(second).items() if s.read] == ["src/deep/nested/z.txt"]


def test_a_replaced_file_is_read_again(tmp_path: Path) -> None:
    root = _project(tmp_path / "ctx")
    _cached_scan(tmp_path, root)
    path = root / "src" / "a.py"
    before = os.stat(path)
    new = root / "src" / ".a.py.new"
    new.write_bytes(b"print('c')\n")  # same size
    os.replace(new, path)
    _set_mtime(path, before.st_mtime_ns)  # only the inode tells
    after = os.stat(path)
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    assert after.st_ino != before.st_ino

    second = _cached_scan(tmp_path, root)
    changed = second["src/a.py"]
    assert changed.read
    assert changed.entry.sha256 == hashlib.sha256(b"print('c')\n").hexdigest()
    assert [p for p, s in _files(second).items() if s.read] == ["src/a.py"]


def test_a_new_file_is_read_the_others_are_not(tmp_path: Path) -> None:
    root = _project(tmp_path / "ctx")
    _cached_scan(tmp_path, root)
    (root / "src" / "new.py").write_bytes(b"new")
    second = _cached_scan(tmp_path, root)
    assert [p for p, s in _files(second).items() if s.read] == ["src/new.py"]


def test_folders_share_one_cache_file(tmp_path: Path) -> None:
    """Each folder's close forgets its own vanished files, never another folder's, even
    one whose name starts the same."""
    roots = [tmp_path / name for name in ("ctx", "ctx-b", "ctx0", "ct")]
    for root in roots:
        _write(root, {"f": root.name.encode(), "sub/g": b"g"})
    for root in roots:
        assert all(s.read for s in _files(_cached_scan(tmp_path, root)).values())
    (roots[1] / "sub" / "g").unlink()
    assert not any(s.read for s in _cached_scan(tmp_path, roots[1]).values())
    for root in roots:
        scanned = _cached_scan(tmp_path, root)
        assert not any(s.read for s in scanned.values()), root.name
        assert scanned["f"].entry.sha256 == hashlib.sha256(root.name.encode()).hexdigest()
    with closing(sqlite3.connect(tmp_path / "cache" / "slipway" / FILE_NAME)) as db:
        paths = sorted(row[0] for row in db.execute("SELECT path FROM digests"))
    assert paths == sorted(
        str(root / name)
        for root in roots
        for name in ("f", "sub/g")
        if (root, name) != (roots[1], "sub/g")
    )


def test_a_garbage_cache_file_is_not_used(tmp_path: Path) -> None:
    root = _project(tmp_path / "ctx")
    cache_file = tmp_path / "cache" / "slipway" / FILE_NAME
    cache_file.parent.mkdir(parents=True)
    garbage = b"this is not an SQLite database\n" * 200
    cache_file.write_bytes(garbage)
    plain = _scan(root)
    for _ in range(2):
        scanned = _cached_scan(tmp_path, root)
        assert [s.entry for s in scanned.values()] == [s.entry for s in plain.values()]
        assert all(s.read for s in _files(scanned).values())
    assert cache_file.read_bytes() == garbage


def test_a_cache_that_cannot_be_made_is_not_used(tmp_path: Path) -> None:
    root = _project(tmp_path / "ctx")
    (tmp_path / "cache").write_bytes(b"a file where the cache folder would go")
    for _ in range(2):
        scanned = _cached_scan(tmp_path, root)
        assert all(s.read for s in _files(scanned).values())
    assert [s.entry for s in scanned.values()] == [s.entry for s in _scan(root).values()]


def test_cache_file_and_folder_modes(tmp_path: Path) -> None:
    root = _project(tmp_path / "ctx")
    old = os.umask(0)  # what the cache asks for, not what the umask leaves
    try:
        _cached_scan(tmp_path, root)
    finally:
        os.umask(old)
    folder = tmp_path / "cache" / "slipway"
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(folder / FILE_NAME).st_mode) == 0o600
    for other in folder.iterdir():  # no journal left readable by others
        assert stat.S_IMODE(os.stat(other).st_mode) & 0o077 == 0, other.name


def test_cache_dir() -> None:
    assert cache_dir({"XDG_CACHE_HOME": "/x/cache", "HOME": "/home/u"}) == Path("/x/cache/slipway")
    # the XDG spec: an empty or relative value is ignored
    for xdg in ("", "relative/cache"):
        env = {"XDG_CACHE_HOME": xdg, "HOME": "/home/u"}
        assert cache_dir(env) == Path("/home/u/.cache/slipway")
    assert cache_dir({"HOME": "/home/u"}) == Path("/home/u/.cache/slipway")
    assert cache_dir({}) == Path(os.path.expanduser("~")) / ".cache" / "slipway"


def test_a_file_changed_just_before_the_walk_is_hashed_but_not_remembered(
    tmp_path: Path,
) -> None:
    root = _project(tmp_path / "ctx")
    (root / "src" / "fresh.py").write_bytes(b"written a moment ago")
    first = _cached_scan(tmp_path, root)
    assert first["src/fresh.py"].read
    # Another change in the same clock tick would keep size and mtime: it is read again.
    second = _cached_scan(tmp_path, root)
    assert [p for p, s in _files(second).items() if s.read] == ["src/fresh.py"]
