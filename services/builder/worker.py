"""The build pipeline: extract, read the manifest, build or pull each service, push, and
record the release; or record why it failed. One `Job` per build carries its state."""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from pathlib import Path

from client.kernel import entries, manifest, types
from client.kernel.entries import Limits, Source
from client.kernel.errors import (
    Cancelled,
    FailedPrecondition,
    NotFound,
    SlipwayError,
)
from client.kernel.streams import iter_chunks, reader
from client.kernel.types import error_lines, one_line
from services.builder import dockerfile
from services.builder.config import Config
from services.builder.extract import extract
from services.builder.logwriter import LogWriter, retrying
from services.builder.seams import BuildSpec, CancelScope, Deps, EngineError
from services.common.docker.fallback import use_local_copy
from services.common.logs import BuildLogAdapter

log = logging.getLogger(__name__)

CANCELLED_LINE = "Build cancelled"
#: The largest Dockerfile read, in bytes.
MAX_DOCKERFILE = 4 * 1024 * 1024


@dataclass
class Job:
    """A build in this builder's hands. The lock orders the worker recording an outcome
    against a cancel request: whichever takes it first decides the build's status."""

    build: types.Build
    request: types.BuildRequest
    log: LogWriter
    scope: CancelScope = field(default_factory=CancelScope)
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: A user cancelled it; the canceller records the status.
    cancelled: bool = False
    #: The worker is recording (or has recorded) its outcome; too late to cancel.
    finished: bool = False
    #: Why the builder itself stopped it (shutdown), recorded as the failure reason.
    abort_reason: str = ""
    #: Masks the build's secrets in what it records (the log writer applies it too).
    redact: Callable[[str], str] = field(default=lambda text: text, repr=False)
    #: The build makes more than one image: engine lines carry their service's name.
    prefixed: bool = False
    #: The lease this builder holds on the build; every write of the job carries it.
    lease: types.Lease | None = None
    #: When (clock seconds) the build is stopped as timed out, and its time limit.
    deadline: float = 0.0
    timeout: float = types.DEFAULT_TIMEOUT_SECONDS
    #: When (monotonic) its lease was last renewed; when it was told to stop (timed
    #: out); whether it was let go (its lease gone): kept by the builder's lease loop.
    renewed: float = 0.0
    stopping_since: float = 0.0
    released: bool = False

    def sink(self, service: str) -> Callable[[str], None]:
        """Where `service`'s engine lines go: the log, prefixed `service | ` when the build
        makes more than one image (SPEC §3)."""
        if not self.prefixed:
            return self.log.line
        return lambda text: self.log.line(f"{service} | {text}")

    @property
    def id(self) -> str:
        return self.build.id

    def request_cancel(self) -> bool:
        """Marks the job cancelled, ends its log with `Build cancelled` and stops its engine
        work; False when it has finished."""
        with self.lock:
            if self.finished:
                return False
            self.cancelled = True
        # The log is sealed first: the worker's own close, once its work stops, is then a
        # no-op, and no straggling engine line lands after this one. The engine work stops
        # before the log is stored, which may wait for a busy store.
        self.log.seal([CANCELLED_LINE])
        self.scope.cancel()
        self.log.drain()
        return True

    def abort(self, reason: str) -> None:
        """Stops the job; it fails with `reason`."""
        self.abort_reason = reason
        self.scope.cancel()

    def release(self) -> None:
        """Stops the job because its lease is gone (cancelled or ended elsewhere): the
        engine work stops and nothing more is written; what is recorded stays."""
        with self.lock:
            if self.finished:
                return
            self.cancelled = True
        self.log.seal()
        self.scope.cancel()


@dataclass(frozen=True)
class Step:
    """One piece of engine work: a pull, or a build shared by identical services."""

    services: tuple[str, ...]
    image: str = ""
    path: str = "."
    spec: BuildSpec | None = None
    #: The images the build's stages start from, pulled before a BuildKit build.
    bases: tuple[str, ...] = ()


