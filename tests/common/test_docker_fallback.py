"""The one local-image fallback after a failed pull."""

from __future__ import annotations

import pytest

from client.kernel.errors import Unavailable
from services.common.docker.fallback import use_local_copy


def test_a_local_copy_is_used_and_said() -> None:
    lines: list[str] = []
    err = Unavailable("cannot pull busybox: registry unreachable at registry-1.docker.io")
    local = {"busybox": "sha256:abc"}
    assert use_local_copy("busybox", err, local.get, lines.append) == "sha256:abc"
    assert lines == [
        "Pull failed (cannot pull busybox: registry unreachable at registry-1.docker.io); "
        "using the local busybox"
    ]


def test_without_a_local_copy_the_pull_error_stands() -> None:
    lines: list[str] = []
    err = Unavailable("registry unreachable")
    with pytest.raises(Unavailable) as raised:
        use_local_copy("nosuch", err, {}.get, lines.append)
    assert raised.value is err and lines == []
