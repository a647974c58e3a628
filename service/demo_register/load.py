"""Loading a generated register: each enterprise in its own transaction, several connections at once.

Each enterprise is written as an import would be (schema/0010_imports.sql): the enterprise row (its
own audit entry), one ``instrument_imports`` row of format ``generated`` (the audit entry of its
instruments), the instruments by COPY, and their history. An enterprise is loaded whole or not at
all, so an interrupted load leaves whole enterprises, and running the same command again loads
only those missing: an enterprise is known by the digest of (seed, sizes, index) its import keeps.
A different seed or size adds a new set of enterprises beside the old.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import asyncpg

from service import dates
from service.demo_register.generate import (
    EnterprisePlan,
    EnterpriseSpec,
    enterprise_plan,
    plan_register,
    register_digest,
)
from service.demo_register.queries import (
    copies_directly,
    copy_instruments,
    insert_generated_events,
    insert_generated_import,
    select_catalog_rules,
    select_enterprise_of,
    select_loaded,
)
from service.enterprises.queries import insert_enterprise
from service.enterprises.schemas import EnterpriseCreate
from service.instruments.rules import Status

__all__ = ("DemoRegisterError", "LoadResult", "load_register")

TIMEZONE = "Asia/Shanghai"

Connect = Callable[[], Awaitable[asyncpg.Connection]]


class DemoRegisterError(RuntimeError):
    """The generated register cannot be loaded as asked; the message names the option at fault.

    Only the command line loads a register, so this is not one of the API's errors (service/errors.py).
    """


@dataclass(slots=True)
class LoadResult:
    """What a load did: counts by status are those the generator meant (the API derives the same)."""

    enterprises: int = 0
    skipped: int = 0
    instruments: int = 0
    statuses: collections.Counter[Status] = field(default_factory=collections.Counter)
    sample: EnterprisePlan | None = None
    """The first enterprise of the register (loaded now or before): whose keys the command prints."""
    sample_id: uuid.UUID | None = None


async def load_register(
    connect: Connect,
    *,
    instruments: int,
    enterprises: int,
    seed: int,
    jobs: int,
    now: dt.datetime,
    progress: Callable[[int], None] | None = None,
) -> LoadResult:
    """Generate and load a register of ``instruments`` over ``enterprises`` from ``seed``.

    ``connect`` opens a connection as the login the command runs as; ``jobs`` of them load
    enterprises at the same time. ``now`` (aware, UTC) is when every row is registered; each
    enterprise's dates are drawn around its local today. ``progress`` is told each enterprise's
    instrument count as it commits.

    Raises:
        DemoRegisterError: the sizes are unusable, or the login is held by row-level security.
    """
    if jobs < 1:
        raise DemoRegisterError("--jobs must be at least 1")
    try:
        specs = plan_register(instruments, enterprises, seed)
    except ValueError as exc:
        raise DemoRegisterError(f"--instruments {instruments} --enterprises {enterprises}: {exc}") from None
    result = LoadResult()
    first = await connect()
    try:
        if not await copies_directly(first):
            raise DemoRegisterError(
                "this login is subject to row-level security on instruments, and PostgreSQL refuses COPY "
                "into such a table: run metreg demo as the database owner (the login that migrates)"
            )
        rules = await select_catalog_rules(first)
        loaded = await select_loaded(first, [_digest(s) for s in specs])
    finally:
        await first.close()
    today = dates.local_today(now, TIMEZONE)
    result.sample = enterprise_plan(specs[0], rules, today)
    todo = iter([s for s in specs if _digest(s) not in loaded])
    result.skipped = len(loaded)

    async def worker() -> None:
        conn = await connect()
        try:
            for spec in todo:  # one iterator shared by the workers: each enterprise is taken once
                plan = enterprise_plan(spec, rules, today)
                await _load_enterprise(conn, plan, now)
                result.enterprises += 1
                result.instruments += spec.size
                result.statuses.update(plan.statuses)
                if progress is not None:
                    progress(spec.size)
        finally:
            await conn.close()

    tasks = [asyncio.create_task(worker()) for _ in range(jobs)]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        # One enterprise failed (or the command was interrupted): the others stop where they are,
        # rolling back the enterprise they were writing, and close their connections.
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    last = await connect()
    try:
        result.sample_id = await select_enterprise_of(last, _digest(specs[0]))
    finally:
        await last.close()
    return result


def _digest(spec: EnterpriseSpec) -> bytes:
    return register_digest(spec.key)


async def _load_enterprise(conn: asyncpg.Connection, plan: EnterprisePlan, now: dt.datetime) -> None:
    async with conn.transaction():
        # A generated register can be generated again: waiting for each commit to reach the disk
        # would cost a flush per enterprise and buy nothing (a crash loses whole enterprises only).
        await conn.execute("SET LOCAL synchronous_commit = off")
        enterprise = await insert_enterprise(
            conn,
            EnterpriseCreate(
                name=plan.name,
                credit_code=plan.credit_code,
                region_code=plan.spec.region.code,
                timezone=TIMEZONE,
                period_rule=plan.period_rule,
                reminder_days=plan.reminder_days,
                rotation_reminder_days=plan.rotation_reminder_days,
                address=plan.address,
                contact_name=plan.contact_name,
                contact_phone=plan.contact_phone,
            ),
            now,
        )
        import_id = uuid.uuid4()
        await insert_generated_import(
            conn,
            import_id=import_id,
            enterprise_id=enterprise.id,
            description=plan.spec.key,
            digest=_digest(plan.spec),
            rows=plan.spec.size,
            now=now,
        )
        await copy_instruments(conn, plan.rows(enterprise.id, now))
        await insert_generated_events(conn, enterprise.id, import_id, now)
