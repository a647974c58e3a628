"""Apply ``schema/NNNN_*.sql`` in order: forward-only, checksummed, one deployer at a time.

- Each file runs in its own transaction together with its bookkeeping row, unless its first line
  is ``-- migrate: no-transaction`` (for ``CREATE INDEX CONCURRENTLY`` and the like).
- A session-level advisory lock on a dedicated connection (never a pooled one: the pool's reset
  would drop it) serialises concurrent deploys; the second waits, then finds nothing to do.
- An applied file whose checksum changed is refused: fix mistakes with a new migration.
- A transactional file waits for a lock at most ``lock_timeout`` (``METREG_MIGRATE_LOCK_TIMEOUT``):
  a lock request queued behind a long transaction makes every later request for the table queue
  behind it in turn, so that a migration waiting without limit would stall the API. It fails
  instead, with nothing of it applied, to be run again when that transaction has ended. A file
  that PostgreSQL rolls back out of a deadlock (one that takes a lock and later a stronger one,
  as 0021 does, against a transaction that read the table and then writes it) fails the same way.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import asyncpg

__all__ = ("LOCK_TIMEOUT", "Migration", "MigrationError", "discover", "migrate", "pending")

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schema"
NO_TRANSACTION = "-- migrate: no-transaction"
_LOCK_KEY = 0x6D6574726567  # "metreg"
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
#: How long a migration's statement waits for a lock by default (METREG_MIGRATE_LOCK_TIMEOUT).
LOCK_TIMEOUT = dt.timedelta(seconds=5)


class MigrationError(RuntimeError):
    """The schema folder and the database disagree in a way a human must resolve."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    @property
    def transactional(self) -> bool:
        return not self.sql.lstrip().startswith(NO_TRANSACTION)


def discover(folder: Path = SCHEMA_DIR) -> list[Migration]:
    """Read the migrations in ``folder``, in version order, refusing gaps and strays."""
    found: list[Migration] = []
    for path in sorted(folder.glob("*.sql")):
        match = _NAME.match(path.name)
        if match is None:
            raise MigrationError(f"{path.name}: migration files are named NNNN_description.sql")
        found.append(Migration(int(match[1]), match[2], path.read_text(encoding="utf-8")))
    for expected, migration in enumerate(found, start=1):
        if migration.version != expected:
            raise MigrationError(f"migration {expected:04d} is missing (found {migration.version:04d})")
    return found


async def _applied(conn: asyncpg.Connection) -> dict[int, str]:
    await conn.execute(
        """
        CREATE TABLE IF NOT EXISTS schema_migrations (
            version    integer PRIMARY KEY,
            name       text NOT NULL,
            checksum   text NOT NULL,
            applied_at timestamptz NOT NULL
        )
        """
    )
    rows = await conn.fetch("SELECT version, checksum FROM schema_migrations ORDER BY version")
    return {row["version"]: row["checksum"] for row in rows}


def _check(known: list[Migration], applied: dict[int, str]) -> list[Migration]:
    by_version = {m.version: m for m in known}
    for version, checksum in applied.items():
        migration = by_version.get(version)
        if migration is None:
            raise MigrationError(f"the database has migration {version:04d}, which this code does not know")
        if migration.checksum != checksum:
            raise MigrationError(
                f"{version:04d}_{migration.name}.sql changed after it was applied; "
                "applied migrations are never edited: add a new one"
            )
    return [m for m in known if m.version not in applied]


async def pending(dsn: str, folder: Path = SCHEMA_DIR) -> list[Migration]:
    """The migrations not yet applied to the database at ``dsn`` (checksums verified)."""
    conn = await asyncpg.connect(dsn)
    try:
        return _check(discover(folder), await _applied(conn))
    finally:
        await conn.close()


