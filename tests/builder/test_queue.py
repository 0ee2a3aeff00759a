"""Several builders on one queue (in-memory fakes): any builder runs any build, secrets
stay with the builder that received them, cancel and lost leases reach the owner at its
next renewal, deadlines stop a build."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from client.kernel import types
from client.kernel.errors import InvalidArgument
from client.kernel.types import BuildRequest
from services.builder import core
from services.builder.config import Config
from services.builder.core import Builder
from services.builder.seams import Deps
from tests.builder.fakes import FakeEngine, FakePusher, FakeSources, FakeStore, make_archive
from tests.helpers import eventually

MANIFEST = "services:\n  web:\n    build: .\n"


class Pair:
    """Two builders, each with its own engine, sharing one store and one archive store."""

    def __init__(self, tmp_path: Path) -> None:
        self.store, self.sources = FakeStore(), FakeSources()
        self.engines = (FakeEngine(), FakeEngine())
        self.builders = tuple(
            Builder(
                Config(
                    token="t",
                    scratch_dir=tmp_path / name,
                    builder_id=name,
                    claim_interval=0.05,
                    renew_interval=0.05,
                ),
                Deps(self.store, self.sources, FakePusher(), engine),
            )
            for name, engine in zip(("b1", "b2"), self.engines, strict=True)
        )

    def queue(self, dockerfile: str, **options: object) -> str:
        archive = self.sources.add(make_archive({"convox.yml": MANIFEST, "Dockerfile": dockerfile}))
        req = BuildRequest(app="myapp", archive=archive, **options)  # type: ignore[arg-type]
        self.store.create_app("myapp", exist_ok=True)
        return self.builders[0].start(req).id

    def ended(self, build_id: str) -> types.Build:
        return eventually(lambda: (b := self.store.get_build(build_id)).terminal and b, 10)


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    pair = Pair(tmp_path)
    yield pair
    for builder in pair.builders:
        builder.shutdown()


def test_a_build_started_through_one_builder_is_run_by_another(pair: Pair) -> None:
    build_id = pair.queue("FROM busybox\nRUN true\n")
    assert pair.store.get_build(build_id).status == types.CREATED  # only queued
    pair.builders[1].serve_queue()  # only b2 takes builds
    assert pair.ended(build_id).status == types.COMPLETE
    assert pair.store.leases[build_id].owner == "b2"
    assert pair.engines[0].builds == [] and pair.engines[1].builds


def test_a_build_with_secrets_stays_with_the_builder_holding_them(pair: Pair) -> None:
    pair.builders[1].serve_queue()
    build_id = pair.queue("FROM busybox\nRUN true\n", secrets={"tok": b"value"})
    with pytest.raises(AssertionError):
        eventually(lambda: pair.store.get_build(build_id).status != types.CREATED, 0.5)
    pair.builders[0].serve_queue()
    assert pair.ended(build_id).status == types.COMPLETE
    assert pair.store.leases[build_id].owner == "b1"


def test_cancel_through_another_builder_stops_the_owners_engine_work(pair: Pair) -> None:
    pair.builders[0].serve_queue()
    build_id = pair.queue("FROM busybox\nRUN wait\n")
    assert pair.engines[0].waiting.wait(10)
    cancelled = pair.builders[1].cancel(build_id, "myapp")  # b2 does not run it
    assert cancelled.status == types.CANCELLED
    eventually(lambda: pair.engines[0].cancelled, 5)  # the owner stopped the RUN
    build = pair.ended(build_id)
    assert (build.status, build.reason) == (types.CANCELLED, "")
    assert pair.store.log_text(build_id)[-1] == "Build cancelled"
    assert pair.store.releases == []


def test_a_builder_whose_lease_was_taken_stops_and_writes_nothing(pair: Pair) -> None:
    pair.builders[0].serve_queue()
    build_id = pair.queue("FROM busybox\nRUN wait\n")
    assert pair.engines[0].waiting.wait(10)
    # Another builder ended it as lost (b1 was paused, say).
    pair.store.leases[build_id] = types.Lease("b1", 99)
    pair.store.update_build(build_id, status=types.FAILED, reason=types.lost_reason("b1"))
    lines = list(pair.store.log_text(build_id))
    eventually(lambda: pair.engines[0].cancelled, 5)
    eventually(lambda: not pair.builders[0]._jobs, 5)
    build = pair.store.get_build(build_id)
    assert (build.status, build.reason) == (
        types.FAILED,
        "builder lost: b1 stopped renewing its lease",
    )
    assert pair.store.log_text(build_id) == lines
    assert pair.store.releases == []


def test_a_build_past_its_deadline_is_stopped_as_timed_out(pair: Pair) -> None:
    pair.builders[0].serve_queue()
    build_id = pair.queue("FROM busybox\nRUN wait\n", timeout=1)
    build = pair.ended(build_id)
    assert (build.status, build.reason) == (types.FAILED, "timed out after 1s")
    assert pair.engines[0].cancelled
    assert pair.store.log_text(build_id)[-1] == "ERROR: timed out after 1s"


def test_each_builder_says_which_builds_it_runs(pair: Pair) -> None:
    pair.builders[1].serve_queue()
    build_id = pair.queue("FROM busybox\nRUN wait\n")
    assert pair.engines[1].waiting.wait(10)
    info = pair.builders[1].rack()
    assert (info.builder, info.running) == ("b2", (build_id,))
    assert pair.builders[0].rack().running == ()
    pair.builders[0].cancel(build_id, "myapp")
    eventually(lambda: pair.builders[1].rack().running == (), 5)


def test_a_timeout_outside_its_bounds_is_refused(pair: Pair) -> None:
    for timeout in (-1, types.MAX_TIMEOUT_SECONDS + 1):
        with pytest.raises(InvalidArgument, match="invalid timeout"):
            pair.queue("FROM busybox\n", timeout=timeout)
    assert pair.store.builds == {}


def test_a_builder_whose_engine_is_down_leaves_builds_to_the_others(pair: Pair) -> None:
    pair.engines[0].down = True
    pair.builders[0].serve_queue()
    build_id = pair.queue("FROM busybox\nRUN true\n")
    with pytest.raises(AssertionError):
        eventually(lambda: pair.store.get_build(build_id).status != types.CREATED, 0.5)
    pair.builders[1].serve_queue()
    assert pair.ended(build_id).status == types.COMPLETE
    assert pair.store.leases[build_id].owner == "b2"


def test_a_builder_cut_off_from_metadata_stops_building_once_its_lease_expired(
    pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(types, "LEASE_EXPIRY_SECONDS", 0.5)
    pair.builders[0].serve_queue()
    pair.queue("FROM busybox\nRUN wait\n")
    assert pair.engines[0].waiting.wait(10)
    pair.store.renewals_fail = True
    eventually(lambda: pair.engines[0].cancelled, 5)  # it stopped the RUN by itself
    eventually(lambda: not pair.builders[0]._jobs, 5)


def test_a_build_stuck_past_its_deadline_is_ended_by_its_builder(
    pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(core, "STOP_GRACE_SECONDS", 0.3)
    pair.builders[0].serve_queue()
    build_id = pair.queue("FROM busybox\nRUN stuck\n", timeout=1)
    try:
        assert pair.engines[0].waiting.wait(10)
        build = pair.ended(build_id)  # while the engine call still hangs
        assert (build.status, build.reason) == (types.FAILED, "timed out after 1s")
        assert not pair.engines[0].unstick.is_set()
    finally:
        pair.engines[0].unstick.set()
    eventually(lambda: not pair.builders[0]._jobs, 5)
    assert pair.store.get_build(build_id).reason == "timed out after 1s"
