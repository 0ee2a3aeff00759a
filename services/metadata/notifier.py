"""Wakes log followers in this process as soon as a build's log or status changes."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator


class Notifier:
    """Per-build change counters under one condition variable.

    Only builds that someone follows are tracked, so the map stays as small as the number
    of live followers. Writers in other processes are not seen here: followers also wake
    on a timeout and look again.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._versions: dict[str, int] = {}
        self._watchers: dict[str, int] = {}
        self._closed = False

    def changed(self, key: str) -> None:
        """Records a change to `key` and wakes whoever waits on it."""
        with self._cond:
            if key in self._versions:
                self._versions[key] += 1
                self._cond.notify_all()

    @contextlib.contextmanager
    def watch(self, key: str) -> Iterator[None]:
        """Tracks changes to `key` while the block runs."""
        with self._cond:
            self._versions.setdefault(key, 0)
            self._watchers[key] = self._watchers.get(key, 0) + 1
        try:
            yield
        finally:
            with self._cond:
                self._watchers[key] -= 1
                if not self._watchers[key]:
                    del self._watchers[key]
                    del self._versions[key]

    def version(self, key: str) -> int:
        """The change count of a watched `key`; pass it to `wait`."""
        with self._cond:
            return self._versions.get(key, 0)

    def wait(self, key: str, seen: int, timeout: float) -> None:
        """Returns when `key` changed since `seen`, on close, or after `timeout` seconds."""
        with self._cond:
            self._cond.wait_for(lambda: self._closed or self._versions.get(key, 0) != seen, timeout)

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Wakes every waiter for good (the service is stopping)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
