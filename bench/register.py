"""The register the bench measures on: built once by :func:`build_register`, then described.

:func:`build_register` is the one place that decides how the data is generated. Today it uses the
set-based generator of :mod:`bench.explain_filters`; the ``metreg demo`` scale generator replaces
it by changing this one function (``seed`` is for that generator: the current one is deterministic).
"""

from __future__ import annotations

import datetime as dt
import uuid

import asyncpg
import msgspec

from bench import explain_filters
from service import dates, migrate
from service.auth import Role
from service.keys.queries import create_key
from service.keys.schemas import ApiKeyCreate

__all__ = ("Register", "build_register", "describe_register", "ensure_register")


async def build_register(dsn: str, *, instruments: int, enterprises: int, seed: int, now: dt.datetime) -> None:
    """A fresh, migrated database at ``dsn`` holding ``instruments`` instruments over ``enterprises``
    enterprises, the largest holding a tenth of them, analysed and indexed as in production."""
    del seed  # the current generator is deterministic
    await migrate.drop_database(dsn)
    await migrate.create_database(dsn)
    await migrate.migrate(dsn, now)
    await explain_filters.build(
        dsn,
        instruments=instruments,
        enterprises=enterprises - 1,  # it adds the large enterprise to those it is given
        large=instruments if enterprises == 1 else max(1, instruments // 10),
        today=dates.local_today(now, "Asia/Shanghai"),
    )


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
