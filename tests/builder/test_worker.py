"""The builder core and its worker against fakes of every seam."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from client.kernel import types
from client.kernel.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from client.kernel.types import BuildRequest
from services.builder.config import Config
from services.builder.core import Builder
from services.builder.seams import Deps
from tests.builder.fakes import FakeEngine, FakePusher, FakeSources, FakeStore, make_archive
from tests.helpers import eventually

WEB = 'FROM busybox\nENTRYPOINT ["sh", "-c"]\nRUN echo web\n'


@dataclass
class Rig:
    builder: Builder
    store: FakeStore
    sources: FakeSources
    pusher: FakePusher
    engine: FakeEngine
    scratch: Path

    def start(self, files: Mapping[str, str], app: str = "myapp", **options: object) -> str:
        archive = self.sources.add(make_archive(files))
        req = BuildRequest(app=app, archive=archive, **options)  # type: ignore[arg-type]
        self.store.create_app(app, exist_ok=True)
        return self.builder.start(req).id

    def finish(self, build_id: str) -> types.Build:
        return eventually(lambda: self._terminal(build_id), timeout=10)

    def _terminal(self, build_id: str) -> types.Build | None:
        build = self.store.get_build(build_id)
        return build if build.terminal and not (self.scratch / build_id).exists() else None

    def log(self, build_id: str) -> list[str]:
        return self.store.log_text(build_id)


def _rig(tmp_path: Path, **config: object) -> Rig:
    store, sources, pusher, engine = FakeStore(), FakeSources(), FakePusher(), FakeEngine()
    scratch = tmp_path / "scratch"
    cfg = Config(token="t", scratch_dir=scratch, **config)  # type: ignore[arg-type]
    builder = Builder(cfg, Deps(store, sources, pusher, engine))
    builder.serve_queue()
    return Rig(builder, store, sources, pusher, engine, scratch)


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    rig = _rig(tmp_path)
    yield rig
    rig.builder.shutdown()


def test_success_records_release_entrypoint_and_complete(rig: Rig) -> None:
    rig.store.create_app("myapp")
    rig.store.create_release("myapp", env={"FOO": "bar"})
    manifest = "services:\n  web:\n    build: .\n  cache:\n    image: busybox:latest\n"
    build_id = rig.start(
        {"convox.yml": manifest, "Dockerfile": WEB}, description="first", git_sha="abc"
    )
    started = rig.store.get_build(build_id)
    assert started.app == "myapp" and started.description == "first"
    build = rig.finish(build_id)
    assert build.status == "complete", build.reason
    assert build.entrypoint == "sh -c"
    assert build.manifest == manifest
    assert build.started and build.ended and build.git_sha == "abc" and build.archive
    release = rig.store.releases[-1]
    assert build.release == release.id
    assert (release.build, release.env, release.manifest, release.description) == (
        build_id,
        {"FOO": "bar"},
        manifest,
        "first",
    )
    assert sorted(tag for _, _, tag in rig.pusher.pushed) == [
        f"cache.{build_id}",
        f"web.{build_id}",
    ]
    assert {repo for _, repo, _ in rig.pusher.pushed} == {"myapp"}
    log = rig.log(build_id)
    # Two images: every engine line carries its service; the builder's own lines do not.
    for expected in (
        "Building: .",
        "web | Step 1/3 : FROM busybox",
        "Running: docker pull busybox:latest",
        "cache | busybox:latest: Pulling",
        "web | abc123: Pushed",
        "cache | abc123: Pushed",
        f"Running: docker push registry.test:5000/myapp:web.{build_id}",
    ):
        assert expected in log
    assert not any(line.startswith(("Step ", "abc123")) for line in log)
    assert not any("abc123: Pushing" in line for line in log)  # byte-level progress stays out
    assert not (rig.scratch / build_id).exists()


def test_a_big_layers_push_shows_each_tenth_of_its_bytes(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    mib = 1024 * 1024
    plain_push = rig.pusher.push

    def push(image: str, repository: str, tag: str) -> Iterator[object]:
        for current in range(0, 300 * mib + 1, mib):  # the engine's many small updates
            for layer, total in (("big1", 300 * mib), ("small1", 2 * mib)):
                if current <= total:
                    text = f"{layer}: Pushing {current // mib}MB/{total // mib}MB"
                    yield types.PushProgress(text, layer, "Pushing", current, total)
        yield from plain_push(image, repository, tag)

    monkeypatch.setattr(rig.pusher, "push", push)
    build = rig.finish(rig.start({"convox.yml": "services:\n  web:\n    build: .\n",
                                  "Dockerfile": WEB}))  # fmt: skip
    assert build.status == "complete", build.reason
    shown = [line for line in rig.log(build.id) if "Pushing" in line]
    assert shown == [f"big1: Pushing {n * 30}MB/300MB" for n in range(1, 10)]


def test_engine_error_fails_with_the_engine_text(rig: Rig) -> None:
    build_id = rig.start(
        {
            "convox.yml": "services:\n  web:\n    build: .\n",
            "Dockerfile": "FROM busybox\nRUN exit 3\n",
        }
    )
    build = rig.finish(build_id)
    reason = "The command '/bin/sh -c exit 3' returned a non-zero code: 3"
    assert (build.status, build.reason, build.release) == ("failed", reason, "")
    assert rig.log(build_id)[-1] == f"ERROR: {reason}"
    assert rig.store.releases == [] and rig.pusher.pushed == []


@pytest.mark.parametrize(
    ("files", "reason"),
    [
        (
            {"convox.yml": "environment:\n  - B\n  - A\nservices:\n  web: {}\n"},
            "required env: A, B",
        ),
        ({"Dockerfile": WEB}, "no such file: convox.yml"),
        (
            {"convox.yml": "services:\n  Web: {}\n"},
            "validation errors: service name Web invalid, "
            "must contain only lowercase alphanumeric and dashes",
        ),
        ({"convox.yml": "services:\n  web:\n    build: api\n"}, "no such file: api/Dockerfile"),
        ({"../evil": "x"}, "archive rejected: path escapes the build folder: ../evil"),
    ],
    ids=["required-env", "no-manifest", "bad-name", "no-dockerfile", "bad-archive"],
)
def test_bad_input_fails_the_build_with_a_one_line_reason(
    rig: Rig, files: dict[str, str], reason: str
) -> None:
    build = rig.finish(rig.start(files))
    assert (build.status, build.reason) == ("failed", reason)
    if reason.startswith("validation errors:"):  # the log keeps one line per violation
        assert rig.log(build.id)[-2:] == [
            "ERROR: validation errors:",
            "service name Web invalid, must contain only lowercase alphanumeric and dashes",
        ]
    else:
        assert rig.log(build.id)[-1] == f"ERROR: {reason}"


def test_identical_services_build_once_and_are_tagged_for_each(rig: Rig) -> None:
    manifest = (
        "services:\n  web:\n    build: .\n  worker:\n    build: .\n"
        "  other:\n    build:\n      manifest: Dockerfile.other\n"
    )
    build_id = rig.start(
        {"convox.yml": manifest, "Dockerfile": WEB, "Dockerfile.other": "FROM busybox\n"}
    )
    assert rig.finish(build_id).status == "complete"
    assert sorted(spec.dockerfile for spec in rig.engine.builds) == [
        "Dockerfile",
        "Dockerfile.other",
    ]
    images = {tag.split(".")[0]: image for image, _, tag in rig.pusher.pushed}
    assert images["web"] == images["worker"] != images["other"]
    assert rig.log(build_id).count("Building: .") == 2


def test_build_args_only_for_declared_args_flags_before_env(rig: Rig) -> None:
    rig.store.create_app("myapp")
    rig.store.create_release("myapp", env={"A": "env-a", "B": "env-b", "X": "env-x"})
    build_id = rig.start(
        {
            "convox.yml": "services:\n  web:\n    build: .\n",
            "Dockerfile": "FROM busybox\nARG A\nARG B=2 C\n",
        },
        build_args={"A": "flag, with = 'quotes'", "Z": "undeclared"},
    )
    assert rig.finish(build_id).status == "complete"
    assert dict(rig.engine.builds[0].buildargs) == {"A": "flag, with = 'quotes'", "B": "env-b"}
    # A flag no Dockerfile declares is said, as Docker says it, and the build goes on.
    assert rig.log(build_id)[0] == "[Warning] One or more build-args [Z] were not consumed"


def test_a_build_arg_one_of_the_dockerfiles_declares_is_consumed(rig: Rig) -> None:
    manifest = (
        "services:\n  web:\n    build: .\n  other:\n    build:\n      manifest: Dockerfile.other\n"
        "  cache:\n    image: busybox:latest\n"
    )
    files = {"convox.yml": manifest, "Dockerfile": WEB, "Dockerfile.other": "FROM busybox\nARG O\n"}
    consumed = rig.start(files, build_args={"O": "1"})
    assert rig.finish(consumed).status == "complete"
    assert not any("build-args" in line for line in rig.log(consumed))
    unused = rig.start(files, build_args={"O": "1", "Y": "2", "X": "3"})
    assert rig.finish(unused).status == "complete"
    assert "[Warning] One or more build-args [X Y] were not consumed" in rig.log(unused)


def test_development_target_and_no_cache(rig: Rig) -> None:
    files = {
        "convox.yml": "services:\n  web:\n    build: .\n",
        "Dockerfile": "FROM busybox AS development\nFROM busybox\n",
    }
    rig.finish(rig.start(files, development=True, no_cache=True))
    rig.finish(rig.start(files))
    first, second = rig.engine.builds
    assert (first.target, first.nocache) == ("development", True)
    assert (second.target, second.nocache) == ("", False)


def test_cancel_stops_a_running_build(rig: Rig) -> None:
    build_id = rig.start(
        {
            "convox.yml": "services:\n  web:\n    build: .\n",
            "Dockerfile": "FROM busybox\nRUN wait\n",
        }
    )
    assert rig.engine.waiting.wait(10)
    cancelled = rig.builder.cancel(build_id, "myapp")
    assert cancelled.status == "cancelled"
    build = rig.finish(build_id)
    assert (build.status, build.release, build.reason) == ("cancelled", "", "")
    assert rig.log(build_id)[-1] == "Build cancelled"
    assert rig.store.releases == [] and rig.pusher.pushed == []
    with pytest.raises(FailedPrecondition, match=f"^build {build_id} is already cancelled$"):
        rig.builder.cancel(build_id)


def test_cancel_a_queued_build_and_unknown_builds(tmp_path: Path) -> None:
    rig = _rig(tmp_path, max_builds=1)
    try:
        files = {
            "convox.yml": "services:\n  web:\n    build: .\n",
            "Dockerfile": "FROM busybox\nRUN wait\n",
        }
        running = rig.start(files)
        assert rig.engine.waiting.wait(10)
        queued = rig.start(files)
        assert rig.store.get_build(queued).status == "created"
        assert rig.builder.cancel(queued).status == "cancelled"
        rig.builder.cancel(running)
        assert rig.finish(queued).status == "cancelled"
        assert rig.finish(running).status == "cancelled"
        assert len(rig.engine.builds) == 1
        with pytest.raises(NotFound):
            rig.builder.cancel("BNOSUCHBUILD")
        with pytest.raises(NotFound):
            rig.builder.cancel(running, app="otherapp")
    finally:
        rig.builder.shutdown()


def test_start_validates_before_recording(rig: Rig) -> None:
    with pytest.raises(InvalidArgument, match="invalid app name"):
        rig.builder.start(BuildRequest(app="Bad_Name", archive="x"))
    archive = rig.sources.add(make_archive({"convox.yml": "services: {}\n"}))
    # Nothing creates an app: an unknown one is refused, with how to create it.
    with pytest.raises(NotFound) as unknown:
        rig.builder.start(BuildRequest(app="newapp", archive=archive))
    assert str(unknown.value) == (
        "app not found: newapp (create it with: slipway apps create newapp)"
    )
    rig.store.create_app("newapp")
    with pytest.raises(NotFound, match="archive not found: nope"):
        rig.builder.start(BuildRequest(app="newapp", archive="nope"))
    assert rig.store.builds == {} and set(rig.store.apps) == {"newapp"}
    build_id = rig.start({"convox.yml": "services: {}\n"}, app="fresh")
    assert rig.finish(build_id).status == "complete"


def test_pull_failure_uses_a_local_image_else_fails(rig: Rig) -> None:
    rig.engine.offline = True
    ok = rig.finish(rig.start({"convox.yml": "services:\n  a:\n    image: busybox:latest\n"}))
    assert ok.status == "complete"
    assert any(line.startswith("Pull failed (") for line in rig.log(ok.id))
    bad = rig.finish(rig.start({"convox.yml": "services:\n  a:\n    image: nosuch:1\n"}))
    assert (bad.status, bad.reason) == (
        "failed",
        "dial tcp: lookup registry-1.docker.io: no such host",
    )


def test_log_lines_are_batched_and_ordered(rig: Rig) -> None:
    runs = "".join(f"RUN echo {i}\n" for i in range(300))
    build_id = rig.start(
        {"convox.yml": "services:\n  web:\n    build: .\n", "Dockerfile": "FROM busybox\n" + runs}
    )
    assert rig.finish(build_id).status == "complete"
    steps = [line for line in rig.log(build_id) if line.startswith("Step ")]
    assert steps == [
        f"Step {n}/301 : {line}" for n, line in enumerate(["FROM busybox"] + runs.splitlines(), 1)
    ]
    assert len(rig.store.appends) < len(rig.log(build_id)) / 5


def test_follow_sends_record_lines_status_changes_and_the_end(rig: Rig) -> None:
    build_id = rig.start(
        {
            "convox.yml": "services:\n  web:\n    build: .\n",
            "Dockerfile": "FROM busybox\nRUN wait\n",
        }
    )
    events = rig.builder.follow(build_id)
    first = next(events)
    assert isinstance(first, types.Build) and first.id == build_id
    assert rig.engine.waiting.wait(10)
    seen: list[types.Build | types.LogLine] = []
    for event in events:
        seen.append(event)
        if isinstance(event, types.LogLine) and event.text == "Step 2/2 : RUN wait":
            rig.builder.cancel(build_id)
    statuses = [e.status for e in seen if isinstance(e, types.Build)]
    assert statuses[-1] == "cancelled"
    lines = [e for e in seen if isinstance(e, types.LogLine)]
    assert [line.offset for line in lines] == list(range(len(lines)))
    assert lines[-1].text == "Build cancelled"
    replay = list(rig.builder.follow(build_id, offset=2))
    assert [e.offset for e in replay if isinstance(e, types.LogLine)][0] == 2
    assert isinstance(replay[-1], types.Build) and replay[-1].status == "cancelled"
    with pytest.raises(NotFound):
        next(rig.builder.follow("BNOSUCHBUILD"))


def test_shutdown_fails_running_builds(tmp_path: Path) -> None:
    rig = _rig(tmp_path)
    build_id = rig.start(
        {
            "convox.yml": "services:\n  web:\n    build: .\n",
            "Dockerfile": "FROM busybox\nRUN wait\n",
        }
    )
    assert rig.engine.waiting.wait(10)
    rig.builder.shutdown()
    build = rig.store.get_build(build_id)
    assert (build.status, build.reason) == ("failed", "builder stopped")
    assert rig.log(build_id)[-1] == "ERROR: builder stopped"


def test_recover_waits_for_metadata(rig: Rig) -> None:
    calls: list[str] = []

    def flaky(owner: str = "") -> list[str]:
        calls.append(owner)
        if len(calls) < 3:
            raise Unavailable("metadata service unreachable at 127.0.0.1:1")
        return ["BLEFTOVER"] if owner else []

    rig.store.expire_builds = flaky  # type: ignore[method-assign]
    assert rig.builder.recover(timeout=5, interval=0.01) == ["BLEFTOVER"]
    assert calls == [rig.builder.id, rig.builder.id, rig.builder.id, ""]


def test_rack_answers_without_the_registry_service(rig: Rig) -> None:
    def down() -> str:
        raise Unavailable("registry service unreachable at 127.0.0.1:1")

    rig.pusher.registry_host = down  # type: ignore[method-assign]
    info = rig.builder.rack()
    assert (info.name, info.registry_host) == ("local", "")


def test_scratch_folders_a_killed_builder_left_are_swept_at_start(tmp_path: Path) -> None:
    leftover = tmp_path / "scratch" / "BLEFTOVERXX" / "src" / "deep"
    leftover.mkdir(parents=True)
    (leftover / "file").write_text("x")
    (tmp_path / "scratch" / "stray").write_text("x")
    rig = _rig(tmp_path)
    try:
        assert sorted(rig.builder.sweep_scratch()) == ["BLEFTOVERXX", "stray"]
        assert list((tmp_path / "scratch").iterdir()) == []
    finally:
        rig.builder.shutdown()
