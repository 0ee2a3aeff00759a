"""Cloning a git repository into a folder, for `slipway build URL[#ref]`.

The clone is as small as the ref allows: `--depth 1` for the remote HEAD, a branch or a
tag; a shallow fetch by sha for a full commit sha (protocol v2 servers allow it), else a
full fetch and a checkout. Submodules follow, shallow where the server allows it.

Git never asks anything here: no terminal, no askpass, no credential helper (a helper
could also *store* a credential someone put in a URL, for the next caller to use), and ssh
runs without a controlling terminal. Git's stderr (in the C locale) is mapped to one short
reason, because that is what the user sees after `cannot fetch <url>: `.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from client.kernel.errors import Cancelled, InvalidArgument, SlipwayError, Unavailable

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 600.0

_SCHEMES = ("http", "https", "ssh", "git", "file")
_SCP_LIKE = re.compile(
    r"^(?P<user>[\w.+-]+)@(?P<host>[\w.-]+):(?P<path>[^/\s][^\s]*|/[^/\s][^\s]*)\Z"
)
_HEX = re.compile(r"^[0-9a-f]{7,64}\Z")
_FULL_SHA = re.compile(r"^([0-9a-f]{40}|[0-9a-f]{64})\Z")
# Variables that would point git at some other repository than the one it works on
# (`git rev-parse --local-env-vars`), dropped from the environment git inherits.
_LOCAL_VARS = (
    "GIT_ALTERNATE_OBJECT_DIRECTORIES GIT_CONFIG GIT_CONFIG_PARAMETERS GIT_CONFIG_COUNT "
    "GIT_OBJECT_DIRECTORY GIT_DIR GIT_WORK_TREE GIT_IMPLICIT_WORK_TREE GIT_GRAFT_FILE "
    "GIT_INDEX_FILE GIT_NO_REPLACE_OBJECTS GIT_REPLACE_REF_BASE GIT_PREFIX GIT_SHALLOW_FILE "
    "GIT_COMMON_DIR"
).split()
# Failures a second try in full would only repeat.
_FINAL = ("authentication failed", "host key verification failed", "repository not found")
_SUBMODULE_PATH = re.compile(r"submodule path '([^']+)'|Failed to clone '([^']+)'")
# Options on every git command: nothing interactive, nothing remembered, quiet output.
_CONFIG = (
    "credential.helper=",
    "core.askPass=",
    "advice.detachedHead=false",
    "init.defaultBranch=main",
    "protocol.ext.allow=never",
)


@dataclass(frozen=True)
class Checkout:
    """What was checked out."""

    commit: str
    """The full sha of HEAD."""
    subject: str
    """Its subject line."""


def redact(url: str) -> str:
    """`url` with any password replaced by `***`, fit for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user, _, host = parts.netloc.rpartition("@")
    name = user.partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{name}:***@{host}"))


def check_url(url: str) -> str:
    """`url` when it names a repository git may fetch from here; InvalidArgument otherwise.
    Local paths must be spelled `file://`; `ext::` and other transports are refused."""
    bad = InvalidArgument(f"invalid git url: {redact(url)}")
    if not url or url.startswith("-") or any(c.isspace() or ord(c) < 32 for c in url):
        raise bad
    if _SCP_LIKE.match(url):
        return url
    scheme, sep, _ = url.partition("://")
    if not sep or scheme.lower() not in _SCHEMES:
        raise bad
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise bad from None
    if scheme.lower() == "file":
        if parts.netloc not in ("", "localhost") or parts.path in ("", "/"):
            raise bad
    elif not parts.hostname or parts.hostname.startswith("-") or parts.path in ("", "/"):
        raise bad
    return url


def check_ref(ref: str) -> str:
    """`ref` when it can name a branch, tag or commit; InvalidArgument otherwise."""
    if ref and (
        ref.startswith(("-", "/"))
        or ref.endswith(("/", ".", ".lock"))
        or ".." in ref
        or "@{" in ref
        or any(c.isspace() or ord(c) < 32 or c in "~^:?*[\\" for c in ref)
    ):
        raise InvalidArgument(f"invalid git ref: {ref!r}")
    return ref


