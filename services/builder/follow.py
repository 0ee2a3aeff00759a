"""Following a build: its record, its log from an offset, its record again whenever the
status changes, and the terminal record last.

Any number of followers of one build share one subscription to its log (a `_Feed`): one
upstream follow stream to metadata and one status check per interval, however many
clients watch. The feed keeps a bounded window of recent lines; a follower behind that
window reads the stored log (a finite, non-following read) until it catches up. When the
last follower of a build leaves, its upstream stream is cancelled at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator

from client.kernel import types
from client.kernel.errors import InvalidArgument
from services.builder.seams import BuildStore

log = logging.getLogger(__name__)

# Lines a feed keeps for followers that are slightly behind; older ones come from the store.
WINDOW = 10_000


class _Feed:
    """One upstream follow of a build's log, fanned out to every follower of the build."""

    def __init__(self, store: BuildStore, build_id: str, offset: int, interval: float) -> None:
        self.store = store
        self.build_id = build_id
        self.interval = interval
        self.cond = threading.Condition()
        self.lines: list[types.LogLine] = []
        self.base = offset  # offset of lines[0] (or of the next line when empty)
        self.done = False
        self.error: BaseException | None = None
        self.refs = 0
        self._record: types.Build | None = None
        self._record_at = 0.0
        self._cancelled = False
        self._stream: Iterable[types.LogLine] | None = None
        threading.Thread(target=self._pump, name=f"feed-{build_id}", daemon=True).start()

    @property
    def end(self) -> int:
        """The offset after the last line received."""
        return self.base + len(self.lines)

    def _pump(self) -> None:
        try:
            stream = self.store.stream_logs(self.build_id, self.base, follow=True)
            with self.cond:
                self._stream = stream
                if self._cancelled:
                    _cancel(stream)
                    return
            for line in stream:
                with self.cond:
                    if self._cancelled:
                        return
                    if line.offset < self.end:
                        continue
                    self.lines.append(line)
                    if len(self.lines) > 2 * WINDOW:  # amortised trim
                        del self.lines[:WINDOW]
                        self.base += WINDOW
                    self.cond.notify_all()
        except Exception as err:  # noqa: BLE001 - handed to the followers, which raise it
            with self.cond:
                if not self._cancelled:
                    self.error = err
        finally:
            with self.cond:
                self.done = True
                self.cond.notify_all()

    def cancel(self) -> None:
        """Stops the upstream stream (the last follower left)."""
        with self.cond:
            self._cancelled = True
            self.done = True
            stream = self._stream
            self.cond.notify_all()
        if stream is not None:
            _cancel(stream)

    def record(self) -> types.Build:
        """The build's record, read at most once per interval for all followers."""
        with self.cond:
            now = time.monotonic()
            if self._record is not None and now - self._record_at < self.interval:
                return self._record
        record = self.store.get_build(self.build_id)
        with self.cond:
            self._record, self._record_at = record, time.monotonic()
        return record

    def take(self, offset: int, timeout: float) -> tuple[list[types.LogLine], bool]:
        """Lines from `offset` (waiting up to `timeout` when there are none yet) and
        whether the feed has ended; raises what ended it. Lines before the window are
        not here: the caller reads them from the store."""
        with self.cond:
            if offset >= self.end and not self.done:
                self.cond.wait(timeout)
            if self.error is not None:
                raise self.error
            start = max(offset - self.base, 0)
            return self.lines[start:], self.done


def _cancel(stream: Iterable[types.LogLine]) -> None:
    cancel = getattr(stream, "cancel", None)
    if callable(cancel):
        cancel()


class LogHub:
    """The builder's followers, grouped by build: one `_Feed` per followed build."""

    def __init__(self, store: BuildStore, interval: float = 0.5) -> None:
        self.store = store
        self.interval = interval
        self._lock = threading.Lock()
        self._feeds: dict[str, _Feed] = {}

    def _attach(self, build_id: str) -> _Feed:
        """The build's shared feed, started when it has none. A feed always reads from
        the log's start: no follower's offset (stale, or past the end) decides where the
        others' lines begin; the window keeps what it holds bounded."""
        with self._lock:
            feed = self._feeds.get(build_id)
            if feed is None or (feed.done and feed.error is not None) or feed._cancelled:
                feed = _Feed(self.store, build_id, 0, self.interval)
                self._feeds[build_id] = feed
            feed.refs += 1
            return feed

    def _detach(self, feed: _Feed) -> None:
        with self._lock:
            feed.refs -= 1
            if feed.refs > 0:
                return
            if self._feeds.get(feed.build_id) is feed:
                del self._feeds[feed.build_id]
        feed.cancel()

    def subscriptions(self) -> int:
        """Upstream subscriptions open now (one per followed build)."""
        with self._lock:
            return len(self._feeds)

    def follow(
        self, build_id: str, offset: int = 0, active: Callable[[], bool] = lambda: True
    ) -> Iterator[types.Build | types.LogLine]:
        """Yields the build, then its log lines from `offset` as they are written, a fresh
        record whenever the status changes to another non-terminal one (checked every
        `interval` seconds), and finally, after every line, the terminal record. Stops
        early, quietly, once `active()` turns false."""
        if offset < 0:
            raise InvalidArgument(f"invalid log offset: {offset}")
        build = self.store.get_build(build_id)
        yield build
        feed = self._attach(build_id)
        try:
            yield from self._follow(feed, build, offset, active)
        finally:
            self._detach(feed)

    def _follow(
        self,
        feed: _Feed,
        build: types.Build,
        offset: int,
        active: Callable[[], bool],
    ) -> Iterator[types.Build | types.LogLine]:
        status = build.status
        next_check = time.monotonic() + self.interval
        while active():
            if offset < feed.base:  # behind the window: the stored log, without following
                before = offset
                stored = self.store.stream_logs(feed.build_id, offset, follow=False)
                try:
                    for line in stored:
                        if line.offset >= offset:
                            yield line
                            offset = line.offset + 1
                        if offset >= feed.end:
                            break
                finally:
                    _cancel(stored)
                if offset > before:
                    continue
                # Nothing newer is stored yet: wait on the feed like the others.
            lines, done = feed.take(offset, self.interval)
            for line in lines:
                if line.offset >= offset:
                    yield line
                    offset = line.offset + 1
            if done and offset >= feed.end:
                yield self.store.get_build(feed.build_id)
                return
            if time.monotonic() >= next_check:
                next_check = time.monotonic() + self.interval
                current = feed.record()
                # A terminal record goes out only after the last line (above, on done):
                # followers take it as the end of the stream.
                if current.status != status and not current.terminal:
                    status = current.status
                    yield current


def follow(
    store: BuildStore,
    build_id: str,
    offset: int = 0,
    active: Callable[[], bool] = lambda: True,
    interval: float = 0.5,
) -> Iterator[types.Build | types.LogLine]:
    """One follower on a hub of its own (see `LogHub.follow`)."""
    return LogHub(store, interval).follow(build_id, offset, active)
