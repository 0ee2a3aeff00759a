"""The metadata core: apps, builds, releases and build logs, as `client.kernel.types` dataclasses.

Every public method runs on a pooled connection of its own. Rules that must hold under
concurrency are enforced by the database: a terminal status is guarded by a conditional
UPDATE, and log offsets come from a counter on the build row that each append increments
(which locks the row, or the SQLite database, until the lines are in); an environment
change holds the app row while it reads the latest release and writes the next one.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Concatenate, ParamSpec, TypeVar

import peewee
from playhouse.pool import MaxConnectionsExceeded

from client.kernel.environment import apply_change
from client.kernel.errors import (
    AlreadyExists,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
)
from client.kernel.types import (
    BUILD_STATUSES,
    COMPLETE,
    CREATED,
    DEFAULT_TIMEOUT_SECONDS,
    FAILED,
    LEASE_EXPIRY_SECONDS,
    QUEUE_EXPIRY_SECONDS,
    RUNNING,
    TERMINAL,
    App,
    Build,
    Claim,
    Completion,
    Lease,
    LogLine,
    Release,
    check_app_name,
    check_reason,
    format_duration,
    lost_reason,
    new_id,
    request_from_json,
    secret_ids,
    secrets_lost_reason,
)
from services.metadata import models
from services.metadata.config import redact
from services.metadata.models import AppRow, BuildRow, LogRow, ReleaseRow
from services.metadata.notifier import Notifier

log = logging.getLogger(__name__)

DEFAULT_LIMIT = 10
# Lines read per query while streaming a log.
LOG_BATCH = 500
# How often a follower looks again when no change was signalled in this process
# (another process may write to the same PostgreSQL database).
POLL_SECONDS = 0.5
ID_ATTEMPTS = 20
ACTIVE = (CREATED, RUNNING)
# The notifier key a new queued build signals, for claimers waiting in this process.
QUEUE = "queue"
# Build fields UpdateBuild may change: id, app and created are fixed at creation, and the
# builder is the queue's to set (claim_build leases the build to it).
FIXED = frozenset({"id", "app", "created", "builder"})
UPDATABLE = frozenset(f.name for f in dataclasses.fields(Build)) - FIXED
TIME_FIELDS = frozenset({"started", "ended"})

P = ParamSpec("P")
T = TypeVar("T")
Row = TypeVar("Row", BuildRow, ReleaseRow)


BUILD_ID = re.compile(r"^B[A-Z]{10}\Z")


def _on_connection(
    method: Callable[Concatenate[MetadataStore, P], T],
) -> Callable[Concatenate[MetadataStore, P], T]:
    """Runs the method on a pooled connection; database outages become Unavailable."""

    @functools.wraps(method)
    def wrapper(self: MetadataStore, *args: P.args, **kwargs: P.kwargs) -> T:
        self._check_file()
        try:
            with self.database.connection_context():
                return method(self, *args, **kwargs)
        except (peewee.OperationalError, peewee.InterfaceError, MaxConnectionsExceeded) as err:
            if _is_full(err):
                raise ResourceExhausted(
                    "no space left on device for the metadata database"
                ) from err
            raise Unavailable(f"database unavailable at {self.where}: {_first_line(err)}") from err
        except peewee.DataError as err:
            # A value longer than its column (PostgreSQL enforces lengths; SQLite does not).
            raise InvalidArgument(
                f"a value is too long for the database: {_first_line(err)[:120]}"
            ) from None
        except ValueError as err:
            # psycopg2 refuses a NUL in any text it sends (an id, a field); SQLite keeps it.
            if "NUL" in str(err):
                raise InvalidArgument("text must not contain NUL characters") from None
            raise

    return wrapper


def _is_full(err: BaseException) -> bool:
    """SQLite's and PostgreSQL's ways of saying the disk is full."""
    text = str(err).lower()
    return any(m in text for m in ("database or disk is full", "no space left on device"))


class MetadataStore:
    """A rack's records in one SQL database (SQLite or PostgreSQL)."""

    def __init__(
        self,
        database: peewee.Database,
        where: str = "the database",
        notifier: Notifier | None = None,
        poll_seconds: float = POLL_SECONDS,
    ) -> None:
        """Binds the models to `database` (one database per process) and creates any
        missing table; `where` names it in error messages."""
        models.bind(database)
        self.database = database
        self.where = where
        self._notifier = notifier or Notifier()
        self._poll_seconds = poll_seconds
        # A SQLite file deleted or replaced under a running service would take writes
        # into an unlinked inode and lose them: its identity is checked on every call.
        self._file = database.database if isinstance(database, peewee.SqliteDatabase) else ""
        self._identity = _identity(self._file) if self._file else None

    def _check_file(self) -> None:
        if self._file and _identity(self._file) != self._identity:
            raise Unavailable(
                f"database unavailable at {self.where}: the database file was removed or "
                "replaced while the service ran; restart the rack"
            )

    @classmethod
    def open(cls, url: str) -> MetadataStore:
        """The store on the database at `url`; Unavailable when it cannot be opened."""
        where = redact(url)
        try:
            return cls(models.open_database(url), where)
        except (OSError, ValueError, peewee.PeeweeException) as err:
            raise Unavailable(f"cannot open the database at {where}: {_first_line(err)}") from err

    def close(self) -> None:
        """Ends every follow and closes the pooled connections."""
        self._notifier.close()
        close_all = getattr(self.database, "close_all", None)
        if close_all is not None:
            close_all()
        elif not self.database.is_closed():
            self.database.close()

    # Apps.

    @_on_connection
    def create_app(self, name: str, exist_ok: bool = False) -> App:
        check_app_name(name)
        with self.database.atomic():
            inserted = (
                AppRow.insert(name=name, created=time.time())
                .on_conflict_ignore()
                .as_rowcount()
                .execute()
            )
            row = AppRow.get_by_id(name)
        if not inserted and not exist_ok:
            raise AlreadyExists(f"app already exists: {name}")
        return _app(row)

    @_on_connection
    def get_app(self, name: str) -> App:
        return _app(self._app_row(name))

    @_on_connection
    def list_apps(self) -> list[App]:
        return [_app(row) for row in AppRow.select().order_by(AppRow.name)]

    @_on_connection
    def delete_app(self, name: str) -> App:
        """Removes the app with its builds, releases and logs (their archives go with the
        next garbage collection); FailedPrecondition while one of its builds is queued or
        running."""
        check_app_name(name)
        with self.database.atomic():
            self._lock_app(name)
            row = self._app_row(name)
            busy = (
                BuildRow.select(BuildRow.id)
                .where(BuildRow.app == name, BuildRow.status.not_in(sorted(TERMINAL)))
                .first()
            )
            if busy is not None:
                raise FailedPrecondition(
                    f"app {name} has a build under way ({busy.id}); cancel it first"
                )
            builds = BuildRow.select(BuildRow.id).where(BuildRow.app == name)
            LogRow.delete().where(LogRow.build.in_(builds)).execute()
            ReleaseRow.delete().where(ReleaseRow.app == name).execute()
            BuildRow.delete().where(BuildRow.app == name).execute()
            AppRow.delete().where(AppRow.name == name).execute()
        log.info("deleted app %s", name)
        return _app(row)

    def _app_row(self, name: str) -> AppRow:
        check_app_name(name)
        row = AppRow.get_or_none(AppRow.name == name)
        if row is None:
            raise NotFound.of("app", name)
        return row

    # Builds.

    @_on_connection
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
    ) -> Build:
        """Records a build, status created: queued, when `request` says how to build it,
        for any builder (or only `pinned`) to claim. The app row is locked meanwhile, so a
        concurrent `delete_app` either sees this build or deletes the app first."""
        check_app_name(app)
        with self.database.atomic():
            self._lock_app(app, missing=_no_app)
            build_id = _insert_with_new_id(
                BuildRow,
                "build",
                app=app,
                status=CREATED,
                description=description,
                manifest=manifest,
                git_sha=git_sha,
                archive=archive,
                created=time.time(),
                request=request,
                timeout=max(0.0, float(timeout)),
                pinned=pinned,
            )
        self._notifier.changed(QUEUE)
        return _build(BuildRow.get(BuildRow.id == build_id))

    # The queue.

    @_on_connection
    def claim_build(self, builder: str) -> Claim | None:
        """Takes the oldest queued build `builder` may run (unpinned, or pinned to it):
        running, leased to `builder` under a new attempt. Each queued build is claimed once
        however many builders ask at the same time: PostgreSQL skips rows another claim
        has locked (`FOR UPDATE SKIP LOCKED`), SQLite's write transaction is one at a
        time, and the UPDATE itself only takes a build still created."""
        if not builder:
            raise InvalidArgument("a builder id is required")
        now = time.time()
        for _ in range(ID_ATTEMPTS):
            with self.database.atomic():
                query = (
                    BuildRow.select()
                    .where(
                        BuildRow.status == CREATED,
                        BuildRow.request != "",
                        BuildRow.pinned.in_(["", builder]),
                    )
                    .order_by(BuildRow.seq)
                    .limit(1)
                )
                if self.database.for_update:
                    query = query.for_update(skip_locked=True)
                row = query.first()
                if row is None:
                    return None
                attempt = row.attempt + 1
                taken = (
                    BuildRow.update(
                        status=RUNNING,
                        owner=builder,
                        attempt=attempt,
                        renewed=now,
                        started=now,
                    )
                    .where(BuildRow.id == row.id, BuildRow.status == CREATED)
                    .execute()
                )
                if not taken:
                    continue  # cancelled in between: look again
                row = self._build_row(row.id)
            self._notifier.changed(row.id)
            return Claim(
                build=_build(row),
                request=request_from_json(row.request),
                lease=Lease(builder, attempt),
                timeout=row.timeout or DEFAULT_TIMEOUT_SECONDS,
                secrets=tuple(secret_ids(row.request)),
            )
        return None

    @_on_connection
    def renew_lease(self, build_id: str, lease: Lease) -> tuple[bool, Build]:
        """Renews `lease` on a running build; whether it is still held, and the build (a
        cancelled or failed one tells its holder to stop)."""
        updated = (
            BuildRow.update(renewed=time.time())
            .where(BuildRow.id == build_id, *_held(lease))
            .execute()
        )
        return bool(updated), _build(self._build_row(build_id))

    @_on_connection
    def expire_builds(
        self,
        lease_seconds: float = LEASE_EXPIRY_SECONDS,
        queue_seconds: float = QUEUE_EXPIRY_SECONDS,
    ) -> list[tuple[str, str]]:
        """Ends, failed, every running build whose lease was last renewed more than
        `lease_seconds` ago (`builder lost: …`) and every build queued for more than
        `queue_seconds` (`not started within 1h`), each with its reason as the log's last
        line; returns (id, reason) of each, oldest first."""
        now = time.time()
        stale = (
            BuildRow.select(BuildRow.id, BuildRow.owner, BuildRow.attempt)
            .where(BuildRow.status == RUNNING, BuildRow.renewed < now - lease_seconds)
            .order_by(BuildRow.seq)
        )
        late = (
            BuildRow.select(BuildRow.id)
            .where(BuildRow.status == CREATED, BuildRow.created < now - queue_seconds)
            .order_by(BuildRow.seq)
        )
        ended: list[tuple[str, str]] = []
        for row in list(stale):
            reason = lost_reason(row.owner)
            still_stale = BuildRow.renewed < now - lease_seconds
            if self._end(row.id, reason, now, BuildRow.attempt == row.attempt, still_stale):
                ended.append((row.id, reason))
        for row in list(late):
            reason = f"not started within {format_duration(queue_seconds)}"
            reason = reason.replace("within 60m", "within 1h")
            if self._end(row.id, reason, now, BuildRow.status == CREATED):
                ended.append((row.id, reason))
        if ended:
            log.info("ended %d builds: %s", len(ended), "; ".join(f"{i} {r}" for i, r in ended))
        return ended

    @_on_connection
    def fail_owned_builds(self, builder: str, reason: str = "") -> list[str]:
        """Ends, failed, the running builds leased to `builder` (a builder starting under
        the id of one that stopped: it knows it runs none of them), and the queued builds
        pinned to it (their secrets were in its memory); returns their ids, oldest first."""
        check_reason(reason or lost_reason(builder))
        now = time.time()
        rows = BuildRow.select(BuildRow.id, BuildRow.status).where(
            ((BuildRow.status == RUNNING) & (BuildRow.owner == builder))
            | ((BuildRow.status == CREATED) & (BuildRow.pinned == builder))
        )
        ended: list[str] = []
        for row in list(rows.order_by(BuildRow.seq)):
            if row.status == RUNNING:
                done = self._end(
                    row.id, reason or lost_reason(builder), now, BuildRow.owner == builder
                )
            else:
                done = self._end(
                    row.id, secrets_lost_reason(builder), now, BuildRow.status == CREATED
                )
            if done:
                ended.append(row.id)
        return ended

    def _end(self, build_id: str, reason: str, now: float, *conditions: Any) -> bool:
        """Fails one active build (when `conditions` still hold), its reason the log's
        last line; whether it did."""
        with self.database.atomic():
            updated = (
                BuildRow.update(
                    status=FAILED, reason=reason, ended=now, log_count=BuildRow.log_count + 1
                )
                .where(BuildRow.id == build_id, BuildRow.status.in_(ACTIVE), *conditions)
                .execute()
            )
            if updated:
                offset = self._log_count(build_id) - 1
                _insert_logs(build_id, offset, [f"ERROR: {reason}"], now)
        if updated:
            self._notifier.changed(build_id)
        return bool(updated)

    @_on_connection
    def record_build(
        self, build: Build, log_batches: Iterable[Sequence[str]]
    ) -> tuple[Build, Release]:
        """Records a finished build under its own id with its log and an unpromoted
        release inheriting the app's latest environment, in one transaction: if
        `log_batches` raises (a broken stream), nothing is kept. NotFound when the app does
        not exist (nothing creates one implicitly)."""
        check_app_name(build.app)
        if not BUILD_ID.match(build.id):
            raise InvalidArgument(f"invalid build id: {build.id!r} (B and 10 uppercase letters)")
        now = time.time()
        with self.database.atomic():
            latest = self._lock_app(build.app, missing=_no_app)
            inserted = (
                BuildRow.insert(
                    id=build.id,
                    app=build.app,
                    status=COMPLETE,
                    description=build.description,
                    manifest=build.manifest,
                    entrypoint=build.entrypoint,
                    git_sha=build.git_sha,
                    created=now,
                    started=build.started or now,
                    ended=build.ended or now,
                )
                .on_conflict_ignore()
                .as_rowcount()
                .execute()
            )
            if not inserted:
                raise AlreadyExists(f"build {build.id} already exists")
            offset = 0
            for batch in log_batches:
                _insert_logs(build.id, offset, batch, now)
                offset += len(batch)
            release = _insert_release(
                build.app, build.id, _env(latest), build.manifest, build.description, latest, now
            )
            BuildRow.update(release=release.id, log_count=offset).where(
                BuildRow.id == build.id
            ).execute()
        return _build(BuildRow.get(BuildRow.id == build.id)), _release(release)

    @_on_connection
    def get_build(self, build_id: str, app: str = "") -> Build:
        return _build(self._build_row(build_id, app))

    def _build_row(self, build_id: str, app: str = "") -> BuildRow:
        return _row_of(BuildRow, "build", build_id, app)

    @_on_connection
    def list_archives(self) -> list[str]:
        """The distinct source archive ids the builds of every app name."""
        rows = (
            BuildRow.select(BuildRow.archive)
            .where(BuildRow.archive != "")
            .distinct()
            .order_by(BuildRow.archive)
        )
        return [str(row.archive) for row in rows]

    @_on_connection
    def list_builds(self, app: str, limit: int = 0) -> list[Build]:
        count = _limit(limit)
        self._app_row(app)
        rows = (
            BuildRow.select()
            .where(BuildRow.app == app)
            .order_by(BuildRow.created.desc(), BuildRow.seq.desc())
            .limit(count)
        )
        return [_build(row) for row in rows]

    @_on_connection
    def update_build(
        self, build_id: str, changes: Mapping[str, Any], lease: Lease | None = None
    ) -> Build:
        """Sets the given fields. A status change applies only while the build is not
        terminal (checked by the UPDATE itself, so of two racing changes one wins). With a
        `lease`, nothing applies unless the build still runs under it: a builder that lost
        its lease gets FailedPrecondition and changes nothing."""
        values = _build_values(changes)
        if not values and lease is None:
            return _build(self._build_row(build_id))
        now = time.time()
        status = values.get("status")
        assignments: dict[Any, Any] = {getattr(BuildRow, k): v for k, v in values.items()}
        if status in TERMINAL and "ended" not in values:
            assignments[BuildRow.ended] = now
        if status == RUNNING and "started" not in values:
            assignments[BuildRow.started] = peewee.Case(
                None, [(BuildRow.started == 0, now)], BuildRow.started
            )
        if not assignments:
            assignments[BuildRow.renewed] = BuildRow.renewed
        query = BuildRow.update(assignments).where(BuildRow.id == build_id)
        if status is not None:
            query = query.where(BuildRow.status.not_in(sorted(TERMINAL)))
        if lease is not None:
            query = query.where(*_held(lease))
        with self.database.atomic():
            updated = query.execute()
            row = self._build_row(build_id)
        if not updated:
            if lease is not None and (row.owner, row.attempt) != (lease.owner, lease.attempt):
                raise FailedPrecondition(f"build {build_id}: lease lost")
            raise FailedPrecondition(f"build {build_id} is already {row.status}")
        self._notifier.changed(build_id)
        return _build(row)

    @_on_connection
    def create_release(
        self,
        app: str,
        build: str = "",
        env: Mapping[str, str] | None = None,
        manifest: str = "",
        description: str = "",
        inherit_env: bool = False,
        lease: Lease | None = None,
        complete: Completion | None = None,
    ) -> Release:
        """Records a release. With `inherit_env` its environment is the latest release's,
        read under the app lock like `update_env`, so a concurrent change is not lost.
        With a `lease`, only while `build` still runs under it (FailedPrecondition). With
        `complete`, the build turns complete with the release in the same transaction."""
        if complete is not None and (not build or lease is None):
            raise InvalidArgument("completing a build needs the build and its lease")
        with self.database.atomic():
            latest = self._lock_app(app)
            if build:
                built = self._build_row(build, app)
                if lease is not None and not _holds(built, lease):
                    raise FailedPrecondition(f"build {build}: lease lost")
            if inherit_env:
                env = _env(latest)
            row = _insert_release(app, build, env or {}, manifest, description, latest, time.time())
            if complete is not None and lease is not None:
                # Conditional on the lease inside this transaction: a cancel or sweep that
                # got in first leaves no release behind (the insert rolls back).
                updated = (
                    BuildRow.update(
                        status=COMPLETE,
                        release=row.id,
                        entrypoint=complete.entrypoint,
                        ended=complete.ended,
                    )
                    .where(
                        BuildRow.id == build,
                        BuildRow.status == RUNNING,
                        BuildRow.owner == lease.owner,
                        BuildRow.attempt == lease.attempt,
                    )
                    .execute()
                )
                if not updated:
                    raise FailedPrecondition(f"build {build}: lease lost")
        if complete is not None:
            self._notifier.changed(build)
        return _release(row)

    def _lock_app(
        self, app: str, missing: Callable[[str], NotFound] | None = None
    ) -> ReleaseRow | None:
        """Inside a transaction: locks the app row (FOR UPDATE on PostgreSQL; SQLite's
        transaction holds the write lock) and returns its latest release. `missing(app)`
        when the app does not exist."""
        locked = AppRow.select().where(AppRow.name == app)
        if self.database.for_update:
            locked = locked.for_update()
        if locked.first() is None:
            raise missing(app) if missing is not None else NotFound.of("app", app)
        return self._releases(app).first()

    @_on_connection
    def update_env(
        self, app: str, set_vars: Mapping[str, str], unset: Sequence[str] = ()
    ) -> Release:
        """Records one release whose env is the latest release's with the change applied
        (see `client.kernel.environment.apply_change`) and whose build and manifest are that
        release's. NotFound when the app does not exist (nothing creates one implicitly).

        The app row is locked (FOR UPDATE on PostgreSQL; SQLite's IMMEDIATE transaction holds
        the write lock) before the latest release is read, so concurrent changes to one app
        run one after another and none is lost. On error the transaction, app creation
        included, is rolled back."""
        check_app_name(app)
        with self.database.atomic():
            latest = self._lock_app(app, missing=_no_app)
            change = apply_change(_env(latest), set_vars, unset)
            row = _insert_release(
                app,
                build=latest.build if latest else "",
                env=change.env,
                manifest=latest.manifest if latest else "",
                description=change.description,
                latest=latest,
                now=time.time(),
            )
        return _release(row)

    @_on_connection
    def get_release(self, release_id: str, app: str = "") -> Release:
        return _release(self._release_row(release_id, app))

    def _release_row(self, release_id: str, app: str = "") -> ReleaseRow:
        return _row_of(ReleaseRow, "release", release_id, app)

    @_on_connection
    def list_releases(self, app: str, limit: int = 0) -> list[Release]:
        count = _limit(limit)
        self._app_row(app)
        return [_release(row) for row in self._releases(app).limit(count)]

    def _releases(self, app: str) -> peewee.ModelSelect[ReleaseRow]:
        return (
            ReleaseRow.select()
            .where(ReleaseRow.app == app)
            .order_by(ReleaseRow.created.desc(), ReleaseRow.seq.desc())
        )

    @_on_connection
    def promote_release(self, app: str, release_id: str = "") -> App:
        """Makes the release (the app's latest when empty) the app's active one."""
        self._app_row(app)
        with self.database.atomic():
            if release_id:
                row = self._release_row(release_id, app)
            else:
                row = self._releases(app).first()
                if row is None:
                    raise FailedPrecondition(f"app {app} has no releases to promote")
            AppRow.update(release=row.id).where(AppRow.name == app).execute()
            return _app(AppRow.get_by_id(app))

    # Logs.

    @_on_connection
    def append_logs(self, build_id: str, lines: Sequence[str], lease: Lease | None = None) -> int:
        """Adds `lines` at the end of the build's log; returns the next line's offset. With
        a `lease`, only while the build still runs under it (FailedPrecondition)."""
        now = time.time()
        with self.database.atomic():
            # Incrementing the counter first locks the build row until commit, so
            # concurrent appenders take consecutive, disjoint ranges of offsets.
            query = BuildRow.update(log_count=BuildRow.log_count + len(lines)).where(
                BuildRow.id == build_id
            )
            if lease is not None:
                query = query.where(*_held(lease))
            updated = query.execute() if build_id else 0
            if not updated:
                if lease is not None and BuildRow.get_or_none(BuildRow.id == build_id):
                    raise FailedPrecondition(f"build {build_id}: lease lost")
                raise NotFound.of("build", build_id)
            end = self._log_count(build_id)
            _insert_logs(build_id, end - len(lines), lines, now)
        if lines:
            self._notifier.changed(build_id)
        return int(end)

    def _log_count(self, build_id: str) -> int:
        return int(BuildRow.select(BuildRow.log_count).where(BuildRow.id == build_id).scalar())

    @_on_connection
    def _poll_logs(self, build_id: str, offset: int) -> tuple[str, list[LogLine]]:
        """The build's status, then its lines from `offset` (status first: when it is
        terminal and no line follows, the log is complete)."""
        status = self._build_row(build_id).status
        rows = (
            LogRow.select()
            .where(LogRow.build == build_id, LogRow.offset >= offset)
            .order_by(LogRow.offset)
            .limit(LOG_BATCH)
        )
        return status, [LogLine(offset=r.offset, text=r.text, time=r.time) for r in rows]

    def stream_logs(
        self,
        build_id: str,
        offset: int = 0,
        follow: bool = False,
        is_active: Callable[[], bool] = lambda: True,
    ) -> Iterator[list[LogLine]]:
        """The log from `offset` in batches; with `follow`, waits for new lines until the
        build is terminal and every line was given, or `is_active()` turns false."""
        if offset < 0:
            raise InvalidArgument(f"invalid log offset: {offset}")
        self.get_build(build_id)
        with self._notifier.watch(build_id):
            while is_active() and not self._notifier.closed:
                seen = self._notifier.version(build_id)
                status, lines = self._poll_logs(build_id, offset)
                if lines:
                    yield lines
                    offset = lines[-1].offset + 1
                    continue
                if not follow or status in TERMINAL:
                    return
                self._notifier.wait(build_id, seen, self._poll_seconds)


