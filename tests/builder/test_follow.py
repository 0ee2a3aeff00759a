"""Following a build never announces its end before its last log line."""

from __future__ import annotations

import threading
from collections.abc import Iterator

from client.kernel import types
from services.builder.follow import follow


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
