"""The builder's core: starting builds on a bounded pool, cancelling them, following
them, and describing the rack. It imports neither grpc nor generated code."""

from __future__ import annotations

import dataclasses
import logging
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import client
from client.kernel import types
from client.kernel.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    SlipwayError,
    Unavailable,
)
from services.builder import follow as following
from services.builder.config import Config
from services.builder.logwriter import LogWriter, retrying
from services.builder.redact import Redactor
from services.builder.seams import Deps
from services.builder.worker import CANCELLED_LINE, Job, Worker
from services.common.logs import BuildLogAdapter

log = logging.getLogger(__name__)

STOP_REASON = "builder stopped"
#: How long a build told to stop (timed out) may take to wind down before its builder
#: records it ended itself, whatever its worker is stuck in.
STOP_GRACE_SECONDS = 60.0


class Builder:
    """Builds of one rack."""

    def __init__(self, config: Config, deps: Deps, clock: Callable[[], float] = time.time):
        self._config = config
        self._deps = deps
        self._clock = clock
        self._worker = Worker(config, deps, clock)
        self._pool = ThreadPoolExecutor(config.max_builds, thread_name_prefix="build")
        self._lock = threading.Lock()  # guards _jobs and _secrets
        # Held while a build is recorded and its secrets kept, and while this builder
        # claims: it never claims a build of its own before holding the build's secrets.
        self._starting = threading.Lock()
        self._jobs: dict[str, tuple[Job, Future[None]]] = {}
        #: Secrets of builds started here and not yet claimed (pinned to this builder).
        self._secrets: dict[str, dict[str, bytes]] = {}
        self._followers = following.LogHub(deps.store)
        self._stopping = threading.Event()  # no more claims
        self._closed = threading.Event()  # no more renewals (every job has ended)
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []
        self._engine_was_up = True

    @property
    def id(self) -> str:
        """This builder's name on the queue."""
        return self._config.builder_id

    def serve_queue(self) -> None:
        """Starts taking builds from the rack's queue (up to `max_builds` at once) and
        keeping their leases, and sweeping for builds other builders lost."""
        loops = [("claim", self._claim_loop), ("lease", self._lease_loop)]
        if self._config.gc_interval > 0:
            loops.append(("gc", self._gc_loop))
        for name, target in loops:
            thread = threading.Thread(target=target, name=f"{name}-{self.id}", daemon=True)
            thread.start()
            self._threads.append(thread)

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
        """Ends the builds this builder's id held before it started (it runs none of them
        now) and every build another builder lost, waiting up to `timeout` seconds for
        metadata to answer."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                ids = self._deps.store.expire_builds(owner=self.id)
                ids += self._deps.store.expire_builds()
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
        """Records a build on the rack's queue; returns the record (status created) at
        once. Any builder may claim it, except a build with secrets: those stay with this
        builder, which alone holds them (in memory)."""
        types.check_app_name(req.app)
        if not req.archive:
            raise InvalidArgument("an archive is required")
        types.check_secrets(req.secrets)
        if not 0 <= req.timeout <= types.MAX_TIMEOUT_SECONDS:
            raise InvalidArgument("invalid timeout: more than 0 and at most 168h, or 0 for 60m")
        if req.secrets and self._config.engine_builder == types.LEGACY:
            raise InvalidArgument(
                "build secrets need BuildKit: this rack builds with the legacy builder"
            )
        store = self._deps.store
        self._deps.sources.stat(req.archive)  # before anything is recorded
        try:
            store.get_app(req.app)
        except NotFound:
            raise NotFound.no_app(req.app) from None  # nothing creates an app implicitly
        with self._starting:
            build = store.create_build(
                req.app,
                description=req.description,
                git_sha=req.git_sha,
                archive=req.archive,
                request=types.request_json(req),
                timeout=req.timeout,
                pinned=self.id if req.secrets else "",
            )
            if req.secrets:
                with self._lock:
                    self._secrets[build.id] = dict(req.secrets)
        self._wake.set()
        BuildLogAdapter(log, {"build": build.id}).info("queued for %s", req.app)
        return build

    def _claim_loop(self) -> None:
        while not self._stopping.is_set():
            claimed = False
            try:
                claimed = self._claim_one()
            except SlipwayError as err:
                log.warning("cannot take builds from the queue: %s", err)
            except Exception:  # the loop outlives any one failure
                log.exception("taking a build from the queue")
            if not claimed:
                self._wake.wait(self._config.claim_interval)
                self._wake.clear()

    def _claim_one(self) -> bool:
        """Claims and starts one build when a slot is free; whether it did."""
        if self._free_slots() <= 0:
            return False
        if not self._engine_up():
            return False
        with self._starting:
            if self._stopping.is_set():
                return False
            claim = self._deps.store.claim_build(self.id)
            if claim is None:
                return False
            try:
                self._run(claim)
            except Exception as err:
                # Claimed but not started: end it rather than leave it to the sweep.
                log.exception("[%s] could not start the claimed build", claim.build.id)
                reason = f"the builder could not start it: {type(err).__name__}"
                self._deps.store.update_build(
                    claim.build.id,
                    lease=claim.lease,
                    status=types.FAILED,
                    reason=reason,
                    ended=self._clock(),
                )
            return True

    def _engine_up(self) -> bool:
        """Whether this builder's engine answers: a builder whose engine is down takes
        no builds (the others do), and says so once."""
        up = self._deps.engine.answers(timeout=5.0)
        if up != self._engine_was_up:
            if up:
                log.info("the Docker engine answers again: taking builds")
            else:
                log.warning("the Docker engine does not answer: taking no builds until it does")
            self._engine_was_up = up
        return up

    def _free_slots(self) -> int:
        with self._lock:
            return self._config.max_builds - len(self._jobs)

    def _run(self, claim: types.Claim) -> None:
        build_id = claim.build.id
        with self._lock:
            secrets = self._secrets.pop(build_id, {})
        wanted = [s for s in claim.secrets if s not in secrets]
        request = dataclasses.replace(claim.request, secrets=secrets)
        redact = Redactor(secrets.values())
        store = self._deps.store
        job = Job(
            build=claim.build,
            request=request,
            log=LogWriter(
                store,
                build_id,
                give_up=self._config.store_retry_seconds,
                redact=redact,
                lease=claim.lease,
            ),
            redact=redact,
            lease=claim.lease,
            deadline=self._clock() + claim.timeout,
            timeout=claim.timeout,
            renewed=time.monotonic(),
        )
        if wanted:
            job.abort(types.secrets_lost_reason(self.id))
        BuildLogAdapter(log, {"build": build_id}).info("claimed (attempt %d)", claim.lease.attempt)
        with self._lock:
            future = self._pool.submit(self._worker.run, job)
            self._jobs[build_id] = (job, future)
        future.add_done_callback(lambda _: self._forget(build_id))

    def _lease_loop(self) -> None:
        """Renews the leases of this builder's builds, stops those that are gone
        (cancelled through any builder, ended by another) or past their deadline, and
        sweeps for builds other builders lost."""
        next_sweep = 0.0
        while not self._closed.wait(self._config.renew_interval):
            with self._lock:
                jobs = [job for job, _ in self._jobs.values()]
            for job in jobs:
                try:
                    self._renew(job)
                except Exception:  # one build's trouble never stops the others' renewals
                    log.exception("[%s] renewing its lease", job.id)
            now = time.monotonic()
            if now >= next_sweep:
                next_sweep = now + self._config.sweep_interval
                try:
                    self._deps.store.expire_builds()
                    self._drop_stale_secrets()
                except SlipwayError as err:
                    log.warning("cannot sweep the queue: %s", err)
                except Exception:
                    log.exception("sweeping the queue")

    def collect_garbage(self, grace: float | None = None, automatic: bool = False) -> types.Garbage:
        """Has the archive service remove the archives no build names and the blobs no
        kept archive names, older than `grace` seconds (None: the configured default)."""
        if grace is not None and not 0 <= grace < float("inf"):
            raise InvalidArgument("the grace period must be 0 seconds or more")
        keep = list(self._deps.store.list_archives())
        return self._deps.sources.collect_garbage(
            keep, self._config.gc_grace if grace is None else grace, automatic
        )

    def _gc_loop(self) -> None:
        """Asks for the daily collection now and then (the archive service skips it when
        one ran in the last day)."""
        while not self._stopping.wait(self._config.gc_interval):
            try:
                done = self.collect_garbage(automatic=True)
                if not done.skipped:
                    log.info(
                        "garbage: removed %d objects (%d bytes)", done.removed, done.removed_bytes
                    )
            except SlipwayError as err:
                log.warning("cannot collect garbage: %s", err)
            except Exception:
                log.exception("collecting garbage")

    def _drop_stale_secrets(self) -> None:
        """Forgets the secrets of builds that ended before this builder claimed them
        (cancelled or expired while queued)."""
        with self._lock:
            waiting = list(self._secrets)
        for build_id in waiting:
            try:
                ended = self._deps.store.get_build(build_id).terminal
            except NotFound:
                ended = True
            if ended:
                with self._lock:
                    self._secrets.pop(build_id, None)

    def _renew(self, job: Job) -> None:
        # A finishing job is renewed too: its last writes (release, status) carry the
        # lease, and may take a while when metadata is slow.
        if job.lease is None or job.released:
            return
        logger = BuildLogAdapter(log, {"build": job.id})
        now = time.monotonic()
        if (
            job.deadline
            and self._clock() >= job.deadline
            and not job.abort_reason
            and not job.finished
        ):
            logger.info("timed out")
            job.stopping_since = now
            # Stopping the engine's work may take a while: never on this thread.
            self._aside(job.abort, types.timed_out_reason(job.timeout))
        elif job.stopping_since and now - job.stopping_since > STOP_GRACE_SECONDS:
            # Told to stop a minute ago and still not done (stuck in a call that cannot
            # be cancelled): record its end here, under the lease, and let it go.
            logger.warning("did not stop within %.0fs: ending it", STOP_GRACE_SECONDS)
            self._end_stuck(job)
            return
        try:
            held, build = self._deps.store.renew_lease(job.id, job.lease)
        except SlipwayError as err:
            logger.warning("renewing its lease: %s", err)
            if now - job.renewed > types.LEASE_EXPIRY_SECONDS:
                # Its lease has expired by now: another builder ends the build; this one
                # stops the engine's work rather than build for nobody.
                logger.warning("lease not renewed for %.0fs: stopping it", now - job.renewed)
                self._release(job)
            return
        job.renewed = now
        if not held:
            logger.info("lease gone (the build is %s): stopping it", build.status)
            self._release(job)

    def _release(self, job: Job) -> None:
        job.released = True
        self._aside(job.release)

    def _end_stuck(self, job: Job) -> None:
        reason = job.abort_reason or types.timed_out_reason(job.timeout)
        try:
            self._deps.store.update_build(
                job.id, lease=job.lease, status=types.FAILED, reason=reason, ended=self._clock()
            )
        except SlipwayError as err:
            log.warning("[%s] recording its end: %s", job.id, err)
        self._release(job)

    @staticmethod
    def _aside(action: Callable[..., None], *args: object) -> None:
        threading.Thread(target=action, args=args, name="stop-build", daemon=True).start()

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
            archive_address=self._announced(self._config.archive_address),
            metadata_address=self._announced(self._config.metadata_address),
            registry_address=self._announced(self._config.registry_address),
            registry_host=registry_host,
            builder=self.id,
            engine=self._config.docker_host,
            running=tuple(self.running()),
        )

    def _announced(self, address: str) -> str:
        """`address` as other machines reach it: at the advertised name, when there is one."""
        advertise = self._config.advertise
        if not advertise:
            return address
        host = f"[{advertise}]" if ":" in advertise else advertise
        return f"{host}:{address.rpartition(':')[2]}"

    def running(self) -> list[str]:
        """The builds this builder runs now, oldest first."""
        with self._lock:
            jobs = [job for job, _ in self._jobs.values() if not job.finished]
        return [job.id for job in sorted(jobs, key=lambda job: job.build.created)]

    def stop_claiming(self) -> None:
        """Takes no more builds from the queue (the first step of a shutdown)."""
        self._stopping.set()
        self._wake.set()

    def shutdown(self) -> None:
        """Stops taking builds and stops every build it runs (failed, `builder
        stopped`); builds still queued stay for the other builders. Leases are renewed
        until the last job has ended."""
        self.stop_claiming()
        claimers = [t for t in self._threads if t.name.startswith("claim-")]
        for thread in claimers:
            thread.join(30)  # a claim in flight lands before the jobs are stopped
        with self._lock:
            entries = list(self._jobs.values())
        for job, future in entries:
            if future.cancel():
                self._record_stopped(job.id, job.lease)
            else:
                job.abort(STOP_REASON)
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._closed.set()
        for thread in self._threads:
            thread.join(10)

    def _record_stopped(self, build_id: str, lease: types.Lease | None) -> None:
        try:
            self._deps.store.update_build(
                build_id, lease=lease, status=types.FAILED, reason=STOP_REASON, ended=self._clock()
            )
        except SlipwayError as err:
            log.warning("[%s] could not record the stop: %s", build_id, err)

    def _forget(self, build_id: str) -> None:
        with self._lock:
            self._jobs.pop(build_id, None)


def _already(build: types.Build) -> FailedPrecondition:
    return FailedPrecondition(f"build {build.id} is already {build.status}")
