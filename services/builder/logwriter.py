"""A build's log as it is written: lines are batched into AppendLogs calls, flushed every
`interval` seconds or every `batch` lines, so followers see it live without one RPC a line.

No line is dropped for a passing failure: a batch the store refuses with a transient
error (the database locked or unreachable) stays queued, in order, and is sent again with
backoff. `sync` waits until every queued line is stored, or raises LogLost once the store
has refused for `give_up` seconds: a build never reports success with a gap in its log.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

from client.kernel import types
from client.kernel.errors import ResourceExhausted, SlipwayError, Unavailable
from services.builder.seams import BuildStore

log = logging.getLogger(__name__)

# Errors worth another attempt: the store may answer in a moment.
TRANSIENT = (Unavailable, ResourceExhausted)
# Seconds between attempts while the store refuses: doubling up to the last.
BACKOFF = (0.2, 0.5, 1.0, 2.0, 5.0)


class LogLost(SlipwayError):
    """The build's log could not be stored; the build fails with this reason."""


def retrying(
    call: Callable[[], object],
    give_up: float,
    on_retry: Callable[[SlipwayError], None] = lambda _e: None,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Calls `call` until it succeeds, retrying transient errors with backoff for up to
    `give_up` seconds; then (or on any other error) raises the last error."""
    deadline = time.monotonic() + give_up
    attempt = 0
    while True:
        try:
            call()
            return
        except TRANSIENT as err:
            delay = BACKOFF[min(attempt, len(BACKOFF) - 1)]
            if time.monotonic() + delay > deadline:
                raise
            on_retry(err)
            attempt += 1
            sleep(delay)


class LogWriter:
    """Ordered, batched appends to one build's log. Safe to use from many threads;
    `close` writes its last lines and drops every later one."""

    def __init__(
        self,
        store: BuildStore,
        build_id: str,
        batch: int = 50,
        interval: float = 0.2,
        give_up: float = 120.0,
        redact: Callable[[str], str] | None = None,
        lease: types.Lease | None = None,
    ) -> None:
        """`redact` rewrites every line before it is queued (the build's secrets masked);
        `lease` rides on every append (a builder that lost it stores nothing more)."""
        self._lease = lease
        self._redact = redact or (lambda text: text)
        self._store = store
        self._build_id = build_id
        self._batch = batch
        self._interval = interval
        self._give_up = give_up
        self._pending: list[str] = []
        self._closed = False
        self._lock = threading.Lock()  # guards _pending, _closed and the failure state
        self._wake = threading.Condition(self._lock)
        # Held while a batch is taken and sent, so batches reach the store in order.
        self._send_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._failing_since: float | None = None
        self._retry_at = 0.0
        self._attempts = 0
        self._error: SlipwayError | None = None
        self._dropped = 0  # lines the store refused for good

    def line(self, text: str) -> None:
        """Queues one line (without its newline)."""
        with self._lock:
            if self._closed:
                return
            self._pending.append(self._redact(text))
            full = len(self._pending) >= self._batch and self._failing_since is None
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name=f"log-{self._build_id}", daemon=True
                )
                self._thread.start()
        if full:
            self.flush()

    def flush(self) -> bool:
        """Sends every queued line now (one attempt); True when nothing is left queued.
        A transient refusal keeps the lines queued for the next attempt."""
        with self._send_lock:
            with self._lock:
                lines, self._pending = self._pending, []
            if not lines:
                return True
            try:
                self._store.append_logs(self._build_id, lines, lease=self._lease)
            except TRANSIENT as err:
                with self._lock:
                    self._pending[:0] = lines  # back in front, in order
                    now = time.monotonic()
                    if self._failing_since is None:
                        self._failing_since = now
                        log.warning("[%s] storing the log: %s; retrying", self._build_id, err)
                    self._error = err
                    self._retry_at = now + BACKOFF[min(self._attempts, len(BACKOFF) - 1)]
                    self._attempts += 1
                return False
            except SlipwayError as err:
                # Not worth repeating (the build is gone, say): nothing would store them,
                # and `sync` says so: the log has a gap.
                log.warning("[%s] dropped %d log lines: %s", self._build_id, len(lines), err)
                with self._lock:
                    self._error = err
                    self._dropped += len(lines)
                return True
            with self._lock:
                self._failing_since, self._attempts, self._error = None, 0, None
                return not self._pending

    def sync(self) -> None:
        """Returns once every queued line is stored; raises LogLost when the store keeps
        refusing for `give_up` seconds."""
        while not self.flush():
            with self._lock:
                if self._dropped:
                    break
                since, error, retry_at = self._failing_since, self._error, self._retry_at
            now = time.monotonic()
            if since is not None and now - since >= self._give_up:
                raise LogLost(f"could not store the build log: {error}")
            time.sleep(max(0.0, min(retry_at - now, self._give_up)))
        with self._lock:
            if self._dropped:
                raise LogLost(f"could not store the build log: {self._error}")

    def close(self, last: Iterable[str] = ()) -> bool:
        """Queues `last`, stores everything (retrying as `sync` does), and ignores later
        lines; False when already closed. Lines the store never took are logged."""
        if not self.seal(last):
            return False
        self.drain()
        return True

    def seal(self, last: Iterable[str] = ()) -> bool:
        """Queues `last` and ignores every later line, without waiting for the store;
        False when already sealed. `drain` then stores what is queued."""
        with self._lock:
            if self._closed:
                return False
            self._pending.extend(self._redact(text) for text in last)
            self._closed = True
            self._wake.notify_all()
            return True

    def drain(self) -> None:
        """Stores what a sealed writer still holds (retrying as `sync` does); what the
        store never took is logged."""
        with self._lock:
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        try:
            self.sync()
        except LogLost as err:
            with self._lock:
                lost, self._pending = len(self._pending), []
            log.error("[%s] %d log lines lost: %s", self._build_id, lost, err)

    @property
    def closed(self) -> bool:
        return self._closed

    def _run(self) -> None:
        while True:
            with self._lock:
                if self._closed:
                    return
                self._wake.wait(self._interval)
                if self._closed:
                    return
                waiting = self._failing_since is not None and time.monotonic() < self._retry_at
            if not waiting:
                self.flush()
