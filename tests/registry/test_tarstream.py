"""The streaming tar reader (`TarReader`) against `tarfile` itself: the same members, the
same data and the same verdicts on broken streams, however the stream is cut into chunks;
member data handed out as views of the chunks, never copied."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from client.kernel.errors import InvalidArgument
from services.registry import tarstream
from services.registry.buildarchive import unpack
from services.registry.tarstream import TarReader


def archive(fmt: int = tarfile.PAX_FORMAT) -> bytes:
    """Regular files (one with a long name, one with a non-ASCII one), a directory, a
    symlink, an empty file and a big one."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as tar:
        for name, data in (
            ("a.txt", b"hello"),
            ("d" * 150 + "/long.bin", os.urandom(70_000)),
            ("ü.tar", b"x" * 513),
            ("empty", b""),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, kind in (("dir", tarfile.DIRTYPE), ("link", tarfile.SYMTYPE)):
            info = tarfile.TarInfo(name)
            info.type = kind
            info.linkname = "a.txt" if kind == tarfile.SYMTYPE else ""
            tar.addfile(info)
        info = tarfile.TarInfo("big")
        info.size = 300_000
        tar.addfile(info, io.BytesIO(bytes(range(256)) * 1200))
    return out.getvalue()


def split(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def by_tarfile(data: bytes, read: set[str]) -> list[tuple[str, int, bytes | None]]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r|") as tar:
        out = []
        for info in tar:
            body = None
            if info.name in read and info.isreg():
                source = tar.extractfile(info)
                assert source is not None
                body = source.read()
            out.append((info.name, info.type[0], body))
        return out


def by_reader(chunks: list[bytes], read: set[str]) -> list[tuple[str, int, bytes | None]]:
    reader = TarReader(chunks)
    out = []
    for info in reader.members():
        body = None
        if info.name in read and info.isreg():
            body = b"".join(bytes(piece) for piece in reader.data(info))
        out.append((info.name, info.type[0], body))
    return out


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT])
def test_the_members_and_data_are_tarfiles(fmt: int) -> None:
    names = {"a.txt", "d" * 150 + "/long.bin", "ü.tar", "empty", "big"}
    data = archive(fmt)
    expected = by_tarfile(data, names)
    assert [name for name, _, _ in expected][-3:] == ["dir", "link", "big"]
    for size in (1, 7, 512, 4096, 100_000, len(data)):
        assert by_reader(split(data, size), names) == expected


@settings(max_examples=60, deadline=None)
@given(
    cuts=st.lists(st.integers(1, 80_000), min_size=1, max_size=40),
    read=st.sets(st.sampled_from(["a.txt", "ü.tar", "big", "empty"])),
)
def test_any_chunking_and_any_members_skipped(cuts: list[int], read: set[str]) -> None:
    data = archive()
    chunks, at = [], 0
    for size in cuts * (len(data) // sum(cuts) + 1):
        chunks.append(data[at : at + size])
        at += size
        if at >= len(data):
            break
    assert b"".join(chunks) == data
    assert by_reader(chunks, read) == by_tarfile(data, read)


def test_member_data_are_views_of_the_chunks() -> None:
    data = archive()
    chunks = split(data, 65536)
    reader = TarReader(chunks)
    for info in reader.members():
        if info.name == "big":
            pieces = list(reader.data(info))
    assert all(isinstance(piece, memoryview) for piece in pieces)
    assert any(piece.obj is chunk for piece in pieces for chunk in chunks)  # not copies


@pytest.mark.parametrize(
    ("cut", "message"),
    [
        (lambda data: b"", "empty file"),
        (lambda data: b"not a tar at all" * 64, "invalid header|bad checksum"),
        (lambda data: data[:100], "truncated header"),
        (lambda data: data[: len(data) - 200_000], "unexpected end of data"),
    ],
)
def test_broken_streams_are_what_tarfile_says(cut, message: str) -> None:  # type: ignore[no-untyped-def]
    data = cut(archive())
    with pytest.raises(tarfile.ReadError, match=message):
        by_reader(split(data, 4096), {"big"})
    with pytest.raises(tarfile.ReadError, match=message):
        by_tarfile(data, {"big"})


def test_an_unread_member_cut_short_is_caught_when_skipped() -> None:
    data = archive()[:-250_000]  # "big" ends early; nobody reads its data
    with pytest.raises(tarfile.ReadError, match="unexpected end of data"):
        list(TarReader(split(data, 1000)).members())
    with pytest.raises(tarfile.ReadError, match="unexpected end of data"):
        list(tarfile.open(fileobj=io.BytesIO(data), mode="r|"))


def test_an_extended_header_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tarstream, "MAX_EXTENDED", 1024)
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("x")
        info.pax_headers = {"comment": "c" * 5000}
        tar.addfile(info)
    with pytest.raises(tarfile.ReadError, match="extended headers of 5632 bytes are too large"):
        list(TarReader([out.getvalue()]).members())


