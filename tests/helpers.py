"""Small helpers shared by the tests."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def eventually(check: Callable[[], T], timeout: float = 30.0, interval: float = 0.1) -> T:
    """Calls `check` until it returns a truthy value without raising, or `timeout` passes;
    then returns that value or raises the last failure."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        try:
            value = check()
            if value:
                return value
            last = AssertionError(f"condition still false: {value!r}")
        except (AssertionError, Exception) as err:  # noqa: BLE001 - re-raised below
            last = err
        if time.monotonic() >= deadline:
            assert last is not None
            raise last
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
