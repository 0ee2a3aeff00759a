"""The common Pusher against a fake engine, a registry destination and a fake clock."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import pytest

from client.kernel.errors import Internal, InvalidArgument, NotFound, Unavailable
from client.kernel.types import PushProgress, PushResult
from services.common.docker.types import PushEvent
from services.common.push import Destination, Pusher, check_push, human_size, progress_of, throttle

DIGEST = "sha256:" + "ab" * 32


@dataclass
class FakeEngine:
    """Knows `images`; a push replays `events`, each at its own time on `clock`."""

    images: set[str]
    events: list[tuple[float, PushEvent]]
    clock: list[float] = field(default_factory=lambda: [0.0])
    calls: list[tuple[str, ...]] = field(default_factory=list)

    def tag(self, image: str, repository: str, tag: str) -> None:
        if image not in self.images:
            raise NotFound.of("image", image)
        self.calls.append(("tag", image, repository, tag))

    def push(
        self, repository: str, tag: str, auth: Mapping[str, str] | None = None
    ) -> Iterator[PushEvent]:
        self.calls.append(("push", repository, tag))
        for at, event in self.events:
            self.clock[0] = at
            yield event


def pusher_for(engine: FakeEngine) -> Pusher:
    return Pusher(engine, Destination("reg:5000"), clock=lambda: engine.clock[0])


def pushing(layer: str, current: int, total: int) -> PushEvent:
    return PushEvent(status="Pushing", layer=layer, current=current, total=total)


def test_push_tags_pushes_and_reports_the_digest() -> None:
    engine = FakeEngine(
        images={"sha256:img"},
        events=[
            (0.0, PushEvent(status="The push refers to repository [reg:5000/app]")),
            (0.0, PushEvent(status="Preparing", layer="aaa")),
            (0.1, pushing("aaa", 1_200_000, 3_400_000)),
            (0.2, PushEvent(status="Pushed", layer="aaa")),
            (0.3, PushEvent(status="web.B1: digest: " + DIGEST + " size: 527")),
            (0.3, PushEvent(digest=DIGEST)),
        ],
    )
    events = list(pusher_for(engine).push("sha256:img", "app", "web.B1"))
    ref = "reg:5000/app:web.B1"
    assert [e.text for e in events if isinstance(e, PushProgress)] == [
        f"Running: docker tag sha256:img {ref}",
        f"Running: docker push {ref}",
        "The push refers to repository [reg:5000/app]",
        "aaa: Preparing",
        "aaa: Pushing 1.2MB/3.4MB",
        "aaa: Pushed",
        f"web.B1: digest: {DIGEST} size: 527",
    ]
    assert events[-1] == PushResult(reference=ref, digest=DIGEST)
    assert engine.calls == [
        ("tag", "sha256:img", "reg:5000/app", "web.B1"),
        ("push", "reg:5000/app", "web.B1"),
    ]


def test_progress_is_throttled_per_layer_but_status_changes_pass() -> None:
    engine = FakeEngine(
        images={"img"},
        events=[
            (0.00, pushing("aaa", 1, 100)),
            (0.10, pushing("aaa", 2, 100)),  # dropped: same layer and status, too soon
            (0.20, pushing("bbb", 1, 100)),  # another layer: shown
            (0.30, pushing("aaa", 3, 100)),  # dropped
            (0.55, pushing("aaa", 4, 100)),  # 0.55 s after the last shown: shown
            (0.60, PushEvent(status="Pushed", layer="aaa")),  # status change: shown
            (0.61, PushEvent(status="Pushed", layer="bbb")),
            (0.70, PushEvent(digest=DIGEST)),
        ],
    )
    events = list(pusher_for(engine).push("img", "app", "t"))
    texts = [e.text for e in events if isinstance(e, PushProgress)][2:]
    assert texts == [
        "aaa: Pushing 1B/100B",
        "bbb: Pushing 1B/100B",
        "aaa: Pushing 4B/100B",
        "aaa: Pushed",
        "bbb: Pushed",
    ]


def test_throttle_passes_image_wide_events() -> None:
    events = [PushEvent(status="a"), PushEvent(status="a"), PushEvent(digest=DIGEST)]
    assert list(throttle(events, clock=lambda: 0.0)) == events


def test_missing_digest_fails_the_push() -> None:
    engine = FakeEngine(images={"img"}, events=[(0.0, PushEvent(status="Pushed", layer="a"))])
    with pytest.raises(Internal, match="ended without a digest"):
        list(pusher_for(engine).push("img", "app", "t"))


def test_unknown_image_is_not_found_before_any_push() -> None:
    engine = FakeEngine(images=set(), events=[])
    with pytest.raises(NotFound, match="image not found: nope"):
        list(pusher_for(engine).push("nope", "app", "t"))
    assert engine.calls == []


@pytest.mark.parametrize(
    ("image", "repository", "tag", "message"),
    [
        ("", "app", "t", "image is required"),
        ("img", "App", "t", "invalid repository: 'App'"),
        ("img", "app-", "t", "invalid repository"),
        ("img", "", "t", "invalid repository"),
        ("img", "a//b", "t", "invalid repository"),
        ("img", "app", "", "invalid tag: ''"),
        ("img", "app", ".web", "invalid tag"),
        ("img", "app", "web:B1", "invalid tag"),
        ("img", "app", "x" * 129, "invalid tag"),
    ],
)
def test_bad_names_are_invalid(image: str, repository: str, tag: str, message: str) -> None:
    engine = FakeEngine(images={"img"}, events=[])
    with pytest.raises(InvalidArgument, match=message):
        pusher_for(engine).push(image, repository, tag)
    assert engine.calls == []


def test_good_names_pass() -> None:
    for repository in ("app", "my-app", "org/my_app.v2", "a__b", "a--b"):
        check_push("img", repository, "web.BABCDEFGHIJ")
    check_push("img", "app", "_x" + "y" * 126)


def test_human_size_and_progress_text() -> None:
    assert [human_size(n) for n in (0, 999, 1000, 1_234_567, 3_400_000_000)] == [
        "0B",
        "999B",
        "1kB",
        "1.23MB",
        "3.4GB",
    ]
    assert progress_of(PushEvent(status="Pushing", layer="l", current=5)).text == "l: Pushing 5B"
    assert progress_of(PushEvent(status="Waiting", layer="l")).text == "l: Waiting"


class FlakyEngine:
    """Pushes that fail with `errors` in turn, then succeed; records what was removed."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.pushes = 0
        self.removed: list[str] = []

    def tag(self, image: str, repository: str, tag: str) -> None:
        return None

    def push(self, repository: str, tag: str, auth: object = None) -> Iterator[PushEvent]:
        self.pushes += 1
        if self.errors:
            raise self.errors.pop(0)
        return iter(
            [PushEvent(status="Pushed", layer="abc"), PushEvent(digest="sha256:" + "a" * 64)]
        )

    def remove(self, image: str) -> None:
        self.removed.append(image)


