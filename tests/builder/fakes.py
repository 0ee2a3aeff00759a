"""In-memory fakes of the builder's seams, and a helper to pack test archives."""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import os
import random
import string
import tarfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace

from client.kernel import types
from client.kernel.entries import read_file
from client.kernel.errors import Cancelled, FailedPrecondition, NotFound, Unavailable
from services.builder.seams import BuildSpec, CancelScope, EngineError, ImageInfo, LineSink


def make_archive(files: Mapping[str, str | bytes]) -> bytes:
    """A gzip'd tar of `files` (path → content)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, content in files.items():
            data = content.encode() if isinstance(content, str) else content
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _id(prefix: str) -> str:
    return prefix + "".join(random.choices(string.ascii_uppercase, k=10))


class FakeStore:
    """BuildStore in memory, with metadata's rule that a terminal status is final."""

    def list_archives(self) -> list[str]:
        return sorted({b.archive for b in self.builds.values() if b.archive})

    def __init__(self) -> None:
        self.apps: dict[str, types.App] = {}
        self.builds: dict[str, types.Build] = {}
        self.releases: list[types.Release] = []
        self.logs: dict[str, list[types.LogLine]] = {}
        self.appends: list[list[str]] = []
        self.expire_calls: list[str] = []
        self.renewals_fail = False  # RenewLease answers Unavailable
        #: Per build: (request JSON, timeout, pinned) of queued builds; leases held.
        self.queued: dict[str, tuple[str, float, str]] = {}
        self.leases: dict[str, types.Lease] = {}
        self._cond = threading.Condition()

    def create_app(self, name: str, exist_ok: bool = False) -> types.App:
        with self._cond:
            return self.apps.setdefault(name, types.App(name=name))

    def get_app(self, name: str) -> types.App:
        with self._cond:
            if name not in self.apps:
                raise NotFound.of("app", name)
            return self.apps[name]

    def create_build(
        self,
        app: str,
        description: str = "",
        manifest: str = "",
        git_sha: str = "",
        archive: str = "",
        request: str = "",
        timeout: float = 0.0,
        pinned: str = "",
    ) -> types.Build:
        with self._cond:
            build = types.Build(
                id=_id("B"),
                app=app,
                description=description,
                manifest=manifest,
                git_sha=git_sha,
                archive=archive,
                created=1.0,
            )
            self.builds[build.id] = build
            self.logs[build.id] = []
            if request:
                self.queued[build.id] = (request, timeout, pinned)
            return build

    def claim_build(self, builder: str) -> types.Claim | None:
        with self._cond:
            for build_id, (request, timeout, pinned) in list(self.queued.items()):
                build = self.builds[build_id]
                if build.status != types.CREATED:
                    del self.queued[build_id]
                    continue
                if pinned and pinned != builder:
                    continue
                del self.queued[build_id]
                attempt = self.leases[build_id].attempt + 1 if build_id in self.leases else 1
                lease = types.Lease(builder, attempt)
                self.leases[build_id] = lease
                build = replace(build, status=types.RUNNING, started=1.0)
                self.builds[build_id] = build
                self._cond.notify_all()
                return types.Claim(
                    build=build,
                    request=types.request_from_json(request),
                    lease=lease,
                    timeout=timeout or types.DEFAULT_TIMEOUT_SECONDS,
                    secrets=tuple(types.secret_ids(request)),
                )
            return None

    def _held(self, build_id: str, lease: types.Lease | None) -> None:
        if lease is None:
            return
        build = self.builds.get(build_id)
        if build is None or build.status != types.RUNNING or self.leases.get(build_id) != lease:
            raise FailedPrecondition(f"build {build_id}: lease lost")

    def renew_lease(self, build_id: str, lease: types.Lease) -> tuple[bool, types.Build]:
        if self.renewals_fail:
            raise Unavailable("metadata unreachable")
        with self._cond:
            try:
                self._held(build_id, lease)
            except FailedPrecondition:
                return False, self.builds[build_id]
            return True, self.builds[build_id]

    def expire_builds(self, owner: str = "") -> list[str]:
        self.expire_calls.append(owner)
        if not owner:
            return []
        with self._cond:
            ended = []
            for build_id, lease in self.leases.items():
                build = self.builds[build_id]
                if lease.owner == owner and build.status == types.RUNNING:
                    reason = types.lost_reason(owner)
                    self.builds[build_id] = replace(build, status=types.FAILED, reason=reason)
                    ended.append(build_id)
            self._cond.notify_all()
            return ended

    def get_build(self, build_id: str, app: str = "") -> types.Build:
        with self._cond:
            build = self.builds.get(build_id)
            if build is None or (app and build.app != app):
                raise NotFound.of("build", build_id)
            return build

    def update_build(
        self, build_id: str, *, lease: types.Lease | None = None, **fields: object
    ) -> types.Build:
        with self._cond:
            build = self.get_build(build_id)
            self._held(build_id, lease)
            if "status" in fields and build.terminal:
                raise FailedPrecondition(f"build {build_id} is {build.status}")
            build = replace(build, **fields)  # type: ignore[arg-type]
            self.builds[build_id] = build
            self._cond.notify_all()
            return build

    def create_release(
        self,
        app: str,
        build: str = "",
        env: Mapping[str, str] | None = None,
        manifest: str = "",
        description: str = "",
        inherit_env: bool = False,
        lease: types.Lease | None = None,
        complete: types.Completion | None = None,
    ) -> types.Release:
        with self._cond:
            if build:
                self._held(build, lease)
            if inherit_env:
                latest = [r for r in self.releases if r.app == app]
                env = latest[-1].env if latest else {}
            release = types.Release(
                id=_id("R"),
                app=app,
                build=build,
                env=dict(env or {}),
                manifest=manifest,
                description=description,
            )
            if complete is not None:  # both or neither, as the store's one transaction
                self.update_build(
                    build,
                    lease=lease,
                    status=types.COMPLETE,
                    release=release.id,
                    entrypoint=complete.entrypoint,
                    ended=complete.ended,
                )
            self.releases.append(release)
        return release

    def list_releases(self, app: str, limit: int = 10) -> list[types.Release]:
        with self._cond:
            return [r for r in reversed(self.releases) if r.app == app][:limit]

    def append_logs(
        self, build_id: str, lines: Sequence[str], lease: types.Lease | None = None
    ) -> int:
        with self._cond:
            self._held(build_id, lease)
            log = self.logs[build_id]
            for text in lines:
                log.append(types.LogLine(offset=len(log), text=text))
            self.appends.append(list(lines))
            self._cond.notify_all()
            return len(log)

    def stream_logs(
        self, build_id: str, offset: int = 0, follow: bool = False
    ) -> Iterator[types.LogLine]:
        self.get_build(build_id)
        while True:
            with self._cond:
                lines = self.logs[build_id][offset:]
                done = self.builds[build_id].terminal
                if not lines and follow and not done:
                    self._cond.wait(0.1)
                    continue
            yield from lines
            offset += len(lines)
            if not follow or (done and not lines):
                return

    def log_text(self, build_id: str) -> list[str]:
        with self._cond:
            return [line.text for line in self.logs[build_id]]


