"""Following a build never announces its end before its last log line."""

from __future__ import annotations

import threading
from collections.abc import Iterator

from client.kernel import types
from services.builder.follow import follow
from tests.helpers import eventually


class SlowLogStore:
    """A build that is already failed while its stored log is still being streamed out
    slowly: the follower's status checks see the terminal status first."""

    def __init__(self, lines: int) -> None:
        self.lines = lines
        self.release = threading.Event()
        self.calls = 0

    def get_build(self, build_id: str, app: str = "") -> types.Build:
        self.calls += 1
        if self.calls >= 3:  # the follower's status checks have seen `failed`
            self.release.set()
        status = types.RUNNING if self.calls == 1 else types.FAILED
        return types.Build(id=build_id, app="app", status=status, reason="boom")

    def stream_logs(
        self, build_id: str, offset: int = 0, follow: bool = False
    ) -> Iterator[types.LogLine]:
        for i in range(offset, self.lines):
            if i == 1:
                assert self.release.wait(10), "the follower never checked the status"
            yield types.LogLine(offset=i, text=f"line-{i}")


def test_terminal_record_comes_after_every_line() -> None:
    store = SlowLogStore(lines=5)
    items: list[object] = []
    for item in follow(store, "BXXXXXXXXXX", interval=0.01):  # type: ignore[arg-type]
        items.append(item)
    texts = [i.text for i in items if isinstance(i, types.LogLine)]
    builds = [i for i in items if isinstance(i, types.Build)]
    assert texts == [f"line-{i}" for i in range(5)]
    assert isinstance(items[-1], types.Build) and items[-1].status == types.FAILED
    assert [b.status for b in builds] == [types.RUNNING, types.FAILED]


class CountingStore:
    """A running build whose log grows on demand; counts the following reads open now,
    and lets them be cancelled as the metadata client's can."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.lines: list[str] = []
        self.status = types.RUNNING
        self.following = 0
        self.opened = 0

    def get_build(self, build_id: str, app: str = "") -> types.Build:
        return types.Build(id=build_id, app="app", status=self.status)

    def write(self, *texts: str, status: str = "") -> None:
        with self.cond:
            self.lines.extend(texts)
            self.status = status or self.status
            self.cond.notify_all()

    def stream_logs(self, build_id: str, offset: int = 0, follow: bool = False) -> object:
        store = self

        class Stream:
            cancelled = False

            def cancel(self) -> None:
                with store.cond:
                    self.cancelled = True
                    store.cond.notify_all()

            def __iter__(self) -> Iterator[types.LogLine]:
                at = offset
                if follow:
                    with store.cond:
                        store.following += 1
                        store.opened += 1
                try:
                    while True:
                        with store.cond:
                            while (
                                follow
                                and not self.cancelled
                                and at >= len(store.lines)
                                and store.status == types.RUNNING
                            ):
                                store.cond.wait(1)
                            if self.cancelled:
                                return
                            batch = store.lines[at:]
                            ended = store.status != types.RUNNING
                        for text in batch:
                            yield types.LogLine(offset=at, text=text)
                            at += 1
                        if not follow or (ended and at >= len(store.lines)):
                            return
                finally:
                    if follow:
                        with store.cond:
                            store.following -= 1

        return Stream()


def test_two_hundred_followers_share_one_upstream_subscription() -> None:
    from services.builder.follow import LogHub

    store = CountingStore()
    store.write("first")
    hub = LogHub(store, interval=0.05)  # type: ignore[arg-type]
    seen: list[list[str]] = [[] for _ in range(200)]

    def run(i: int) -> None:
        for item in hub.follow("BXXXXXXXXXX"):
            if isinstance(item, types.LogLine):
                seen[i].append(item.text)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(200)]
    for t in threads:
        t.start()
    eventually(lambda: all(s == ["first"] for s in seen))
    store.write("second", "third")
    eventually(lambda: all(len(s) == 3 for s in seen))
    assert store.opened == 1
    store.write("last", status=types.COMPLETE)
    for t in threads:
        t.join(10)
    assert all(s == ["first", "second", "third", "last"] for s in seen)
    eventually(lambda: store.following == 0)
    assert hub.subscriptions() == 0


def test_the_upstream_stream_is_cancelled_when_the_last_follower_leaves() -> None:
    from services.builder.follow import LogHub

    store = CountingStore()
    hub = LogHub(store, interval=0.05)  # type: ignore[arg-type]
    gone = [threading.Event() for _ in range(3)]

    def run(i: int) -> None:
        for _item in hub.follow("BXXXXXXXXXX", active=lambda: not gone[i].is_set()):
            pass

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(3)]
    for t in threads:
        t.start()
    eventually(lambda: store.following == 1 and hub.subscriptions() == 1)
    gone[0].set()
    gone[1].set()
    threads[0].join(5)
    threads[1].join(5)
    assert store.following == 1  # one follower is still there
    gone[2].set()
    threads[2].join(5)
    eventually(lambda: store.following == 0)
    assert hub.subscriptions() == 0
    assert store.status == types.RUNNING  # the build goes on; only the watching ended


def test_a_follower_far_behind_the_window_reads_the_stored_log() -> None:
    from services.builder import follow as following

    store = CountingStore()
    hub = following.LogHub(store, interval=0.05)  # type: ignore[arg-type]
    total = 2 * following.WINDOW + 10
    store.write("l0")
    release = threading.Event()

    def early() -> None:  # keeps the shared feed open, then stalls
        for item in hub.follow("BXXXXXXXXXX"):
            if isinstance(item, types.LogLine):
                release.wait(10)

    thread = threading.Thread(target=early, daemon=True)
    thread.start()
    eventually(lambda: hub.subscriptions() == 1)
    store.write(*[f"l{i}" for i in range(1, total)])
    eventually(lambda: hub._feeds["BXXXXXXXXXX"].base > 0)
    got: list[str] = []
    for item in hub.follow("BXXXXXXXXXX"):
        if isinstance(item, types.LogLine):
            got.append(item.text)
            if len(got) == total:
                store.write("end", status=types.COMPLETE)
    assert got == [f"l{i}" for i in range(total)] + ["end"]
    assert store.opened == 1
    release.set()
    thread.join(10)


def test_a_follower_past_the_end_does_not_derail_the_others() -> None:
    from services.builder.follow import LogHub

    store = CountingStore()
    store.write("a", "b")
    hub = LogHub(store, interval=0.05)  # type: ignore[arg-type]
    ahead = hub.follow("BXXXXXXXXXX", offset=500)  # a stale offset far past the end
    next(ahead)  # the record
    seen: list[str] = []
    done: list[types.Build] = []

    def honest() -> None:
        for item in hub.follow("BXXXXXXXXXX"):
            if isinstance(item, types.LogLine):
                seen.append(item.text)
            elif item.terminal:
                done.append(item)

    thread = threading.Thread(target=honest, daemon=True)
    thread.start()
    eventually(lambda: seen == ["a", "b"])
    store.write("c", status=types.COMPLETE)
    thread.join(10)
    assert seen == ["a", "b", "c"] and done and done[-1].status == types.COMPLETE
    ahead.close()


def test_a_negative_offset_is_refused() -> None:
    import pytest

    from client.kernel.errors import InvalidArgument
    from services.builder.follow import LogHub

    hub = LogHub(CountingStore())  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="invalid log offset: -1"):
        next(hub.follow("BXXXXXXXXXX", offset=-1))
