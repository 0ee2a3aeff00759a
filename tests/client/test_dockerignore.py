"""`.dockerignore` semantics, checked against what Docker does with the same patterns."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from pathlib import Path

import pytest

from client.dockerignore import Matcher, read_patterns, walk
from client.errors import InvalidArgument

# (`.dockerignore` text, path, excluded?) — the expectations are Docker's.
CASES = [
    # comments and blank lines; `#` only at the very start of a line
    ("# foo\nbar", "# foo", False),
    ("# foo\nbar", "bar", True),
    ("\n\n   \nbar\n", "bar", True),
    (" # foo", "# foo", True),
    # surrounding whitespace is trimmed, inner spaces kept
    ("  spaced.txt   ", "spaced.txt", True),
    ("my file.txt", "my file.txt", True),
    ("my file.txt", "my", False),
    ("sp ace/f g.txt", "sp ace/f g.txt", True),
    # `*` stays in one path segment; `*.md` is the top level only
    ("*.md", "README.md", True),
    ("*.md", "docs/README.md", False),
    ("*/*.md", "docs/README.md", True),
    ("*", "anything", True),
    ("*", "dir/file", True),  # through the parent `dir`
    ("a*/b", "abc/b", True),
    ("a*/b", "a/c/b", False),
    # `?` and classes
    ("?.txt", "a.txt", True),
    ("?.txt", "ab.txt", False),
    ("?.txt", "/.txt", False),
    ("a[b-d]e", "ace", True),
    ("a[b-d]e", "aae", False),
    ("a[^b-d]e", "aze", True),
    ("a[^b-d]e", "ace", False),
    # `**` spans any number of segments, zero included
    ("**/*.go", "main.go", True),
    ("**/*.go", "a/b/c/main.go", True),
    ("**/foo", "foo", True),
    ("**/foo", "a/b/foo", True),
    ("**/foo", "a/barfoo", False),
    ("**/foo", "foo/inside", True),
    ("dir/**", "dir", False),
    ("dir/**", "dir/a/b", True),
    ("a/**/b", "a/b", True),
    ("a/**/b", "a/x/y/b", True),
    ("**", "anything/at/all", True),
    ("**/.foo", "bar.foo", False),
    # a pattern matching a parent directory excludes everything below it
    ("docs", "docs/a/b.txt", True),
    ("docs", "docsx/a.txt", False),
    ("docs/", "docs/a.txt", True),
    ("docs/", "docs", True),
    # a leading `/` is the context root; patterns are cleaned
    ("/foo", "foo", True),
    ("/foo", "a/foo", False),
    ("foo/../bar", "bar", True),
    ("./foo//bar/", "foo/bar", True),
    # hidden files
    (".*", ".env", True),
    (".*", "a/.env", False),
    ("**/.*", "a/.env", True),
    (".*", "env", False),
    # escapes
    ("a\\*b", "a*b", True),
    ("a\\*b", "axb", False),
    ("\\#x", "#x", True),
    ("a\\?", "a?", True),
    ("a\\?", "ab", False),
    # regexp characters mean nothing special
    ("a.|)$(}+{bc", "a.|)$(}+{bc", True),
    ("abc.def", "abcXdef", False),
    ("dist/*.whl", "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl", True),
    # exceptions: the last matching pattern wins
    ("*.md\n!README.md", "README.md", False),
    ("*.md\n!README.md", "CHANGES.md", True),
    ("!README.md\n*.md", "README.md", True),
    ("docs\n!docs/README.md", "docs/README.md", False),
    ("docs\n!docs/README.md", "docs/other.md", True),
    ("docs/*\n!docs/README.md", "docs/README.md", False),
    ("**\n!util/docker/web", "util/docker/web/foo", False),
    ("**\n!util/docker/web\nutil/docker/web/foo", "util/docker/web/foo", True),
    ("! /inverted/path\ninverted", "inverted/path", True),
    ("inverted\n! /inverted/path", "inverted/path", False),
    # CRLF files and a UTF-8 byte order mark
    ("\ufefffoo\r\nbar\r\n", "foo", True),
    ("\ufefffoo\r\nbar\r\n", "bar", True),
]


@pytest.mark.parametrize(("text", "path", "excluded"), CASES)
def test_matches_like_docker(text: str, path: str, excluded: bool) -> None:
    assert Matcher(read_patterns(text)).matches(path) is excluded


@pytest.mark.parametrize(("text", "path", "excluded"), CASES)
def test_parent_results_agree(text: str, path: str, excluded: bool) -> None:
    """Matching level by level (as the walk does) gives the same answers."""
    matcher = Matcher(read_patterns(text))
    parts = path.split("/")
    info = None
    for i in range(1, len(parts)):
        _, info = matcher.match_under("/".join(parts[:i]), info)
    assert matcher.match_under(path, info)[0] is excluded


def test_read_patterns_like_docker_readall() -> None:
    text = (
        "test1\n/test2\n/a/file/here\n\nlastfile\n# this is a comment\n! /inverted/abs/path\n!\n! "
    )
    assert read_patterns(text) == [
        "test1",
        "test2",
        "a/file/here",
        "lastfile",
        "!inverted/abs/path",
        "!",
        "!",
    ]


@pytest.mark.parametrize("bad", ["!", "[", "a[", "[^bc", "[]a]", "[-]", "[x-]", "[a-b-c]", "a\\"])
def test_bad_patterns_are_rejected(bad: str) -> None:
    with pytest.raises(InvalidArgument):
        Matcher([bad])


def test_good_classes_are_accepted() -> None:
    for good in ("[\\]a]", "[\\-]", "[x\\-]", "[a-z]", "a[^b]c"):
        Matcher([good])


def _tree(root: Path, paths: list[str]) -> None:
    for p in paths:
        target = root / p
        if p.endswith("/"):
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(p)


def _walk(root: Path, text: str, always: tuple[str, ...] = ()) -> list[str]:
    return list(walk(root, Matcher(read_patterns(text)), always))


def test_walk_is_sorted_parents_first(tmp_path: Path) -> None:
    _tree(tmp_path, ["b/z", "b/a", "a", "c/"])
    assert _walk(tmp_path, "") == ["a", "b", "b/a", "b/z", "c"]


def _visited(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    seen: list[str] = []
    real = os.scandir

    def scandir(path):  # type: ignore[no-untyped-def]
        seen.append(os.path.basename(str(path)))
        return real(path)

    monkeypatch.setattr("client.dockerignore.os.scandir", scandir)
    return seen


def test_excluded_folder_is_pruned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _tree(tmp_path, ["node_modules/pkg/index.js", "src/app.js"])
    seen = _visited(monkeypatch)
    assert _walk(tmp_path, "node_modules") == ["src", "src/app.js"]
    assert "node_modules" not in seen and "pkg" not in seen


def test_pruned_folder_with_reincluded_child(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _tree(tmp_path, ["docs/keep/k.txt", "docs/drop.txt", "other/x/y.txt"])
    seen = _visited(monkeypatch)
    # `docs` itself is excluded but sent as the parent of what the exception keeps
    assert _walk(tmp_path, "docs\nother\n!docs/keep") == ["docs", "docs/keep", "docs/keep/k.txt"]
    assert "other" not in seen and "docs" in seen


def test_wildcard_exception_disables_pruning(tmp_path: Path) -> None:
    """An exception like `!**/keep.txt` may match at any depth, so (as BuildKit does) no
    excluded folder is skipped unread."""
    _tree(tmp_path, ["e1/e2/keep.txt", "e1/other", "top.txt"])
    matcher = Matcher(read_patterns("e1\n!**/keep.txt"))
    assert not matcher.can_skip("e1")
    assert _walk(tmp_path, "e1\n!**/keep.txt") == ["e1", "e1/e2", "e1/e2/keep.txt", "top.txt"]


def test_can_skip() -> None:
    matcher = Matcher(read_patterns("dir\nother\n!dir/sub/*"))
    assert not matcher.can_skip("dir")
    assert matcher.can_skip("other")
    assert Matcher(["x"]).can_skip("x")


def test_always_included_paths(tmp_path: Path) -> None:
    _tree(tmp_path, ["build/Dockerfile", "build/junk", ".dockerignore"])
    got = _walk(tmp_path, "build\n.dockerignore", (".dockerignore", "build/Dockerfile"))
    assert got == [".dockerignore", "build", "build/Dockerfile"]


def test_symlinks_are_not_followed(tmp_path: Path) -> None:
    _tree(tmp_path, ["real/file"])
    (tmp_path / "link").symlink_to("real")
    assert _walk(tmp_path, "") == ["link", "real", "real/file"]


def test_hidden_and_spaces(tmp_path: Path) -> None:
    _tree(tmp_path, [".env", ".git/HEAD", "a b/c d.txt", "a b/e.txt"])
    assert _walk(tmp_path, ".*\n!.env\na b/c d.txt") == [".env", "a b", "a b/e.txt"]


# --- the reference: what the Docker CLI itself sends --------------------------------------

REFERENCE_TREE = [
    "a/b/c/z.go",
    "a/b/y.md",
    "a/x.md",
    "top.md",
    "README.md",
    "CHANGES.md",
    "node_modules/pkg/i.js",
    "node_modules/keep.txt",
    "docs/keep/k.txt",
    "docs/drop.txt",
    "vendor/x/v.go",
    "sp ace/f g.txt",
    "sp ace/h.txt",
    ".env",
    ".hidden/in/f",
    "a*b",
    "axb",
    "#x",
    "foo",
    "barfoo",
    "empty/",
]
REFERENCE_IGNORE = (
    "# comment\n *.md\n*.md\n!README.md\nnode_modules\n!node_modules/keep.txt\ndocs/\n"
    "!docs/keep\n/vendor\n**/z.go\n.*\n!.env\nsp ace/f g.txt   \na\\*b\n\\#x\n**/foo\n"
    ".dockerignore\nDockerfile\n"
)


@pytest.mark.docker
def test_same_tree_as_docker(tmp_path: Path) -> None:
    """What the `docker` CLI's classic builder copies is what the walk yields (the
    wildcard-exception case, where BuildKit and the classic builder differ, is left out)."""
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("no docker CLI")
    if subprocess.run([docker, "info"], capture_output=True, timeout=30).returncode != 0:
        pytest.skip("the Docker engine does not answer")
    _tree(tmp_path, REFERENCE_TREE)
    (tmp_path / ".dockerignore").write_text(REFERENCE_IGNORE)
    (tmp_path / "Dockerfile").write_text(
        "FROM busybox\nCOPY . /ctx\nRUN cd /ctx && find . | sort | sed 's/^/CTX /'\n"
    )
    tag = f"slipway-test-dockerignore:{secrets.token_hex(4)}"
    env = dict(os.environ, DOCKER_BUILDKIT="0")
    done = subprocess.run(
        [docker, "build", "--no-cache", "-t", tag, "."],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    subprocess.run([docker, "rmi", "-f", tag], capture_output=True, timeout=60)
    if "busybox" in done.stderr and done.returncode != 0:
        pytest.skip(f"busybox image not available: {done.stderr.strip()[:200]}")
    assert done.returncode == 0, done.stderr
    sent = sorted(
        line[len("CTX ./") :] for line in done.stdout.splitlines() if line.startswith("CTX ./")
    )
    assert sent == sorted(_walk(tmp_path, REFERENCE_IGNORE))
