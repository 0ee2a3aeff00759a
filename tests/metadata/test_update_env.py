"""UpdateEnv in the metadata core, against real SQLite and PostgreSQL databases."""

from __future__ import annotations

import threading
import types
from collections.abc import Callable, Iterator

import pytest

from client.kernel.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from client.kernel.types import Build, Release
from services.metadata import models
from services.metadata import store as store_module
from services.metadata.store import MetadataStore


@pytest.fixture
def app(store: MetadataStore) -> str:
    store.create_app("web")
    return "web"


def test_a_change_to_an_unknown_app_is_refused_and_creates_nothing(
    store: MetadataStore,
) -> None:
    with pytest.raises(
        NotFound, match=r"^app not found: ghost \(create it with: slipway apps create ghost\)$"
    ):
        store.update_env("ghost", {"A": "1"})
    assert [a.name for a in store.list_apps()] == []


def test_the_first_change_of_a_new_app_makes_a_release_without_a_build(
    store: MetadataStore,
) -> None:
    store.create_app("fresh")
    release = store.update_env("fresh", {"B": "2", "A": "1"})
    assert store.get_app("fresh").release == ""  # made, not promoted
    assert (release.app, release.build, release.manifest) == ("fresh", "", "")
    assert release.env == {"A": "1", "B": "2"}
    assert release.description == "env add:B,A"
    assert store.list_releases("fresh") == [release]


def test_a_change_carries_the_latest_build_and_manifest(store: MetadataStore, app: str) -> None:
    build = store.create_build(app)
    base = store.create_release(
        app,
        build=build.id,
        env={"KEEP": "k", "OLD": "o", "SAME": "s"},
        manifest="services: {}\n",
        description="build one",
    )
    release = store.update_env(app, {"SAME": "s", "NEW": "n", "KEEP": "k2"}, ["OLD"])
    assert release.id != base.id
    assert (release.build, release.manifest) == (build.id, "services: {}\n")
    assert release.env == {"KEEP": "k2", "NEW": "n", "SAME": "s"}
    assert release.description == "env add:NEW change:KEEP remove:OLD"
    assert store.get_release(base.id) == base  # the old release is untouched
    assert [r.id for r in store.list_releases(app)] == [release.id, base.id]


@pytest.mark.parametrize(
    ("set_vars", "unset", "description"),
    [
        ({"A": "1"}, [], "env add:A"),
        ({"X": "changed", "Y": "changed"}, [], "env change:X,Y"),
        ({}, ["Y", "X"], "env remove:Y,X"),
        ({"X": "x"}, [], "env"),
        ({"C": "1", "X": "2", "B": "3"}, ["Y"], "env add:C,B change:X remove:Y"),
    ],
)
def test_descriptions_list_kinds_that_occur_with_keys_in_the_order_given(
    store: MetadataStore,
    app: str,
    set_vars: dict[str, str],
    unset: list[str],
    description: str,
) -> None:
    store.create_release(app, env={"X": "x", "Y": "y"})
    assert store.update_env(app, set_vars, unset).description == description


def test_values_keep_every_character(store: MetadataStore, app: str) -> None:
    values = {
        "EQ": "a=b=c",
        "SPACES": "  two  words  ",
        "QUOTES": "\"double\" 'single' `back`",
        "COMMAS": "a,b, c",
        "LINES": "first\nsecond\n",
        "EMPTY": "",
        "UNICODE": "héllo ✓",
    }
    release = store.update_env(app, values)
    assert release.env == values
    assert store.get_release(release.id).env == values
    again = store.update_env(app, {"OTHER": "x"})
    assert again.env == {**values, "OTHER": "x"}


def test_unsetting_a_key_that_is_not_set_changes_nothing(store: MetadataStore, app: str) -> None:
    base = store.create_release(app, env={"A": "1"})
    with pytest.raises(NotFound, match=r"^env var not set: NOPE$"):
        store.update_env(app, {}, ["A", "NOPE"])
    with pytest.raises(NotFound, match=r"^env vars not set: B, C$"):
        store.update_env(app, {}, ["B", "A", "C"])
    assert store.list_releases(app) == [base]


