"""The environment rules the CLI and the metadata service share: names, `KEY=VALUE`
arguments, applying a change and describing it."""

from __future__ import annotations

import pytest

from client.kernel.environment import apply_change, check_env_name, env_lines, parse_assignments
from client.kernel.errors import InvalidArgument, NotFound


@pytest.mark.parametrize("name", ["A", "_", "_x1", "lower", "MiXeD_09", "A" * 200])
def test_valid_names(name: str) -> None:
    assert check_env_name(name) == name


@pytest.mark.parametrize("name", ["", "1A", "A-B", "A B", "A.B", "Ä", "A\n", "=A", "$A"])
def test_invalid_names(name: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        check_env_name(name)
    assert str(caught.value) == (
        f"invalid environment variable: {name!r} (must match ^[A-Za-z_][A-Za-z0-9_]*$)"
    )


def test_assignments_split_at_the_first_equals_sign() -> None:
    parsed = parse_assignments(
        ["B=x=y", "A=", "C=two words, \"quoted\" 'too'", "D=line1\nline2", "B=last"]
    )
    assert parsed == {
        "B": "last",
        "A": "",
        "C": "two words, \"quoted\" 'too'",
        "D": "line1\nline2",
    }
    assert list(parsed) == ["B", "A", "C", "D"]  # a repeated key keeps its first place


def test_an_assignment_without_equals_is_invalid() -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_assignments(["GOOD=1", "FOO"])
    assert str(caught.value) == "invalid environment variable: 'FOO' (want KEY=VALUE)"
    with pytest.raises(InvalidArgument, match=r"^invalid environment variable: '1X' \(must"):
        parse_assignments(["1X=1"])


def test_apply_change() -> None:
    old = {"KEEP": "k", "CHANGE": "c", "GO": "g", "SAME": "s"}
    change = apply_change(old, {"SAME": "s", "NEW": "n", "CHANGE": "c2", "NEW2": ""}, ["GO"])
    assert change.env == {"KEEP": "k", "CHANGE": "c2", "SAME": "s", "NEW": "n", "NEW2": ""}
    assert change.description == "env add:NEW,NEW2 change:CHANGE remove:GO"
    assert old == {"KEEP": "k", "CHANGE": "c", "GO": "g", "SAME": "s"}  # not modified
    assert apply_change(old, {"SAME": "s"}, []).description == "env"
    assert apply_change(old, {}, ["GO", "GO"]).description == "env remove:GO"


def test_apply_change_refusals() -> None:
    with pytest.raises(NotFound, match="^env var not set: X$"):
        apply_change({"A": "1"}, {}, ["X"])
    with pytest.raises(NotFound, match="^env vars not set: X, Y$"):
        apply_change({"A": "1"}, {}, ["X", "A", "Y"])
    with pytest.raises(InvalidArgument, match="^environment variable both set and unset: A$"):
        apply_change({"A": "1"}, {"A": "2"}, ["A"])
    with pytest.raises(InvalidArgument, match="^no environment change given$"):
        apply_change({"A": "1"}, {}, [])
    with pytest.raises(InvalidArgument, match="^invalid environment variable: 'B-C'"):
        apply_change({}, {"B-C": "1"}, [])


def test_env_lines_are_sorted_by_key() -> None:
    assert env_lines({"b": "2", "A": "x=y", "_": "", "B": "1"}) == ["A=x=y", "B=1", "_=", "b=2"]
    assert env_lines({}) == []
