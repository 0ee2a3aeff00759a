"""A build's log as it is written: lines are batched into AppendLogs calls, flushed every
`interval` seconds or every `batch` lines, so followers see it live without one RPC a line."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

from client.kernel.errors import SlipwayError
from services.builder.seams import BuildStore

log = logging.getLogger(__name__)


class LogWriter:
    """Ordered, batched appends to one build's log. Safe to use from many threads;
    `close` writes its last lines and drops every later one."""

    def __init__(
        self, store: BuildStore, build_id: str, batch: int = 50, interval: float = 0.2
    ) -> None:
        self._store = store
        self._build_id = build_id
        self._batch = batch
        self._interval = interval
        self._pending: list[str] = []
        self._closed = False
        self._lock = threading.Lock()  # guards _pending and _closed
        self._wake = threading.Condition(self._lock)
        # Held while a batch is taken and sent, so batches reach the store in order.
        self._send_lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def line(self, text: str) -> None:
        """Queues one line (without its newline)."""
        with self._lock:
            if self._closed:
                return
            self._pending.append(text)
            full = len(self._pending) >= self._batch
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name=f"log-{self._build_id}", daemon=True
                )
                self._thread.start()
        if full:
            self.flush()

    def flush(self) -> None:
        """Sends every queued line now."""
        with self._send_lock:
            with self._lock:
                lines, self._pending = self._pending, []
            if not lines:
                return
            try:
                self._store.append_logs(self._build_id, lines)
            except SlipwayError as err:
                log.warning("[%s] dropped %d log lines: %s", self._build_id, len(lines), err)

    def close(self, last: Iterable[str] = ()) -> bool:
        """Queues `last`, flushes, and ignores later lines; False when already closed."""
        with self._lock:
            if self._closed:
                return False
            self._pending.extend(last)
            self._closed = True
            self._wake.notify_all()
            thread = self._thread
        self.flush()
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        return True

    @property
    def closed(self) -> bool:
        return self._closed

    def _run(self) -> None:
        while True:
            with self._lock:
                if self._closed:
                    return
                self._wake.wait(self._interval)
            self.flush()