def _row_of(model: type[Row], what: str, row_id: str, app: str) -> Row:
    """The build or release `row_id`, of `app` when given; NotFound otherwise."""
    row = model.get_or_none(model.id == row_id) if row_id else None
    if row is None or (app and row.app != app):
        raise NotFound.of(what, row_id)
    return row


def _no_app(app: str) -> NotFound:
    """What refuses to put something into an app that does not exist."""
    return NotFound.no_app(app)


def _insert_with_new_id(model: type[peewee.Model], what: str, **values: Any) -> str:
    """Inserts a row of `model` under a new random id (`B…` for builds, `R…` for
    releases), drawing again on the rare collision; returns the id."""
    prefix = what[0].upper()
    for _ in range(ID_ATTEMPTS):
        row_id = new_id(prefix)
        inserted = model.insert(id=row_id, **values).on_conflict_ignore().as_rowcount().execute()
        if inserted:
            return row_id
    raise Internal(f"no free {what} id found")


def _insert_release(
    app: str,
    build: str,
    env: Mapping[str, str],
    manifest: str,
    description: str,
    latest: ReleaseRow | None,
    now: float,
) -> ReleaseRow:
    """Inside a transaction holding the app lock: a new release following `latest`, never
    older than it whatever the clock does."""
    release_id = _insert_with_new_id(
        ReleaseRow,
        "release",
        app=app,
        build=build,
        env=json.dumps({str(k): str(v) for k, v in env.items()}, sort_keys=True),
        manifest=manifest,
        description=description,
        created=max(now, latest.created if latest else 0.0),
    )
    return ReleaseRow.get(ReleaseRow.id == release_id)