class FakeSources:
    """SourceStore over archives in memory, sent in small chunks."""

    def __init__(self) -> None:
        self.archives: dict[str, bytes] = {}
        self.collections: list[tuple[list[str], float, bool]] = []

    def add(self, data: bytes) -> str:
        archive_id = hashlib.sha256(data).hexdigest()
        self.archives[archive_id] = data
        return archive_id

    def stat(self, archive_id: str) -> int:
        if archive_id not in self.archives:
            raise NotFound.of("archive", archive_id)
        return len(self.archives[archive_id])

    def download(self, archive_id: str) -> Iterator[bytes]:
        data = self.archives[archive_id]
        for start in range(0, len(data), 1000):
            yield data[start : start + 1000]

    def read_blobs(self, digests: Sequence[str]) -> Iterator[tuple[str, Iterator[bytes]]]:
        for digest in digests:
            yield digest, self.download(digest)

    def collect_garbage(
        self, keep: Sequence[str], grace: float, automatic: bool = False
    ) -> types.Garbage:
        """Keeps `keep`, drops every other archive (no grace in memory)."""
        self.collections.append((list(keep), grace, automatic))
        gone = [a for a in self.archives if a not in keep]
        for archive_id in gone:
            del self.archives[archive_id]
        return types.Garbage(removed=len(gone), kept=len(self.archives))