# Git's (and curl's, and ssh's) words for each failure, most specific first.
_REASONS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern, re.I | re.M), reason)
    for pattern, reason in (
        (r"Could not resolve host(?:name)?:? '?([^\s':]+)", "could not resolve host {0}"),
        (r"unable to look up ([^\s]+) \(port", "could not resolve host {0}"),
        (
            r"terminal prompts disabled|Authentication failed|could not read (?:Username|"
            r"Password)|Permission denied \(|Permission denied, please try again|"
            r"returned error: 40[13]|HTTP Basic: Access denied",
            "authentication failed",
        ),
        (r"Host key verification failed", "host key verification failed"),
        (
            r"repository '[^']*' not found|does not appear to be a git repository|"
            r"^ERROR: Repository not found|returned error: 404",
            "repository not found",
        ),
        (
            r"Remote branch (.+) not found in upstream|couldn't find remote ref|not our ref",
            "no such ref",
        ),
        (
            r"Failed to connect to ([^\s]+)|unable to connect to ([^\s:]+)|"
            r"connect to host ([^\s]+)",
            "could not connect to {0}",
        ),
        (r"transport '(\w+)' not allowed", "transport {0} not allowed"),
        (
            r"SSL certificate problem|server certificate verification failed",
            "TLS certificate verification failed",
        ),
    )
)


