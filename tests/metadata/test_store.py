"""The metadata core against real SQLite and PostgreSQL databases."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from client.kernel.errors import (
    AlreadyExists,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
)
from client.kernel.types import CANCELLED, COMPLETE, CREATED, FAILED, RUNNING, LogLine
from services.metadata import store as store_module
from services.metadata.notifier import Notifier
from services.metadata.store import MetadataStore
from tests.helpers import eventually


@pytest.fixture
def app(store: MetadataStore) -> str:
    store.create_app("web")
    return "web"


def collect(stream: Iterator[list[LogLine]]) -> list[LogLine]:
    return [line for batch in stream for line in batch]


def follow_into(store: MetadataStore, build_id: str, seen: list[str]) -> None:
    """Follows the log, adding each line to `seen` as it arrives."""
    for batch in store.stream_logs(build_id, follow=True):
        seen.extend(line.text for line in batch)


# Apps.


def test_apps_are_created_once_and_listed_by_name(store: MetadataStore) -> None:
    made = store.create_app("zeta")
    store.create_app("alpha")
    assert made.name == "zeta" and made.created > 0 and made.release == ""
    with pytest.raises(AlreadyExists, match="app already exists: zeta"):
        store.create_app("zeta")
    again = store.create_app("zeta", exist_ok=True)
    assert again == made
    assert [a.name for a in store.list_apps()] == ["alpha", "zeta"]
    assert store.get_app("alpha").name == "alpha"


@pytest.mark.parametrize("name", ["", "Web", "1web", "web_app", "-web", "web app"])
def test_invalid_app_names_are_refused(store: MetadataStore, name: str) -> None:
    with pytest.raises(InvalidArgument, match="invalid app name"):
        store.create_app(name)
    assert store.list_apps() == []


def test_unknown_app_is_not_found(store: MetadataStore) -> None:
    for call in (
        lambda: store.get_app("ghost"),
        lambda: store.create_build("ghost"),
        lambda: store.list_builds("ghost"),
        lambda: store.create_release("ghost"),
        lambda: store.list_releases("ghost"),
        lambda: store.promote_release("ghost"),
    ):
        with pytest.raises(NotFound) as caught:
            call()
        # Putting something into an unknown app says how to create it; the rest is plain.
        assert str(caught.value).startswith("app not found: ghost")


# Builds.


def test_build_and_release_ids_have_the_documented_shape(store: MetadataStore, app: str) -> None:
    builds = [store.create_build(app) for _ in range(20)]
    releases = [store.create_release(app) for _ in range(20)]
    assert all(re.fullmatch(r"B[A-Z]{10}", b.id) for b in builds)
    assert all(re.fullmatch(r"R[A-Z]{10}", r.id) for r in releases)
    assert len({b.id for b in builds}) == 20 and len({r.id for r in releases}) == 20


def test_an_id_collision_is_retried(
    store: MetadataStore, app: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = store.create_build(app)
    ids = iter([first.id, first.id, "BQQQQQQQQQQ"])
    monkeypatch.setattr(store_module, "new_id", lambda prefix: next(ids))
    second = store.create_build(app)
    assert second.id == "BQQQQQQQQQQ"
    assert store.get_build(first.id) == first


def test_a_release_id_collision_is_retried(
    store: MetadataStore, app: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = store.create_release(app, env={"A": "1"})
    ids = iter([first.id, "RQQQQQQQQQQ"])
    monkeypatch.setattr(store_module, "new_id", lambda prefix: next(ids))
    second = store.update_env(app, {"B": "2"})
    assert second.id == "RQQQQQQQQQQ"
    assert second.env == {"A": "1", "B": "2"}
    assert store.get_release(first.id) == first


@pytest.mark.parametrize("what", ["build", "release"])
def test_ids_running_out_is_internal_and_leaves_nothing(
    store: MetadataStore, app: str, monkeypatch: pytest.MonkeyPatch, what: str
) -> None:
    build = store.create_build(app)
    release = store.create_release(app, build=build.id)
    taken = {"build": build.id, "release": release.id}[what]
    prefixes: list[str] = []

    def same_id(prefix: str) -> str:
        prefixes.append(prefix)
        return taken

    monkeypatch.setattr(store_module, "new_id", same_id)
    with pytest.raises(Internal, match=f"^no free {what} id found$"):
        if what == "build":
            store.create_build(app)
        else:
            store.update_env(app, {"A": "1"})
    assert prefixes == [what[0].upper()] * store_module.ID_ATTEMPTS
    assert store.list_builds(app) == [build]
    assert store.list_releases(app) == [release]


def test_create_build_records_what_it_is_given(store: MetadataStore, app: str) -> None:
    build = store.create_build(
        app, description="build abc fix", manifest="services: {}", git_sha="abc", archive="f00"
    )
    assert (build.app, build.status, build.description) == (app, CREATED, "build abc fix")
    assert (build.manifest, build.git_sha, build.archive) == ("services: {}", "abc", "f00")
    assert build.created > 0 and build.started == 0 and build.ended == 0
    assert store.get_build(build.id) == build
    assert store.get_build(build.id, app=app) == build


def test_get_build_of_another_app_is_not_found(store: MetadataStore, app: str) -> None:
    build = store.create_build(app)
    store.create_app("other")
    with pytest.raises(NotFound) as caught:
        store.get_build(build.id, app="other")
    assert str(caught.value) == f"build not found: {build.id}"
    with pytest.raises(NotFound, match="^build not found: BNOTHEREXXX$"):
        store.get_build("BNOTHEREXXX")


def test_builds_are_listed_newest_first_with_a_default_limit(
    store: MetadataStore, app: str
) -> None:
    made = [store.create_build(app, description=str(i)) for i in range(12)]
    store.create_app("other")
    store.create_build("other")
    newest_first = [b.id for b in reversed(made)]
    assert [b.id for b in store.list_builds(app)] == newest_first[:10]
    assert [b.id for b in store.list_builds(app, limit=3)] == newest_first[:3]
    assert [b.id for b in store.list_builds(app, limit=50)] == newest_first
    with pytest.raises(InvalidArgument):
        store.list_builds(app, limit=-1)


def test_builds_created_in_the_same_instant_keep_insertion_order(
    store: MetadataStore, app: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module.time, "time", lambda: 1_700_000_000.0)
    made = [store.create_build(app).id for _ in range(5)]
    assert [b.id for b in store.list_builds(app)] == made[::-1]


def test_update_build_changes_only_the_named_fields(store: MetadataStore, app: str) -> None:
    build = store.create_build(app, description="first")
    running = store.update_build(build.id, {"status": RUNNING, "manifest": "m"})
    assert running.status == RUNNING and running.started > 0 and running.ended == 0
    assert (running.manifest, running.description) == ("m", "first")
    again = store.update_build(build.id, {"status": RUNNING})
    assert again.started == running.started
    done = store.update_build(
        build.id, {"status": COMPLETE, "release": "RAAAAAAAAAA", "entrypoint": "sh -c x"}
    )
    assert done.status == COMPLETE and done.ended >= done.started
    assert (done.release, done.entrypoint) == ("RAAAAAAAAAA", "sh -c x")
    assert store.get_build(build.id) == done


def test_update_build_keeps_given_times(store: MetadataStore, app: str) -> None:
    build = store.create_build(app)
    store.update_build(build.id, {"status": RUNNING, "started": 10.0})
    done = store.update_build(build.id, {"status": FAILED, "reason": "boom", "ended": 20.0})
    assert (done.started, done.ended, done.reason) == (10.0, 20.0, "boom")


@pytest.mark.parametrize(
    "changes", [{"bogus": 1}, {"id": "BXXXXXXXXXX"}, {"app": "x"}, {"status": "exploded"}]
)
def test_update_build_refuses_bad_fields(
    store: MetadataStore, app: str, changes: dict[str, object]
) -> None:
    build = store.create_build(app)
    with pytest.raises(InvalidArgument):
        store.update_build(build.id, changes)
    assert store.get_build(build.id) == build


def test_update_unknown_build_is_not_found(store: MetadataStore) -> None:
    for changes in ({"status": RUNNING}, {"description": "x"}):
        with pytest.raises(NotFound, match="^build not found: BNOTHEREXXX$"):
            store.update_build("BNOTHEREXXX", changes)


@pytest.mark.parametrize("terminal", [COMPLETE, FAILED, CANCELLED])
def test_a_terminal_status_is_never_overwritten(
    store: MetadataStore, app: str, terminal: str
) -> None:
    build = store.create_build(app)
    reason = {"reason": "boom"} if terminal == FAILED else {}  # a failure says why
    ended = store.update_build(build.id, {"status": terminal, **reason})
    for status in (CREATED, RUNNING, COMPLETE, FAILED, CANCELLED):
        with pytest.raises(FailedPrecondition) as caught:
            store.update_build(build.id, {"status": status, "reason": "late"})
        assert str(caught.value) == f"build {build.id} is already {terminal}"
    assert store.get_build(build.id) == ended
    # Other fields may still be recorded on a terminal build.
    later = store.update_build(build.id, {"release": "RAAAAAAAAAA"})
    assert later.status == terminal and later.release == "RAAAAAAAAAA"


def race_statuses(store: MetadataStore, build_id: str, statuses: list[str]) -> list[str]:
    """Sets each status from its own thread, all released at once; returns the winners."""
    barrier = threading.Barrier(len(statuses))
    winners: list[str] = []
    refused: list[str] = []

    def attempt(status: str) -> None:
        barrier.wait()
        try:
            store.update_build(build_id, {"status": status, "reason": status})
            winners.append(status)
        except FailedPrecondition:
            refused.append(status)

    threads = [threading.Thread(target=attempt, args=(s,)) for s in statuses]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(winners) + len(refused) == len(statuses)
    return winners


def test_racing_terminal_updates_have_exactly_one_winner(store: MetadataStore, app: str) -> None:
    statuses = [COMPLETE, CANCELLED, FAILED, COMPLETE, CANCELLED, FAILED]
    for _ in range(5):
        build = store.create_build(app)
        store.update_build(build.id, {"status": RUNNING})
        winners = race_statuses(store, build.id, statuses)
        assert len(winners) == 1
        final = store.get_build(build.id)
        assert final.status == winners[0] and final.reason == winners[0]


def test_release_env_roundtrips_through_json(store: MetadataStore, app: str) -> None:
    env = {
        "PLAIN": "value",
        "EMPTY": "",
        "TRICKY": "a=b, \"quoted\" 'single' $HOME \\ back",
        "MULTI": "line one\nline two",
        "UNICODE": "héllo ✓ 日本",
    }
    build = store.create_build(app)
    release = store.create_release(
        app, build=build.id, env=env, manifest="services: {}", description="build x"
    )
    assert release.env == env
    assert store.get_release(release.id) == release
    assert store.get_release(release.id, app=app).env == env
    assert (release.build, release.manifest, release.description) == (
        build.id,
        "services: {}",
        "build x",
    )


def test_release_of_an_unknown_or_foreign_build_is_refused(store: MetadataStore, app: str) -> None:
    store.create_app("other")
    foreign = store.create_build("other")
    for build_id in ("BNOTHEREXXX", foreign.id):
        with pytest.raises(NotFound, match=f"^build not found: {build_id}$"):
            store.create_release(app, build=build_id)
    assert store.list_releases(app) == []


def test_releases_are_listed_newest_first_and_scoped_to_the_app(
    store: MetadataStore, app: str
) -> None:
    made = [store.create_release(app, description=str(i)) for i in range(12)]
    store.create_app("other")
    foreign = store.create_release("other")
    assert [r.id for r in store.list_releases(app)] == [r.id for r in made[::-1]][:10]
    assert [r.id for r in store.list_releases(app, limit=2)] == [made[11].id, made[10].id]
    with pytest.raises(NotFound, match=f"^release not found: {foreign.id}$"):
        store.get_release(foreign.id, app=app)
    with pytest.raises(NotFound, match="^release not found: RNOTHEREXXX$"):
        store.get_release("RNOTHEREXXX")


def test_promote_release(store: MetadataStore, app: str) -> None:
    with pytest.raises(FailedPrecondition, match="app web has no releases"):
        store.promote_release(app)
    first = store.create_release(app)
    latest = store.create_release(app)
    assert store.promote_release(app).release == latest.id
    assert store.promote_release(app, first.id).release == first.id
    assert store.get_app(app).release == first.id
    store.create_app("other")
    with pytest.raises(NotFound, match=f"^release not found: {first.id}$"):
        store.promote_release("other", first.id)


# Logs.


def test_append_logs_returns_consecutive_offsets(store: MetadataStore, app: str) -> None:
    build = store.create_build(app)
    assert store.append_logs(build.id, []) == 0
    assert store.append_logs(build.id, ["a", "b"]) == 2
    assert store.append_logs(build.id, ["c"]) == 3
    lines = collect(store.stream_logs(build.id))
    assert [(line.offset, line.text) for line in lines] == [(0, "a"), (1, "b"), (2, "c")]
    assert all(line.time > 0 for line in lines)
    assert [line.text for line in collect(store.stream_logs(build.id, offset=1))] == ["b", "c"]
    assert collect(store.stream_logs(build.id, offset=3)) == []


def test_logs_of_an_unknown_build_are_not_found(store: MetadataStore) -> None:
    with pytest.raises(NotFound, match="^build not found: BNOTHEREXXX$"):
        store.append_logs("BNOTHEREXXX", ["x"])
    with pytest.raises(NotFound, match="^build not found: BNOTHEREXXX$"):
        collect(store.stream_logs("BNOTHEREXXX"))


def test_concurrent_appends_get_disjoint_consecutive_offsets(
    store: MetadataStore, app: str
) -> None:
    build = store.create_build(app)
    writers, rounds, per_append = 8, 15, 4
    barrier = threading.Barrier(writers)
    ends: dict[int, list[int]] = {w: [] for w in range(writers)}

    def write(w: int) -> None:
        barrier.wait()
        for r in range(rounds):
            lines = [f"w{w} r{r} l{i}" for i in range(per_append)]
            ends[w].append(store.append_logs(build.id, lines))

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)

    lines = collect(store.stream_logs(build.id))
    total = writers * rounds * per_append
    assert [line.offset for line in lines] == list(range(total))
    by_offset = {line.offset: line.text for line in lines}
    for w, returned in ends.items():
        for r, end in enumerate(returned):
            assert [by_offset[o] for o in range(end - per_append, end)] == [
                f"w{w} r{r} l{i}" for i in range(per_append)
            ]


def test_stream_logs_batches_a_long_log(store: MetadataStore, app: str) -> None:
    build = store.create_build(app)
    store.append_logs(build.id, [str(i) for i in range(1200)])
    batches = list(store.stream_logs(build.id))
    assert len(batches) == 3 and all(len(b) <= store_module.LOG_BATCH for b in batches)
    assert [line.text for b in batches for line in b] == [str(i) for i in range(1200)]


def test_follow_gets_live_lines_and_ends_with_the_build(store: MetadataStore, app: str) -> None:
    build = store.create_build(app)
    store.update_build(build.id, {"status": RUNNING})
    store.append_logs(build.id, ["before"])
    seen: list[str] = []
    follower = threading.Thread(target=follow_into, args=(store, build.id, seen))
    follower.start()
    eventually(lambda: seen == ["before"], timeout=10)
    store.append_logs(build.id, ["live 1", "live 2"])
    eventually(lambda: seen == ["before", "live 1", "live 2"], timeout=10)
    assert follower.is_alive()
    store.append_logs(build.id, ["last"])
    store.update_build(build.id, {"status": COMPLETE})
    follower.join(10)
    assert not follower.is_alive()
    assert seen == ["before", "live 1", "live 2", "last"]


def test_follow_sees_writes_of_another_process(store: MetadataStore, app: str) -> None:
    """Another writer on the same database has its own notifier: the poll finds its lines."""
    other = MetadataStore(store.database, store.where, notifier=Notifier())
    build = store.create_build(app)
    seen: list[str] = []
    follower = threading.Thread(target=follow_into, args=(store, build.id, seen))
    follower.start()
    other.append_logs(build.id, ["from elsewhere"])
    eventually(lambda: seen == ["from elsewhere"], timeout=10)
    other.update_build(build.id, {"status": FAILED, "reason": "x"})
    follower.join(10)
    assert not follower.is_alive()


def test_follow_stops_when_the_caller_goes_away(store: MetadataStore, app: str) -> None:
    build = store.create_build(app)
    gone = threading.Event()
    done = threading.Event()

    def follow() -> None:
        collect(store.stream_logs(build.id, follow=True, is_active=lambda: not gone.is_set()))
        done.set()

    threading.Thread(target=follow, daemon=True).start()
    assert not done.wait(0.2)
    gone.set()
    assert done.wait(10)


def test_follow_ends_when_the_store_closes(store: MetadataStore, app: str) -> None:
    build = store.create_build(app)
    done = threading.Event()

    def follow() -> None:
        collect(store.stream_logs(build.id, follow=True))
        done.set()

    threading.Thread(target=follow, daemon=True).start()
    assert not done.wait(0.2)
    store.close()
    assert done.wait(10)


def test_a_negative_offset_is_refused(store: MetadataStore, app: str) -> None:
    build = store.create_build(app)
    with pytest.raises(InvalidArgument):
        collect(store.stream_logs(build.id, offset=-1))


def test_nul_characters_are_stored_safely(store: MetadataStore, app: str) -> None:
    build = store.create_build(app)
    store.append_logs(build.id, ["a\x00b"])
    assert [line.text for line in collect(store.stream_logs(build.id))] == ["a\ufffdb"]


# Opening.


@pytest.mark.parametrize(
    "url",
    ["postgresql://postgres@127.0.0.1:1/nothing", "sqlite:////proc/no/such/metadata.db"],
)
def test_an_unreachable_database_is_unavailable(url: str) -> None:
    with pytest.raises(Unavailable, match="cannot open the database at"):
        MetadataStore.open(url)


@pytest.mark.parametrize("reason", ["", "  ", "two\nlines", "x" * 501])
def test_a_failed_status_needs_a_one_line_reason(
    store: MetadataStore, app: str, reason: str
) -> None:
    build = store.create_build(app)
    with pytest.raises(InvalidArgument):
        store.update_build(build.id, {"status": FAILED, "reason": reason})
    assert store.get_build(build.id).status == CREATED


def test_a_long_field_name_is_not_echoed(store: MetadataStore, app: str) -> None:
    build = store.create_build(app)
    with pytest.raises(InvalidArgument) as caught:
        store.update_build(build.id, {"x" * 20_000: "1"})
    assert len(str(caught.value)) < 200


def test_a_deleted_database_file_is_unavailable_not_lost(tmp_path: Path) -> None:
    path = tmp_path / "data" / "metadata.db"
    store = MetadataStore.open(f"sqlite:///{path}")
    try:
        store.create_app("before")
        path.unlink()
        with pytest.raises(Unavailable, match="the database file was removed or replaced"):
            store.create_app("after")
    finally:
        store.close()


def test_a_full_database_is_resource_exhausted(tmp_path: Path) -> None:
    path = tmp_path / "data" / "metadata.db"
    store = MetadataStore.open(f"sqlite:///{path}")
    try:
        store.create_app("full")
        build = store.create_build("full")
        with store.database.connection_context():
            store.database.execute_sql("PRAGMA max_page_count = 1")
        with pytest.raises(ResourceExhausted) as caught:
            for _ in range(200):
                store.append_logs(build.id, ["x" * 4000] * 10)
        assert str(caught.value) == "no space left on device for the metadata database"
    finally:
        store.close()


def test_an_id_with_a_nul_is_a_clear_error_on_every_database(
    store: MetadataStore, app: str
) -> None:
    build = store.create_build(app)
    # PostgreSQL cannot take a NUL in text at all: InvalidArgument, never INTERNAL.
    with pytest.raises((InvalidArgument, NotFound)):
        store.get_build("B\x00")
    with pytest.raises((InvalidArgument, NotFound)):
        store.update_build("B\x00", {"description": "x"})
    assert store.get_build(build.id) == build


def test_an_overlong_app_name_is_a_clear_error_on_every_database(store: MetadataStore) -> None:
    # PostgreSQL enforces column lengths: InvalidArgument, never INTERNAL, and not echoed.
    with pytest.raises(InvalidArgument, match="longer than 100") as caught:
        store.update_env("a" * 400, {"K": "v"})
    assert "a" * 101 not in str(caught.value)
    assert store.list_apps() == []