class Worker:
    """Runs jobs to a terminal status."""

    def __init__(self, config: Config, deps: Deps, clock: Callable[[], float] = time.time):
        self._config = config
        self._deps = deps
        self._clock = clock

    def run(self, job: Job) -> None:
        logger = BuildLogAdapter(log, {"build": job.id})
        scratch = self._config.scratch_dir / job.id
        try:
            if self._begin(job):
                logger.info("building %s from archive %s", job.request.app, job.request.archive)
                self._build(job, scratch / "src", logger)
        except Exception as err:  # noqa: BLE001 - every failure is recorded on the build
            self._fail(job, err, logger)
        finally:
            job.log.close()
            shutil.rmtree(scratch, ignore_errors=True)

    def _begin(self, job: Job) -> bool:
        if job.cancelled:
            return False
        if job.lease is not None:
            return True  # the claim made it running
        try:
            self._deps.store.update_build(job.id, status=types.RUNNING, started=self._clock())
        except FailedPrecondition:
            return False  # it reached a terminal status (cancelled) while queued
        return True

    def _build(self, job: Job, src: Path, logger: logging.LoggerAdapter) -> None:  # type: ignore[type-arg]
        req, store = job.request, self._deps.store
        source = self._source(job, src, logger)
        job.scope.check()
        env = self._latest_env(req.app)
        parsed = manifest.load(source, req.manifest or manifest.DEFAULT_MANIFEST, env)
        store.update_build(job.id, lease=job.lease, manifest=parsed.text)
        steps = plan(parsed, source, req, env)
        unused = unconsumed(req.build_args, steps)
        if unused:  # said as Docker says it; the build goes on without them
            job.log.line(f"[Warning] One or more build-args [{' '.join(unused)}] were not consumed")
        images = self._produce(job, steps)
        refs: dict[str, str] = {}
        for service in parsed.services:
            job.scope.check()
            refs[service.name] = self._push(job, images[service.name], service.name)
        entrypoint = self._entrypoint(parsed, images)
        self._complete(job, parsed, entrypoint)
        logger.info("complete: %s", ", ".join(refs.values()) or "no services")

    def _source(self, job: Job, src: Path, logger: logging.LoggerAdapter) -> Source:  # type: ignore[type-arg]
        """The build's source. A context (an incremental upload's entry list) is read from
        the blob store as the engine asks for its files, never written to disk; an archive
        of the older kind (one tarball) is extracted into `src`, safely."""
        limits = Limits(self._config.max_extract_bytes, self._config.max_extract_files)
        sources = self._deps.sources
        stream = reader(_checked(sources.download(job.request.archive), job.scope))
        if entries.is_document(stream.peek(len(entries.MAGIC))):
            tree = entries.Tree(entries.decode(entries.read_lines(stream)), limits)
            logger.info("context of %d entries, %d bytes of files", len(tree), tree.bytes)
            return entries.TreeSource(tree, sources.read_blobs)
        files = extract(iter_chunks(stream), src, limits)
        logger.info("extracted %d entries", files)
        return entries.DiskSource(src)

    def _latest_env(self, app: str) -> dict[str, str]:
        releases = self._deps.store.list_releases(app, limit=1)
        return dict(releases[0].env) if releases else {}

    def _produce(self, job: Job, steps: list[Step]) -> dict[str, str]:
        """Runs the steps, independent ones in parallel; returns each service's image id.
        The first failure stops the others and is raised."""
        images: dict[str, str] = {}
        errors: list[Exception] = []
        job.prefixed = len(steps) > 1
        workers = max(1, min(self._config.build_concurrency, len(steps)))
        with ThreadPoolExecutor(workers, thread_name_prefix=f"step-{job.id}") as pool:
            futures = {pool.submit(self._step, job, step): step for step in steps}
            for future in as_completed(futures):
                try:
                    image = future.result()
                except Exception as err:  # noqa: BLE001 - re-raised below
                    errors.append(err)
                    job.scope.cancel()  # stop the sibling steps
                    continue
                for service in futures[future].services:
                    images[service] = image
        if errors:
            real = [e for e in errors if not isinstance(e, Cancelled)]
            raise (real or errors)[0]
        return images

    def _step(self, job: Job, step: Step) -> str:
        job.scope.check()
        engine = self._deps.engine
        say = job.sink(step.services[0] if step.services else "")
        if step.spec is None:
            job.log.line(f"Running: docker pull {step.image}")
            return self._pull(job, step.image, say)
        job.log.line(f"Building: {step.path}")
        spec = step.spec
        if self._config.engine_builder != types.LEGACY:
            spec = self._prepare(job, step, spec, say)
        return engine.build(spec, say, job.scope)

    def _pull(self, job: Job, image: str, say: Callable[[str], None]) -> str:
        engine = self._deps.engine
        try:
            return engine.pull(image, say, job.scope)
        except EngineError as err:
            return use_local_copy(image, err, engine.image_id, say)

    def _prepare(
        self, job: Job, step: Step, spec: BuildSpec, say: Callable[[str], None]
    ) -> BuildSpec:
        """What a BuildKit build needs first. Its base images are pulled through the
        engine, with the rack registry's credentials (BuildKit without a session has
        none), unless the engine has them already: it then uses its local copies. The
        image this app's service got from the last release is pulled from the rack
        registry as `cache-from`, so a builder that never built the app gets cache hits
        from its inline cache. The build's secrets ride along."""
        engine = self._deps.engine
        registry = self._deps.pusher.registry_host()
        for base in step.bases:
            job.scope.check()
            if base.startswith(f"{registry}/") or engine.image_id(base) is None:
                job.log.line(f"Running: docker pull {base}")
                try:
                    self._pull(job, base, say)
                except EngineError as err:
                    # BuildKit may still resolve it (a public registry needs no login),
                    # and otherwise fails the build with its own words.
                    say(f"Pull failed ({one_line(str(err))}); the build resolves {base} itself")
        cache_from: tuple[str, ...] = ()
        previous = self._previous_image(job, step)
        if previous and not spec.nocache:
            try:
                if engine.image_id(previous) is None:
                    engine.pull(previous, lambda _text: None, job.scope)
                cache_from = (previous,)
            except (EngineError, NotFound) as err:
                log.info("[%s] no cache from %s: %s", job.id, previous, one_line(str(err)))
        return replace(spec, cache_from=cache_from, secrets=dict(job.request.secrets))

    def _previous_image(self, job: Job, step: Step) -> str:
        """The rack registry's image of the step's first service in the app's latest
        release, or empty when the app has none."""
        try:
            releases = self._deps.store.list_releases(job.request.app, limit=1)
        except SlipwayError as err:
            log.info("[%s] no previous release to take cache from: %s", job.id, err)
            return ""
        if not releases or not releases[0].build or not step.services:
            return ""
        registry = self._deps.pusher.registry_host()
        return f"{registry}/{job.request.app}:{step.services[0]}.{releases[0].build}"

    def _push(self, job: Job, image: str, service: str) -> str:
        tag = f"{service}.{job.id}"
        events = self._deps.pusher.push(image, job.request.app, tag)
        reference = ""
        tenths: dict[str, int] = {}  # how far each big layer's push was last shown
        try:
            for event in events:
                job.scope.check()
                if isinstance(event, types.PushResult):
                    reference = event.reference
                elif event.status == "Pushing":
                    line = _push_progress(event, tenths)
                    if line:
                        job.sink(service)(line)
                elif event.text:
                    if event.text.startswith("Running:"):
                        job.log.line(event.text)  # the builder's own line: no prefix
                    else:
                        job.sink(service)(event.text)
        finally:
            close = getattr(events, "close", None)
            if close is not None:
                close()
        return reference

    def _entrypoint(self, parsed: manifest.Manifest, images: Mapping[str, str]) -> str:
        """The entrypoint of the first built service's image, else of the first service's."""
        built = [s for s in parsed.services if not s.image] or list(parsed.services)
        if not built:
            return ""
        info = self._deps.engine.inspect(images[built[0].name])
        return shlex.join(info.entrypoint) if info.entrypoint else ""

    def _complete(self, job: Job, parsed: manifest.Manifest, entrypoint: str) -> None:
        store, req = self._deps.store, job.request
        job.log.sync()  # every line is stored before the status turns terminal (below)
        with job.lock:
            if job.cancelled:
                raise Cancelled("build cancelled")
            job.finished = True
            job.log.sync()  # what came since: normally nothing, so the lock is brief
            if job.lease is not None:
                # One write: the release, and the build complete with it, both or neither
                # (a cancel or sweep that got in first leaves no release).
                store.create_release(
                    req.app,
                    build=job.id,
                    inherit_env=True,  # the env as it is now, not as the build began
                    manifest=parsed.text,
                    description=req.description,
                    lease=job.lease,
                    complete=types.Completion(entrypoint, self._clock()),
                )
                return
            release = store.create_release(
                req.app,
                build=job.id,
                inherit_env=True,
                manifest=parsed.text,
                description=req.description,
            )
            ended = self._clock()

            def record() -> None:
                store.update_build(
                    job.id,
                    status=types.COMPLETE,
                    release=release.id,
                    entrypoint=entrypoint,
                    ended=ended,
                )

            # The release exists now: a passing refusal must not turn the build failed.
            retrying(record, self._config.store_retry_seconds)

    def _fail(self, job: Job, err: Exception, logger: logging.LoggerAdapter) -> None:  # type: ignore[type-arg]
        if isinstance(err, Cancelled) and job.abort_reason:
            message = job.abort_reason
        else:
            message = str(err) or type(err).__name__
        message = job.redact(message)
        reason = one_line(message)
        with job.lock:
            if job.cancelled:
                logger.info("cancelled")
                return
            job.finished = True  # from here a cancel is too late; the rest is unlocked
        if not isinstance(err, SlipwayError):
            logger.error("build failed unexpectedly", exc_info=err)
        else:
            logger.info("failed: %s", reason)
        job.log.close(error_lines(message))
        ended = self._clock()

        def record() -> None:
            self._deps.store.update_build(
                job.id, lease=job.lease, status=types.FAILED, reason=reason, ended=ended
            )

        def retry(why: SlipwayError) -> None:
            logger.warning("recording the failure: %s; retrying", why)

        try:
            retrying(record, self._config.store_retry_seconds, retry)
        except FailedPrecondition:
            pass  # a terminal status is already recorded
        except SlipwayError as record_err:
            logger.error("could not record the failure: %s", record_err)