def _run(engine: FlakyEngine, slept: list[float]) -> list[object]:
    pusher = Pusher(engine, Destination("registry.test:5000"), sleep=slept.append)  # type: ignore[arg-type]
    return list(pusher.push("sha256:" + "b" * 64, "myapp", "web.BXXXXXXXXXX"))


def test_a_passing_registry_failure_is_retried_and_each_attempt_logged() -> None:
    down = Unavailable("registry unreachable at registry.test:5000")
    engine = FlakyEngine(down, Internal("push failed: received unexpected HTTP status: 503"))
    slept: list[float] = []
    events = _run(engine, slept)
    texts = [e.text for e in events if isinstance(e, PushProgress)]
    ref = "registry.test:5000/myapp:web.BXXXXXXXXXX"
    assert texts[2:4] == [
        f"Retrying push of {ref} (attempt 2 of 5): registry unreachable at registry.test:5000",
        f"Retrying push of {ref} (attempt 3 of 5): push failed: received unexpected HTTP "
        "status: 503",
    ]
    assert isinstance(events[-1], PushResult) and engine.pushes == 3
    assert slept == [1.0, 2.0] and engine.removed == []


def test_a_lasting_outage_fails_after_five_attempts_over_ten_seconds_and_untags() -> None:
    down = Unavailable("registry unreachable at registry.test:5000")
    engine = FlakyEngine(*[down] * 5)
    slept: list[float] = []
    with pytest.raises(Unavailable, match="^registry unreachable at registry.test:5000$"):
        _run(engine, slept)
    assert engine.pushes == 5 and sum(slept) >= 10
    assert engine.removed == ["registry.test:5000/myapp:web.BXXXXXXXXXX"]


def test_a_refused_push_is_not_retried() -> None:
    engine = FlakyEngine(InvalidArgument("cannot push: invalid reference format"))
    slept: list[float] = []
    with pytest.raises(InvalidArgument):
        _run(engine, slept)
    assert engine.pushes == 1 and slept == []
