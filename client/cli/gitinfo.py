"""What git says of a source folder, for a build's default description; and how
`slipway build` tells a git URL (`URL#ref`) from a folder."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

_SHA = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")
_GIT_URL = re.compile(r"^(https?|ssh|git|file)://|^[\w.-]+@[\w.-]+:", re.I)


def is_git_url(source: str) -> bool:
    """Whether `slipway build SOURCE` names a repository rather than a folder."""
    return bool(_GIT_URL.match(source))


def split_ref(source: str) -> tuple[str, str]:
    """`URL#ref` as (URL, ref); the ref is empty when there is none (the remote HEAD)."""
    url, _, ref = source.partition("#")
    return url, ref


def repo_name(url: str) -> str:
    """The repository's name: the last part of its path without `.git` (`x` for
    `https://host/org/x.git` and `git@host:org/x.git`)."""
    path = url.partition("://")[2] if "://" in url else url.partition(":")[2]
    last = re.split(r"[/:]", path.rstrip("/"))[-1]
    return last[: -len(".git")] if last.endswith(".git") else last


def description(sha: str, subject: str) -> str:
    """A build's default description: `build <sha[:10]> <subject>`."""
    return f"build {sha[:10]} {subject}".rstrip()


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
        return sha, description(sha, subject)
    except Exception:  # noqa: BLE001 - a description is never worth failing a build
        return None
