"""FetchGit: the archive service clones a repository and stores its work tree as an archive.

The contract through an in-process server and the typed client, on `file://` repositories
(and one served over HTTP by the real `git http-backend`); then the pieces of
`services.archive.gitfetch` on their own: URL checks, git's messages, timeouts."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from slipway.archive.v1 import archive_pb2 as pb

from client.api.archive import ArchiveClient
from client.api.channel import open_channel
from client.kernel.errors import Cancelled, InvalidArgument
from services.archive.config import Config
from services.archive.gitfetch import Git, check_ref, check_url, explain, redact
from services.archive.server import create_server
from services.common.server import Server
from tests.contexts import stored_entries, stored_files
from tests.e2e.gitserver import GitServer, commit, git, new_work_tree, publish
from tests.helpers import eventually
from tests.tls import ca, tls_files


@dataclass(frozen=True)
class Repos:
    """Repositories under `root`, reachable as `file://<root>/<name>.git`."""

    root: Path
    main: str
    """The sha of `main`'s tip (subject `third`)."""
    tagged: str
    """The sha tagged `v1` (subject `first`): no submodule yet."""
    middle: str
    """The sha of `feature`, an ancestor of `main` (subject `second`), not a tip of main."""

    def url(self, name: str) -> str:
        return f"file://{self.root}/{name}.git"


@pytest.fixture(scope="module")
def repos(tmp_path_factory: pytest.TempPathFactory) -> Repos:
    base = tmp_path_factory.mktemp("repos")
    root = base / "served"
    lib = new_work_tree(base / "lib")
    commit(lib, {"lib.txt": "lib one\n"}, "lib one")
    commit(lib, {"lib.txt": "lib two\n"}, "lib two")
    publish(lib, root / "lib.git")

    work = new_work_tree(base / "app")
    tagged = commit(
        work,
        {
            "convox.yml": "services:\n  web:\n    build: .\n",
            "Dockerfile": "FROM busybox\n",
            "a.txt": "one\n",
            "debug.log": "ignored\n",
            ".dockerignore": "*.log\nconvox.yml\n",
        },
        "first",
    )
    git(work, "tag", "-a", "v1", "-m", "version 1")
    git(work, "submodule", "add", "-q", (root / "lib.git").as_uri(), "vendor/lib")
    git(work / "vendor" / "lib", "checkout", "-q", "HEAD~1")  # not the submodule's tip
    git(work, "config", "-f", ".gitmodules", "submodule.vendor/lib.url", "../lib.git")
    middle = commit(work, {"a.txt": "two\n"}, "second")
    git(work, "branch", "feature", middle)
    main = commit(work, {"a.txt": "three\n"}, "third")
    publish(work, root / "app.git")
    git(root, "init", "-q", "--bare", "empty.git")
    return Repos(root, main, tagged, middle)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "archive"


def make_server(token: str, data_dir: Path, **config: object) -> Server:
    settings = dict(listen="unused", token=token, data_dir=data_dir)
    settings.update(config)  # type: ignore[arg-type]
    return create_server(Config(**settings, tls=tls_files()), address="127.0.0.1:0")  # type: ignore[arg-type]


@pytest.fixture
def archives(token: str, data_dir: Path) -> Iterator[ArchiveClient]:
    server = make_server(token, data_dir)
    channel = open_channel(server.address, token, ca=ca())
    yield ArchiveClient(channel, server.address)
    channel.close()
    server.stop(0)


def contents(archives: ArchiveClient, archive_id: str) -> dict[str, str]:
    """Every regular file of a stored archive, by path."""
    return {path: data.decode() for path, data in stored_files(archives, archive_id).items()}


def leftovers(data_dir: Path) -> list[Path]:
    """Everything under the data folder but the (empty) folders the store keeps."""
    return sorted(
        p for p in data_dir.rglob("*") if p not in (data_dir / "objects", data_dir / "tmp")
    )


def test_default_branch_with_submodule_and_dockerignore(
    archives: ArchiveClient, repos: Repos, data_dir: Path
) -> None:
    fetched = archives.fetch_git("app", repos.url("app"))
    assert (fetched.commit, fetched.subject) == (repos.main, "third")
    files = contents(archives, fetched.id)
    assert files["a.txt"] == "three\n"
    assert files["vendor/lib/lib.txt"] == "lib one\n"  # the recorded commit, not the tip
    assert "debug.log" not in files  # .dockerignore'd
    assert "convox.yml" in files  # the manifest is always packed
    assert not [name for name in files if ".git" in name.split("/") and name != ".gitmodules"]
    assert archives.stat(fetched.id) == fetched.size
    # What is stored: the context and its files' blobs, nothing else (no clone left).
    stored = {p.name for p in leftovers(data_dir) if p.is_file()}
    blobs = {e.sha256 for e in stored_entries(archives, fetched.id) if e.type == "file"}
    assert stored == {fetched.id, *blobs}


