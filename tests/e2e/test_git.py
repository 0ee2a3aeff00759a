"""`slipway build URL[#ref]` end to end: the rack's archive service clones repositories
served over HTTP by the real `git http-backend` (and one `file://`), then builds them on
the real engine and registry."""

from __future__ import annotations

import re
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.conftest import RackHandle
from tests.e2e.gitserver import GitServer, commit, git, new_work_tree, publish

pytestmark = pytest.mark.docker

BUILD_ID = re.compile(r"^Build:   (B[A-Z]{10})$", re.M)
USER, PASSWORD = "deployer", "s3cret"


@dataclass(frozen=True)
class Served:
    """The repositories of this module and where they are."""

    server: GitServer
    name: str
    """The app repository's name (also the app a build of it defaults to)."""
    bare: Path
    tip: str
    """main's tip: subject `fourth`, a.txt `four`."""
    older: str
    """An ancestor of main that no ref points at: subject `third`, a.txt `three`."""

    def url(self, path: str = "") -> str:
        return self.server.url(path or f"{self.name}.git")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    base = tmp_path_factory.mktemp("git")
    name = f"gitapp-{secrets.token_hex(3)}"
    with GitServer(base / "served", auth={"/private/": (USER, PASSWORD)}) as server:
        lib = new_work_tree(base / "lib")
        commit(lib, {"lib.txt": "from the submodule\n"}, "lib")
        publish(lib, server.root / "lib.git")

        work = new_work_tree(base / "app")
        commit(
            work,
            {
                "convox.yml": "services:\n  web:\n    build: .\n",
                "Dockerfile": 'FROM busybox\nCOPY . /src\nENTRYPOINT ["cat"]\n',
                "a.txt": "one\n",
                "secret.log": "must not reach the image\n",
                ".dockerignore": "*.log\n",
            },
            "first",
        )
        git(work, "tag", "-a", "v1", "-m", "version one")
        commit(work, {"a.txt": "two\n"}, "second")
        git(work, "branch", "feature")
        # An absolute http URL, as most .gitmodules have.
        git(work, "submodule", "add", "-q", server.url("lib.git"), "vendor/lib")
        older = commit(work, {"a.txt": "three\n"}, "third")
        tip = commit(work, {"a.txt": "four\n"}, "fourth")
        bare = publish(work, server.root / f"{name}.git")
        publish(work, server.root / "private" / f"{name}.git")
        yield Served(server, name, bare, tip, older)


def _app(rack: RackHandle) -> str:
    """A new app's name, the app created on `rack` (nothing creates one implicitly)."""
    name = f"git-{secrets.token_hex(4)}"
    rack.ok("apps", "create", name)
    return name


def _image_cat(rack: RackHandle, app: str, build_id: str, *paths: str) -> str:
    """What `cat paths…` prints in the build's image (the engine that built it has it)."""
    image = f"{rack.registry}/{app}:web.{build_id}"
    proc = subprocess.run(
        ["docker", "run", "--rm", image, *paths], capture_output=True, text=True, timeout=60
    )
    return proc.stdout + proc.stderr


def _info(rack: RackHandle, app: str, build_id: str) -> dict[str, str]:
    lines = rack.ok("builds", "info", build_id, "-a", app).splitlines()
    return {key: value.strip() for key, _, value in (line.partition("  ") for line in lines)}


def test_default_branch_with_submodule_description_and_sha(
    rack: RackHandle, served: Served
) -> None:
    app = served.name
    rack.ok("apps", "create", app)
    res = rack.slipway("build", served.url())  # the app defaults to the repository's name

    assert res.code == 0, res
    assert res.err.splitlines() == ["Fetching source... OK", "Starting build... OK"]
    out = res.out
    build_id = BUILD_ID.search(out).group(1)  # type: ignore[union-attr]
    printed = _image_cat(rack, app, build_id, "/src/a.txt", "/src/vendor/lib/lib.txt")
    assert printed == "four\nfrom the submodule\n"
    listing = _image_cat(rack, app, build_id, "/src/secret.log", "/src/.git")
    assert "No such file or directory" in listing and listing.count("\n") == 2

    info = _info(rack, app, build_id)
    assert info["Description"] == f"build {served.tip[:10]} fourth"
    assert info["Git Sha"] == served.tip
    assert rack.ok("builds", "-a", app).splitlines()[1].endswith(f"build {served.tip[:10]} fourth")


