"""The checked entry list of a build context (SPEC §7): what a `Tree` refuses, what it keeps,
its order, its stored form and the sources that read its bytes."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from client.kernel.entries import (
    DIR,
    FILE,
    MAGIC,
    MAX_LINE,
    MAX_NAME,
    SYMLINK,
    DiskSource,
    Entry,
    Limits,
    Sub,
    Tree,
    TreeSource,
    check_entry,
    decode,
    encode,
    is_document,
    read_file,
    read_lines,
    sub,
)
from client.kernel.errors import InvalidArgument

LIMITS = Limits(max_bytes=1 << 20, max_files=1000)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def f(path: str, data: bytes = b"", mode: int = 0o644, mtime: int = 0) -> Entry:
    return Entry(path, FILE, mode, len(data), mtime, sha(data))


def d(path: str, mode: int = 0o755) -> Entry:
    return Entry(path, DIR, mode)


def ln(path: str, target: str) -> Entry:
    return Entry(path, SYMLINK, 0o777, target=target)


def rejected(entries: Sequence[Entry], limits: Limits = LIMITS) -> str:
    """The message a tree of `entries` is refused with."""
    with pytest.raises(InvalidArgument) as caught:
        Tree(entries, limits)
    message = str(caught.value)
    assert message.startswith("archive rejected: ")
    return message


# -- what a tree refuses ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/etc/passwd", "absolute path: /etc/passwd"),
        ("/", "absolute path: /"),
        ("", "an empty path"),
        ("..", "path escapes the build folder: .."),
        ("../x", "path escapes the build folder: ../x"),
        ("a/../../x", "path escapes the build folder: a/../../x"),
        ("a/..", "path escapes the build folder: a/.."),
        ("a//b", "a path that is not clean: a//b"),
        ("./a", "a path that is not clean: ./a"),
        ("a/./b", "a path that is not clean: a/./b"),
        ("a/", "a path that is not clean: a/"),
        (".", "a path that is not clean: ."),
        ("a\x00b", "a NUL byte in a path: a\x00b"),
        ("a" * (MAX_NAME + 1), f"a path longer than {MAX_NAME} bytes"),
        # bytes are counted, not characters: 2049 characters, 4098 bytes
        ("é" * 2049, f"a path longer than {MAX_NAME} bytes"),
    ],
)
def test_bad_paths(path: str, reason: str) -> None:
    assert rejected([f(path, b"x")]) == f"archive rejected: {reason}"
    # the same check applies to folders and links
    with pytest.raises(InvalidArgument, match="archive rejected: "):
        check_entry(d(path))
    with pytest.raises(InvalidArgument, match="archive rejected: "):
        check_entry(ln(path, "x"))


def test_a_path_of_max_name_bytes_is_accepted() -> None:
    name = "a" * MAX_NAME
    assert Tree([f(name, b"x")], LIMITS).get(name) is not None
    name = "é" * (MAX_NAME // 2)
    assert Tree([f(name, b"x")], LIMITS).get(name) is not None


def test_duplicates() -> None:
    assert "a path listed twice: a" in rejected([f("a"), f("a", b"other")])
    assert "a path listed twice: a" in rejected([d("a"), f("a")])
    assert "a path listed twice: a/b" in rejected([d("a"), f("a/b"), ln("a/b", "x")])


def test_a_child_before_its_folder() -> None:
    assert "a/b comes before its folder a" in rejected([f("a/b")])
    assert "a/b comes before its folder a" in rejected([f("a/b"), d("a")])
    assert "a/b/c comes before its folder a/b" in rejected([d("a"), f("a/b/c"), d("a/b")])


def test_a_child_under_a_symlink() -> None:
    message = rejected([d("real"), ln("a", "real"), f("a/b", b"x")])
    assert "path escapes the build folder through a link: a/b" in message
    # even when the link names a folder inside, or the root itself
    message = rejected([ln("here", "."), d("here/sub")])
    assert "through a link: here/sub" in message


def test_a_child_under_a_file() -> None:
    assert "a is not a folder: a/b" in rejected([f("a"), f("a/b")])
    assert "x/a is not a folder: x/a/b" in rejected([d("x"), f("x/a"), d("x/a/b")])


@pytest.mark.parametrize("kind", ["device", "fifo", "socket", "char", "block"])
def test_devices_and_fifos(kind: str) -> None:
    assert "device or fifo node: dev/null" in rejected([d("dev"), Entry("dev/null", kind)])


@pytest.mark.parametrize("kind", ["hardlink", "FILE", "", "link", "directory"])
def test_unknown_types(kind: str) -> None:
    assert "unsupported entry type: thing" in rejected([Entry("thing", kind)])


@pytest.mark.parametrize(
    "digest",
    [
        "",
        "0" * 63,
        "0" * 65,
        sha(b"x").upper(),
        "g" * 64,
        sha(b"x") + "\n",
        " " + sha(b"x")[1:],
    ],
)
def test_files_with_a_bad_sha256(digest: str) -> None:
    entry = Entry("a.txt", FILE, 0o644, 1, 0, digest)
    assert "an invalid sha256 for a.txt" in rejected([entry])


def test_folders_and_links_need_no_sha256() -> None:
    tree = Tree([d("a"), ln("l", "a")], LIMITS)
    assert len(tree) == 2


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        (Entry("a", FILE, 0o644, -1, 0, sha(b"")), "an invalid size or time: a"),
        (Entry("a", FILE, 0o644, 0, 2**63, sha(b"")), "an invalid size or time: a"),
        (Entry("a", FILE, 0o644, 0, -(2**63), sha(b"")), "an invalid size or time: a"),
    ],
)
def test_bad_sizes_and_times(entry: Entry, reason: str) -> None:
    assert reason in rejected([entry])


@pytest.mark.parametrize(
    ("entries", "shown"),
    [
        # absolute, empty, NUL
        ([ln("l", "/etc/passwd")], "l -> /etc/passwd"),
        ([ln("l", "/")], "l -> /"),
        ([ln("l", "")], "l -> "),
        ([ln("l", "a\x00b")], "l -> a\x00b"),
        # climbing out directly
        ([ln("l", "..")], "l -> .."),
        ([ln("l", "../x")], "l -> ../x"),
        ([ln("l", "a/../../x")], "l -> a/../../x"),
        ([d("a"), ln("a/l", "../..")], "a/l -> ../.."),
        ([d("a"), d("a/b"), ln("a/b/l", "../../../etc")], "a/b/l -> ../../../etc"),
        # through other links of the tree (each of them fine on its own)
        ([d("a"), ln("a/up", ".."), ln("l", "a/up/..")], "l -> a/up/.."),
        (
            [d("a"), d("a/b"), ln("a/b/top", "../.."), ln("out", "a/b/top/../x")],
            "out -> a/b/top/../x",
        ),
        ([d("a"), ln("a/top", ".."), ln("a/esc", "top/../secret")], "a/esc -> top/../secret"),
        ([ln("here", "."), ln("l", "here/here/..")], "l -> here/here/.."),
    ],
)
def test_links_leading_outside(entries: list[Entry], shown: str) -> None:
    message = rejected(entries)
    assert "link points outside the build folder: " in message
    assert shown in message


@pytest.mark.parametrize(
    "entries",
    [
        [ln("l", "l")],
        [ln("x", "y"), ln("y", "x")],
        [ln("x", "y/z"), ln("y", "x")],
        [d("a"), ln("a/l", "l")],
        [ln("a", "b"), ln("b", "c"), ln("c", "a")],
    ],
)
def test_links_going_round(entries: list[Entry]) -> None:
    assert "link points outside the build folder: " in rejected(entries)


def test_a_long_link_target() -> None:
    message = rejected([ln("l", "a/" * (MAX_NAME // 2) + "b")])
    assert f"a link target longer than {MAX_NAME} bytes" in message


def test_max_files() -> None:
    entries = [d("a"), f("a/b"), f("c")]
    assert "more than 2 files" in rejected(entries, Limits(max_bytes=100, max_files=2))
    assert len(Tree(entries, Limits(max_bytes=100, max_files=3))) == 3


def test_max_bytes() -> None:
    entries = [f("a", b"12345"), d("d"), f("d/b", b"67890")]
    assert len(Tree(entries, Limits(max_bytes=10, max_files=10))) == 3
    message = rejected([*entries, f("c", b"!")], Limits(max_bytes=10, max_files=10))
    assert "larger than 10 bytes once extracted" in message
    # sizes are what the entries say, links and folders count for nothing
    big = Entry("big", FILE, 0o644, 11, 0, sha(b""))
    assert "larger than 10 bytes" in rejected([big], Limits(max_bytes=10, max_files=10))
    assert Tree([d("x"), ln("y", "x")], Limits(max_bytes=0, max_files=10)).bytes == 0


def test_special_bits_are_dropped() -> None:
    tree = Tree(
        [
            f("setuid", b"x", mode=0o4755),
            f("setgid", b"x", mode=0o2750),
            d("sticky", mode=0o1777),
            f("all", b"x", mode=0o7777),
            Entry("link", SYMLINK, 0o4755, 99, 0, sha(b"x"), target="setuid"),
            Entry("dir", DIR, 0o755, 99, 0, sha(b"x")),
        ],
        LIMITS,
    )
    modes = {e.path: e.mode for e in tree}
    assert modes == {
        "setuid": 0o755,
        "setgid": 0o750,
        "sticky": 0o777,
        "all": 0o777,
        "link": 0o777,
        "dir": 0o755,
    }
    # what does not belong to a link or a folder is dropped too
    assert tree.get("link") == Entry("link", SYMLINK, 0o777, 0, 0, "", "setuid")
    assert tree.get("dir") == Entry("dir", DIR, 0o755, 0, 0, "", "")
    assert tree.bytes == 3


# -- what a tree keeps ------------------------------------------------------------------


def good_tree() -> Tree:
    return Tree(
        [
            d("a"),
            ln("a/link", "../b"),
            ln("a/self", "./link"),
            ln("a/deep", "../src/../b/x"),
            d("b"),
            f("b/x", b"x-bytes"),
            ln("top", "."),
            ln("dangling", "nowhere/at/all"),
            d("src"),
            f("src/main.py", b"print('hi')\n", mode=0o755),
            ln("src/up", ".."),
            ln("chain0", "chain1"),
            ln("chain1", "chain2"),
            ln("chain2", "b"),
        ],
        LIMITS,
    )


def test_a_good_tree() -> None:
    tree = good_tree()
    assert len(tree) == 14
    assert tree.bytes == len(b"x-bytes") + len(b"print('hi')\n")
    assert tree.digests() == {sha(b"x-bytes"), sha(b"print('hi')\n")}
    assert tree.get("a/link") == ln("a/link", "../b")
    assert tree.get("src/main.py") == f("src/main.py", b"print('hi')\n", mode=0o755)
    assert tree.get("nope") is None
    assert [e.name for e in tree.children("a")] == ["deep", "link", "self"]
    assert [(e.name, e.type) for e in tree.children("src")] == [
        ("main.py", FILE),
        ("up", SYMLINK),
    ]
    assert tree.children("b")[0].parent == "b"
    for not_a_folder in ("b/x", "a/link", "missing"):
        with pytest.raises(FileNotFoundError):
            tree.children(not_a_folder)


@pytest.mark.parametrize(
    ("path", "found"),
    [
        ("", ""),
        (".", ""),
        ("b/x", "b/x"),
        ("a/link", "b"),
        ("a/link/x", "b/x"),
        ("a/self/x", "b/x"),
        ("a/deep", "b/x"),
        ("a/link/..", ""),
        ("top/top/src/main.py", "src/main.py"),
        ("src/up/a/link/x", "b/x"),
        ("chain0/x", "b/x"),
        ("nope/x", "nope/x"),  # what it names need not exist
        ("dangling", "nowhere/at/all"),
        ("a//link/./x", "b/x"),
        ("..", None),
        ("../b", None),
        ("a/link/../..", None),
        ("src/up/..", None),
        ("/etc", None),
        ("/", None),
    ],
)
def test_resolve(path: str, found: str | None) -> None:
    assert good_tree().resolve(path) == found


def test_resolve_gives_up_on_too_many_links() -> None:
    links = [ln(f"l{i}", f"l{i + 1}") for i in range(60)]
    tree = Tree([*links[:20], ln("l20", "end")], LIMITS)
    assert tree.resolve("l0") == "end"
    with pytest.raises(InvalidArgument, match="link points outside the build folder"):
        Tree([*links, ln("l60", "end")], LIMITS)


def test_iteration_is_parents_first_children_sorted_as_bytes() -> None:
    entries = [
        f("b"),
        d("a"),
        f("\U0001f600"),
        f("B"),
        f("a/z"),
        d("a/m"),
        f("a/m/2"),
        f("a/m/10"),
        f("a-b"),
        f("\udcff"),  # the byte 0xff of a name that is not UTF-8
        f("a.c"),
        f("_"),
        f("é"),
        d("a/A"),
    ]
    tree = Tree(entries, LIMITS)
    assert [e.path for e in tree] == [
        "B",
        "_",
        "a",
        "a/A",
        "a/m",
        "a/m/10",
        "a/m/2",
        "a/z",
        "a-b",
        "a.c",
        "b",
        "é",
        "\U0001f600",  # F0 9F 98 80 comes before FF, though U+1F600 is after U+DCFF
        "\udcff",
    ]
    # a second walk gives the same
    assert [e.path for e in tree] == [e.path for e in tree]


# -- the stored form --------------------------------------------------------------------


def test_encode_decode_round_trip() -> None:
    tree = Tree(
        [
            d("src", mode=0o700),
            f("src/app.py", b"print()\n", mode=0o755, mtime=1_700_000_000_123_456_789),
            f("empty"),
            ln("src/link", "../empty"),
            f('quote"and\\back\nslash é', b"odd"),
            f("\udcfe", b"not utf-8"),
        ],
        LIMITS,
    )
    lines = list(encode(tree))
    assert lines[0] == MAGIC == b"slipway-context 1\n"
    assert all(line.endswith(b"\n") and line.count(b"\n") == 1 for line in lines)
    document = b"".join(lines)
    assert is_document(document)
    records = {r["path"]: r for r in map(json.loads, lines[1:])}
    assert [r["path"] for r in records.values()] == [e.path for e in tree]
    assert records["empty"] == {
        "path": "empty",
        "type": "file",
        "mode": 0o644,
        "size": 0,
        "sha256": sha(b""),
    }
    assert records["src/link"] == {
        "path": "src/link",
        "type": "symlink",
        "mode": 0o777,
        "target": "../empty",
    }
    assert records["src"] == {"path": "src", "type": "dir", "mode": 0o700}
    assert records["src/app.py"]["mtime"] == 1_700_000_000_123_456_789

    decoded = list(decode(read_lines(io.BytesIO(document))))
    assert decoded == list(tree)
    assert list(Tree(decoded, LIMITS)) == list(tree)
    assert tree.get("src/app.py") in decoded
    # an empty tree is the magic line alone
    assert b"".join(encode([])) == MAGIC
    assert list(decode([MAGIC])) == []


@pytest.mark.parametrize(
    "head",
    [
        b"",
        b"slipway-context 2\n",
        b"slipway-context 1",
        b"\x1f\x8b\x08\x00",
        b"Slipway-context 1\n",
    ],
)
def test_what_is_not_a_document(head: bytes) -> None:
    assert not is_document(head)
    with pytest.raises(InvalidArgument, match="^archive rejected: not a context document$"):
        list(decode(read_lines(io.BytesIO(head + b'{"path":"a","type":"dir"}\n'))))


@pytest.mark.parametrize(
    "line",
    [
        b"not json\n",
        b"\n",
        b"[1]\n",
        b'"a string"\n',
        b"null\n",
        b"3\n",
        b'{"type":"file"}\n',
        b'{"path":"a"}\n',
        b'{"path":"a","type":"file","mode":"rw"}\n',
        b'{"path":"a","type":"file","size":[1]}\n',
        b'{"path":"a","type":"file","mtime":null}\n',
        b'{"path":"a","type":"file","mode":NaN}\n',
        b'{"path":"a","type":"file"\n',
        b"\xff\xfe\n",
        # JSON Python reads as infinity: int() of it is an OverflowError
        b'{"path":"a","type":"file","mode":Infinity}\n',
        b'{"path":"a","type":"file","size":1e400}\n',
        # nested deeper than the JSON parser recurses, yet shorter than MAX_LINE
        pytest.param(b"[" * 20_000 + b"\n", id="nested-20000-deep"),
    ],
)
def test_decode_refuses_malformed_lines(line: bytes) -> None:
    good = b'{"path":"a","type":"dir","mode":493}\n'
    with pytest.raises(InvalidArgument, match="line 3 of the context document is not an entry"):
        list(decode([MAGIC, good, line]))


def test_decode_refuses_a_long_line() -> None:
    long = b'{"path":"' + b"a" * MAX_LINE + b'","type":"dir"}\n'
    document = io.BytesIO(MAGIC + long + b'{"path":"b","type":"dir"}\n')
    lines = read_lines(document)
    with pytest.raises(InvalidArgument, match="line 2 of the context document is too long"):
        list(decode(lines))
    # read_lines never holds more than MAX_LINE + 1 bytes of a line
    pieces = list(read_lines(io.BytesIO(MAGIC + long)))
    assert max(len(p) for p in pieces) == MAX_LINE + 1
    assert b"".join(pieces) == MAGIC + long


def test_decode_checks_nothing_a_tree_then_refuses() -> None:
    """Decoding only parses: the entries still go through `Tree`."""
    line = b'{"path":"../x","type":"file","mode":2541,"size":1,"sha256":"abc"}\n'
    (entry,) = decode([MAGIC, line])
    assert entry == Entry("../x", FILE, 0o4755, 1, 0, "abc")
    assert "path escapes the build folder: ../x" in rejected([entry])


# -- sources -----------------------------------------------------------------------------


class Blobs:
    """An in-memory blob store: the fetch function of a TreeSource, recording what it is
    asked for."""

    def __init__(self, *contents: bytes) -> None:
        self.blobs = {sha(c): c for c in contents}
        self.asked: list[list[str]] = []

    def fetch(self, digests: Sequence[str]) -> Iterator[tuple[str, Iterator[bytes]]]:
        self.asked.append(list(digests))
        for digest in digests:
            data = self.blobs[digest]
            yield digest, iter([data[:2], data[2:]])


def store_tree() -> tuple[Tree, Blobs]:
    tree = Tree(
        [
            f("a", b"alpha"),
            d("d"),
            f("d/b", b"beta"),
            f("c", b"alpha"),
            ln("l", "d/b"),
            d("real"),
            f("real/Dockerfile", b"FROM busybox\n"),
            d("real/inner"),
            f("real/inner/f", b"inner"),
            ln("real/out", "../a"),
            ln("real/up", ".."),
            ln("link", "real"),
            ln("here", "."),
        ],
        LIMITS,
    )
    return tree, Blobs(b"alpha", b"beta", b"FROM busybox\n", b"inner")


def test_tree_source_reads_through_fetch() -> None:
    tree, blobs = store_tree()
    source = TreeSource(tree, blobs.fetch)
    got = [(path, b"".join(chunks)) for path, chunks in source.read(["a", "d/b", "c"])]
    assert got == [("a", b"alpha"), ("d/b", b"beta"), ("c", b"alpha")]
    assert blobs.asked == [[sha(b"alpha"), sha(b"beta"), sha(b"alpha")]]
    assert source.listdir("") == [
        ("a", False),
        ("c", False),
        ("d", True),
        ("here", False),
        ("l", False),
        ("link", False),
        ("real", True),
    ]
    assert source.listdir("d") == [("b", False)]
    assert source.lstat("l") == ln("l", "d/b")
    assert source.resolve("l") == "d/b"
    assert read_file(source, "l", 4) == b"beta"
    with pytest.raises(FileNotFoundError):
        source.lstat("missing")
    with pytest.raises(FileNotFoundError):
        source.listdir("a")


def test_tree_source_reads_only_files() -> None:
    tree, blobs = store_tree()
    source = TreeSource(tree, blobs.fetch)
    with pytest.raises(IsADirectoryError):
        list(source.read(["a", "d"]))
    with pytest.raises(IsADirectoryError):
        list(source.read(["l"]))
    with pytest.raises(FileNotFoundError):
        list(source.read(["missing"]))
    assert blobs.asked == []  # nothing is fetched before every path is checked


def test_tree_source_refuses_the_wrong_blob() -> None:
    tree, _ = store_tree()

    def wrong(digests: Sequence[str]) -> Iterator[tuple[str, Iterator[bytes]]]:
        for _digest in digests:
            yield sha(b"beta"), iter([b"beta"])

    with pytest.raises(OSError, match=f"the store sent {sha(b'beta')[:12]} for a"):
        list(TreeSource(tree, wrong).read(["a"]))


def test_read_file_through_a_tree_source() -> None:
    tree, blobs = store_tree()
    source = TreeSource(tree, blobs.fetch)
    with pytest.raises(InvalidArgument, match="^a is larger than 4 bytes$"):
        read_file(source, "a", 4)
    assert blobs.asked == []  # refused from its entry, before any byte is fetched
    assert read_file(source, "a", 5) == b"alpha"
    assert read_file(source, "here/link/inner/f", 100) == b"inner"
    for missing in ("nope", "d", "real/inner/f/x", "..", "/etc/passwd", "d/b/c"):
        with pytest.raises(InvalidArgument, match="^no such file: "):
            read_file(source, missing, 100)


def test_read_file_bounds_what_it_reads_not_what_the_entry_says() -> None:
    """A blob larger than its entry claims is cut off at the limit."""
    tree = Tree([Entry("a", FILE, 0o644, 3, 0, sha(b"0123456789"))], LIMITS)
    source = TreeSource(tree, Blobs(b"0123456789").fetch)
    with pytest.raises(InvalidArgument, match="^a is larger than 5 bytes$"):
        read_file(source, "a", 5)
    assert read_file(source, "a", 10) == b"0123456789"


def test_sub_of_a_folder_through_a_symlink() -> None:
    tree, blobs = store_tree()
    source = TreeSource(tree, blobs.fetch)
    inner = sub(source, "link")
    assert isinstance(inner, Sub) and inner.prefix == "real"
    assert inner.listdir("") == [
        ("Dockerfile", False),
        ("inner", True),
        ("out", False),
        ("up", False),
    ]
    assert inner.listdir("inner") == [("f", False)]
    assert inner.lstat("inner/f") == f("inner/f", b"inner")
    assert read_file(inner, "Dockerfile", 100) == b"FROM busybox\n"
    got = [(path, b"".join(chunks)) for path, chunks in inner.read(["inner/f", "Dockerfile"])]
    assert got == [("inner/f", b"inner"), ("Dockerfile", b"FROM busybox\n")]
    assert inner.resolve("") == ""
    assert inner.resolve("inner/f") == "inner/f"
    assert inner.resolve("up/real/inner") == "inner"
    # inside the whole tree, yet outside the part
    assert inner.resolve("out") is None
    assert inner.resolve("up") is None
    assert inner.resolve("..") is None
    with pytest.raises(InvalidArgument, match="^no such file: out$"):
        read_file(inner, "out", 100)
    # a part of a part
    deeper = sub(inner, "up/link/inner")
    assert read_file(deeper, "f", 100) == b"inner"
    assert deeper.resolve("..") is None


def test_sub_of_the_root_and_outside() -> None:
    tree, blobs = store_tree()
    source = TreeSource(tree, blobs.fetch)
    assert sub(source, "") is source
    assert sub(source, ".") is source
    assert sub(source, "here") is source
    assert sub(source, "real/up") is source
    for outside in ("..", "../x", "/etc", "real/up/.."):
        with pytest.raises(InvalidArgument, match="^build path escapes the build folder: "):
            sub(source, outside)


# -- a folder on disk --------------------------------------------------------------------


@pytest.fixture
def disk(tmp_path: Path) -> Path:
    (tmp_path / "secret").write_bytes(b"outside")
    root = tmp_path / "ctx"
    (root / "real").mkdir(parents=True)
    (root / "small").write_bytes(b"hello")
    (root / "big").write_bytes(b"x" * 100)
    (root / "real" / "Dockerfile").write_bytes(b"FROM busybox\n")
    (root / "inside").symlink_to("small")
    (root / "out").symlink_to("../secret")
    (root / "abs").symlink_to(tmp_path / "secret")
    (root / "parent").symlink_to("..")
    (root / "link").symlink_to("real")
    return root


def test_disk_source_read_file(disk: Path) -> None:
    source = DiskSource(disk)
    assert read_file(source, "small", 5) == b"hello"
    assert read_file(source, "inside", 5) == b"hello"
    assert read_file(source, "link/Dockerfile", 100) == b"FROM busybox\n"
    assert read_file(source, "big", 100) == b"x" * 100
    with pytest.raises(InvalidArgument, match="^big is larger than 99 bytes$"):
        read_file(source, "big", 99)
    with pytest.raises(InvalidArgument, match="^inside is larger than 4 bytes$"):
        read_file(source, "inside", 4)


@pytest.mark.parametrize(
    "path", ["out", "abs", "parent/secret", "../secret", "missing", "real", "/etc/passwd"]
)
def test_disk_source_reads_nothing_outside(disk: Path, path: str) -> None:
    with pytest.raises(InvalidArgument, match="^no such file: "):
        read_file(DiskSource(disk), path, 1000)


def test_disk_source_listing_and_entries(disk: Path) -> None:
    source = DiskSource(disk)
    assert source.listdir("") == [
        ("abs", False),
        ("big", False),
        ("inside", False),
        ("link", False),
        ("out", False),
        ("parent", False),
        ("real", True),
        ("small", False),
    ]
    assert source.lstat("out").type == SYMLINK and source.lstat("out").target == "../secret"
    small = source.lstat("small")
    assert (small.path, small.type, small.size) == ("small", FILE, 5)
    assert source.lstat("real").type == DIR
    with pytest.raises(FileNotFoundError):
        source.lstat("missing")
    # a link is never opened, even when asked for by name
    with pytest.raises(OSError):
        list(source.read(["inside"]))


def test_disk_source_sub_through_a_symlink(disk: Path) -> None:
    source = DiskSource(disk)
    inner = sub(source, "link")
    assert isinstance(inner, Sub) and inner.prefix == "real"
    assert inner.listdir("") == [("Dockerfile", False)]
    assert read_file(inner, "Dockerfile", 100) == b"FROM busybox\n"
    assert inner.resolve("../small") is None
    for outside in ("parent", "out", ".."):
        with pytest.raises(InvalidArgument, match="build path escapes the build folder"):
            sub(source, outside)


def test_disk_source_resolves_from_its_real_path(tmp_path: Path, disk: Path) -> None:
    """A root that is itself reached through a link still keeps links inside."""
    (tmp_path / "alias").symlink_to("ctx")
    source = DiskSource(tmp_path / "alias")
    assert source.resolve("link/Dockerfile") == "real/Dockerfile"
    assert source.resolve("") == ""
    assert source.resolve("out") is None
