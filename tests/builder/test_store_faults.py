"""The build log and the build's end survive a metadata store that refuses for a while
(SPEC §4: every line is stored before the build is reported finished; a build never
stays running because its failure could not be recorded)."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from client.kernel import types
from client.kernel.errors import Unavailable
from client.kernel.types import MAX_REASON, BuildRequest
from services.builder.config import Config
from services.builder.core import Builder
from services.builder.logwriter import LogWriter
from services.builder.seams import Deps
from tests.builder.fakes import FakeEngine, FakePusher, FakeSources, FakeStore, make_archive
from tests.helpers import eventually

LOCKED = Unavailable("database unavailable at metadata.db: database is locked")
APP = {"convox.yml": "services:\n  web:\n    build: .\n", "Dockerfile": "FROM busybox\nRUN ok\n"}


class LockingStore(FakeStore):
    """A FakeStore whose log appends (and, when asked, failure records) are refused while
    `locked` is set, as SQLite refuses writes while another process holds its lock."""

    def __init__(self) -> None:
        super().__init__()
        self.locked = threading.Event()
        self.lock_failures = False
        self.refused = 0

    def append_logs(
        self, build_id: str, lines: Sequence[str], lease: types.Lease | None = None
    ) -> int:
        if self.locked.is_set():
            self.refused += 1
            raise LOCKED
        return super().append_logs(build_id, lines, lease)

    def update_build(
        self, build_id: str, *, lease: types.Lease | None = None, **fields: object
    ) -> types.Build:
        if self.lock_failures and fields.get("status") == types.FAILED and self.locked.is_set():
            self.refused += 1
            raise LOCKED
        return super().update_build(build_id, lease=lease, **fields)


def _builder(tmp_path: Path, store: FakeStore, retry: float) -> tuple[Builder, FakeSources]:
    sources = FakeSources()
    cfg = Config(token="t", scratch_dir=tmp_path / "scratch", store_retry_seconds=retry)
    builder = Builder(cfg, Deps(store, sources, FakePusher(), FakeEngine()))
    builder.serve_queue()
    return builder, sources


@pytest.fixture
def store() -> LockingStore:
    return LockingStore()


def _start(builder: Builder, sources: FakeSources, files: dict[str, str]) -> str:
    archive = sources.add(make_archive(files))
    builder._deps.store.create_app("myapp", exist_ok=True)
    return builder.start(BuildRequest(app="myapp", archive=archive)).id


def _terminal(store: FakeStore, build_id: str) -> types.Build:
    return eventually(lambda: (b := store.get_build(build_id)).terminal and b, timeout=30)


def test_a_store_locked_for_a_while_loses_no_line(tmp_path: Path, store: LockingStore) -> None:
    builder, sources = _builder(tmp_path, store, retry=30)
    store.locked.set()
    try:
        build_id = _start(builder, sources, APP)
        eventually(lambda: store.refused >= 3, timeout=10)
        assert store.get_build(build_id).status == types.RUNNING  # waiting on the log
        store.locked.clear()
        build = _terminal(store, build_id)
    finally:
        builder.shutdown()
    assert build.status == types.COMPLETE
    log = store.log_text(build_id)
    assert log[:3] == ["Building: .", "Step 1/2 : FROM busybox", "Step 2/2 : RUN ok"]
    assert f"Running: docker push registry.test:5000/myapp:web.{build_id}" in log
    assert [line.offset for line in store.logs[build_id]] == list(range(len(log)))


def test_a_log_that_cannot_be_stored_fails_the_build(tmp_path: Path, store: LockingStore) -> None:
    builder, sources = _builder(tmp_path, store, retry=1)
    store.locked.set()
    try:
        build_id = _start(builder, sources, APP)
        build = _terminal(store, build_id)
    finally:
        builder.shutdown()
    assert build.status == types.FAILED
    assert build.reason == f"could not store the build log: {LOCKED}"
    assert build.release == "" and store.releases == []


def test_a_failure_is_recorded_once_the_store_answers(tmp_path: Path, store: LockingStore) -> None:
    builder, sources = _builder(tmp_path, store, retry=30)
    store.lock_failures = True
    store.locked.set()
    try:
        build_id = _start(builder, sources, {"Dockerfile": "FROM busybox\n"})  # no manifest
        eventually(lambda: store.refused >= 4, timeout=10)
        assert store.get_build(build_id).status == types.RUNNING
        store.locked.clear()
        build = _terminal(store, build_id)
    finally:
        builder.shutdown()
    assert (build.status, build.reason) == (types.FAILED, "no such file: convox.yml")
    assert store.log_text(build_id)[-1] == "ERROR: no such file: convox.yml"


def test_a_huge_error_is_recorded_as_one_short_line(tmp_path: Path, store: LockingStore) -> None:
    builder, sources = _builder(tmp_path, store, retry=5)
    services = "".join(f"  Bad{i}{'x' * 900}: {{}}\n" for i in range(5000))
    try:
        build_id = _start(builder, sources, {"convox.yml": f"services:\n{services}"})
        build = _terminal(store, build_id)
    finally:
        builder.shutdown()
    assert build.status == types.FAILED
    assert len(build.reason) <= MAX_REASON and "\n" not in build.reason
    assert build.reason.startswith("validation errors: service name Bad0xxx")
    assert build.reason.endswith("…")
    assert all(len(line) <= 2000 for line in store.log_text(build_id))


def test_lines_keep_their_order_across_refusals() -> None:
    store = LockingStore()
    build = store.create_build("myapp")
    writer = LogWriter(store, build.id, batch=5, interval=0.01, give_up=30)
    store.locked.set()
    for i in range(20):
        writer.line(f"l{i}")
    time.sleep(0.1)
    store.locked.clear()
    for i in range(20, 40):
        writer.line(f"l{i}")
    writer.sync()
    writer.close()
    assert store.log_text(build.id) == [f"l{i}" for i in range(40)]


def test_sync_gives_up_with_the_reason() -> None:
    store = LockingStore()
    build = store.create_build("myapp")
    writer = LogWriter(store, build.id, give_up=0.5)
    store.locked.set()
    writer.line("lost")
    started = time.monotonic()
    with pytest.raises(Exception) as err:
        writer.sync()
    assert str(err.value) == f"could not store the build log: {LOCKED}"
    assert time.monotonic() - started < 10
    writer.close()


def test_lines_the_store_refuses_for_good_are_a_gap_sync_reports() -> None:
    from client.kernel.errors import Internal

    class Refusing(FakeStore):
        def append_logs(
            self, build_id: str, lines: Sequence[str], lease: types.Lease | None = None
        ) -> int:
            raise Internal("the store refused the lines")

    store = Refusing()
    build = store.create_build("myapp")
    writer = LogWriter(store, build.id, give_up=5)
    writer.line("refused")
    with pytest.raises(Exception, match="^could not store the build log: the store refused"):
        writer.sync()
    writer.close()
