"""The register the bench measures on: built once by :func:`build_register`, then described.

:func:`build_register` is the one place that decides how the data is generated: the register of
``metreg demo --instruments`` (service/demo_register), enterprises of realistic trades and sizes and
every status in its usual share.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid

import asyncpg
import msgspec

from service import migrate
from service.auth import Role
from service.demo_register import load_register
from service.keys.queries import create_key
from service.keys.schemas import ApiKeyCreate

__all__ = ("Register", "build_register", "describe_register", "ensure_register")


async def build_register(dsn: str, *, instruments: int, enterprises: int, seed: int, now: dt.datetime) -> None:
    """A fresh, migrated database at ``dsn`` holding the ``metreg demo --instruments`` register of
    ``instruments`` instruments over ``enterprises`` enterprises from ``seed``, analysed as a
    production database would be."""
    await migrate.drop_database(dsn)
    await migrate.create_database(dsn)
    await migrate.migrate(dsn, now)
    started = time.perf_counter()
    result = await load_register(
        lambda: asyncpg.connect(dsn, server_settings={"timezone": "UTC"}),
        instruments=instruments,
        enterprises=enterprises,
        seed=seed,
        jobs=2,
        now=now,
    )
    conn = await asyncpg.connect(dsn)
    try:
        # Fresh tables have no statistics yet: plans would be guesses until autovacuum came by.
        await conn.execute("VACUUM ANALYZE")
    finally:
        await conn.close()
    print(f"generated {result.instruments:,} instruments in {time.perf_counter() - started:.1f} s", flush=True)


async def ensure_register(
    dsn: str, *, instruments: int, enterprises: int, seed: int, now: dt.datetime, reuse: bool
) -> bool:
    """Build the register unless ``reuse`` and the database already holds one of that size; True if built."""
    if reuse:
        try:
            conn = await asyncpg.connect(dsn)
        except asyncpg.InvalidCatalogNameError:
            pass
        else:
            try:
                held = (
                    await conn.fetchval("SELECT count(*) FROM instruments"),
                    await conn.fetchval("SELECT count(*) FROM enterprises"),
                )
            except asyncpg.UndefinedTableError:
                held = (0, 0)
            finally:
                await conn.close()
            if held == (instruments, enterprises):
                return False
    await build_register(dsn, instruments=instruments, enterprises=enterprises, seed=seed, now=now)
    return True


class Register(msgspec.Struct, frozen=True, kw_only=True):
    instruments: int
    enterprises: int
    largest_enterprise: uuid.UUID
    largest_size: int
    enterprise_key: str
    """An API key of the largest enterprise (minted for this run)."""
    sample: list[uuid.UUID]
    """Instruments of the largest enterprise, in random order, for the reads."""


async def describe_register(dsn: str, now: dt.datetime, *, sample: int = 5000) -> Register:
    """The largest enterprise, a fresh key of it and a random sample of its instruments."""
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            largest = await conn.fetchrow(
                "SELECT enterprise_id, count(*) AS n FROM instruments GROUP BY enterprise_id ORDER BY n DESC LIMIT 1"
            )
            assert largest is not None, "the register is empty"
            key = await create_key(
                conn,
                ApiKeyCreate(role=Role.ENTERPRISE, name="bench", enterprise_id=largest["enterprise_id"]),
                now,
            )
            ids = await conn.fetch(
                "SELECT id FROM instruments WHERE enterprise_id = $1 ORDER BY random() LIMIT $2",
                largest["enterprise_id"],
                sample,
            )
            return Register(
                instruments=await conn.fetchval("SELECT count(*) FROM instruments"),
                enterprises=await conn.fetchval("SELECT count(*) FROM enterprises"),
                largest_enterprise=largest["enterprise_id"],
                largest_size=largest["n"],
                enterprise_key=key.key,
                sample=[r["id"] for r in ids],
            )
    finally:
        await conn.close()
