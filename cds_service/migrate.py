"""Versioned schema migrations of the store (Alembic; the revisions are in cds_service/migrations).

Run once before the workers (`calcinosis-cds migrate`, or `serve`, which migrates before it
starts gunicorn), or by whichever worker first finds the store behind (CDS_AUTO_MIGRATE, on by
default). Several may try at once: the migration runs under a lock (PostgreSQL: an advisory
lock per schema; an SQLite file: its write lock, BEGIN IMMEDIATE), and whoever comes second
finds the work done. A database already at head costs a look at ``alembic_version`` and no
lock. A database migrated by a newer version (a revision this one does not know) is never
touched: `SchemaVersionError`, and the service reports itself not ready.

A database made before migrations existed (its tables, no ``alembic_version``) is adopted by
the baseline revision, which creates only what is missing.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import column, create_engine, event, inspect, select, table, text
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

SCRIPT_LOCATION = "cds_service:migrations"
VERSION_TABLE = "alembic_version"  # Alembic's, in the schema the connection uses
_VERSION = table(VERSION_TABLE, column("version_num"))
# pg_advisory_xact_lock(LOCK_CLASS, hashtext(current_schema())): one lock per schema, so two
# installations in one database do not wait for each other.
LOCK_CLASS = 0x63647331  # "cds1"
MIGRATION_STATEMENT_MS = 10 * 60 * 1000  # a migration may take longer than a hook call's 5 s
SQLITE_LOCK_SECONDS = 10  # the longest a second migrator waits for an SQLite file's write lock
log = logging.getLogger(__name__)
# Alembic announces each of its plugins at INFO whenever a worker loads it: noise in every log.
logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
# Alembic runs a migration through module-level state (alembic.context): two threads of one
# process migrating at once, even two different databases, would trample each other's. One
# migration per process at a time, then (below) one per database.
_process_lock = threading.Lock()


class SchemaVersionError(RuntimeError):
    """The database's schema is not the one this version needs, and is left as it is."""

    def __init__(self, message: str, revision: str | None) -> None:
        super().__init__(message)
        self.revision = revision


def alembic_config(connection: Connection) -> Config:
    """Alembic's configuration, built here (no alembic.ini): the revisions of this package,
    run on `connection`."""
    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    config.set_main_option("path_separator", "os")
    config.attributes["connection"] = connection
    return config


@cache
def _script() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config(None))  # type: ignore[arg-type]


def head_revision() -> str:
    """The revision this version's code expects."""
    head = _script().get_current_head()
    assert head is not None, "no migration in cds_service/migrations/versions"
    return head


@cache
def _known() -> frozenset[str]:
    return frozenset(s.revision for s in _script().walk_revisions())


def _revision_of(connection: Connection) -> str | None:
    """Read here rather than through Alembic, which logs its set-up at every look."""
    if not inspect(connection).has_table(VERSION_TABLE):
        return None
    rows = connection.execute(select(_VERSION.c.version_num)).scalars()
    return ",".join(sorted(rows)) or None  # several heads: no revision this version knows


def current_revision(engine: Engine) -> str | None:
    """The database's revision; None when it has none (empty, or made before migrations)."""
    with engine.connect() as conn:
        return _revision_of(conn)


def _refuse_newer(revision: str | None) -> None:
    if revision is not None and revision not in _known():
        raise SchemaVersionError(
            f"schema {revision} is newer than this version ({head_revision()})", revision
        )


def _in_memory(url: URL) -> bool:
    return url.database in (None, "", ":memory:") or url.query.get("mode") == "memory"


@contextmanager
def _locked(engine: Engine) -> Iterator[Connection]:
    """A connection in a transaction that holds the migration lock until it ends."""
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            conn.execute(text(f"SET LOCAL statement_timeout = {MIGRATION_STATEMENT_MS}"))
            conn.execute(
                text("SELECT pg_advisory_xact_lock(:lock, hashtext(current_schema()))"),
                {"lock": LOCK_CLASS},
            )
            yield conn
    elif engine.dialect.name == "sqlite" and not _in_memory(engine.url):
        # A connection of its own, whose transaction starts with the file's write lock (the
        # driver would begin one only at the first write, and not for DDL).
        migrator = create_engine(
            engine.url, poolclass=NullPool, connect_args={"timeout": SQLITE_LOCK_SECONDS}
        )

        @event.listens_for(migrator, "connect")
        def _manual(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None

        @event.listens_for(migrator, "begin")
        def _immediate(conn: Connection) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        try:
            with migrator.begin() as conn:
                yield conn
        finally:
            migrator.dispose()
    else:  # an in-memory SQLite database lives in this process: _process_lock is enough
        with engine.begin() as conn:
            yield conn


def upgrade(engine: Engine) -> tuple[str | None, str]:
    """Bring the database to head, under the migration lock; (revision before, after).
    Raises SchemaVersionError for a database a newer version migrated (left untouched)."""
    head = head_revision()
    with _process_lock, _locked(engine) as conn:
        before = _revision_of(conn)
        _refuse_newer(before)
        if before != head:
            command.upgrade(alembic_config(conn), "head")
    if before != head:
        log.info("store schema migrated from %s to %s", before or "none", head)
    return before, head


def ensure_current(engine: Engine, migrate: bool = True) -> str:
    """The head revision, once the database is at it: checked (no lock when it is), migrated
    when behind and `migrate`; SchemaVersionError when it is newer, or behind and not to be
    migrated here."""
    head = head_revision()
    current = current_revision(engine)
    if current == head:
        return head
    _refuse_newer(current)
    if not migrate:
        raise SchemaVersionError(
            f"schema {current or 'missing'} is behind this version ({head}): "
            "run `calcinosis-cds migrate` (CDS_AUTO_MIGRATE is off)",
            current,
        )
    upgrade(engine)
    return head


def before_workers(engine: Engine, migrate: bool) -> str:
    """What `serve` says on one line before gunicorn starts, after migrating if it may. Never
    raises: a database that does not answer leaves the migration to the workers."""
    try:
        if migrate:
            before, after = upgrade(engine)
            moved = f" (migrated from {before or 'none'})" if before != after else ""
            return f"schema at {after}{moved}"
        return f"schema at {ensure_current(engine, migrate=False)}"
    except SchemaVersionError as exc:
        return f"{exc}; the workers will report not ready"
    except (SQLAlchemyError, OSError) as exc:
        return (
            f"the database did not answer ({type(exc).__name__}): serving anyway, the workers "
            "migrate it when it does"
        )
    except Exception as exc:  # noqa: BLE001 - serving matters more; the workers say it again
        return f"schema not migrated ({type(exc).__name__}): serving anyway"
    finally:
        engine.dispose()
