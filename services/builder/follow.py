"""Following a build: its record, its log from an offset, its record again whenever the
status changes, and the terminal record last."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator

from client.kernel import types
from services.builder.seams import BuildStore

_END = object()


def follow(
    store: BuildStore,
    build_id: str,
    offset: int = 0,
    active: Callable[[], bool] = lambda: True,
    interval: float = 0.5,
) -> Iterator[types.Build | types.LogLine]:
    """Yields the build, then its log lines from `offset` as they are written, a fresh
    record whenever the status changes to another non-terminal one (checked every
    `interval` seconds), and finally, after every line, the terminal record. Stops early,
    quietly, once `active()` turns false."""
    build = store.get_build(build_id)
    yield build
    lines: queue.Queue[object] = queue.Queue(maxsize=1000)
    stop = threading.Event()
    pump = threading.Thread(
        target=_pump,
        args=(store, build_id, offset, lines, stop),
        name=f"follow-{build_id}",
        daemon=True,
    )
    pump.start()
    status = build.status
    next_check = time.monotonic() + interval
    try:
        while active():
            try:
                item = lines.get(timeout=interval)
            except queue.Empty:
                item = None
            if item is _END:
                yield store.get_build(build_id)
                return
            if isinstance(item, BaseException):
                raise item
            if isinstance(item, types.LogLine):
                yield item
            if time.monotonic() >= next_check:
                next_check = time.monotonic() + interval
                current = store.get_build(build_id)
                # A terminal record goes out only after the last line (below, on _END):
                # followers take it as the end of the stream.
                if current.status != status and not current.terminal:
                    status = current.status
                    yield current
    finally:
        stop.set()


def _pump(
    store: BuildStore, build_id: str, offset: int, out: queue.Queue[object], stop: threading.Event
) -> None:
    """Moves the followed log into `out`, then `_END` (or the error that ended it)."""

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                out.put(item, timeout=0.5)
                return True
            except queue.Full:
                continue
        return False

    try:
        for line in store.stream_logs(build_id, offset, follow=True):
            if not put(line):
                return
    except Exception as err:  # noqa: BLE001 - handed to the follower, which raises it
        put(err)
        return
    put(_END)
