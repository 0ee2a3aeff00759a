"""The build context (SPEC §4): the tree `slipway build` sends for a folder is the tree the
Docker CLI itself sends for it (the classic builder: the CLI tars the folder), plus the
manifest, the Dockerfiles it names and `.dockerignore`, which Slipway always sends.

The reference is real: for every case a `docker build` (Dockerfile on stdin, so it is not
part of the context) copies the context into an image and prints its listing — files,
folders and symlinks with their targets. Every case is compared with the archive
`client.kernel.context` writes; a few go all the way through a rack with `slipway build`, and the
listing is read back from the image the rack pushed.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import os
import re
import secrets
import socketserver
import subprocess
import tarfile
import threading
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from client.kernel.context import pack, scan
from client.kernel.entries import FILE, Limits, Tree, TreeSource
from client.kernel.errors import InvalidArgument
from client.kernel.streams import reader
from services.common.docker.streams import context_tar
from tests.e2e.conftest import RackHandle

pytestmark = pytest.mark.docker

# One line per entry below the current folder: `F path`, `D path` or `L path -> target`.
LIST = (
    "cd /ctx && find . -mindepth 1 | sort | while IFS= read -r p; do"
    ' if [ -L "$p" ]; then echo "CTX L ${p#./} -> $(readlink "$p")";'
    ' elif [ -d "$p" ]; then echo "CTX D ${p#./}";'
    ' else echo "CTX F ${p#./}"; fi; done'
)
DOCKERFILE = f"FROM busybox\nCOPY . /ctx\nRUN {LIST}\n"
MANIFEST = "services:\n  web:\n    build: .\n"
# What Slipway sends whatever `.dockerignore` says (the manifest above names `Dockerfile`).
ALWAYS = ("convox.yml", "Dockerfile", ".dockerignore")

# Entries: `path` a file, `path/` an empty folder, `path -> target` a symlink,
# `path => other` a hard link to `other`. Every link here stays inside the folder, so the
# rack accepts the tree; cases add what only the client-side comparison can take.
BASE = [
    "Dockerfile",
    "convox.yml",
    "README.md",
    "CHANGES.md",
    "app.py",
    "main.go",
    "a/x.md",
    "a/b/y.md",
    "a/b/c/z.go",
    "a/b/c/keep",
    "dir/keep",
    "dir/drop",
    "dir/sub/keep",
    "dir/sub/deeper/f.txt",
    "dir/empty/",
    "docs/keep/k.txt",
    "docs/drop.txt",
    "docsx/a.txt",
    "node_modules/pkg/index.js",
    "node_modules/keep.txt",
    ".env",
    ".hidden/in/f",
    ".git/HEAD",
    "src/.cache/c",
    "src/main.py",
    "sp ace/f g.txt",
    "sp ace/h.txt",
    "my file.txt",
    "foo",
    "barfoo",
    "x/foo/bar",
    "x/y/foo",
    "abc",
    "abd",
    "abz",
    "a.b+c",
    "aXb+c",
    "empty/",
    "deep/1/2/3/4/5/leaf.txt",
    "deep/1/2/other.txt",
    "link-file -> app.py",
    "link-dir -> dir",
    "dangling -> nowhere",
    "dir/up -> ../app.py",
    "hard => app.py",
]


@dataclass(frozen=True)
class Case:
    """A folder (BASE plus `extra`) and its `.dockerignore` (None: no such file)."""

    name: str
    ignore: str | None
    extra: tuple[str, ...] = field(default=())


CASES = [
    Case("no-dockerignore", None),
    Case("empty-dockerignore", ""),
    Case(
        "comments-and-blank-lines",
        "# a comment\n\n   \n#app.py\n # not a comment\n\t*.md  \n",
        ("# not a comment", "#app.py"),
    ),
    Case("crlf-and-bom", "\ufeff*.md\r\n!README.md\r\n\r\napp.py\r\n"),
    Case("exception", "*.md\n!README.md\n"),
    Case("exception-before-pattern", "!README.md\n*.md\n"),
    Case("exception-without-pattern", "!app.py\n"),
    Case("doublestar-start", "**/keep\n**/*.go\n"),
    Case("doublestar-middle", "a/**/z.go\ndir/**/f.txt\ndeep/**/leaf.txt\n"),
    Case("doublestar-end", "dir/**\na/b/**\n"),
    Case("doublestar-both-ends", "**/b/**\n"),
    Case("doublestar-suffix-without-slash", "**foo\n"),
    Case("doublestar-alone-with-exceptions", "**\n!dir/sub\n!*.py\n"),
    Case("star-question-class", "*.py\n?oo\nab[a-c]\n"),
    Case("negated-class", "ab[^c]\n"),
    Case("star-in-folder", "*/keep\nd?r/*\n!d?r/keep\n"),
    Case("leading-slash", "/foo\n/a/b\n/dir/sub/keep\n"),
    Case("trailing-slash", "docs/\nempty/\nfoo/\n"),
    Case("dot-slash-prefixes", "./app.py\n./a/./b/c\n./x//foo/\n"),
    Case("folder-prefix-is-not-a-match", "docs\n"),
    Case("pruned-folder-reincluded-file", "dir\n!dir/keep\n"),
    Case("pruned-folder-reincluded-folder", "dir\n!dir/sub\n"),
    Case("exception-of-exception", "dir\n!dir/sub\ndir/sub/deeper\n!dir/sub/deeper/f.txt\n"),
    Case("star-then-exceptions", "*\n!app.py\n!a/b\na/b/c\n!dir/sub/keep\n"),
    Case("children-star-exception", "a/*\n!a/b/c\n"),
    Case("wildcard-exception-in-pruned-folder", "dir\n!**/keep\n"),
    Case("glob-exception-not-a-prefix", "dir\n!d*/keep\n"),
    Case("glob-exception-under-prefix", "dir\n!dir/*/keep\n!dir/k*\n"),
    Case("exception-ending-doublestar", "dir\n!dir/sub/**\n"),
    Case("exception-ending-star", "deep\n!deep/1/*\n"),
    Case("names-with-spaces", "sp ace/f g.txt\n  my file.txt   \n"),
    Case("hidden-top-level", ".*\n!.env\n"),
    Case("hidden-everywhere", "**/.*\n"),
    Case("deep-nesting", "deep/1/2\n!deep/1/2/3/4/5/leaf.txt\n"),
    Case("ignores-build-files", "Dockerfile\n.dockerignore\nconvox.yml\n"),
    Case("ignores-dockerfile", "Dockerfile\n.dockerignore\n*.md\n"),
    Case("ignore-everything", "*\n"),
    Case("ignore-everything-doublestar", "**\n"),
    Case("symlinks-not-followed", "dir\nlink-file\n"),
    Case("regexp-characters", "a.b+c\n"),
    Case("escapes", "a\\*b\n\\#x\n", ("a*b", "axb", "#x")),
    Case("unicode", "ünï/*.txt\n", ("ünï/çødé.txt", "ünï/other")),
    Case("absolute-and-outside-symlinks", "", ("abs -> /etc/passwd", "out -> ../elsewhere")),
    Case("absolute-looking-patterns", "/a/b\n/dir/\n!/dir/keep\n"),
    Case("parent-dir-pattern", "foo/../app.py\nx/../abc\n"),
    # Patterns become Go regexps: RE2's escapes and POSIX classes leak through.
    Case(
        "go-regexp-escapes",
        "file\\d\n[[:upper:]]*\n\\Qab\nn\\x6fde\nv\\0611\n[\\D]\n",
        ("file1", "filed", "Upper", "ab$", "ab", "node", "v11", "z", "7"),
    ),
    Case(
        "go-regexp-classes", "[*]\na[[]b\n[^a-y]\nfil[^\\d]d\n", ("a[b", "]", "z", "filed", "file")
    ),
    Case("invalid-regexp-never-used", "!\\q\nzzz\n!\\d\\q\n"),
    Case("go-whitespace", "\xa0app.py\xa0\nabc\x1c\n", ("abc\x1c",)),
]
ON_RACK = [
    "pruned-folder-reincluded-file",  # a re-included file under a pruned folder, symlinks
    "ignores-build-files",  # ignored Dockerfile, manifest and .dockerignore: sent, not copied
    "ignores-dockerfile",  # an ignored Dockerfile sent, not copied; the manifest copied
    "wildcard-exception-in-pruned-folder",  # where the classic builder and BuildKit differ
]


def _make(root: Path, case: Case) -> Path:
    folder = root / case.name
    folder.mkdir()
    for entry in [*BASE, *case.extra]:
        if " -> " in entry:
            name, target = entry.split(" -> ")
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).symlink_to(target)
        elif " => " in entry:
            name, other = entry.split(" => ")
            os.link(folder / other, folder / name)
        elif entry.endswith("/"):
            (folder / entry).mkdir(parents=True, exist_ok=True)
        else:
            path = folder / entry
            path.parent.mkdir(parents=True, exist_ok=True)
            text = {"Dockerfile": DOCKERFILE, "convox.yml": MANIFEST}.get(entry, entry)
            path.write_text(text)
    if case.ignore is not None:
        (folder / ".dockerignore").write_text(case.ignore, newline="")
    return folder


# The CLI adds a Dockerfile read from stdin to the context under a random name; the engine
# removes it, except when `.dockerignore` holds a pattern its own older matcher rejects.
_STDIN_DOCKERFILE = re.compile(r"^F \.dockerfile\.[0-9a-f]{20}$")


def _listing(out: str) -> list[str]:
    lines = (line[len("CTX ") :] for line in out.splitlines() if line.startswith("CTX "))
    return [line for line in lines if not _STDIN_DOCKERFILE.match(line)]


@dataclass
class Reference:
    """What `docker build` copied of a folder, or why it failed."""

    listing: list[str]
    image: str | None
    error: str | None


def _docker_reference(folder: Path) -> Reference:
    proc = subprocess.run(
        ["docker", "build", "--no-cache", "-f", "-", str(folder)],
        input=DOCKERFILE,
        capture_output=True,
        text=True,
        env=dict(os.environ, DOCKER_BUILDKIT="0"),
        timeout=120,
    )
    built = re.search(r"^Successfully built ([0-9a-f]+)$", proc.stdout, re.M)
    if proc.returncode != 0:
        return Reference([], None, proc.stderr.strip() or proc.stdout.strip())
    assert built, proc.stdout
    return Reference(_listing(proc.stdout), built.group(1), None)


def _with_parents(entries: set[str]) -> set[str]:
    """`entries` plus a `D` line for every folder above them."""
    names = {e.split(" ", 1)[1].split(" -> ")[0] for e in entries}
    parents = {"D " + "/".join(n.split("/")[:i]) for n in names for i in range(1, n.count("/") + 1)}
    return entries | parents


def _expected(folder: Path, reference: list[str]) -> list[str]:
    """Docker's tree plus what Slipway always sends."""
    forced = {f"F {name}" for name in ALWAYS if (folder / name).is_file()}
    return sorted(_with_parents(set(reference) | forced))


