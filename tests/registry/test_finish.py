"""The one path that finishes a moved build, against fakes that record what was undone."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from client.kernel import types
from client.kernel.errors import Internal, NotFound, Unavailable
from services.registry.finish import Destination, moving
from services.registry.records import ImportedBuild


@dataclass
class FakeRegistry:
    host: str = "reg:5000"
    untagged: list[str] = field(default_factory=list)
    broken: set[str] = field(default_factory=set)

    def untag(self, repository: str, tag: str) -> None:
        if tag in self.broken:
            raise Unavailable("registry unreachable at reg:5000")
        self.untagged.append(f"{repository}:{tag}")


@dataclass
class FakeEngine:
    removed: list[str] = field(default_factory=list)
    broken: set[str] = field(default_factory=set)

    def remove(self, image: str) -> None:
        if image in self.broken:
            raise Internal(f"docker rmi {image} failed: in use")
        self.removed.append(image)


@dataclass
class FakeRecords:
    recorded: list[tuple[str, str, ImportedBuild]] = field(default_factory=list)
    apps: set[str] = field(default_factory=lambda: {"app"})

    def check_app(self, app: str) -> None:
        if app not in self.apps:
            raise NotFound.no_app(app)

    def record_import(
        self, app: str, build_id: str, build: ImportedBuild
    ) -> tuple[types.Build, types.Release]:
        self.recorded.append((app, build_id, build))
        return types.Build(id=build_id, app=app), types.Release(id="RAAAAAAAAAA", app=app)


@pytest.fixture
def registry() -> FakeRegistry:
    return FakeRegistry()


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
def records() -> FakeRecords:
    return FakeRecords()


def test_a_finished_move_records_once_and_cleans_local_names(
    registry: FakeRegistry, engine: FakeEngine, records: FakeRecords
) -> None:
    with moving(registry, records, "app", "import", engine) as moved:  # type: ignore[arg-type]
        moved.made.loaded.append("sha256:loaded")
        moved.made.pulled.append("busybox:latest")
        moved.made.names.append("slipway-import-x:web")
        assert moved.tag("web") == f"web.{moved.id}"
        build, release = moved.record(ImportedBuild(description="d"))

    assert records.recorded == [("app", moved.id, ImportedBuild(description="d"))]
    assert (build.id, release.id) == (moved.id, "RAAAAAAAAAA")
    assert registry.untagged == []
    # Names first, then the loaded images they named; pulled images stay.
    assert engine.removed == [
        "slipway-import-x:web",
        f"reg:5000/app:web.{moved.id}",
        "sha256:loaded",
    ]


def test_a_failed_move_undoes_everything_and_raises_unchanged(
    registry: FakeRegistry, engine: FakeEngine, records: FakeRecords
) -> None:
    with pytest.raises(NotFound, match="^app not found: app"):
        with moving(registry, records, "app", "image import", engine) as moved:  # type: ignore[arg-type]
            moved.made.pulled.append("busybox:latest")
            moved.tag("web")
            moved.tag("worker")
            raise NotFound.of("app", "app")

    assert registry.untagged == [f"app:web.{moved.id}", f"app:worker.{moved.id}"]
    assert engine.removed == [
        "busybox:latest",
        f"reg:5000/app:web.{moved.id}",
        f"reg:5000/app:worker.{moved.id}",
    ]
    assert records.recorded == []


def test_a_copy_has_no_engine_and_no_local_names(
    registry: FakeRegistry, records: FakeRecords
) -> None:
    with pytest.raises(Internal, match="database"):
        with moving(registry, records, "app", "copy") as moved:  # type: ignore[arg-type]
            moved.tag("web", local=False)
            raise Internal("the database went away")

    assert moved.made.names == []
    assert registry.untagged == [f"app:web.{moved.id}"]


def test_cleaning_failures_are_logged_not_raised(
    registry: FakeRegistry,
    engine: FakeEngine,
    records: FakeRecords,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with pytest.raises(KeyboardInterrupt):
        with moving(registry, records, "app", "import", engine) as moved:  # type: ignore[arg-type]
            registry.broken.add(moved.tag("web"))
            engine.broken.add(f"reg:5000/app:web.{moved.id}")
            moved.tag("worker")
            raise KeyboardInterrupt

    assert registry.untagged == [f"app:worker.{moved.id}"]
    assert engine.removed == [f"reg:5000/app:worker.{moved.id}"]
    assert f"cannot remove app:web.{moved.id} after a failed import" in caplog.text
    assert f"cannot remove the local image reg:5000/app:web.{moved.id}" in caplog.text


def test_an_abandoned_stream_undoes_the_move(
    registry: FakeRegistry, engine: FakeEngine, records: FakeRecords
) -> None:
    def stream() -> Iterator[str]:
        with moving(registry, records, "app", "image import", engine) as moved:  # type: ignore[arg-type]
            yield moved.tag("web")
            moved.record(ImportedBuild())

    events = stream()
    tag = next(events)
    events.close()

    assert registry.untagged == [f"app:{tag}"]
    assert engine.removed == [f"reg:5000/app:{tag}"]
    assert records.recorded == []


def test_each_move_gets_its_own_id(registry: Any, records: Any) -> None:
    ids = set()
    for _ in range(20):
        with moving(registry, records, "app", "copy") as moved:
            ids.add(moved.id)
    assert len(ids) == 20
    assert all(len(i) == 11 and i.startswith("B") and i[1:].isupper() for i in ids)


def test_a_destination_moves_into_its_registry_and_records(
    registry: FakeRegistry, engine: FakeEngine, records: FakeRecords
) -> None:
    destination = Destination(registry, records)  # type: ignore[arg-type]
    with pytest.raises(Internal):
        with destination.moving("app", "import", engine) as moved:  # type: ignore[arg-type]
            moved.tag("web")
            raise Internal("the push failed")
    with destination.moving("app", "copy") as copied:
        copied.record(ImportedBuild())

    assert registry.untagged == [f"app:web.{moved.id}"]
    assert engine.removed == [f"reg:5000/app:web.{moved.id}"]
    assert [(app, build_id) for app, build_id, _ in records.recorded] == [("app", copied.id)]


def test_imported_build_keeps_what_a_move_carries() -> None:
    build = types.Build(
        id="BAAAAAAAAAA",
        app="a",
        description="d",
        manifest="m",
        entrypoint="e",
        git_sha="g",
        started=1.0,
        ended=2.0,
        reason="ignored",
    )
    assert ImportedBuild.of(build, ["x"]) == ImportedBuild("d", "m", "e", "g", ["x"], 1.0, 2.0)


def test_nothing_moves_into_an_app_that_does_not_exist(
    registry: FakeRegistry, records: FakeRecords, engine: FakeEngine
) -> None:
    with pytest.raises(NotFound, match=r"^app not found: ghost \(create it with"):
        with moving(registry, records, "ghost", "import", engine):  # type: ignore[arg-type]
            raise AssertionError("the move must not begin")
    assert records.recorded == []