@pytest.mark.parametrize(
    ("ref", "text", "subject"),
    [
        ("v1", "one\n", "first"),
        ("feature", "two\n", "second"),
        ("refs/heads/feature", "two\n", "second"),
    ],
)
def test_tag_and_branch(
    archives: ArchiveClient, repos: Repos, ref: str, text: str, subject: str
) -> None:
    fetched = archives.fetch_git("app", repos.url("app"), ref)
    assert fetched.subject == subject
    assert contents(archives, fetched.id)["a.txt"] == text


@pytest.mark.parametrize("length", [40, 10])
def test_commit_sha_full_or_abbreviated(archives: ArchiveClient, repos: Repos, length: int) -> None:
    fetched = archives.fetch_git("app", repos.url("app"), repos.middle[:length])
    assert (fetched.commit, fetched.subject) == (repos.middle, "second")
    files = contents(archives, fetched.id)
    assert files["a.txt"] == "two\n" and files["vendor/lib/lib.txt"] == "lib one\n"


def test_ignored_manifest_named_by_the_request_is_packed(
    archives: ArchiveClient, repos: Repos
) -> None:
    fetched = archives.fetch_git("app", repos.url("app"), "v1", manifest="debug.log")
    assert "debug.log" in contents(archives, fetched.id)


@pytest.mark.parametrize(
    ("url", "ref", "message"),
    [
        ("app", "nope", "cannot fetch {url}: no such ref: nope"),
        ("app", "0" * 40, "cannot fetch {url}: no such ref: " + "0" * 40),
        ("app", "abcdef1", "cannot fetch {url}: no such ref: abcdef1"),
        ("missing", "", "cannot fetch {url}: repository not found"),
        ("empty", "", "cannot fetch {url}: repository is empty"),
        ("app", "-x", "invalid git ref: '-x'"),
    ],
)
def test_failures_leave_nothing(
    archives: ArchiveClient, repos: Repos, data_dir: Path, url: str, ref: str, message: str
) -> None:
    full = repos.url(url)
    with pytest.raises(InvalidArgument) as err:
        archives.fetch_git("app", full, ref)
    assert str(err.value) == message.format(url=full)
    assert leftovers(data_dir) == []


@pytest.mark.parametrize(
    "url", ["ftp://host/x.git", "/srv/x.git", "ext::sh -c id", "--upload-pack=id", "https://"]
)
def test_invalid_url(archives: ArchiveClient, data_dir: Path, url: str) -> None:
    with pytest.raises(InvalidArgument, match=r"^invalid git url: "):
        archives.fetch_git("app", url)
    assert leftovers(data_dir) == []


def test_invalid_app(archives: ArchiveClient, repos: Repos) -> None:
    with pytest.raises(InvalidArgument, match="invalid app name"):
        archives.fetch_git("Bad_App", repos.url("app"))


def test_size_limit_applies(token: str, repos: Repos, data_dir: Path) -> None:
    server = make_server(token, data_dir, max_bytes=100)
    try:
        client = ArchiveClient(open_channel(server.address, token, ca=ca()), server.address)
        with pytest.raises(InvalidArgument, match=r"larger than 100 bytes"):
            client.fetch_git("app", repos.url("app"))
    finally:
        server.stop(0)
    assert leftovers(data_dir) == []


def test_leftover_fetch_folders_are_swept_at_start(token: str, data_dir: Path) -> None:
    stale = data_dir / "tmp" / "git-stale" / "source"
    stale.mkdir(parents=True)
    (stale / "file").write_text("x")
    make_server(token, data_dir).stop(0)
    assert leftovers(data_dir) == []


def test_remote_repository_may_not_use_local_submodules(
    archives: ArchiveClient, repos: Repos, tmp_path: Path
) -> None:
    work = new_work_tree(tmp_path / "w")
    commit(work, {"a": "a"}, "a")
    git(work, "submodule", "add", "-q", repos.url("lib"), "vendor/lib")
    commit(work, {}, "local submodule")
    with GitServer(tmp_path / "served") as server:
        publish(work, server.root / "x.git")
        url = server.url("x.git")
        with pytest.raises(InvalidArgument) as err:
            archives.fetch_git("app", url)
    assert str(err.value) == f"cannot fetch {url}: submodule vendor/lib: transport file not allowed"