def _insert_logs(build_id: str, start: int, texts: Sequence[str], now: float) -> None:
    """Inserts `texts` as the build's log lines from offset `start`, `LOG_BATCH` a query."""
    rows = [
        {"build": build_id, "offset": start + i, "text": _clean(text), "time": now}
        for i, text in enumerate(texts)
    ]
    for first in range(0, len(rows), LOG_BATCH):
        LogRow.insert_many(rows[first : first + LOG_BATCH]).execute()


def _env(release: ReleaseRow | None) -> dict[str, str]:
    """A release's environment; empty for none (an app's first release inherits nothing)."""
    return json.loads(release.env or "{}") if release else {}


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _limit(limit: int) -> int:
    if limit < 0:
        raise InvalidArgument(f"invalid limit: {limit}")
    return limit or DEFAULT_LIMIT


def _identity(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:79] + "…"


def _held(lease: Lease) -> tuple[Any, ...]:
    """The conditions under which a build still runs under `lease`."""
    return (
        BuildRow.status == RUNNING,
        BuildRow.owner == lease.owner,
        BuildRow.attempt == lease.attempt,
    )


def _holds(row: BuildRow, lease: Lease) -> bool:
    return row.status == RUNNING and (row.owner, row.attempt) == (lease.owner, lease.attempt)


