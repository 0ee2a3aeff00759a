"""`.dockerignore` semantics, checked against what Docker does with the same patterns."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from client.kernel.dockerignore import Matcher, python_regexp, read_patterns, walk
from client.kernel.errors import InvalidArgument

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
    # Go's TrimSpace: NBSP is trimmed, the \x1c-\x1f separators Python strips are not
    ("\xa0app.py\xa0", "app.py", True),
    ("abc\x1c", "abc\x1c", True),
    ("abc\x1c", "abc", False),
    # patterns become Go (RE2) regexps, so RE2's escapes and classes leak through
    ("file\\d", "file1", True),
    ("file\\d", "filed", False),
    ("file\\D", "filed", True),
    ("[\\D]", "z", True),
    ("[\\D]", "7", False),
    ("fil[^\\d]d", "filed", True),
    ("fil[^\\d]d", "fil1d", False),
    ("a\\sb", "a b", True),
    ("\\w\\W", "a-", True),
    ("\\w\\W", "é-", False),  # ASCII only, as in Go
    ("[[:upper:]]*", "Upper", True),
    ("[[:upper:]]*", "upper", False),
    ("[[:^digit:]]", "x", True),
    ("[[:^digit:]]", "1", False),
    ("[:alpha:]", "a", True),  # a plain class of `:alph`
    ("n\\x6fde", "node", True),
    ("v\\0611", "v11", True),
    ("a\\tb", "a\tb", True),
    ("a\\b", "ab", False),  # `\b` is a word boundary
    ("\\Aq\\z", "q", True),
    ("\\Qab", "ab$", True),  # `\Q` quotes to the end, the closing `$` included
    ("\\Qab", "ab", False),
    ("\\Qa*\\Eb", "a[^/]*b", True),
    ("[*]", "]", True),  # `*` becomes `[^/]*` even inside a class
    ("[*]", "[]", True),
    ("[*]", "a", False),
    ("[?]", "[]", True),
    ("[?]", "]", False),
    ("a[[]b", "a[b", True),
    ("a[[]b", "[]", False),
    ("[^a-y]", "z", True),
    ("[^a-y]", "[]", False),
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


@pytest.mark.parametrize(
    "bad", ["a\\q", "[z-a]", "file\\1", "[[:foo:]]", "[[:alpha:]", "\\C", "[\\b]", "[a-\\d]"]
)
def test_bad_regexps_fail_when_first_used(bad: str) -> None:
    """Go's `filepath.Match` accepts these, its `regexp.Compile` does not; Docker compiles a
    pattern the first time a path is checked against it, and fails then."""
    matcher = Matcher([bad], ".dockerignore: ")
    with pytest.raises(InvalidArgument, match=r"^\.dockerignore: syntax error in pattern: "):
        matcher.matches("x")
    with pytest.raises(InvalidArgument):  # every time, not only the first
        matcher.match_under("x", None)


def test_bad_regexps_never_used_are_harmless() -> None:
    assert not Matcher(["!\\q"]).matches("x")  # an exception is checked only once excluded
    assert Matcher(["*", "\\q"]).matches("x")  # an exclusion only while not excluded
    assert not Matcher(["zzz", "!\\d\\q"]).matches("x")
    with pytest.raises(InvalidArgument):
        Matcher(["x", "!\\q"]).matches("x")


def test_unicode_classes_are_refused_clearly() -> None:
    with pytest.raises(InvalidArgument, match=r"not supported"):
        Matcher(["\\p{Greek}"]).matches("x")


@pytest.mark.parametrize(
    ("go", "python"),
    [
        ("^a[^/]*$", "^a[\\U00000000-\\U0000002e\\U00000030-\\U0010ffff]*\\Z"),
        ("^(.*/)?b\\.c$", "^(.*/)?b\\.c\\Z"),
        ("^\\d$", "^[\\U00000030-\\U00000039]\\Z"),
        ("^\\Qa.b$", "^a\\.b\\$"),
    ],
)
def test_python_regexp(go: str, python: str) -> None:
    assert python_regexp(go) == python


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

    monkeypatch.setattr("client.kernel.dockerignore.os.scandir", scandir)
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


def test_wildcard_exception_does_not_reach_into_pruned_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The classic builder looks inside an excluded folder only when the text of an
    exception starts with the folder's path: `!**/keep` and `!d*/keep` re-include nothing
    inside `dir` (BuildKit would), `!dir/*/keep` only what lies in a folder it walks."""
    _tree(tmp_path, ["dir/keep", "dir/sub/keep", "top/keep"])
    seen = _visited(monkeypatch)
    assert _walk(tmp_path, "dir\n!**/keep") == ["top", "top/keep"]
    assert "dir" not in seen
    assert _walk(tmp_path, "dir\n!d*/keep") == ["top", "top/keep"]
    assert _walk(tmp_path, "dir\n!dir/*/keep") == ["top", "top/keep"]
    assert _walk(tmp_path, "dir\n!dir/*/keep\n!dir/k*") == ["dir", "dir/keep", "top", "top/keep"]
    assert _walk(tmp_path, "dir\n!dir/sub/**") == [
        "dir",
        "dir/sub",
        "dir/sub/keep",
        "top",
        "top/keep",
    ]


def test_can_skip() -> None:
    matcher = Matcher(read_patterns("dir\nother\n!dir/sub/*\n!**/keep\n!d*/x"))
    assert not matcher.can_skip("dir")
    assert not matcher.can_skip("dir/sub")
    assert matcher.can_skip("dir/other")
    assert matcher.can_skip("other")
    assert matcher.can_skip("di")
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


def test_walk_sorts_names_as_bytes(tmp_path: Path) -> None:
    """Go sorts a directory's names bytewise; so do we, even for names that are not UTF-8."""
    names = ["b", "é", os.fsdecode(b"\x80"), "Z"]
    for name in names:
        (tmp_path / name).write_text("x")
    assert _walk(tmp_path, "") == sorted(names, key=os.fsencode)
    assert _walk(tmp_path, "")[-2:] == [os.fsdecode(b"\x80"), "é"]