def test_unpack_names_a_broken_archive(tmp_path: Path) -> None:
    data = archive()
    for broken in (b"x" * 1024, data[: len(data) - 200_000]):
        with pytest.raises(InvalidArgument, match="invalid archive"):
            unpack(split(broken, 4096), tmp_path)


def pax_member(name: str, data: bytes, records: dict[str, str]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.pax_headers = records
        tar.addfile(info, io.BytesIO(data))
        follower = tarfile.TarInfo("b.tar")
        follower.size = 3
        tar.addfile(follower, io.BytesIO(b"bbb"))
    return out.getvalue()


def test_a_size_its_data_does_not_occupy_is_refused() -> None:
    # A pax record that changes the size alone would hand out the next member as data.
    data = pax_member("a.tar", b"a" * 10, {"GNU.sparse.realsize": "1536"})
    with pytest.raises(tarfile.ReadError, match="a.tar: its size does not match its header"):
        by_reader(split(data, 4096), {"a.tar"})


def test_chained_extended_headers_are_bounded() -> None:
    # GNU long names, each naming the next: past MAX_HEADERS, refused, however small.
    chain = b""
    for i in range(tarstream.MAX_HEADERS + 2):
        info = tarfile.TarInfo("././@LongLink")
        info.type = tarfile.GNUTYPE_LONGNAME
        name = f"name{i}".encode() + b"\0"
        info.size = len(name)
        chain += info.tobuf(tarfile.GNU_FORMAT) + name + b"\0" * (-len(name) % 512)
    data = chain + archive(tarfile.GNU_FORMAT)
    with pytest.raises(tarfile.ReadError, match="more than 16 extended headers"):
        list(TarReader(split(data, 4096)).members())
    ok = chain[: 512 * 2 * 3] + archive(tarfile.GNU_FORMAT)  # three in a row: fine
    first = next(iter(tarfile.open(fileobj=io.BytesIO(ok), mode="r|")))
    assert next(TarReader([ok]).members()).name == first.name == "name0"


def test_a_malformed_extended_header_is_a_read_error(tmp_path: Path) -> None:
    data = pax_member("a.tar", b"a", {"GNU.sparse.major": "1", "GNU.sparse.minor": "0"})
    with pytest.raises(tarfile.ReadError, match="malformed|size does not match"):
        by_reader([data], {"a.tar"})
    with pytest.raises(InvalidArgument, match="invalid archive"):
        unpack([data], tmp_path)


def test_unpack_refuses_a_sparse_image_tar(tmp_path: Path) -> None:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("web.B1.tar")
        info.size = 4
        info.pax_headers = {"GNU.sparse.map": "0,4", "GNU.sparse.realsize": "4", "size": "4"}
        tar.addfile(info, io.BytesIO(b"xxxx"))
    with pytest.raises(InvalidArgument, match="web.B1.tar: a sparse file is not supported"):
        unpack([out.getvalue()], tmp_path)


def test_big_chunks_come_out_in_bounded_views() -> None:
    data = archive()
    reader = TarReader([data + b"\0" * (9 * 1024 * 1024)])  # one 9 MiB message
    for info in reader.members():
        if info.name == "big":
            assert max(len(piece) for piece in reader.data(info)) <= 512 * 1024