def _packed(folder: Path) -> list[str]:
    """The listing of the archive `client.kernel.context` writes for `folder`."""
    out = io.BytesIO()
    pack(folder, out)
    out.seek(0)
    entries = []
    with tarfile.open(fileobj=out, mode="r:gz") as tar:
        for member in tar:
            if member.issym():
                entries.append(f"L {member.name} -> {member.linkname}")
            else:
                entries.append(f"{'D' if member.isdir() else 'F'} {member.name}")
    names = [e.split(" ", 1)[1].split(" -> ")[0] for e in entries]
    assert names == sorted(names, key=lambda n: n.split("/")), "not in walk order"
    assert set(_with_parents(set(entries))) == set(entries), "a folder is missing"
    return sorted(entries)


@pytest.fixture(scope="module")
def references(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, tuple[Path, Reference]]]:
    """Every case's folder and Docker's listing of it (built in parallel: each build is
    tiny, and the engine takes them side by side)."""
    root = tmp_path_factory.mktemp("context")
    folders = {case.name: _make(root, case) for case in CASES}
    with ThreadPoolExecutor(max_workers=8) as pool:
        refs = dict(zip(folders, pool.map(_docker_reference, folders.values()), strict=True))
    yield {name: (folders[name], refs[name]) for name in folders}
    images = [ref.image for ref in refs.values() if ref.image]
    subprocess.run(["docker", "rmi", "-f", *images], capture_output=True, timeout=120)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_packing_sends_what_docker_sends(
    case: Case, references: dict[str, tuple[Path, Reference]]
) -> None:
    folder, ref = references[case.name]
    assert ref.error is None, ref.error
    assert _packed(folder) == _expected(folder, ref.listing)
    # The incremental upload's entry list is the same tree, in the same walk order.
    scanned = []
    for item in scan(folder):
        e = item.entry
        line = (
            f"L {e.path} -> {e.target}" if e.type == "symlink" else f"{e.type[0].upper()} {e.path}"
        )
        scanned.append(line)
    assert sorted(scanned) == _expected(folder, ref.listing)