def plan(
    parsed: manifest.Manifest, source: Source, req: types.BuildRequest, env: Mapping[str, str]
) -> list[Step]:
    """The engine work the manifest needs, one step per distinct pull or build."""
    steps: dict[tuple[object, ...], Step] = {}
    for service in parsed.services:
        if service.image:
            key: tuple[object, ...] = ("pull", service.image)
            step = Step(services=(), image=service.image)
        else:
            path = os.path.normpath(service.path)
            dockerfile_path = os.path.normpath(os.path.join(path, service.dockerfile))
            raw = entries.read_file(source, dockerfile_path, MAX_DOCKERFILE)
            text = raw.decode("utf-8", errors="replace")
            args = dockerfile.select_args(dockerfile.declared_args(text), req.build_args, env)
            target = (
                "development"
                if req.development and dockerfile.has_stage(text, "development")
                else ""
            )
            key = ("build", path, dockerfile_path, tuple(sorted(args.items())), target)
            spec = BuildSpec(
                source=source,
                context=path,
                dockerfile=os.path.relpath(dockerfile_path, path),
                buildargs=args,
                target=target,
                nocache=req.no_cache,
            )
            bases = tuple(dockerfile.base_images(text, {**args}))
            step = Step(services=(), path=service.path, spec=spec, bases=bases)
        existing = steps.get(key, step)
        steps[key] = Step(
            services=(*existing.services, service.name),
            image=existing.image,
            path=existing.path,
            spec=existing.spec,
            bases=existing.bases,
        )
    return list(steps.values())


def unconsumed(build_args: Mapping[str, str], steps: Iterable[Step]) -> list[str]:
    """The `--build-args` names, sorted, that no Dockerfile of the build declares: each
    build step passes the declared ones it was given (`plan`), and nothing else."""
    passed = {name for step in steps if step.spec is not None for name in step.spec.buildargs}
    return sorted(set(build_args) - passed)


def _checked(chunks: Iterable[bytes], scope: CancelScope) -> Iterator[bytes]:
    """The chunks, stopping with Cancelled as soon as the scope is cancelled."""
    for chunk in chunks:
        scope.check()
        yield chunk


#: Layers smaller than this push too fast to need progress lines.
PUSH_PROGRESS_BYTES = 8 * 1024 * 1024


def _push_progress(event: types.PushProgress, tenths: dict[str, int]) -> str:
    """The event's line (`<layer>: Pushing 120MB/315MB`) each time a big layer's push passes
    another tenth of its size; empty otherwise (the engine reports every few kilobytes)."""
    if event.total < PUSH_PROGRESS_BYTES or not event.layer:
        return ""
    tenth = min(event.current * 10 // event.total, 9)
    if tenth <= tenths.get(event.layer, 0):
        return ""
    tenths[event.layer] = tenth
    return event.text