@pytest.mark.parametrize(
    ("ref", "text", "subject"),
    [("v1", "one", "first"), ("feature", "two", "second"), ("older", "three", "third")],
)
def test_tag_branch_and_commit(
    rack: RackHandle, served: Served, ref: str, text: str, subject: str
) -> None:
    ref = served.older if ref == "older" else ref
    app = _app(rack)
    # The tag comes from the private copy, with the right credential.
    url = served.url()
    if ref == "v1":
        url = served.url(f"private/{served.name}.git").replace("//", f"//{USER}:{PASSWORD}@")
    out = rack.ok("build", f"{url}#{ref}", "-a", app)
    build_id = BUILD_ID.search(out).group(1)  # type: ignore[union-attr]
    assert _image_cat(rack, app, build_id, "/src/a.txt") == f"{text}\n"
    info = _info(rack, app, build_id)
    assert info["Description"].endswith(f" {subject}")
    assert info["Git Sha"].startswith(info["Description"].split()[1])


def test_deploy_from_a_file_url_with_description_and_id(rack: RackHandle, served: Served) -> None:
    app = _app(rack)
    res = rack.slipway("deploy", served.bare.as_uri(), "-a", app, "-d", "from disk", "--id")
    assert res.code == 0, res.err
    release = res.out.strip()
    assert re.fullmatch(r"R[A-Z]{10}", release)
    progress = res.err.splitlines()
    assert progress[:2] == ["Fetching source... OK", "Starting build... OK"]
    assert progress[-1] == f"Promoting {release}... OK"
    build_id = BUILD_ID.search(res.err).group(1)  # type: ignore[union-attr]
    info = _info(rack, app, build_id)
    assert (info["Description"], info["Git Sha"]) == ("from disk", served.tip)


def _archive_state(rack: RackHandle) -> set[Path]:
    """Every file and folder of the archive service's data (objects, temp files)."""
    return set((rack.data / "archive").rglob("*"))


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ("http://nonexistent.invalid/x.git", "could not resolve host nonexistent.invalid"),
        ("{repo}#nope", "no such ref: nope"),
        ("{private}", "authentication failed"),
        ("{wrong}", "authentication failed"),
        ("{missing}", "repository not found"),
    ],
)
def test_fetch_failures_leave_nothing(
    rack: RackHandle, served: Served, source: str, reason: str
) -> None:
    private = served.url(f"private/{served.name}.git")
    source = source.format(
        repo=served.url(),
        private=private,
        wrong=private.replace("//", f"//{USER}:wrong@"),
        missing=served.url("missing.git"),
    )
    app = _app(rack)
    before = _archive_state(rack)

    res = rack.slipway("build", source, "-a", app)

    shown = source.split("#")[0].replace(":wrong@", ":***@")
    assert (res.code, res.out) == (1, "")
    assert res.err == f"Fetching source... \nERROR: cannot fetch {shown}: {reason}\n"
    assert "wrong" not in res.out + res.err
    assert _archive_state(rack) == before
    assert rack.ok("builds", "-a", app).splitlines()[1:] == []  # no build recorded


def test_invalid_url(rack: RackHandle) -> None:
    res = rack.slipway("build", "https://", "-a", _app(rack))
    assert (res.code, res.out) == (1, "")
    assert res.err == "Fetching source... \nERROR: invalid git url: https://\n"