# The rack's image holds exactly what Docker's image of the same folder holds.


@pytest.mark.parametrize("name", ON_RACK)
def test_rack_receives_what_docker_sends(
    name: str, rack: RackHandle, references: dict[str, tuple[Path, Reference]]
) -> None:
    folder, ref = references[name]
    assert ref.error is None, ref.error
    app = f"ctx-{secrets.token_hex(3)}"
    rack.ok("apps", "create", app)
    # The build needs the manifest and the Dockerfile: it succeeds only if they were sent.
    out = rack.ok("build", str(folder), "-a", app)
    build_id = re.search(r"^Build: +(B[A-Z]{10})$", out, re.M).group(1)  # type: ignore[union-attr]
    image = f"{rack.registry}/{app}:web.{build_id}"
    subprocess.run(["docker", "rmi", image], capture_output=True, timeout=60)
    try:
        pulled = subprocess.run(["docker", "pull", "-q", image], capture_output=True, timeout=120)
        assert pulled.returncode == 0, pulled.stderr
        run = subprocess.run(
            ["docker", "run", "--rm", "--entrypoint", "sh", image, "-c", LIST],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert run.returncode == 0, run.stderr
    finally:
        subprocess.run(["docker", "rmi", image], capture_output=True, timeout=60)
    # What reaches `COPY` is what Docker's own build copies: BuildKit reads the context
    # through the build session and applies `.dockerignore` itself, so a manifest,
    # Dockerfile or `.dockerignore` that Slipway uploaded only because it must stays out.
    expected = sorted(_with_parents(set(ref.listing)))
    got = sorted(_listing(run.stdout))
    assert got == expected


@pytest.mark.parametrize(
    "ignore", ["[\n", "ok\n!\n", "[z-a]\n", "app.py\n!file\\1\n", "[[:foo:]]\n", "*.md\n!R\\q"]
)
def test_bad_dockerignore_fails_like_docker(ignore: str, tmp_path: Path) -> None:
    folder = _make(tmp_path, Case("bad", ignore))
    ref = _docker_reference(folder)
    assert ref.error is not None
    with pytest.raises(InvalidArgument):
        pack(folder, io.BytesIO())


# -- the context the rack assembles from its blob store, against the Docker CLI's tar ----


class _FakeEngine(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """Just enough of the engine API for `docker build` (classic builder) to send its
    context: `/_ping` answers, and the body of `POST /build` is kept, then refused."""

    daemon_threads = True

    def __init__(self, path: str) -> None:
        self.bodies: list[bytes] = []
        super().__init__(path, _EngineHandler)


class _EngineHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def address_string(self) -> str:  # a unix socket has no client address
        return "fake-engine"

    def log_message(self, *args: object) -> None:
        pass

    def _answer(self, code: int, body: bytes, kind: str = "text/plain") -> None:
        self.send_response(code)
        self.send_header("Api-Version", "1.41")
        self.send_header("OSType", "linux")
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_HEAD(self) -> None:  # noqa: N802 - http.server's name
        self._answer(200, b"")

    def do_GET(self) -> None:  # noqa: N802
        self._answer(200, b"OK")

    def do_POST(self) -> None:  # noqa: N802
        body = bytearray()
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    break
                body += self.rfile.read(size)
                self.rfile.readline()
        else:
            body += self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if "/build" in self.path:
            self.server.bodies.append(bytes(body))  # type: ignore[attr-defined]
        message = b'{"errorDetail":{"message":"captured"},"error":"captured"}\n'
        self._answer(200, message, "application/json")


def _docker_cli_context(folder: Path, tmp: Path) -> bytes:
    """The tar the Docker CLI sends for `docker build FOLDER` (the classic builder)."""
    sock = tmp / f"engine-{secrets.token_hex(4)}.sock"
    server = _FakeEngine(str(sock))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        subprocess.run(
            ["docker", "build", "-q", str(folder)],
            capture_output=True,
            env=dict(os.environ, DOCKER_BUILDKIT="0", DOCKER_HOST=f"unix://{sock}"),
            timeout=60,
        )
    finally:
        server.shutdown()
        server.server_close()
    assert len(server.bodies) == 1, "the Docker CLI sent no context"
    return server.bodies[0]


def _members(tar_bytes: Iterable[bytes]) -> dict[str, tuple[str, int, str]]:
    """path -> (kind, permission bits, link target or sha256 of the contents), hard links
    read as the files they name; owners checked to be root's."""
    found: dict[str, tuple[str, int, str]] = {}
    with tarfile.open(fileobj=reader(tar_bytes), mode="r|") as tar:
        for member in tar:
            assert (member.uid, member.gid) == (0, 0), member.name
            name = member.name.rstrip("/")
            if member.isdir():
                found[name] = ("dir", member.mode & 0o7777, "")
            elif member.issym():
                found[name] = ("symlink", 0, member.linkname)
            elif member.islnk():
                found[name] = ("file", member.mode & 0o7777, found[member.linkname][2])
            else:
                data = tar.extractfile(member)
                assert data is not None
                digest = hashlib.sha256(data.read()).hexdigest()
                found[name] = ("file", member.mode & 0o7777, digest)
    return found


def _assembled(folder: Path) -> bytes:
    """The context tar the builder streams to the classic builder for `folder`: scanned
    as `slipway build` scans it, checked as the rack checks it, read from a blob store."""
    scanned = list(scan(folder))
    blobs = {s.entry.sha256: Path(s.full).read_bytes() for s in scanned if s.entry.type == FILE}
    tree = Tree((s.entry for s in scanned), Limits(1 << 30, 10_000))

    def fetch(digests: Sequence[str]) -> Iterator[tuple[str, Iterator[bytes]]]:
        for digest in digests:
            yield digest, iter([blobs[digest]])

    with context_tar(".", "Dockerfile", TreeSource(tree, fetch)) as (chunks, name):
        assert name == "Dockerfile"
        return b"".join(chunks)


# Cases whose folder the rack refuses (links leading outside): not assembled.
_REFUSED = {"absolute-and-outside-symlinks"}


@pytest.mark.parametrize("case", [c for c in CASES if c.name not in _REFUSED], ids=lambda c: c.name)
def test_the_assembled_context_is_what_the_docker_cli_sends(case: Case, tmp_path: Path) -> None:
    folder = _make(tmp_path, case)
    theirs = _members([_docker_cli_context(folder, tmp_path)])
    ours = _members([_assembled(folder)])
    # Slipway also sends the manifest, Dockerfile and `.dockerignore` when ignored (the
    # CLI re-includes the last two itself), and the excluded folders above a re-included
    # entry (which the CLI leaves out and the engine creates anyway).
    allowed = {p for p in ALWAYS if (folder / p).exists()}
    for path in set(ours) - set(theirs):
        above = any(other.startswith(path + "/") for other in theirs)
        assert path in allowed or (ours[path][0] == "dir" and above), path
    assert {p: ours[p] for p in theirs} == theirs
