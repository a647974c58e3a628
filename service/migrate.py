"""Apply ``schema/NNNN_*.sql`` in order: forward-only, checksummed, one deployer at a time.

- Each file runs in its own transaction together with its bookkeeping row, unless its first line
  is ``-- migrate: no-transaction`` (for ``CREATE INDEX CONCURRENTLY`` and the like).
- A session-level advisory lock on a dedicated connection (never a pooled one: the pool's reset
  would drop it) serialises concurrent deploys; the second waits, then finds nothing to do.
- An applied file whose checksum changed is refused: fix mistakes with a new migration.
- Numbers may skip (a number reserved by work merged later); a pending file numbered below one
  already applied is refused, because it was written against an older schema than the database has.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import re
from dataclasses import dataclass
from pathlib import Path

import asyncpg

__all__ = ("Migration", "MigrationError", "discover", "migrate", "pending")

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schema"
NO_TRANSACTION = "-- migrate: no-transaction"
_LOCK_KEY = 0x6D6574726567  # "metreg"
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


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
    """Read the migrations in ``folder``, in version order, refusing strays and duplicate numbers."""
    found: list[Migration] = []
    for path in sorted(folder.glob("*.sql")):
        match = _NAME.match(path.name)
        if match is None:
            raise MigrationError(f"{path.name}: migration files are named NNNN_description.sql")
        found.append(Migration(int(match[1]), match[2], path.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    for before, after in itertools.pairwise(found):
        if before.version == after.version:
            raise MigrationError(f"two migrations are numbered {after.version:04d}: {before.name} and {after.name}")
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
    todo = [m for m in known if m.version not in applied]
    latest = max(applied, default=0)
    late = [m for m in todo if m.version < latest]
    if late:
        raise MigrationError(
            f"{late[0].version:04d}_{late[0].name}.sql is pending but {latest:04d} is already applied: "
            "renumber it after the latest migration"
        )
    return todo


async def pending(dsn: str, folder: Path = SCHEMA_DIR) -> list[Migration]:
    """The migrations not yet applied to the database at ``dsn`` (checksums verified)."""
    conn = await asyncpg.connect(dsn)
    try:
        return _check(discover(folder), await _applied(conn))
    finally:
        await conn.close()


async def migrate(dsn: str, now: dt.datetime, folder: Path = SCHEMA_DIR) -> list[Migration]:
    """Apply every pending migration; return those applied (none when up to date).

    ``now`` is recorded as ``applied_at`` (an aware UTC instant from the caller's clock).
    """
    known = discover(folder)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
        try:
            todo = _check(known, await _applied(conn))
            for migration in todo:
                await _apply(conn, migration, now)
            return todo
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
    finally:
        await conn.close()


async def _apply(conn: asyncpg.Connection, migration: Migration, now: dt.datetime) -> None:
    record = "INSERT INTO schema_migrations (version, name, checksum, applied_at) VALUES ($1, $2, $3, $4)"
    args = (migration.version, migration.name, migration.checksum, now)
    if migration.transactional:
        async with conn.transaction():
            await conn.execute(migration.sql)
            await conn.execute(record, *args)
    else:
        await conn.execute(migration.sql)
        await conn.execute(record, *args)


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