@pytest.fixture
def silent_server() -> Iterator[str]:
    """An HTTP address that accepts connections and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/x.git"


def test_timeout_stops_git(silent_server: str, tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument) as err:
        Git(timeout=0.5).clone(silent_server, "", tmp_path / "dest")
    assert str(err.value) == f"cannot fetch {silent_server}: timed out after 0.5s"
    assert not (tmp_path / "dest").exists()


def test_cancelled_fetch_stops_git(silent_server: str, tmp_path: Path) -> None:
    cancelled = threading.Event()
    threading.Timer(0.3, cancelled.set).start()
    with pytest.raises(Cancelled):
        Git(timeout=30).clone(silent_server, "", tmp_path / "dest", cancelled)


def test_cancelled_call_leaves_nothing(token: str, data_dir: Path, silent_server: str) -> None:
    server = make_server(token, data_dir)
    try:
        client = ArchiveClient(open_channel(server.address, token, ca=ca()), server.address)
        # The raw stub: cancelling takes the call's future.
        future = client._stub.FetchGit.future(pb.FetchGitRequest(app="app", url=silent_server))
        eventually(lambda: any((data_dir / "tmp").glob("git-*")), timeout=10)
        future.cancel()
        with pytest.raises(grpc.FutureCancelledError):
            future.result()
        eventually(lambda: leftovers(data_dir) == [], timeout=10)
    finally:
        server.stop(0)


# The pieces on their own.


@pytest.mark.parametrize(
    "url",
    [
        "https://github.com/org/app.git",
        "http://127.0.0.1:8080/app.git",
        "ssh://git@host:2222/org/app.git",
        "git://host/app.git",
        "git@github.com:org/app.git",
        "file:///srv/app.git",
        "file://localhost/srv/app.git",
    ],
)
def test_valid_urls(url: str) -> None:
    assert check_url(url) == url


@pytest.mark.parametrize(
    "ref", ["main", "feature/x", "v1.2.3", "0123abc", "refs/heads/main", "a-b_c"]
)
def test_valid_refs(ref: str) -> None:
    assert check_ref(ref) == ref


@pytest.mark.parametrize("ref", ["-x", "a..b", "a b", "a~1", "HEAD^", "x:y", "x.lock", "@{u}"])
def test_invalid_refs(ref: str) -> None:
    with pytest.raises(InvalidArgument, match="invalid git ref"):
        check_ref(ref)


def test_redact_hides_passwords_only() -> None:
    assert redact("https://u:secret@host/x.git") == "https://u:***@host/x.git"
    assert redact("https://token@host/x.git") == "https://token@host/x.git"
    assert redact("git@host:x.git") == "git@host:x.git"


# What git 2.39 (and curl, and OpenSSH) print, and the reason shown for each.
@pytest.mark.parametrize(
    ("stderr", "reason"),
    [
        (
            "fatal: unable to access 'https://nonexistent.invalid/x.git/': Could not resolve "
            "host: nonexistent.invalid",
            "could not resolve host nonexistent.invalid",
        ),
        (
            "ssh: Could not resolve hostname nowhere.invalid: Name or service not known\r\n"
            "fatal: Could not read from remote repository.",
            "could not resolve host nowhere.invalid",
        ),
        (
            "fatal: unable to look up nowhere.invalid (port 9418) (Name or service not known)",
            "could not resolve host nowhere.invalid",
        ),
        (
            "fatal: could not read Username for 'https://host': terminal prompts disabled",
            "authentication failed",
        ),
        ("fatal: Authentication failed for 'https://host/x.git/'", "authentication failed"),
        (
            "git@host: Permission denied (publickey).\r\nfatal: Could not read from remote "
            "repository.",
            "authentication failed",
        ),
        (
            "remote: HTTP Basic: Access denied\nfatal: Authentication failed for 'x'",
            "authentication failed",
        ),
        (
            "fatal: unable to access 'https://host/x.git/': The requested URL returned error: 403",
            "authentication failed",
        ),
        ("fatal: repository 'https://host/x.git/' not found", "repository not found"),
        (
            "ERROR: Repository not found.\nfatal: Could not read from remote repository.",
            "repository not found",
        ),
        (
            "fatal: '/srv/x.git' does not appear to be a git repository\n"
            "fatal: Could not read from remote repository.",
            "repository not found",
        ),
        (
            "warning: Could not find remote branch nope to clone.\n"
            "fatal: Remote branch nope not found in upstream origin",
            "no such ref",
        ),
        ("fatal: couldn't find remote ref nope", "no such ref"),
        ("fatal: remote error: upload-pack: not our ref 00000", "no such ref"),
        (
            "fatal: unable to access 'http://127.0.0.1:1/x.git/': Failed to connect to "
            "127.0.0.1 port 1 after 0 ms: Couldn't connect to server",
            "could not connect to 127.0.0.1",
        ),
        (
            "ssh: connect to host example.com port 22: Connection refused\n"
            "fatal: Could not read from remote repository.",
            "could not connect to example.com",
        ),
        (
            "Host key verification failed.\nfatal: Could not read from remote repository.",
            "host key verification failed",
        ),
        ("fatal: transport 'file' not allowed", "transport file not allowed"),
        ("error: something\nfatal: something odd happened", "something odd happened"),
        ("", "git failed"),
    ],
)
def test_explain(stderr: str, reason: str) -> None:
    assert explain(stderr) == reason
