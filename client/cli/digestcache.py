"""The client's cache of file digests, so a rebuild does not read unchanged files again.

One SQLite file, `$XDG_CACHE_HOME/slipway/digests.sqlite` (`~/.cache/slipway/…` by
default), mode 0600 in a 0700 folder: a file's absolute path, size, mtime (ns) and inode ->
its sha256. A row counts only when all four still match, so a changed mtime or size (or
a file replaced by another) is read again. The cache is a speed-up and nothing more: when
it cannot be read or written the upload goes on without it.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Mapping
from pathlib import Path

log = logging.getLogger(__name__)

FILE_NAME = "digests.sqlite"


def cache_dir(env: Mapping[str, str]) -> Path:
    """`$XDG_CACHE_HOME/slipway`, else `~/.cache/slipway`."""
    base = env.get("XDG_CACHE_HOME") or ""
    if not os.path.isabs(base):  # the XDG spec: a relative value is ignored
        base = os.path.join(env.get("HOME") or os.path.expanduser("~"), ".cache")
    return Path(base) / "slipway"


class DigestCache:
    """Digests of the files under one folder, read at open and written back at close."""

    def __init__(self, path: Path, root: str) -> None:
        self.path = path
        self.root = os.path.abspath(root).rstrip(os.sep) + os.sep
        self._rows: dict[str, tuple[int, int, int, str]] = {}
        self._seen: set[str] = set()
        self._new: dict[str, tuple[int, int, int, str]] = {}
        self._db: sqlite3.Connection | None = None
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            os.close(fd)
            self._db = sqlite3.connect(path, timeout=5)
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS digests (path TEXT PRIMARY KEY, size INTEGER,"
                " mtime INTEGER, inode INTEGER, sha256 TEXT)"
            )
            upper = self.root[:-1] + chr(ord(os.sep) + 1)
            rows = self._db.execute(
                "SELECT path, size, mtime, inode, sha256 FROM digests WHERE path >= ? AND path < ?",
                (self.root, upper),
            )
            self._rows = {r[0]: (r[1], r[2], r[3], r[4]) for r in rows}
        except (OSError, sqlite3.Error) as err:
            log.debug("digest cache %s not used: %s", path, err)
            self._close_db()

    @classmethod
    def open(cls, env: Mapping[str, str], root: str) -> DigestCache:
        return cls(cache_dir(env) / FILE_NAME, root)

    def get(self, path: str, size: int, mtime: int, inode: int) -> str | None:
        self._seen.add(path)
        row = self._rows.get(path)
        if row is None or row[:3] != (size, mtime, inode):
            return None
        return row[3]

    def put(self, path: str, size: int, mtime: int, inode: int, sha256: str) -> None:
        self._seen.add(path)
        self._new[path] = (size, mtime, inode, sha256)

    def close(self) -> None:
        """Writes what was learned; forgets files under the folder no longer there."""
        if self._db is None:
            return
        gone = [(p,) for p in self._rows if p not in self._seen]
        try:
            with self._db:
                self._db.executemany("DELETE FROM digests WHERE path = ?", gone)
                self._db.executemany(
                    "INSERT OR REPLACE INTO digests VALUES (?, ?, ?, ?, ?)",
                    [(p, *row) for p, row in self._new.items()],
                )
        except sqlite3.Error as err:
            log.debug("digest cache %s not written: %s", self.path, err)
        self._close_db()

    def _close_db(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def __enter__(self) -> DigestCache:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