def _build_values(changes: Mapping[str, Any]) -> dict[str, Any]:
    """Validated column values for an update: a failed status comes with a reason of one
    line of at most 500 characters."""
    values: dict[str, Any] = {}
    for name, value in changes.items():
        if name not in UPDATABLE:
            raise InvalidArgument(f"build field cannot be updated: {_shown(name)}")
        if name == "status" and value not in BUILD_STATUSES:
            raise InvalidArgument(f"invalid build status: {_shown(value)}")
        values[name] = float(value) if name in TIME_FIELDS else str(value)
    if values.get("status") == FAILED or values.get("reason"):
        check_reason(values.get("reason", ""))
    return values


def _clean(text: str) -> str:
    # PostgreSQL text cannot hold NUL; keep both databases storing the same thing.
    return text.replace("\x00", "\ufffd")


def _app(row: AppRow) -> App:
    return App(name=row.name, created=row.created, release=row.release)


def _build(row: BuildRow) -> Build:
    """The build a row records; its builder is the one its lease went to (`owner`)."""
    values = {
        f.name: getattr(row, f.name) for f in dataclasses.fields(Build) if f.name != "builder"
    }
    return Build(builder=row.owner, **values)


def _release(row: ReleaseRow) -> Release:
    return Release(
        id=row.id,
        app=row.app,
        build=row.build,
        env=_env(row),
        manifest=row.manifest,
        description=row.description,
        created=row.created,
    )
