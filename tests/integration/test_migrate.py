"""The migration runner: forward-only, checksummed, serialised, with a no-transaction escape."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from service import migrate
from tests.conftest import BASE_DSN, NOW


@pytest.fixture
async def scratch_dsn() -> AsyncIterator[str]:
    dsn = f"{BASE_DSN.rsplit('/', 1)[0]}/metreg_scratch_{uuid.uuid4().hex[:10]}"
    assert await migrate.create_database(dsn) is True
    assert await migrate.create_database(dsn) is False  # idempotent
    try:
        yield dsn
    finally:
        await migrate.drop_database(dsn)


def _write(folder: Path, name: str, sql: str) -> None:
    (folder / name).write_text(sql, encoding="utf-8")


async def test_the_real_schema_applies_once_and_then_is_up_to_date(scratch_dsn: str) -> None:
    applied = await migrate.migrate(scratch_dsn, NOW)
    assert [m.version for m in applied] == [m.version for m in migrate.discover()]
    assert [m.version for m in applied] == sorted(m.version for m in applied)
    assert await migrate.migrate(scratch_dsn, NOW) == []
    assert await migrate.pending(scratch_dsn) == []
    conn = await asyncpg.connect(scratch_dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM catalog_items") >= 19
    finally:
        await conn.close()


async def test_concurrent_runs_apply_each_migration_once(scratch_dsn: str) -> None:
    results = await asyncio.gather(*(migrate.migrate(scratch_dsn, NOW) for _ in range(3)))
    assert sorted(len(r) for r in results) == [0, 0, len(migrate.discover())]


async def test_an_edited_migration_is_refused(scratch_dsn: str, tmp_path: Path) -> None:
    _write(tmp_path, "0001_first.sql", "CREATE TABLE t (a int);")
    await migrate.migrate(scratch_dsn, NOW, tmp_path)
    _write(tmp_path, "0001_first.sql", "CREATE TABLE t (a bigint);")
    with pytest.raises(migrate.MigrationError, match="changed after it was applied"):
        await migrate.migrate(scratch_dsn, NOW, tmp_path)


async def test_a_failing_migration_leaves_nothing_behind(scratch_dsn: str, tmp_path: Path) -> None:
    _write(tmp_path, "0001_first.sql", "CREATE TABLE t (a int);")
    _write(tmp_path, "0002_broken.sql", "CREATE TABLE u (a int); SELECT no_such_function();")
    with pytest.raises(asyncpg.UndefinedFunctionError):
        await migrate.migrate(scratch_dsn, NOW, tmp_path)
    conn = await asyncpg.connect(scratch_dsn)
    try:
        assert await conn.fetchval("SELECT to_regclass('u')") is None
        assert await conn.fetchval("SELECT max(version) FROM schema_migrations") == 1
    finally:
        await conn.close()


async def test_no_transaction_migrations_can_build_indexes_concurrently(scratch_dsn: str, tmp_path: Path) -> None:
    _write(tmp_path, "0001_table.sql", "CREATE TABLE t (a int);")
    _write(tmp_path, "0002_index.sql", "-- migrate: no-transaction\nCREATE INDEX CONCURRENTLY t_a ON t (a);")
    assert [m.transactional for m in migrate.discover(tmp_path)] == [True, False]
    assert len(await migrate.migrate(scratch_dsn, NOW, tmp_path)) == 2


def test_stray_names_and_duplicate_numbers_are_refused(tmp_path: Path) -> None:
    _write(tmp_path, "0001_a.sql", "SELECT 1;")
    _write(tmp_path, "0002_b.sql", "SELECT 1;")
    _write(tmp_path, "0002_c.sql", "SELECT 1;")
    with pytest.raises(migrate.MigrationError, match="two migrations are numbered 0002"):
        migrate.discover(tmp_path)
    (tmp_path / "0002_c.sql").unlink()
    _write(tmp_path, "2_b.sql", "SELECT 1;")
    with pytest.raises(migrate.MigrationError, match="NNNN_description"):
        migrate.discover(tmp_path)


async def test_a_skipped_number_applies_in_order_and_may_not_arrive_late(scratch_dsn: str, tmp_path: Path) -> None:
    # A number reserved by work merged later (0012_demo_source.sql was written while 0011 was taken).
    _write(tmp_path, "0001_a.sql", "CREATE TABLE a (x int);")
    _write(tmp_path, "0003_c.sql", "CREATE TABLE c (x int);")
    assert [m.version for m in migrate.discover(tmp_path)] == [1, 3]
    assert [m.version for m in await migrate.migrate(scratch_dsn, NOW, tmp_path)] == [1, 3]
    assert await migrate.pending(scratch_dsn, tmp_path) == []
    # The reserved number arriving after 0003 was applied was written against an older schema.
    _write(tmp_path, "0002_b.sql", "CREATE TABLE b (x int);")
    with pytest.raises(migrate.MigrationError, match=r"0002_b\.sql is pending but 0003 is already applied"):
        await migrate.migrate(scratch_dsn, NOW, tmp_path)