async def migrate(
    dsn: str, now: dt.datetime, folder: Path = SCHEMA_DIR, *, lock_timeout: dt.timedelta = LOCK_TIMEOUT
) -> list[Migration]:
    """Apply every pending migration; return those applied (none when up to date).

    ``now`` is recorded as ``applied_at`` (an aware UTC instant from the caller's clock).
    ``lock_timeout`` bounds each wait for a lock inside a transactional migration (not the wait
    for another deployer's advisory lock, nor a no-transaction file, whose statements such as
    ``CREATE INDEX CONCURRENTLY`` would leave their work half done if cut off).

    Raises:
        MigrationError: the folder and the database disagree, or a migration waited longer than
            ``lock_timeout`` for a lock or was rolled back out of a deadlock (it and those after it
            are not applied; those before are).
    """
    known = discover(folder)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
        try:
            todo = _check(known, await _applied(conn))
            for migration in todo:
                await _apply(conn, migration, now, lock_timeout)
            return todo
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
    finally:
        await conn.close()


async def _apply(conn: asyncpg.Connection, migration: Migration, now: dt.datetime, lock_timeout: dt.timedelta) -> None:
    record = "INSERT INTO schema_migrations (version, name, checksum, applied_at) VALUES ($1, $2, $3, $4)"
    args = (migration.version, migration.name, migration.checksum, now)
    if migration.transactional:
        try:
            async with conn.transaction():
                # Local to the transaction: the session's wait for the advisory lock stays unbounded.
                await conn.execute(f"SET LOCAL lock_timeout = {_milliseconds(lock_timeout)}")
                await conn.execute(migration.sql)
                await conn.execute(record, *args)
        except (asyncpg.LockNotAvailableError, asyncpg.DeadlockDetectedError) as exc:
            raise MigrationError(_given_up(migration, exc, lock_timeout)) from exc
    else:
        await conn.execute(migration.sql)
        await conn.execute(record, *args)


def _given_up(
    migration: Migration, exc: asyncpg.LockNotAvailableError | asyncpg.DeadlockDetectedError, lock_timeout: dt.timedelta
) -> str:
    """Why a transactional migration was rolled back over a lock, and that running it again is safe."""
    if isinstance(exc, asyncpg.DeadlockDetectedError):
        what = (
            "was rolled back by PostgreSQL out of a deadlock with another transaction (each waited for a lock "
            "the other held)"
        )
        when = (
            "at once; stopping the API and the worker first, as the deploy order says, leaves no transaction to "
            "deadlock with"
        )
    else:
        what = (
            f"waited more than {lock_timeout.total_seconds():g} s (METREG_MIGRATE_LOCK_TIMEOUT) for a lock that "
            "another transaction holds, and was rolled back"
        )
        when = "once that transaction has ended (pg_stat_activity shows which: the oldest xact_start)"
    return (
        f"{migration.version:04d}_{migration.name}.sql {what}: nothing of it is applied (those before it are). "
        f"It is safe to run `metreg migrate` again {when}."
    )


def _milliseconds(span: dt.timedelta) -> int:
    """``span`` in whole milliseconds, at least 1 (0 would turn the limit off)."""
    return max(1, round(span.total_seconds() * 1000))


async def create_database(dsn: str) -> bool:
    """Create the database named in ``dsn`` if it does not exist; return whether it was created."""
    params = _split_dsn(dsn)
    conn = await asyncpg.connect(params.maintenance_dsn)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", params.database)
        if exists:
            return False
        await conn.execute(f'CREATE DATABASE "{params.database}"')
        return True
    finally:
        await conn.close()


async def drop_database(dsn: str) -> None:
    """Drop the database named in ``dsn`` (tests and benchmarks clean up with it)."""
    params = _split_dsn(dsn)
    conn = await asyncpg.connect(params.maintenance_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{params.database}" WITH (FORCE)')
    finally:
        await conn.close()


@dataclass(frozen=True, slots=True)
class _DsnParts:
    database: str
    maintenance_dsn: str


def _split_dsn(dsn: str) -> _DsnParts:
    base, sep, rest = dsn.rpartition("/")
    if not sep or not base.count("/"):
        raise MigrationError(f"cannot find a database name in the DSN {dsn!r}")
    database, _, query = rest.partition("?")
    if not re.fullmatch(r"[A-Za-z0-9_]{1,63}", database):
        raise MigrationError(f"database name {database!r} must be letters, digits and underscores")
    suffix = f"?{query}" if query else ""
    return _DsnParts(database=database, maintenance_dsn=f"{base}/postgres{suffix}")