def explain(stderr: str) -> str:
    """The short reason of a failed git command, from its stderr."""
    for pattern, reason in _REASONS:
        found = pattern.search(stderr)
        if found:
            groups = [g for g in found.groups() if g] or [found.group(0)]
            return reason.format(*groups)
    fatal = [ln[len("fatal: ") :] for ln in stderr.splitlines() if ln.startswith("fatal: ")]
    lines = fatal or [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    return lines[-1] if lines else "git failed"


class GitFailed(Exception):
    """A git command exited non-zero (or was stopped); `stderr` says why."""

    def __init__(self, stderr: str) -> None:
        super().__init__(stderr)
        self.stderr = stderr


class _Runner:
    """Runs git commands against one deadline, stopping them when cancelled."""

    def __init__(self, url: str, timeout: float, cancelled: threading.Event | None) -> None:
        self.deadline = time.monotonic() + timeout
        self.timeout = timeout
        self.cancelled = cancelled or threading.Event()
        env = {k: v for k, v in os.environ.items() if k not in _LOCAL_VARS}
        env.pop("SSH_ASKPASS", None)
        env.update(
            LC_ALL="C",
            GIT_TERMINAL_PROMPT="0",
            GIT_ASKPASS="",
            GCM_INTERACTIVE="never",
            GIT_LFS_SKIP_SMUDGE="1",
        )
        self.env = env
        config = list(_CONFIG)
        # Since git 2.38.1 submodules may not use file:// unless allowed: a repository that
        # is itself local may have local submodules, a remote one may not reach the rack's
        # own disk through them.
        if url.lower().startswith("file://"):
            config.append("protocol.file.allow=always")
        self.prefix = ["git"] + [arg for c in config for arg in ("-c", c)]

    def __call__(self, *args: str, cwd: Path | None = None) -> str:
        """Stdout of `git args…`; GitFailed when it fails, a SlipwayError on a timeout, a
        cancelled call or no git at all."""
        try:
            proc = subprocess.Popen(
                [*self.prefix, *args],
                cwd=cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                # A session of its own: a stop reaches git's helpers (ssh, remote-http), and
                # with no controlling terminal (nor SSH_ASKPASS) ssh cannot ask anything
                # either, while the operator's core.sshCommand and ~/.ssh still apply.
                start_new_session=True,
            )
        except FileNotFoundError:
            raise Unavailable("git is not installed where the archive service runs") from None
        while True:
            left = self.deadline - time.monotonic()
            try:
                # Short waits, so a cancelled call stops git within a tenth of a second.
                out, err = proc.communicate(timeout=max(0.0, min(left, 0.1)))
                break
            except subprocess.TimeoutExpired:
                if self.cancelled.is_set() or left <= 0:
                    _kill(proc)
                    if self.cancelled.is_set():
                        raise Cancelled("cancelled") from None
                    raise InvalidArgument(f"timed out after {self.timeout:g}s") from None
        if proc.returncode != 0:
            raise GitFailed(err.decode("utf-8", "replace"))
        return out.decode("utf-8", "replace")


def _kill(proc: subprocess.Popen[bytes]) -> None:
    """Kills a command and every helper it started, and reaps it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.communicate()


def _remote_refs(listing: str) -> set[str]:
    """The ref names of `git ls-remote` output."""
    return {ln.split("\t", 1)[1] for ln in listing.splitlines() if "\t" in ln}


class Git:
    """Clones repositories with the `git` command."""

    def __init__(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.timeout = timeout

    def clone(
        self, url: str, ref: str, dest: Path, cancelled: threading.Event | None = None
    ) -> Checkout:
        """Checks `ref` (default: the remote HEAD) of `url` out into `dest` (which must not
        exist), submodules included, and removes every `.git` from the tree. Raises
        InvalidArgument with `cannot fetch <url>: <reason>` on failure."""
        check_url(url)
        check_ref(ref)
        run = _Runner(url, self.timeout, cancelled)
        try:
            return self._clone(run, url, ref, dest)
        except GitFailed as err:
            reason = explain(err.stderr.replace(str(dest), "."))
            if reason == "no such ref":
                reason = f"no such ref: {ref or 'HEAD'}"
            log.info("fetching %s failed: %s", redact(url), err.stderr.strip())
            raise InvalidArgument(f"cannot fetch {redact(url)}: {reason}") from None
        except SlipwayError as err:
            if isinstance(err, InvalidArgument):
                raise InvalidArgument(f"cannot fetch {redact(url)}: {err}") from None
            raise

    def _clone(self, run: _Runner, url: str, ref: str, dest: Path) -> Checkout:
        # One round trip first: access errors surface here, and the ref's kind decides how.
        refs = _remote_refs(run("ls-remote", "--symref", url))
        if not refs:
            raise InvalidArgument("repository is empty")
        if not ref and "HEAD" not in refs:
            raise GitFailed("fatal: couldn't find remote ref HEAD")
        if not ref or f"refs/heads/{ref}" in refs or f"refs/tags/{ref}" in refs:
            branch = ["--branch", ref] if ref else []
            run("clone", "--quiet", "--depth", "1", "--no-tags", *branch, "--", url, str(dest))
        elif ref in refs or _HEX.match(ref):
            self._checkout_commit(run, url, ref, dest)
        else:
            raise GitFailed(f"fatal: couldn't find remote ref {ref}")
        if (dest / ".gitmodules").exists():
            self._submodules(run, dest)
        commit = run("rev-parse", "HEAD", cwd=dest).strip()
        subject = run("log", "-1", "--format=%s", cwd=dest).strip()
        _remove_git_dirs(dest)
        return Checkout(commit=commit, subject=subject)

    def _checkout_commit(self, run: _Runner, url: str, ref: str, dest: Path) -> None:
        """A full ref name or a commit sha: a shallow fetch of exactly that when the server
        allows it, otherwise everything, then a checkout."""
        dest.mkdir()
        run("init", "--quiet", cwd=dest)
        run("remote", "add", "origin", url, cwd=dest)
        if not _HEX.match(ref) or _FULL_SHA.match(ref):
            try:
                run("fetch", "--quiet", "--depth", "1", "origin", ref, cwd=dest)
                run("checkout", "--quiet", "--detach", "FETCH_HEAD", cwd=dest)
                return
            except GitFailed as err:
                if "not our ref" in err.stderr or not _HEX.match(ref):
                    raise
                # A protocol v0 server refuses unadvertised objects: fetch everything.
        run("fetch", "--quiet", "--tags", "origin", cwd=dest)
        try:
            run("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", cwd=dest)
        except GitFailed:
            raise GitFailed(f"fatal: couldn't find remote ref {ref}") from None
        run("checkout", "--quiet", "--detach", ref, cwd=dest)

    def _submodules(self, run: _Runner, dest: Path) -> None:
        """Every submodule, recursively: shallow first; in full when a shallow fetch cannot
        reach the recorded commit."""
        update = ("submodule", "--quiet", "update", "--init", "--recursive", "--jobs", "4")
        try:
            try:
                run(*update, "--depth", "1", cwd=dest)
            except GitFailed as err:
                if explain(err.stderr) in _FINAL or explain(err.stderr).startswith("could not"):
                    raise
                log.info("shallow submodules failed, fetching in full: %s", err.stderr.strip())
                run(*update, cwd=dest)
        except GitFailed as err:
            stderr = err.stderr.replace(f"{dest}/", "")
            found = _SUBMODULE_PATH.search(stderr)
            where = f"submodule {found.group(1) or found.group(2)}" if found else "submodules"
            raise InvalidArgument(f"{where}: {explain(stderr)}") from None


def _remove_git_dirs(root: Path) -> None:
    """Removes every `.git` (the repository's folder, the submodules' link files): the
    archive holds the work tree only. Git never checks out a path named `.git`."""
    for folder, dirs, files in os.walk(root):
        if ".git" in dirs:
            dirs.remove(".git")
            path = os.path.join(folder, ".git")
            if os.path.islink(path):
                os.unlink(path)
            else:
                shutil.rmtree(path)
        if ".git" in files:
            os.unlink(os.path.join(folder, ".git"))
