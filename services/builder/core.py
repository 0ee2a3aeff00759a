"""The builder's core: starting builds on a bounded pool, cancelling them, following
them, and describing the rack. It imports neither grpc nor generated code."""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import client
from client.kernel import types
from client.kernel.errors import FailedPrecondition, InvalidArgument, SlipwayError, Unavailable
from services.builder import follow as following
from services.builder.config import Config
from services.builder.logwriter import LogWriter, retrying
from services.builder.redact import Redactor
from services.builder.seams import Deps
from services.builder.worker import CANCELLED_LINE, Job, Worker
from services.common.logs import BuildLogAdapter

log = logging.getLogger(__name__)

RESTART_REASON = "builder restarted"
STOP_REASON = "builder stopped"


class Builder:
    """Builds of one rack."""

    def __init__(self, config: Config, deps: Deps, clock: Callable[[], float] = time.time):
        self._config = config
        self._deps = deps
        self._clock = clock
        self._worker = Worker(config, deps, clock)
        self._pool = ThreadPoolExecutor(config.max_builds, thread_name_prefix="build")
        self._lock = threading.Lock()  # guards _jobs
        self._jobs: dict[str, tuple[Job, Future[None]]] = {}
        self._followers = following.LogHub(deps.store)

    def sweep_scratch(self) -> list[str]:
        """Removes the scratch folders a previous builder left (killed mid-build); returns
        their names. Run at start, before any build of this builder."""
        folder = self._config.scratch_dir
        if not folder.is_dir():
            return []
        swept = []
        for entry in folder.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            swept.append(entry.name)
        if swept:
            log.info("removed %d leftover scratch folders", len(swept))
        return swept

    def recover(self, timeout: float = 10.0, interval: float = 0.5) -> list[str]:
        """Fails the builds a previous builder left created or running, waiting up to
        `timeout` seconds for metadata to answer."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                ids = self._deps.store.fail_running_builds(RESTART_REASON)
            except Unavailable as err:
                if time.monotonic() >= deadline:
                    log.warning("could not fail leftover builds: %s", err)
                    return []
                time.sleep(interval)
                continue
            if ids:
                log.info("failed %d leftover builds: %s", len(ids), ", ".join(ids))
            return ids

    def start(self, req: types.BuildRequest) -> types.Build:
        """Records a build and queues it; returns the record (status created) at once."""
        types.check_app_name(req.app)
        if not req.archive:
            raise InvalidArgument("an archive is required")
        types.check_secrets(req.secrets)
        if req.secrets and self._config.engine_builder == types.LEGACY:
            raise InvalidArgument(
                "build secrets need BuildKit: this rack builds with the legacy builder"
            )
        store = self._deps.store
        self._deps.sources.stat(req.archive)  # before anything is recorded
        store.create_app(req.app, exist_ok=True)
        build = store.create_build(
            req.app, description=req.description, git_sha=req.git_sha, archive=req.archive
        )
        redact = Redactor(req.secrets.values())
        job = Job(
            build=build,
            request=req,
            log=LogWriter(store, build.id, give_up=self._config.store_retry_seconds, redact=redact),
            redact=redact,
        )
        with self._lock:
            future = self._pool.submit(self._worker.run, job)
            self._jobs[build.id] = (job, future)
        future.add_done_callback(lambda _: self._forget(build.id))
        BuildLogAdapter(log, {"build": build.id}).info("queued for %s", req.app)
        return build

    def cancel(self, build_id: str, app: str = "") -> types.Build:
        """Stops a created or running build: FailedPrecondition when it has ended."""
        store = self._deps.store
        build = store.get_build(build_id, app)
        if build.terminal:
            raise _already(build)
        with self._lock:
            entry = self._jobs.get(build_id)
        if entry is not None:
            job = entry[0]
            if not job.request_cancel():
                raise _already(store.get_build(build_id))  # the worker is recording its end
        else:
            store.append_logs(build_id, [CANCELLED_LINE])
        ended = self._clock()
        recorded: list[types.Build] = []

        def record() -> None:
            recorded.append(store.update_build(build_id, status=types.CANCELLED, ended=ended))

        try:
            retrying(record, self._config.store_retry_seconds)
        except FailedPrecondition:
            raise _already(store.get_build(build_id)) from None
        build = recorded[-1]
        BuildLogAdapter(log, {"build": build_id}).info("cancelled")
        return build

    def follow(
        self, build_id: str, offset: int = 0, active: Callable[[], bool] = lambda: True
    ) -> Iterator[types.Build | types.LogLine]:
        """See `follow.follow`."""
        return self._followers.follow(build_id, offset, active)

    def rack(self) -> types.RackInfo:
        """What the rack is. The front door answers even when the registry service does
        not: `registry_host` is then empty and the failure logged."""
        try:
            registry_host = self._deps.pusher.registry_host()
        except Unavailable as err:
            log.warning("GetRack without the registry host: %s", err)
            registry_host = ""
        return types.RackInfo(
            name=self._config.rack_name,
            version=client.__version__,
            archive_address=self._config.archive_address,
            metadata_address=self._config.metadata_address,
            registry_address=self._config.registry_address,
            registry_host=registry_host,
        )

    def shutdown(self) -> None:
        """Stops every build: running ones fail with `builder stopped`, queued ones too."""
        with self._lock:
            entries = list(self._jobs.values())
        for job, future in entries:
            if future.cancel():
                self._record_stopped(job.id)
            else:
                job.abort(STOP_REASON)
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _record_stopped(self, build_id: str) -> None:
        try:
            self._deps.store.update_build(
                build_id, status=types.FAILED, reason=STOP_REASON, ended=self._clock()
            )
        except SlipwayError as err:
            log.warning("[%s] could not record the stop: %s", build_id, err)

    def _forget(self, build_id: str) -> None:
        with self._lock:
            self._jobs.pop(build_id, None)


def _already(build: types.Build) -> FailedPrecondition:
    return FailedPrecondition(f"build {build.id} is already {build.status}")
