"""The metadata tables, as peewee models bound through a `DatabaseProxy`.

Nothing is connected at import time: `open_database` makes a pooled database from a URL and
`bind` points the proxy at it once, at start-up. Connections are checked out of the pool per
store call (`connection_context`), so the many gRPC threads share a bounded set of them.
"""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

import peewee
from playhouse.migrate import SchemaMigrator, migrate
from playhouse.pool import PooledPostgresqlDatabase, PooledSqliteDatabase

db_proxy = peewee.DatabaseProxy()

# gRPC serves up to 64 calls at once; each holds a connection only while it queries.
MAX_CONNECTIONS = 32
# Seconds a call waits for a pooled connection, and for SQLite's write lock.
WAIT_SECONDS = 15
# Connections older than this are replaced when next checked in or out.
STALE_SECONDS = 300


class _Model(peewee.Model):
    class Meta:
        database = db_proxy
        legacy_table_names = False


class AppRow(_Model):
    """An app; `release` is the promoted release id."""

    name = peewee.CharField(primary_key=True, max_length=200)
    created = peewee.DoubleField()
    release = peewee.CharField(max_length=20, default="")

    class Meta:
        table_name = "apps"


class BuildRow(_Model):
    """A build; `seq` orders builds created in the same instant, `log_count` is the number
    of log lines stored (the next line's offset)."""

    seq = peewee.AutoField()
    id = peewee.CharField(max_length=20, unique=True)
    app = peewee.CharField(max_length=200)
    status = peewee.CharField(max_length=20, index=True)
    description = peewee.TextField(default="")
    release = peewee.CharField(max_length=20, default="")
    manifest = peewee.TextField(default="")
    entrypoint = peewee.TextField(default="")
    git_sha = peewee.CharField(max_length=64, default="")
    reason = peewee.TextField(default="")
    created = peewee.DoubleField()
    started = peewee.DoubleField(default=0.0)
    ended = peewee.DoubleField(default=0.0)
    archive = peewee.CharField(max_length=128, default="")
    log_count = peewee.BigIntegerField(default=0)
    # The queue (schema 2). `request`: how to build it, as JSON, never its secrets.
    request = peewee.TextField(default="")
    # The builder holding its lease (kept once the build ends: the build's `builder`, the
    # one that ran it), the claim's attempt (the fencing token) and when the lease was last
    # renewed; the seconds it may run; the builder that must run it (the one holding its
    # secrets), empty for any.
    owner = peewee.CharField(max_length=200, default="")
    attempt = peewee.IntegerField(default=0)
    renewed = peewee.DoubleField(default=0.0)
    timeout = peewee.DoubleField(default=0.0)
    pinned = peewee.CharField(max_length=200, default="")

    class Meta:
        table_name = "builds"
        indexes = ((("app", "created", "seq"), False),)


class ReleaseRow(_Model):
    """A release; `env` is a JSON object of strings."""

    seq = peewee.AutoField()
    id = peewee.CharField(max_length=20, unique=True)
    app = peewee.CharField(max_length=200)
    build = peewee.CharField(max_length=20, default="")
    env = peewee.TextField(default="{}")
    manifest = peewee.TextField(default="")
    description = peewee.TextField(default="")
    created = peewee.DoubleField()

    class Meta:
        table_name = "releases"
        indexes = ((("app", "created", "seq"), False),)


class LogRow(_Model):
    """One line of a build's log, at `offset` from 0."""

    build = peewee.CharField(max_length=20)
    offset = peewee.BigIntegerField()
    text = peewee.TextField()
    time = peewee.DoubleField()

    class Meta:
        table_name = "log_lines"
        primary_key = peewee.CompositeKey("build", "offset")


class MigrationRow(_Model):
    """The schema versions applied to this database, one row each."""

    version = peewee.IntegerField(primary_key=True)
    applied = peewee.DoubleField()

    class Meta:
        table_name = "schema_migrations"


MODELS: tuple[type[peewee.Model], ...] = (AppRow, BuildRow, ReleaseRow, LogRow, MigrationRow)

#: The schema this code writes: 1 the first tables, 2 the build queue's columns.
SCHEMA_VERSION = 2


def open_database(url: str) -> peewee.Database:
    """A pooled database for `sqlite:///PATH` or `postgresql://…`; nothing is connected yet.
    Query parameters of a PostgreSQL URL go to psycopg2 (e.g. `?sslmode=require`)."""
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        path = Path(parts.path[1:])
        path.parent.mkdir(parents=True, exist_ok=True)
        return PooledSqliteDatabase(
            str(path),
            pragmas={
                "journal_mode": "wal",
                "busy_timeout": WAIT_SECONDS * 1000,
                "synchronous": "normal",
            },
            timeout=WAIT_SECONDS,
            # Write transactions take the write lock up front: no deadlock on upgrade.
            lock_type="IMMEDIATE",
            check_same_thread=False,
            max_connections=MAX_CONNECTIONS,
            stale_timeout=STALE_SECONDS,
        )
    if parts.scheme in ("postgresql", "postgres"):
        params: dict[str, object] = {"connect_timeout": 5}
        params.update(parse_qsl(parts.query, keep_blank_values=True))
        if parts.username:
            params["user"] = unquote(parts.username)
        if parts.password:
            params["password"] = unquote(parts.password)
        if parts.hostname:
            params["host"] = parts.hostname
        if parts.port:
            params["port"] = parts.port
        return PooledPostgresqlDatabase(
            unquote(parts.path[1:]),
            max_connections=MAX_CONNECTIONS,
            stale_timeout=STALE_SECONDS,
            timeout=WAIT_SECONDS,
            **params,
        )
    raise ValueError(f"unsupported database URL scheme: {parts.scheme!r}")


def bind(database: peewee.Database) -> None:
    """Points the models at `database`, creates any missing table and brings an older
    schema up to SCHEMA_VERSION (columns added, never dropped: an older rack's database
    opens as it was, plus what is new). A database of a newer schema is refused."""
    db_proxy.initialize(database)
    with database.connection_context(), database.atomic():
        database.create_tables(MODELS, safe=True)
        applied = MigrationRow.select(peewee.fn.MAX(MigrationRow.version)).scalar() or 0
        if applied > SCHEMA_VERSION:
            raise ValueError(
                f"the database has schema {applied}, newer than this rack's {SCHEMA_VERSION}"
            )
        _add_missing_columns(database)
        for version in range(applied + 1, SCHEMA_VERSION + 1):
            MigrationRow.insert(version=version, applied=time.time()).execute()


def _add_missing_columns(database: peewee.Database) -> None:
    """Adds every column a model has and its table lacks (a database made by an older
    rack), with the field's default for existing rows."""
    migrator = SchemaMigrator.from_database(database)
    for model in MODELS:
        table = model._meta.table_name
        present = {column.name for column in database.get_columns(table)}
        missing = [f for f in model._meta.sorted_fields if f.column_name not in present]
        if missing:
            migrate(*(migrator.add_column(table, f.column_name, f) for f in missing))
