"""A fake rack for CLI tests: the same methods as `client.api.rack.Rack`'s clients, in memory."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from client.api.archive import Committed
from client.kernel import types
from client.kernel.entries import check_entry, encode
from client.kernel.errors import AlreadyExists, FailedPrecondition, NotFound

Script = list[Any]
"""What one follow stream yields: LogLines, Builds, or exceptions to raise at that point."""


class FakeFollower:
    def __init__(self, script: Script) -> None:
        self.script = script
        self.acks: list[int] = []
        self.closed = False

    def __iter__(self) -> Iterator[types.Build | types.LogLine]:
        for item in self.script:
            if isinstance(item, BaseException):
                raise item
            yield item

    def ack(self, offset: int) -> None:
        self.acks.append(offset)

    def close(self) -> None:
        self.closed = True


@dataclass
class FakeBuilder:
    builds: dict[str, types.Build]
    streams: list[Script] = field(default_factory=list)
    follows: list[tuple[str, int]] = field(default_factory=list)
    started: list[Any] = field(default_factory=list)
    followers: list[FakeFollower] = field(default_factory=list)
    next_id: str = "BNEWBUILDAA"

    def start_build(self, options: Any) -> types.Build:
        self.started.append(options)
        build = types.Build(
            id=self.next_id,
            app=options.app,
            description=options.description,
            git_sha=options.git_sha,
        )
        self.builds.setdefault(build.id, build)  # a test may have put the final record there
        return build

    def follow(self, build_id: str, offset: int = 0) -> FakeFollower:
        self.follows.append((build_id, offset))
        follower = FakeFollower(self.streams.pop(0) if self.streams else [])
        self.followers.append(follower)
        return follower

    def cancel_build(self, build_id: str, app: str = "") -> types.Build:
        build = self.builds.get(build_id)
        if build is None or (app and build.app != app):
            raise NotFound.of("build", build_id)
        if build.terminal:
            raise FailedPrecondition(f"build {build_id} has ended ({build.status})")
        build = replace(build, status=types.CANCELLED)
        self.builds[build_id] = build
        return build


@dataclass
class FakeMetadata:
    builds: dict[str, types.Build]
    logs: dict[str, list[str]] = field(default_factory=dict)
    apps: dict[str, types.App] = field(default_factory=lambda: {"myapp": types.App("myapp")})
    #: Each app's releases, newest first (what `${VAR}`s of a manifest are read from).
    releases: dict[str, list[types.Release]] = field(default_factory=dict)

    def list_releases(self, app: str, limit: int = 10) -> list[types.Release]:
        self.get_app(app)
        return self.releases.get(app, [])[:limit]

    def get_app(self, name: str) -> types.App:
        if name not in self.apps:
            raise NotFound.of("app", name)
        return self.apps[name]

    def create_app(self, name: str, exist_ok: bool = False) -> types.App:
        types.check_app_name(name)
        if name in self.apps and not exist_ok:
            raise AlreadyExists(f"app already exists: {name}")
        return self.apps.setdefault(name, types.App(name, created=1_700_000_000.0))

    def list_apps(self) -> list[types.App]:
        return [self.apps[n] for n in sorted(self.apps)]

    def delete_app(self, name: str) -> types.App:
        app = self.get_app(name)
        if any(b.app == name and not b.terminal for b in self.builds.values()):
            raise FailedPrecondition(f"app {name} has a build under way; cancel it first")
        del self.apps[name]
        return app

    def get_build(self, build_id: str, app: str = "") -> types.Build:
        build = self.builds.get(build_id)
        if build is None or (app and build.app != app):
            raise NotFound.of("build", build_id)
        return build

    def list_builds(self, app: str, limit: int = 10) -> list[types.Build]:
        mine = [b for b in self.builds.values() if b.app == app]
        return sorted(mine, key=lambda b: -b.created)[:limit]

    def stream_logs(
        self, build_id: str, offset: int = 0, follow: bool = False
    ) -> Iterator[types.LogLine]:
        for i, text in enumerate(self.logs.get(build_id, [])[offset:], start=offset):
            yield types.LogLine(offset=i, text=text)


@dataclass
class FakeArchive:
    """The incremental upload, in memory: blobs by digest, one record per context."""

    uploads: list[dict[str, Any]] = field(default_factory=list)
    blobs: dict[str, bytes] = field(default_factory=dict)
    asked: list[str] = field(default_factory=list)

    def find_missing(self, digests: list[str]) -> list[str]:
        self.asked.extend(digests)
        return [d for d in digests if d not in self.blobs]

    def put_blobs(self, blobs: Any, progress: Callable[[int], None] | None = None) -> int:
        count = 0
        for blob in blobs:
            data = b"".join(blob.chunks())
            assert hashlib.sha256(data).hexdigest() == blob.sha256 and len(data) == blob.size
            self.blobs[blob.sha256] = data
            if progress:
                progress(len(data))
            count += 1
        return count

    def stat(self, archive_id: str) -> int:
        if not any(u["id"] == archive_id for u in self.uploads):
            raise NotFound.of("archive", archive_id)
        return 1

    def put_context(self, app: str, entries: Any) -> Committed:
        listed = list(entries)
        missing = [e.sha256 for e in listed if e.type == "file" and e.sha256 not in self.blobs]
        if missing:
            return Committed("", 0, list(dict.fromkeys(missing)))
        digest = hashlib.sha256(b"".join(encode(check_entry(e) for e in listed))).hexdigest()
        self.uploads.append(
            {"id": digest, "app": app, "names": [e.path for e in listed], "entries": listed}
        )
        return Committed(digest, len(listed), [])


class FakeRack:
    def __init__(self) -> None:
        self.builds: dict[str, types.Build] = {}
        self.builder = FakeBuilder(self.builds)
        self.metadata = FakeMetadata(self.builds)
        self.archive = FakeArchive()
        self.info = types.RackInfo("fake", "0", "", "", "", "registry.local")

    def add(self, **kw: Any) -> types.Build:
        build = types.Build(**kw)
        self.builds[build.id] = build
        return build
