"""Rendering: tables, key lists, humanised times — exact strings."""

from __future__ import annotations

import io

import pytest

from client.cli.render import (
    build_elapsed,
    build_info,
    builds_table,
    format_duration,
    humanize_since,
    key_values,
    make_console,
    step,
    table,
)
from client.kernel import types

NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    ("ago", "text"),
    [
        (0, "now"),
        (59.9, "now"),
        (-30, "now"),
        (60, "1 minute ago"),
        (119, "1 minute ago"),
        (120, "2 minutes ago"),
        (3599, "59 minutes ago"),
        (3600, "1 hour ago"),
        (7200, "2 hours ago"),
        (86399, "23 hours ago"),
        (86400, "1 day ago"),
        (2 * 86400 + 5, "2 days ago"),
        (400 * 86400, "400 days ago"),
    ],
)
def test_humanize_since(ago: float, text: str) -> None:
    assert humanize_since(NOW - ago, NOW) == text


def test_humanize_unset_time() -> None:
    assert humanize_since(0, NOW) == ""


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (0.4, "0s"),
        (41, "41s"),
        (41.6, "42s"),
        (59.4, "59s"),
        (60, "1m0s"),
        (187, "3m7s"),
        (3725, "62m5s"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def _build(**kw: object) -> types.Build:
    base: dict[str, object] = {"id": "BNXQLTAPWRE", "app": "web"}
    base.update(kw)
    return types.Build(**base)  # type: ignore[arg-type]


def test_elapsed_only_when_finished() -> None:
    assert build_elapsed(_build(status="running", started=NOW - 50)) == ""
    assert build_elapsed(_build(status="complete", started=NOW - 41, ended=NOW)) == "41s"
    assert build_elapsed(_build(status="cancelled", created=NOW, ended=NOW)) == ""


def test_table_pads_all_but_the_last_column() -> None:
    assert table(["A", "BB", "C"], [["xxx", "", "last"], ["y", "z", ""]]) == [
        "A    BB  C",
        "xxx      last",
        "y    z",
    ]


def test_builds_table_exact() -> None:
    builds = [
        _build(
            status="complete",
            release="RZUVKWHDPQA",
            started=NOW - 150,
            ended=NOW - 109,
            description="build 7329df90c1 fix header",
        ),
        _build(id="BRUNNINGAAA", status="running", started=NOW - 10, description=""),
        _build(
            id="BFAILEDAAAA",
            status="failed",
            started=NOW - 3 * 86400,
            ended=NOW - 3 * 86400 + 75,
            description="second try",
        ),
        _build(id="BCREATEDAAA", status="created", created=NOW - 7200),
    ]
    assert builds_table(builds, NOW) == [
        "ID           STATUS    RELEASE      STARTED        ELAPSED  DESCRIPTION",
        "BNXQLTAPWRE  complete  RZUVKWHDPQA  2 minutes ago  41s      build 7329df90c1 fix header",
        "BRUNNINGAAA  running                now",
        "BFAILEDAAAA  failed                 3 days ago     1m15s    second try",
        "BCREATEDAAA  created                2 hours ago",
    ]


def test_empty_builds_table() -> None:
    assert builds_table([], NOW) == ["ID  STATUS  RELEASE  STARTED  ELAPSED  DESCRIPTION"]


def test_build_info_exact() -> None:
    build = _build(
        status="failed",
        started=NOW - 130,
        ended=NOW - 100,
        description="try",
        reason="service web: build failed",
        git_sha="7329df90c1aa" + "0" * 28,
    )
    assert build_info(build, NOW) == [
        "Id           BNXQLTAPWRE",
        "Status       failed",
        "Release",
        "Description  try",
        "Started      2 minutes ago",
        "Elapsed      30s",
        "Reason       service web: build failed",
        "Git Sha      7329df90c1aa" + "0" * 28,
    ]


def test_build_info_without_reason_or_sha() -> None:
    lines = build_info(
        _build(status="complete", release="RAAAAAAAAAA", started=NOW - 5, ended=NOW), NOW
    )
    assert [line.split()[0] for line in lines] == [
        "Id",
        "Status",
        "Release",
        "Description",
        "Started",
        "Elapsed",
    ]
    assert lines[2] == "Release      RAAAAAAAAAA"


def test_key_values() -> None:
    assert key_values([("A", "1"), ("Long", "")]) == ["A     1", "Long"]


def test_step_prints_ok_or_ends_the_line() -> None:
    buf = io.StringIO()
    console = make_console(buf)
    with step(console, "Packaging source"):
        pass
    with pytest.raises(RuntimeError), step(console, "Uploading source"):
        raise RuntimeError("x")
    assert buf.getvalue() == "Packaging source... OK\nUploading source... \n"


def test_console_prints_text_as_given() -> None:
    buf = io.StringIO()
    make_console(buf).print("[bold]x[/] :smile: " + "w" * 300)
    assert buf.getvalue() == "[bold]x[/] :smile: " + "w" * 300 + "\n"
