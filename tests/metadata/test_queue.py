"""The build queue in the metadata store, on SQLite and PostgreSQL: claims exactly once,
oldest first; leases renewed, expired and fencing every final write; the schema migrated."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import peewee
import pytest

from client.kernel.errors import FailedPrecondition, InvalidArgument
from client.kernel.types import (
    CANCELLED,
    COMPLETE,
    CREATED,
    FAILED,
    RUNNING,
    Build,
    BuildRequest,
    Completion,
    Lease,
    lost_reason,
    request_json,
    secrets_lost_reason,
)
from services.metadata import models
from services.metadata.models import BuildRow
from services.metadata.store import MetadataStore


def _queue(store: MetadataStore, app: str = "web", **kw: object) -> str:
    store.create_app(app, exist_ok=True)
    req = BuildRequest(app=app, archive="a" * 64, build_args={"V": "1"}, secrets={"tok": b"s"})
    return store.create_build(app, archive=req.archive, request=request_json(req), **kw).id  # type: ignore[arg-type]


def _lines(store: MetadataStore, build_id: str) -> list[str]:
    return [line.text for batch in store.stream_logs(build_id) for line in batch]


def test_a_claim_takes_the_oldest_build_running_under_a_new_lease(store: MetadataStore) -> None:
    first, second = _queue(store), _queue(store)
    claim = store.claim_build("b1")
    assert claim is not None and claim.build.id == first
    assert claim.build.status == RUNNING and claim.build.started > 0
    assert claim.lease == Lease("b1", 1)
    assert claim.request.build_args == {"V": "1"} and claim.request.archive == "a" * 64
    assert claim.request.secrets == {}  # never kept: only the receiving builder holds them
    assert store.claim_build("b2").build.id == second  # type: ignore[union-attr]
    assert store.claim_build("b3") is None


def test_a_pinned_build_is_claimed_only_by_its_builder(store: MetadataStore) -> None:
    build_id = _queue(store, pinned="b1")
    assert store.claim_build("b2") is None
    assert store.claim_build("b1").build.id == build_id  # type: ignore[union-attr]


def test_the_builder_that_took_a_build_stays_on_it(store: MetadataStore) -> None:
    build_id = _queue(store)
    assert store.get_build(build_id).builder == ""  # queued: no builder has it yet
    claim = store.claim_build("builder-2")
    assert claim is not None and claim.build.builder == "builder-2"
    store.update_build(build_id, {"status": FAILED, "reason": "boom"}, lease=claim.lease)
    assert store.get_build(build_id).builder == "builder-2"
    assert [b.builder for b in store.list_builds("web")] == ["builder-2"]
    # A build its builder lost keeps that builder's name, as its reason does.
    lost = _queue(store)
    store.claim_build("builder-3")
    store.expire_builds(lease_seconds=-1)
    assert (store.get_build(lost).builder, store.get_build(lost).reason) == (
        "builder-3",
        lost_reason("builder-3"),
    )
    # The queue alone sets it; a build recorded whole (an import) has none.
    with pytest.raises(InvalidArgument, match="cannot be updated"):
        store.update_build(build_id, {"builder": "builder-9"})
    imported, _ = store.record_build(Build("BIMPORTEDAA", "web", builder="elsewhere-1"), [])
    assert imported.builder == store.get_build("BIMPORTEDAA").builder == ""


def test_a_build_recorded_without_a_request_is_never_claimed(store: MetadataStore) -> None:
    store.create_app("web")
    store.create_build("web")
    assert store.claim_build("b1") is None


def test_racing_claimers_take_each_build_exactly_once(store: MetadataStore) -> None:
    ids = {_queue(store) for _ in range(12)}
    taken: list[str] = []
    lock = threading.Lock()

    def claimer(name: str) -> None:
        while (claim := store.claim_build(name)) is not None:
            with lock:
                taken.append(claim.build.id)

    threads = [threading.Thread(target=claimer, args=(f"b{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(taken) == sorted(ids)


def test_renewing_keeps_the_lease_and_tells_a_cancel(store: MetadataStore) -> None:
    build_id = _queue(store)
    claim = store.claim_build("b1")
    assert claim is not None
    held, build = store.renew_lease(build_id, claim.lease)
    assert held and build.status == RUNNING
    store.update_build(build_id, {"status": CANCELLED})
    held, build = store.renew_lease(build_id, claim.lease)
    assert not held and build.status == CANCELLED


def _age_lease(build_id: str, seconds: float) -> None:
    BuildRow.update(renewed=time.time() - seconds).where(BuildRow.id == build_id).execute()


def test_a_stale_lease_ends_the_build_with_the_lost_builder_named(store: MetadataStore) -> None:
    stale, fresh = _queue(store), _queue(store)
    store.claim_build("b1")
    store.claim_build("b2")
    with store.database.connection_context():
        _age_lease(stale, 31)
    ended = store.expire_builds()
    assert ended == [(stale, lost_reason("b1"))]
    build = store.get_build(stale)
    assert build.status == FAILED and build.reason == "builder lost: b1 stopped renewing its lease"
    assert _lines(store, stale)[-1] == "ERROR: builder lost: b1 stopped renewing its lease"
    assert store.get_build(fresh).status == RUNNING


def test_a_build_queued_too_long_is_ended(store: MetadataStore) -> None:
    build_id = _queue(store)
    with store.database.connection_context():
        BuildRow.update(created=time.time() - 3601).where(BuildRow.id == build_id).execute()
    assert store.expire_builds() == [(build_id, "not started within 1h")]
    assert store.get_build(build_id).status == FAILED
    assert store.claim_build("b1") is None


def test_a_builder_that_lost_its_lease_writes_nothing(store: MetadataStore) -> None:
    """A paused builder wakes up after another builder ended its build: its log lines,
    its status, its release are all refused, and the record stays as the other left it."""
    build_id = _queue(store)
    claim = store.claim_build("b1")
    assert claim is not None
    store.append_logs(build_id, ["step 1"], lease=claim.lease)
    with store.database.connection_context():
        _age_lease(build_id, 31)
    store.expire_builds()
    before = _lines(store, build_id)
    with pytest.raises(FailedPrecondition, match="lease lost"):
        store.append_logs(build_id, ["late line"], lease=claim.lease)
    with pytest.raises(FailedPrecondition):
        store.update_build(build_id, {"status": COMPLETE}, lease=claim.lease)
    with pytest.raises(FailedPrecondition, match="lease lost"):
        store.create_release("web", build=build_id, lease=claim.lease)
    assert _lines(store, build_id) == before
    assert store.get_build(build_id).status == FAILED
    assert store.list_releases("web") == []


def test_an_older_attempt_is_fenced_out(store: MetadataStore) -> None:
    build_id = _queue(store)
    claim = store.claim_build("b1")
    assert claim is not None
    with pytest.raises(FailedPrecondition, match="lease lost"):
        store.update_build(build_id, {"manifest": "x"}, lease=Lease("b1", claim.lease.attempt + 1))
    with pytest.raises(FailedPrecondition, match="lease lost"):
        store.append_logs(build_id, ["x"], lease=Lease("b2", claim.lease.attempt))
    store.update_build(build_id, {"status": COMPLETE}, lease=claim.lease)
    assert store.get_build(build_id).status == COMPLETE


def test_a_restarted_builder_ends_the_builds_it_held(store: MetadataStore) -> None:
    mine, theirs = _queue(store), _queue(store)
    store.claim_build("b1")
    store.claim_build("b2")
    assert store.fail_owned_builds("b1") == [mine]
    assert store.get_build(mine).reason == lost_reason("b1")
    assert store.get_build(theirs).status == RUNNING


def test_a_restarted_builder_ends_the_queued_builds_only_it_could_run(
    store: MetadataStore,
) -> None:
    pinned = _queue(store, pinned="b1")
    free = _queue(store)
    elsewhere = _queue(store, pinned="b2")
    assert store.fail_owned_builds("b1") == [pinned]
    assert store.get_build(pinned).reason == secrets_lost_reason("b1")
    assert [store.get_build(i).status for i in (free, elsewhere)] == [CREATED, CREATED]


def test_a_cancelled_queued_build_is_not_claimed(store: MetadataStore) -> None:
    build_id = _queue(store)
    store.update_build(build_id, {"status": CANCELLED})
    assert store.claim_build("b1") is None
    assert store.get_build(build_id).status == CANCELLED


@pytest.fixture
def old_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A SQLite database as the first schema made it: builds without the queue columns."""
    path = tmp_path_factory.mktemp("old") / "metadata.db"
    db = peewee.SqliteDatabase(str(path))
    db.execute_sql(
        "CREATE TABLE builds (seq INTEGER PRIMARY KEY, id VARCHAR(20) UNIQUE, app VARCHAR(200),"
        " status VARCHAR(20), description TEXT DEFAULT '', release VARCHAR(20) DEFAULT '',"
        " manifest TEXT DEFAULT '', entrypoint TEXT DEFAULT '', git_sha VARCHAR(64) DEFAULT '',"
        " reason TEXT DEFAULT '', created REAL, started REAL DEFAULT 0, ended REAL DEFAULT 0,"
        " archive VARCHAR(128) DEFAULT '', log_count INTEGER DEFAULT 0)"
    )
    db.execute_sql(
        "INSERT INTO builds (id, app, status, created) VALUES ('BOLDBUILDAA', 'web', 'complete', 1)"
    )
    db.close()
    yield f"sqlite:///{path}"


