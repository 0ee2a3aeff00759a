"""services.common.logs: failure reasons in one line."""

from __future__ import annotations

from client.kernel.types import one_line


def test_one_line() -> None:
    assert one_line("first\nsecond") == "first"
    assert one_line("validation errors:\n  a\n  b") == "validation errors: a; b"
    assert one_line("") == "unknown error"