def test_a_failed_first_change_makes_no_release(store: MetadataStore) -> None:
    store.create_app("young")
    with pytest.raises(NotFound, match="env var not set: A"):
        store.update_env("young", {}, ["A"])
    assert store.list_releases("young") == []


@pytest.mark.parametrize(
    ("set_vars", "unset", "message"),
    [
        ({"1ABC": "x"}, [], "invalid environment variable: '1ABC'"),
        ({"A-B": "x"}, [], "invalid environment variable: 'A-B'"),
        ({"": "x"}, [], "invalid environment variable: ''"),
        ({"OK\n": "x"}, [], "invalid environment variable: 'OK\\\\n'"),
        ({"GOOD": "x"}, ["BAD KEY"], "invalid environment variable: 'BAD KEY'"),
        ({"A": "x"}, ["A"], "environment variable both set and unset: A"),
        ({}, [], "no environment change given"),
    ],
)
def test_bad_changes_are_refused_and_write_nothing(
    store: MetadataStore, app: str, set_vars: dict[str, str], unset: list[str], message: str
) -> None:
    store.create_release(app, env={"A": "1"})
    before = store.list_releases(app)
    with pytest.raises(InvalidArgument, match=f"^{message}"):
        store.update_env(app, set_vars, unset)
    assert store.list_releases(app) == before


def test_an_invalid_app_name_is_refused(store: MetadataStore) -> None:
    with pytest.raises(InvalidArgument, match="invalid app name"):
        store.update_env("Bad_App", {"A": "1"})
    assert store.list_apps() == []