def test_an_older_database_is_migrated_and_keeps_its_rows(old_sqlite: str) -> None:
    store = MetadataStore.open(old_sqlite)
    try:
        old = store.get_build("BOLDBUILDAA")
        assert (old.status, old.builder) == (COMPLETE, "")  # from before the queue: unknown
        with store.database.connection_context():
            columns = {c.name for c in store.database.get_columns("builds")}
            versions = [r.version for r in models.MigrationRow.select()]
        assert {"request", "owner", "attempt", "renewed", "timeout", "pinned"} <= columns
        assert versions == list(range(1, models.SCHEMA_VERSION + 1))
        store.create_app("web")
        assert store.claim_build("b1") is None
        assert _queue(store) and store.claim_build("b1") is not None
    finally:
        store.close()
    again = MetadataStore.open(old_sqlite)  # opening again changes nothing
    again.close()


def test_a_newer_database_is_refused(old_sqlite: str) -> None:
    MetadataStore.open(old_sqlite).close()
    db = peewee.SqliteDatabase(old_sqlite.removeprefix("sqlite:///"))
    db.execute_sql(
        "INSERT INTO schema_migrations (version, applied) VALUES (?, 0)",
        (models.SCHEMA_VERSION + 1,),
    )
    db.close()
    with pytest.raises(Exception, match="newer than this rack"):
        MetadataStore.open(old_sqlite)