class FakePusher:
    """ImagePusher that records what it was asked to push."""

    host = "registry.test:5000"

    def __init__(self) -> None:
        self.pushed: list[tuple[str, str, str]] = []

    def registry_host(self) -> str:
        return self.host

    def push(
        self, image: str, repository: str, tag: str
    ) -> Iterator[types.PushProgress | types.PushResult]:
        ref = f"{self.host}/{repository}:{tag}"
        yield types.PushProgress(text=f"Running: docker tag {image} {ref}")
        yield types.PushProgress(text=f"Running: docker push {ref}")
        yield types.PushProgress(text="abc123: Pushing", status="Pushing", current=10, total=20)
        yield types.PushProgress(text="abc123: Pushed", layer="abc123", status="Pushed")
        self.pushed.append((image, repository, tag))
        yield types.PushResult(reference=ref, digest="sha256:" + "0" * 64)


class FakeEngine:
    """ImageEngine that 'builds' by reading the Dockerfile: it prints a line per
    instruction; `RUN exit N` fails like the classic builder; `RUN wait` blocks until the
    scope is cancelled; `ENTRYPOINT [...]` (JSON) sets the entrypoint."""

    def __init__(self) -> None:
        self.builds: list[BuildSpec] = []
        self.pulls: list[str] = []
        self.images: dict[str, ImageInfo] = {"busybox:latest": ImageInfo("sha256:busybox")}
        self.waiting = threading.Event()
        #: A `RUN wait` step was stopped by its scope's cancel.
        self.cancelled = False
        self.offline = False  # every pull fails as with no registry reachable
        self.down = False  # the engine does not answer
        self.unstick = threading.Event()  # ends a `RUN stuck` step
        self._lock = threading.Lock()
        self._counter = itertools.count()

    def answers(self, timeout: float = 5.0) -> bool:
        return not self.down

    def build(self, spec: BuildSpec, on_line: LineSink, scope: CancelScope) -> str:
        with self._lock:
            self.builds.append(spec)
        path = os.path.normpath(os.path.join(spec.context, spec.dockerfile))
        if spec.source is None:
            text = open(path).read()
        else:
            text = read_file(spec.source, path, 1 << 20).decode()
        entrypoint: tuple[str, ...] = ()
        lines = [line for line in text.splitlines() if line.strip()]
        for n, line in enumerate(lines, 1):
            on_line(f"Step {n}/{len(lines)} : {line}")
            if line.startswith("RUN exit "):
                code = line.split()[-1]
                raise EngineError(
                    f"The command '/bin/sh -c exit {code}' returned a non-zero code: {code}"
                )
            if line.startswith("RUN stuck"):  # ignores cancel, as a hung engine call
                self.waiting.set()
                self.unstick.wait(30)
                raise Cancelled("build cancelled")
            if line.startswith("RUN wait"):
                stopped = threading.Event()
                scope.on_cancel(stopped.set)
                self.waiting.set()
                if stopped.wait(30):
                    self.cancelled = True
                raise Cancelled("build cancelled")
            if line.startswith("ENTRYPOINT "):
                entrypoint = tuple(json.loads(line.split(" ", 1)[1]))
        image = f"sha256:{next(self._counter):064d}"
        with self._lock:
            self.images[image] = ImageInfo(image, entrypoint)
        on_line(f"Successfully built {image[7:19]}")
        return image

    def pull(self, image: str, on_line: LineSink, scope: CancelScope) -> str:
        self.pulls.append(image)
        on_line(f"{image}: Pulling")
        if self.offline:
            raise EngineError("dial tcp: lookup registry-1.docker.io: no such host")
        if image not in self.images:
            raise EngineError(f"pull access denied for {image}")
        return self.images[image].id

    def inspect(self, image: str) -> ImageInfo:
        if "@" not in image and ":" not in image.rsplit("/", 1)[-1]:
            image += ":latest"  # as the engine reads a reference without a tag
        for info in self.images.values():
            if image == info.id:
                return info
        if image in self.images:
            return self.images[image]
        raise NotFound.of("image", image)

    def image_id(self, image: str) -> str | None:
        try:
            return self.inspect(image).id
        except NotFound:
            return None

    def remove(self, image: str) -> None:
        self.images.pop(image, None)