def test_a_new_release_is_never_older_than_the_one_it_follows(
    store: MetadataStore, app: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = store.create_release(app, env={"A": "1"})
    monkeypatch.setattr(
        store_module, "time", types.SimpleNamespace(time=lambda: base.created - 3600)
    )
    changed = store.update_env(app, {"A": "2"})
    assert changed.created == base.created
    assert store.list_releases(app, limit=1) == [changed]
    assert store.update_env(app, {"A": "3"}).env == {"A": "3"}  # it built on the latest


def _race(count: int, change: Callable[[int], Release]) -> list[Release]:
    """Runs `change(i)` for each i from its own thread, all released at once."""
    barrier = threading.Barrier(count)
    made: list[Release] = []
    errors: list[BaseException] = []

    def attempt(i: int) -> None:
        barrier.wait()
        try:
            made.append(change(i))
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert len(made) == count
    return made


@pytest.mark.parametrize("existing", [True, False], ids=["existing-app", "new-app"])
def test_concurrent_changes_each_make_a_release_and_lose_nothing(
    store: MetadataStore, existing: bool
) -> None:
    app = store.create_app("racy").name
    if existing:
        store.create_release(app, env={"BASE": "b"})
    writers = 12
    for round_ in range(3):
        value = str(round_)
        made = _race(writers, lambda i, v=value: store.update_env(app, {f"K{i}": v}))
        assert len({r.id for r in made}) == writers
        latest = store.list_releases(app, limit=1)[0]
        expected = {f"K{i}": value for i in range(writers)}
        if existing:
            expected["BASE"] = "b"
        assert latest.env == expected
    # Each release saw every earlier one: the environments grow by one key at a time.
    history = store.list_releases(app, limit=100)[::-1]
    first_round = [r for r in history if r.description.startswith("env add:")]
    sizes = [len(r.env) for r in first_round]
    start = 1 if existing else 0
    assert sizes == list(range(start + 1, start + writers + 1))


def test_release_inheriting_env_keeps_a_change_made_meanwhile(store: MetadataStore) -> None:
    """A build reads the env when it starts and releases when it ends; an env change in
    between must be in the build's release."""
    store.create_app("inherit")
    build = store.create_build("inherit")
    store.update_env("inherit", {"A": "1"})
    store.update_env("inherit", {"B": "2"})  # lands while the build runs
    release = store.create_release("inherit", build=build.id, env={"A": "stale"}, inherit_env=True)
    assert release.env == {"A": "1", "B": "2"}
    assert store.list_releases("inherit", limit=1)[0].id == release.id


def test_release_for_unknown_app_is_not_found(store: MetadataStore) -> None:
    with pytest.raises(NotFound, match="app not found: ghost"):
        store.create_release("ghost", inherit_env=True)


def _finished(build_id: str, app: str = "moved") -> Build:
    return Build(
        id=build_id,
        app=app,
        description="imported",
        manifest="services: {}\n",
        entrypoint="cat /msg",
        git_sha="a" * 40,
        started=100.0,
        ended=160.0,
    )


def test_record_build_keeps_build_log_and_release_together(store: MetadataStore) -> None:
    store.create_app("moved")
    store.update_env("moved", {"KEY": "v"})
    build, release = store.record_build(_finished("BAAAAAAAAAA"), [["one", "two"], ["three"]])
    assert (build.id, build.status, build.release) == ("BAAAAAAAAAA", "complete", release.id)
    assert (build.started, build.ended, build.entrypoint) == (100.0, 160.0, "cat /msg")
    texts = [line.text for batch in store.stream_logs(build.id) for line in batch]
    assert texts == ["one", "two", "three"]
    assert (release.build, release.env, release.description) == (build.id, {"KEY": "v"}, "imported")
    assert store.get_app("moved").release == ""  # not promoted
    with pytest.raises(AlreadyExists, match="build BAAAAAAAAAA already exists"):
        store.record_build(_finished("BAAAAAAAAAA"), [])


def test_record_build_keeps_nothing_when_its_log_breaks(store: MetadataStore) -> None:
    def broken() -> Iterator[list[str]]:
        yield ["first"]
        raise ConnectionError("the stream broke")

    store.create_app("never")
    with pytest.raises(ConnectionError):
        store.record_build(_finished("BBBBBBBBBBB", app="never"), broken())
    with pytest.raises(NotFound):
        store.get_build("BBBBBBBBBBB")
    assert store.list_releases("never") == []


def test_record_build_into_an_unknown_app_is_refused(store: MetadataStore) -> None:
    with pytest.raises(NotFound, match=r"app not found: nowhere \(create it with"):
        store.record_build(_finished("BCCCCCCCCCC", app="nowhere"), [["line"]])
    with pytest.raises(NotFound):
        store.get_build("BCCCCCCCCCC")
    assert [a.name for a in store.list_apps()] == []


def test_delete_app_removes_its_records_and_waits_for_its_builds(store: MetadataStore) -> None:
    store.create_app("gone")
    store.create_app("stays")
    done, _ = store.record_build(_finished("BDDDDDDDDDD", app="gone"), [["a line"]])
    store.update_env("gone", {"K": "v"})
    other, _ = store.record_build(_finished("BEEEEEEEEEE", app="stays"), [["kept"]])
    running = store.create_build("gone")
    with pytest.raises(FailedPrecondition, match=f"build under way \\({running.id}\\)"):
        store.delete_app("gone")
    assert store.get_build(done.id).app == "gone"  # nothing removed
    store.update_build(running.id, {"status": "cancelled"})
    assert store.delete_app("gone").name == "gone"
    with pytest.raises(NotFound):
        store.get_app("gone")
    for build_id in (done.id, running.id):
        with pytest.raises(NotFound):
            store.get_build(build_id)
    with pytest.raises(NotFound):
        list(store.stream_logs(done.id))
    assert models.LogRow.select().where(models.LogRow.build == done.id).count() == 0
    # Another app's records stay; deleting again says it is gone.
    assert store.get_build(other.id).app == "stays"
    assert [line.text for batch in store.stream_logs(other.id) for line in batch] == ["kept"]
    with pytest.raises(NotFound):
        store.delete_app("gone")
    assert store.create_app("gone").release == ""  # the name is free again


def test_record_build_rejects_a_malformed_id(store: MetadataStore) -> None:
    with pytest.raises(InvalidArgument, match="invalid build id"):
        store.record_build(_finished("Bshort"), [])