def test_created_means_queued(store: MetadataStore) -> None:
    assert store.get_build(_queue(store)).status == CREATED


def test_a_build_completes_with_its_release_in_one_write(store: MetadataStore) -> None:
    build_id = _queue(store)
    claim = store.claim_build("b1")
    assert claim is not None
    release = store.create_release(
        "web", build=build_id, lease=claim.lease, complete=Completion("/bin/app", 12.5)
    )
    done = store.get_build(build_id)
    assert (done.status, done.release, done.entrypoint, done.ended) == (
        COMPLETE,
        release.id,
        "/bin/app",
        12.5,
    )


def test_a_build_cancelled_before_it_completes_gets_no_release(store: MetadataStore) -> None:
    build_id = _queue(store)
    claim = store.claim_build("b1")
    assert claim is not None
    store.update_build(build_id, {"status": CANCELLED})  # through another builder
    with pytest.raises(FailedPrecondition, match="lease lost"):
        store.create_release("web", build=build_id, lease=claim.lease, complete=Completion("", 1.0))
    assert store.list_releases("web") == []
    assert store.get_build(build_id).status == CANCELLED


def test_completing_needs_the_build_and_its_lease(store: MetadataStore) -> None:
    store.create_app("web", exist_ok=True)
    with pytest.raises(InvalidArgument):
        store.create_release("web", complete=Completion("", 1.0))
    assert store.list_releases("web") == []
