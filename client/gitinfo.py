"""What git says of a source folder, for a build's default description."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

_SHA = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")


def _git(folder: Path, *args: str) -> str | None:
    """The output of `git -C folder args…`, or None when git is missing or fails."""
    env = dict(os.environ, GIT_TERMINAL_PROMPT="0", LC_ALL="C")
    try:
        done = subprocess.run(
            ["git", "-C", str(folder), *args],
            capture_output=True,
            env=env,
            timeout=15,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None
    return done.stdout.decode("utf-8", "replace")


def describe(folder: str | os.PathLike[str]) -> tuple[str, str] | None:
    """(full commit sha, `build <sha[:10]> <subject>`) when `folder` is inside a git work
    tree with nothing modified or untracked; otherwise None. Never raises."""
    try:
        path = Path(folder)
        if (_git(path, "rev-parse", "--is-inside-work-tree") or "").strip() != "true":
            return None
        status = _git(path, "status", "--porcelain")
        if status is None or status.strip():
            return None
        sha = (_git(path, "rev-parse", "HEAD") or "").strip()
        if not _SHA.match(sha):
            return None
        subject = (_git(path, "log", "-1", "--format=%s") or "").strip()
        return sha, f"build {sha[:10]} {subject}".rstrip()
    except Exception:  # noqa: BLE001 - a description is never worth failing a build
        return None
