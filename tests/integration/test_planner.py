"""The planner against the real database (issue 4 point 2; design.md §6; domain.md §2.3 R3, R5, R7).

``plan()`` plans for every enterprise in the shared test database, so each test builds enterprises
of its own and looks only at the notices of its own instruments. ``V`` is an instrument's last valid
day; dates are moved with ``plan(today=...)`` or, for the time-zone rule, with ``now``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import re
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import msgspec
import pytest
from click.testing import CliRunner

from jobs.plan import PLAN_LOCK, PlanResult, plan
from service.catalog.rules import Regime
from service.cli import main
from service.dates import local_today
from service.db import init_connection
from service.enterprises.queries import insert_enterprise
from service.enterprises.schemas import Enterprise, EnterpriseCreate
from service.instruments.rules import Lifecycle
from service.notices.rules import NoticeKind, Pacing, due_notices
from tests.conftest import GAUGE, NOW, LabAccount, Tenant, accepted_request, fresh_database, new_credit_code

V = dt.date(2026, 7, 14)  # a gauge verified 2026-01-15 (6 months) is valid until 2026-07-14
REMINDERS = {NoticeKind.DUE_SOON.value, NoticeKind.ROTATION_DUE.value}

#: (kind, step, due_on offset from V) of one instrument's notices, the shape most assertions compare.
Key = tuple[str, int, int]


def day(offset: int, base: dt.date = V) -> dt.date:
    return base + dt.timedelta(days=offset)


async def _enterprise(pool: asyncpg.Pool, **fields: Any) -> Enterprise:
    async with pool.acquire() as conn:
        return await insert_enterprise(
            conn,
            EnterpriseCreate(name="计划测试企业", credit_code=new_credit_code(), region_code="310115", **fields),
            NOW,
        )


async def _instruments(
    pool: asyncpg.Pool,
    enterprise_id: uuid.UUID,
    rows: list[tuple[Lifecycle, Regime, dt.date | None]],
) -> list[uuid.UUID]:
    """Instruments inserted as they stand (lifecycle, regime, valid_until), in the order given."""
    async with pool.acquire() as conn:
        records = await conn.fetch(
            """INSERT INTO instruments (enterprise_id, name, serial_no, regime, cycle_months, lifecycle,
                                        last_verified_on, valid_until, validity_source)
               SELECT $1, 'planned', 'P' || n, r, 12, l, u - 400, u, 'printed'
               FROM unnest($2::text[], $3::text[], $4::date[]) WITH ORDINALITY AS t(r, l, u, n)
               RETURNING id, serial_no""",
            enterprise_id,
            [r[1].value for r in rows],
            [r[0].value for r in rows],
            [r[2] for r in rows],
        )
    by_position = {int(r["serial_no"][1:]): r["id"] for r in records}
    return [by_position[n] for n in range(1, len(rows) + 1)]


async def _gauge(pool: asyncpg.Pool, **settings: Any) -> tuple[Enterprise, uuid.UUID]:
    enterprise = await _enterprise(pool, **settings)
    (instrument,) = await _instruments(pool, enterprise.id, [(Lifecycle.IN_SERVICE, Regime.PERIODIC, V)])
    return enterprise, instrument


async def _plan(pool: asyncpg.Pool, *, today: dt.date | None = None, now: dt.datetime = NOW) -> PlanResult:
    async with pool.acquire() as conn:
        result = await plan(conn, now, today=today)
    assert result.ran
    return result


async def _rows(pool: asyncpg.Pool, *instrument_ids: uuid.UUID) -> list[asyncpg.Record]:
    async with pool.acquire() as conn:
        return await conn.fetch(
            """SELECT id, enterprise_id, instrument_id, kind, audience, region_code, cycle, step, due_on, status,
                      last_error, closed_at, certificate_id
               FROM notices WHERE instrument_id = ANY($1::uuid[]) ORDER BY kind, cycle, step""",
            list(instrument_ids),
        )


async def _keys(pool: asyncpg.Pool, instrument_id: uuid.UUID, *, status: str | None = None) -> set[Key]:
    """The instrument's notices as (kind, step, due_on − V in days)."""
    return {
        (r["kind"], r["step"], (r["due_on"] - V).days)
        for r in await _rows(pool, instrument_id)
        if status is None or r["status"] == status
    }


async def test_r5_a_reminder_on_each_step_day_with_step_due_on_and_cycle(pool: asyncpg.Pool) -> None:
    """R5: due_soon on V − 30 and V − 7 (step = offset, due_on = V − offset, cycle = V), nothing before."""
    _, gauge = await _gauge(pool)
    await _plan(pool, today=day(-31))
    assert await _keys(pool, gauge) == set()
    await _plan(pool, today=day(-30))
    assert await _keys(pool, gauge) == {("due_soon", 30, -30)}
    for offset in (-29, -8):
        await _plan(pool, today=day(offset))
    assert await _keys(pool, gauge) == {("due_soon", 30, -30)}
    await _plan(pool, today=day(-7))
    await _plan(pool, today=day(0))
    rows = await _rows(pool, gauge)
    assert {(r["kind"], r["step"], (r["due_on"] - V).days) for r in rows} == {
        ("due_soon", 30, -30),
        ("due_soon", 7, -7),
    }
    assert all(r["cycle"] == V and r["audience"] == "enterprise" and r["status"] == "pending" for r in rows)
    assert all(r["region_code"] == "310115" and r["certificate_id"] is None for r in rows)


async def test_catch_up_sends_only_the_latest_passed_step_and_never_an_earlier_one(pool: asyncpg.Pool) -> None:
    """Catch-up: nothing ran until V − 20 with steps [60, 30, 7]: only step 30 is sent (not 60, and
    not again); then 7 on its day."""
    _, gauge = await _gauge(pool, reminder_days=[60, 30, 7])
    await _plan(pool, today=day(-20))
    assert await _keys(pool, gauge) == {("due_soon", 30, -30)}
    for offset in (-19, -10, -8):
        await _plan(pool, today=day(offset))
    assert await _keys(pool, gauge) == {("due_soon", 30, -30)}
    await _plan(pool, today=day(-3))  # 7 passed while nothing ran: still sent, once
    await _plan(pool, today=day(-2))
    assert await _keys(pool, gauge) == {("due_soon", 30, -30), ("due_soon", 7, -7)}


async def test_catch_up_skips_a_larger_step_after_the_settings_changed(pool: asyncpg.Pool) -> None:
    """Catch-up: a step is skipped when a smaller step of the same cycle exists — after reminder_days
    grew from [7] to [45, 7], V − 45 … V − 8 brings nothing more on top of the sent 7."""
    enterprise, gauge = await _gauge(pool, reminder_days=[7])
    await _plan(pool, today=day(-5))
    async with pool.acquire() as conn:
        await conn.execute("UPDATE enterprises SET reminder_days = '{45,7}' WHERE id = $1", enterprise.id)
    await _plan(pool, today=day(-4))
    assert await _keys(pool, gauge) == {("due_soon", 7, -7)}


async def test_an_overdue_instrument_gets_only_the_overdue_series(pool: asyncpg.Pool) -> None:
    """R3 + catch-up: first planned on V + 3, the instrument gets overdue step 0 (due V + 1) and no
    reminder for the steps it missed."""
    _, gauge = await _gauge(pool)
    await _plan(pool, today=day(3))
    assert await _keys(pool, gauge) == {("overdue", 0, 1)}


async def test_r3_overdue_on_the_first_overdue_day_then_every_repeat_and_only_the_latest_after_an_outage(
    pool: asyncpg.Pool,
) -> None:
    """R3: overdue on V + 1 (step 0), then every overdue_repeat_days (7): step n due V + 1 + 7n; after
    an outage from V + 9 to V + 29 only step 4 (due V + 29), never steps 2 and 3."""
    _, gauge = await _gauge(pool)
    await _plan(pool, today=day(0))
    await _plan(pool, today=day(1))
    assert await _keys(pool, gauge, status="pending") == {("overdue", 0, 1)}
    for offset in range(2, 9):
        await _plan(pool, today=day(offset))
    assert await _keys(pool, gauge, status="pending") == {("overdue", 0, 1), ("overdue", 1, 8)}
    await _plan(pool, today=day(30))
    overdue = {k for k in await _keys(pool, gauge) if k[0] == "overdue"}
    assert overdue == {("overdue", 0, 1), ("overdue", 1, 8), ("overdue", 4, 29)}
    assert all(r["cycle"] == V for r in await _rows(pool, gauge))


async def test_r3_overdue_repeat_days_from_the_settings(pool: asyncpg.Pool) -> None:
    """R3 repeat: with overdue_repeat_days 3 the series is V + 1, V + 4, V + 7."""
    _, gauge = await _gauge(pool, overdue_repeat_days=3)
    for offset in range(1, 9):
        await _plan(pool, today=day(offset))
    assert await _keys(pool, gauge) == {("overdue", 0, 1), ("overdue", 1, 4), ("overdue", 2, 7)}


async def test_escalation_once_to_the_regulator_after_escalate_after_days(pool: asyncpg.Pool) -> None:
    """Escalation: not on V + 30 (29 days after the first overdue day), once on V + 31 (30 days
    after), addressed to the regulator of the enterprise's region, and never again."""
    enterprise, gauge = await _gauge(pool)
    await _plan(pool, today=day(30))
    assert not {k for k in await _keys(pool, gauge) if k[0] == "escalation"}
    for offset in (31, 32, 45, 90):
        await _plan(pool, today=day(offset))
    escalations = [r for r in await _rows(pool, gauge) if r["kind"] == "escalation"]
    assert len(escalations) == 1
    (e,) = escalations
    assert (e["audience"], e["region_code"], e["enterprise_id"]) == ("regulator", "310115", enterprise.id)
    assert (e["cycle"], e["step"], e["due_on"]) == (V, 0, day(31))


async def test_escalation_after_days_from_the_settings(pool: asyncpg.Pool) -> None:
    """Escalation with escalate_after_days 5: due V + 6."""
    _, gauge = await _gauge(pool, escalate_after_days=5)
    await _plan(pool, today=day(5))
    assert "escalation" not in {k[0] for k in await _keys(pool, gauge)}
    await _plan(pool, today=day(6))
    assert ("escalation", 0, 6) in await _keys(pool, gauge)


async def test_rotation_due_instead_of_due_soon_for_limited_life_meters(tenant: Tenant, pool: asyncpg.Pool) -> None:
    """Rotation: a water meter DN25 for trade settlement (limited life, 72 months) is reminded on
    rotation_reminder_days (90, 30) with kind rotation_due — never due_soon on reminder_days."""
    meter = await tenant.register(
        catalog_code="water_meter_dn25", legal_use="trade_settlement", name="冷水水表", last_verified_on="2020-07-15"
    )
    gauge = await tenant.register(**GAUGE, last_verified_on="2026-01-15")
    assert (meter["regime"], meter["valid_until"], gauge["valid_until"]) == (
        "initial_only_limited_life",
        str(V),
        str(V),
    )
    meter_id, gauge_id = uuid.UUID(meter["id"]), uuid.UUID(gauge["id"])
    await _plan(pool, today=day(-91))
    assert await _keys(pool, meter_id) == set()
    await _plan(pool, today=day(-90))
    assert await _keys(pool, meter_id) == {("rotation_due", 90, -90)}
    for offset in (-30, -7, 0):
        await _plan(pool, today=day(offset))
    assert await _keys(pool, meter_id) == {("rotation_due", 90, -90), ("rotation_due", 30, -30)}
    assert await _keys(pool, gauge_id) == {("due_soon", 30, -30), ("due_soon", 7, -7)}
    await _plan(pool, today=day(1))
    assert await _keys(pool, meter_id, status="pending") == {("overdue", 0, 1)}


async def test_nothing_for_instruments_out_of_service_or_without_valid_until(pool: asyncpg.Pool) -> None:
    """Only instruments in service with a valid_until: sealed, failed, scrapped, replaced and
    pending_verification ones get nothing on any reminder, overdue or escalation day, nor do
    instruments without a valid_until; the in-service control instrument does."""
    enterprise = await _enterprise(pool)
    excluded = [(lc, Regime.PERIODIC, V) for lc in Lifecycle if lc is not Lifecycle.IN_SERVICE] + [
        (Lifecycle.IN_SERVICE, Regime.PERIODIC, None),
        (Lifecycle.IN_SERVICE, Regime.INITIAL_ONLY_SCRAP_ON_FAILURE, None),
    ]
    *ids, control = await _instruments(pool, enterprise.id, [*excluded, (Lifecycle.IN_SERVICE, Regime.PERIODIC, V)])
    for offset in (-90, -30, -7, 0, 1, 8, 31, 400):
        await _plan(pool, today=day(offset))
    assert await _rows(pool, *ids) == []
    assert {k[0] for k in await _keys(pool, control)} == {"due_soon", "overdue", "escalation"}


async def test_planning_twice_on_the_same_day_creates_nothing_new(pool: asyncpg.Pool) -> None:
    """Idempotence (unique keys): a second run on the same day inserts nothing, for anyone."""
    enterprise = await _enterprise(pool, escalate_after_days=1)
    ids = await _instruments(
        pool,
        enterprise.id,
        [(Lifecycle.IN_SERVICE, Regime.PERIODIC, day(d)) for d in (-10, -2, 0, 5, 29)]
        + [(Lifecycle.IN_SERVICE, Regime.INITIAL_ONLY_LIMITED_LIFE, day(60))],
    )
    first = await _plan(pool, today=V)
    before = await _rows(pool, *ids)
    assert {r["kind"] for r in before} == {"due_soon", "overdue", "escalation", "rotation_due"}
    assert sum(first.created.values()) >= len(before)
    second = await _plan(pool, today=V)
    assert second.created == {}
    assert await _rows(pool, *ids) == before


async def test_a_runs_notice_ids_carry_its_time_and_sort_after_those_of_earlier_runs(pool: asyncpg.Pool) -> None:
    """The planner's notice ids are UUID version 7 of the run's clock (so that a run's notices go to
    the right edge of the primary key's index, not each to a page of its own)."""
    _, early = await _gauge(pool)
    await _plan(pool, today=day(-30), now=NOW)
    _, late = await _gauge(pool)
    await _plan(pool, today=day(-30), now=NOW + dt.timedelta(seconds=1))
    (first,), (second,) = await _rows(pool, early), await _rows(pool, late)
    assert first["id"].version == second["id"].version == 7
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    assert first["id"].int >> 80 == (NOW - epoch) // dt.timedelta(milliseconds=1)
    assert first["id"] < second["id"]


async def _next_on(pool: asyncpg.Pool, *instrument_ids: uuid.UUID) -> list[dt.date]:
    """The schedule's next planning day of each instrument (date.min for '-infinity': look next run)."""
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT instrument_id, next_on FROM notice_schedule WHERE instrument_id = ANY($1::uuid[])",
            list(instrument_ids),
        )
    by_id = {r["instrument_id"]: r["next_on"] for r in rows}
    return [by_id[i] for i in instrument_ids]


async def test_after_a_run_nothing_is_due_again_until_its_next_day(pool: asyncpg.Pool) -> None:
    """The schedule: a run leaves every instrument it planned on a later day (its next step's, the
    first overdue day, the next repeat, the escalation), so a second run the same day reads none of
    them; out of service or without valid_until, on no day at all."""
    enterprise = await _enterprise(pool)
    rows = [(Lifecycle.IN_SERVICE, Regime.PERIODIC, day(d)) for d in (40, 30, 3, 0, -6, -30)]
    rows += [(Lifecycle.SEALED, Regime.PERIODIC, V), (Lifecycle.IN_SERVICE, Regime.PERIODIC, None)]
    ids = await _instruments(pool, enterprise.id, rows)
    assert await _next_on(pool, *ids) == [dt.date.min] * len(ids)  # new: looked at by the next run
    await _plan(pool, today=V)
    infinity = dt.date.max
    assert await _next_on(pool, *ids) == [day(10), day(23), day(4), day(1), day(2), day(1), infinity, infinity]
    async with pool.acquire() as conn:
        due = await conn.fetchval(
            "SELECT count(*) FROM notice_schedule WHERE instrument_id = ANY($1::uuid[]) AND next_on <= $2",
            ids,
            V,
        )
    assert due == 0


async def test_an_instrument_whose_date_changes_is_planned_on_its_new_day(pool: asyncpg.Pool) -> None:
    """A valid_until changed behind the API's back (the schedule's trigger): moved later, the old
    cycle's reminder is cancelled and the new cycle's first step comes on its own new day, not on
    the day the old cycle had scheduled; moved earlier, its step that has come is sent on the next
    run."""
    enterprise = await _enterprise(pool)
    later, earlier = await _instruments(
        pool, enterprise.id, [(Lifecycle.IN_SERVICE, Regime.PERIODIC, V), (Lifecycle.IN_SERVICE, Regime.PERIODIC, V)]
    )
    await _plan(pool, today=day(-30))
    assert await _next_on(pool, later, earlier) == [day(-7), day(-7)]
    async with pool.acquire() as conn:
        await conn.execute("UPDATE instruments SET valid_until = $2 WHERE id = $1", later, day(20))
        await conn.execute("UPDATE instruments SET valid_until = $2 WHERE id = $1", earlier, day(-20))
    assert await _next_on(pool, later, earlier) == [dt.date.min, dt.date.min]
    await _plan(pool, today=day(-29))
    assert await _next_on(pool, later, earlier) == [day(-10), day(-27)]
    assert {(r["cycle"], r["step"], r["status"]) for r in await _rows(pool, later)} == {(V, 30, "cancelled")}
    assert {(r["cycle"], r["step"], r["status"]) for r in await _rows(pool, earlier)} == {
        (V, 30, "cancelled"),
        (day(-20), 30, "pending"),
    }
    await _plan(pool, today=day(-10))
    assert (day(20), 30, "pending") in {(r["cycle"], r["step"], r["status"]) for r in await _rows(pool, later)}


async def test_a_settings_change_replans_the_enterprise_at_once(pool: asyncpg.Pool) -> None:
    """notice_pacing: with reminder_days [7] the gauge is next looked at on V − 7; once the
    enterprise asks for [30, 7] on V − 20, the next run sends the 30-day reminder (its day has
    passed: catch-up) instead of waiting for the day the old settings scheduled."""
    enterprise, gauge = await _gauge(pool, reminder_days=[7])
    await _plan(pool, today=day(-20))
    assert await _next_on(pool, gauge) == [day(-7)]
    async with pool.acquire() as conn:
        await conn.execute("UPDATE enterprises SET reminder_days = '{30,7}' WHERE id = $1", enterprise.id)
    await _plan(pool, today=day(-19))
    assert await _keys(pool, gauge) == {("due_soon", 30, -30)}
    assert await _next_on(pool, gauge) == [day(-7)]


async def test_an_instrument_back_in_service_is_planned_again(pool: asyncpg.Pool) -> None:
    """Sealed, the gauge leaves the schedule ('infinity'); back in service (the trigger), the next
    run plans it as if it had never left."""
    _, gauge = await _gauge(pool)
    async with pool.acquire() as conn:
        await conn.execute("UPDATE instruments SET lifecycle = 'sealed' WHERE id = $1", gauge)
    await _plan(pool, today=day(2))
    assert await _next_on(pool, gauge) == [dt.date.max]
    assert await _rows(pool, gauge) == []
    async with pool.acquire() as conn:
        await conn.execute("UPDATE instruments SET lifecycle = 'in_service' WHERE id = $1", gauge)
    await _plan(pool, today=day(3))
    assert await _keys(pool, gauge) == {("overdue", 0, 1)}


async def test_an_overlapping_run_does_nothing_while_another_holds_the_lock(pool: asyncpg.Pool) -> None:
    """The advisory lock: a run that cannot take it reports ran=False and writes nothing."""
    _, gauge = await _gauge(pool)
    async with pool.acquire() as holder, holder.transaction():
        assert await holder.fetchval("SELECT pg_try_advisory_xact_lock($1)", PLAN_LOCK)
        async with pool.acquire() as conn:
            blocked = await plan(conn, NOW, today=day(1))
        assert blocked == PlanResult(ran=False, created={}, cancelled=0)
        assert await _rows(pool, gauge) == []
    await _plan(pool, today=day(1))
    assert await _keys(pool, gauge) == {("overdue", 0, 1)}


async def test_r7_a_1730z_run_on_the_valid_until_day_is_already_overdue_in_shanghai_not_in_utc(
    pool: asyncpg.Pool,
) -> None:
    """R7: at 2026-07-14T17:30Z it is 07-15 in Shanghai (the gauge is overdue: step 0, due 07-15)
    and still 07-14 in UTC (the gauge's last valid day: its 7-day reminder, no overdue notice)."""
    _, shanghai = await _gauge(pool)
    _, utc = await _gauge(pool, timezone="UTC")
    await _plan(pool, now=dt.datetime(2026, 7, 14, 17, 30, tzinfo=dt.UTC))
    assert await _keys(pool, shanghai) == {("overdue", 0, 1)}
    assert await _keys(pool, utc) == {("due_soon", 7, -7)}
    await _plan(pool, now=dt.datetime(2026, 7, 15, 0, 30, tzinfo=dt.UTC))  # 07-15 in UTC too
    assert await _keys(pool, utc, status="pending") == {("overdue", 0, 1)}
    assert await _keys(pool, utc, status="cancelled") == {("due_soon", 7, -7)}


async def test_the_planner_cancels_reminders_of_a_cycle_that_ran_out(pool: asyncpg.Pool) -> None:
    """Cancellation: a pending due_soon is cancelled once the instrument is overdue (the cycle ran
    out), saying why; the overdue notice stays pending."""
    _, gauge = await _gauge(pool)
    await _plan(pool, today=day(-7))
    await _plan(pool, today=day(0))
    assert await _keys(pool, gauge, status="pending") == {("due_soon", 7, -7)}
    later = NOW + dt.timedelta(days=1)
    result = await _plan(pool, today=day(1), now=later)
    assert result.cancelled >= 1
    rows = {r["kind"]: r for r in await _rows(pool, gauge)}
    assert rows["due_soon"]["status"] == "cancelled"
    assert rows["due_soon"]["last_error"] == "cancelled: the instrument is overdue"
    assert rows["due_soon"]["closed_at"] == later
    assert (rows["overdue"]["status"], rows["overdue"]["closed_at"]) == ("pending", None)


@pytest.mark.parametrize("lifecycle", ["sealed", "scrapped", "replaced", "failed"])
async def test_the_planner_cancels_pending_notices_of_an_instrument_out_of_service(
    pool: asyncpg.Pool, lifecycle: str
) -> None:
    """Cancellation: an instrument that left service (changed behind the API's back, so the planner
    is the one to notice) has its pending planned notices cancelled and gets no new ones."""
    _, gauge = await _gauge(pool)
    await _plan(pool, today=day(35))
    assert await _keys(pool, gauge, status="pending") == {("overdue", 4, 29), ("escalation", 0, 31)}
    async with pool.acquire() as conn:
        await conn.execute("UPDATE instruments SET lifecycle = $2 WHERE id = $1", gauge, lifecycle)
    await _plan(pool, today=day(36))
    for offset in (37, 60):
        await _plan(pool, today=day(offset))
    rows = await _rows(pool, gauge)
    assert len(rows) == 2
    assert {(r["status"], r["last_error"]) for r in rows} == {
        ("cancelled", f"cancelled: the instrument is {lifecycle}")
    }


async def test_the_planner_cancels_notices_of_a_cycle_that_no_longer_governs(pool: asyncpg.Pool) -> None:
    """Cancellation: re-verified (a new valid_until), the old cycle's pending notices are cancelled
    and the new cycle gets nothing until its own reminder days."""
    _, gauge = await _gauge(pool)
    await _plan(pool, today=day(2))
    async with pool.acquire() as conn:
        await conn.execute(
            "UPDATE instruments SET valid_until = $2, last_verified_on = $3 WHERE id = $1",
            gauge,
            day(183),
            day(1),
        )
    await _plan(pool, today=day(3))
    await _plan(pool, today=day(100))
    rows = await _rows(pool, gauge)
    assert [(r["kind"], r["cycle"], r["status"], r["last_error"]) for r in rows] == [
        ("overdue", V, "cancelled", "cancelled: a newer result governs")
    ]
    await _plan(pool, today=day(153))
    assert {(r["kind"], r["cycle"], r["step"], r["status"]) for r in await _rows(pool, gauge)} == {
        ("overdue", V, 0, "cancelled"),
        ("due_soon", day(183), 30, "pending"),
    }


# --- the SQL agrees with due_notices over a generated register ---------------------------------

BASE = dt.date(2026, 7, 1)
START = dt.datetime(2026, 7, 1, tzinfo=dt.UTC)
#: Days the planner runs (day index from BASE), with an outage from day 20 to day 28.
RUN_DAYS = [i for i in range(50) if not 20 <= i <= 28]
#: The hour of each run varies, so the enterprises' local dates differ from the UTC date (R7).
RUN_HOURS = (dt.timedelta(hours=4), dt.timedelta(hours=17, minutes=30), dt.timedelta(hours=12))
SETTINGS: list[dict[str, Any]] = [
    {"timezone": "Asia/Shanghai"},  # the defaults: [30, 7], [90, 30], 7, 30
    {
        "timezone": "UTC",
        "reminder_days": [60, 14, 1],
        "rotation_reminder_days": [30],
        "overdue_repeat_days": 3,
        "escalate_after_days": 10,
    },
    {
        "timezone": "America/Los_Angeles",
        "reminder_days": [7],
        "rotation_reminder_days": [120, 60, 7],
        "overdue_repeat_days": 1,
        "escalate_after_days": 2,
    },
]
REGIMES = (Regime.PERIODIC, Regime.INITIAL_ONLY_LIMITED_LIFE, Regime.NOT_CONTROLLED)


class _Instrument(msgspec.Struct, kw_only=True):
    enterprise: int
    lifecycle: Lifecycle
    regime: Regime
    valid_until: dt.date | None


class _Expected(msgspec.Struct, kw_only=True):
    due_on: dt.date
    audience: str
    status: str = "pending"
    last_error: str | None = None


class _Model:
    """What the planner must have written, computed with due_notices day by day."""

    def __init__(self, instruments: dict[uuid.UUID, _Instrument], pacings: list[Pacing]) -> None:
        self.instruments = instruments
        self.pacings = pacings
        self.notices: dict[tuple[uuid.UUID, str, dt.date, int], _Expected] = {}
        self.steps: dict[tuple[uuid.UUID, str, dt.date], set[int]] = defaultdict(set)

    def run(self, todays: list[dt.date]) -> None:
        for (iid, kind, cycle, _), n in self.notices.items():
            if n.status != "pending":
                continue
            inst = self.instruments[iid]
            if inst.lifecycle is not Lifecycle.IN_SERVICE:
                n.status, n.last_error = "cancelled", f"cancelled: the instrument is {inst.lifecycle}"
            elif inst.valid_until != cycle:
                n.status, n.last_error = "cancelled", "cancelled: a newer result governs"
            elif kind in REMINDERS and cycle < todays[inst.enterprise]:
                n.status, n.last_error = "cancelled", "cancelled: the instrument is overdue"
        for iid, inst in self.instruments.items():
            for d in due_notices(
                lifecycle=inst.lifecycle,
                regime=inst.regime,
                valid_until=inst.valid_until,
                pacing=self.pacings[inst.enterprise],
                today=todays[inst.enterprise],
            ):
                key = (iid, d.kind.value, d.cycle, d.step)
                series = self.steps[(iid, d.kind.value, d.cycle)]
                if key in self.notices or (d.kind.value in REMINDERS and any(s <= d.step for s in series)):
                    continue  # exists, or a smaller reminder step of this cycle was already sent
                self.notices[key] = _Expected(due_on=d.due_on, audience=d.audience.value)
                series.add(d.step)


def _pacing(settings: dict[str, Any]) -> Pacing:
    return Pacing(
        reminder_days=tuple(settings.get("reminder_days", [30, 7])),
        rotation_reminder_days=tuple(settings.get("rotation_reminder_days", [90, 30])),
        overdue_repeat_days=settings.get("overdue_repeat_days", 7),
        escalate_after_days=settings.get("escalate_after_days", 30),
    )


def _generated(rng: random.Random) -> list[tuple[Lifecycle, Regime, dt.date | None]]:
    rows: list[tuple[Lifecycle, Regime, dt.date | None]] = []
    for regime in REGIMES:
        rows += [(Lifecycle.IN_SERVICE, regime, day(d, BASE)) for d in range(-75, 135, 2)]
        rows.append((Lifecycle.IN_SERVICE, regime, None))
        for lifecycle in Lifecycle:
            if lifecycle is not Lifecycle.IN_SERVICE:
                rows += [(lifecycle, regime, day(d, BASE)) for d in (-40, -5, 0, 1, 6, 30, 60)]
    rows += [(Lifecycle.IN_SERVICE, rng.choice(REGIMES), day(rng.randrange(-200, 250), BASE)) for _ in range(80)]
    return rows


class _Register:
    """The generated register in the database and in the model, changed on both sides alike."""

    def __init__(self, pool: asyncpg.Pool, rng: random.Random) -> None:
        self.pool = pool
        self.rng = rng
        self.enterprises: list[Enterprise] = []
        self.pacings = [_pacing(s) for s in SETTINGS]
        self.instruments: dict[uuid.UUID, _Instrument] = {}
        self.model = _Model(self.instruments, self.pacings)

    async def build(self) -> None:
        for index, settings in enumerate(SETTINGS):
            enterprise = await _enterprise(self.pool, **settings)
            self.enterprises.append(enterprise)
            rows = _generated(self.rng)
            ids = await _instruments(self.pool, enterprise.id, rows)
            for iid, (lifecycle, regime, until) in zip(ids, rows, strict=True):
                self.instruments[iid] = _Instrument(
                    enterprise=index, lifecycle=lifecycle, regime=regime, valid_until=until
                )
        await self.analyze()

    async def analyze(self) -> None:
        """Fresh statistics, so the planner's statements are not run on plans made for empty tables."""
        async with self.pool.acquire() as conn:
            await conn.execute("ANALYZE enterprises, instruments, notices")

    async def change_settings(self, index: int, **settings: Any) -> None:
        self.pacings[index] = _pacing(settings)
        async with self.pool.acquire() as conn:
            await conn.execute(
                "UPDATE enterprises SET reminder_days = $2, overdue_repeat_days = $3 WHERE id = $1",
                self.enterprises[index].id,
                settings["reminder_days"],
                settings["overdue_repeat_days"],
            )

    async def disturb(self, today_index: int, count: int) -> None:
        """Seal, scrap or re-verify (early, or when overdue) ``count`` instruments in service."""
        in_service = sorted((i for i, x in self.instruments.items() if x.lifecycle is Lifecycle.IN_SERVICE), key=str)
        async with self.pool.acquire() as conn:
            for iid in self.rng.sample(in_service, count):
                what = self.rng.choice(["sealed", "scrapped", "reverified"])
                current = self.instruments[iid]
                if what == "reverified":
                    until = day(today_index + self.rng.randrange(0, 200), BASE)
                    self.instruments[iid] = msgspec.structs.replace(current, valid_until=until)
                    await conn.execute(
                        "UPDATE instruments SET valid_until = $2, last_verified_on = $2::date - 180 WHERE id = $1",
                        iid,
                        until,
                    )
                else:
                    self.instruments[iid] = msgspec.structs.replace(current, lifecycle=Lifecycle(what))
                    await conn.execute("UPDATE instruments SET lifecycle = $2 WHERE id = $1", iid, what)

    async def plan_and_compare(self, now: dt.datetime) -> None:
        await _plan(self.pool, now=now)
        self.model.run([local_today(now, e.timezone) for e in self.enterprises])
        found = {
            (r["instrument_id"], r["kind"], r["cycle"], r["step"]): _Expected(
                due_on=r["due_on"], audience=r["audience"], status=r["status"], last_error=r["last_error"]
            )
            for r in await _rows(self.pool, *self.instruments)
        }
        if found != self.model.notices:
            missing = {k: v for k, v in self.model.notices.items() if found.get(k) != v}
            extra = {k: v for k, v in found.items() if self.model.notices.get(k) != v}
            pytest.fail(f"{now}: expected but not found {missing}; found, not expected {extra}")


@pytest.fixture
async def own_pool() -> AsyncIterator[asyncpg.Pool]:
    """A database of the test's own: the planner reads every enterprise of its database, and the
    shared one holds every other test's registers, which would only slow each planning day."""
    async with (
        fresh_database("metreg_planner") as dsn,
        asyncpg.create_pool(dsn, min_size=1, max_size=4, init=init_connection) as own,
    ):
        yield own


async def test_the_planner_sql_agrees_with_due_notices_day_by_day(own_pool: asyncpg.Pool) -> None:
    """Over a generated register (three enterprises with different settings and time zones, every
    lifecycle and regime, valid-until dates around the run), planning on consecutive days — with an
    outage, a settings change and instruments sealed, scrapped and re-verified on the way — leaves
    exactly the notices that due_notices (plus the catch-up rule and the cancellation rules) gives,
    with their due dates, audiences, statuses and reasons."""
    register = _Register(own_pool, random.Random(4))
    await register.build()
    for i in RUN_DAYS:
        if i == 12:  # the first enterprise changes its reminder settings
            await register.change_settings(0, reminder_days=[45, 20, 3], overdue_repeat_days=5)
        if i in (15, 35):
            await register.disturb(i, 24)
            await register.analyze()
        await register.plan_and_compare(START + dt.timedelta(days=i) + RUN_HOURS[i % len(RUN_HOURS)])
    counts: dict[tuple[str, str], int] = defaultdict(int)
    for (_, kind, _, _), n in register.model.notices.items():
        counts[kind, n.status] += 1
    covered = [(k, "pending") for k in ("due_soon", "rotation_due", "overdue", "escalation")] + [
        (k, "cancelled") for k in ("due_soon", "rotation_due", "overdue")
    ]
    assert all(counts[c] >= 5 for c in covered), dict(counts)  # the comparison covered every case
    reasons = {n.last_error for n in register.model.notices.values() if n.status == "cancelled"}
    assert reasons == {
        "cancelled: the instrument is overdue",
        "cancelled: the instrument is sealed",
        "cancelled: the instrument is scrapped",
        "cancelled: a newer result governs",
    }


# --- metreg plan --today -------------------------------------------------------------------------


@pytest.fixture
async def cli_gauge(pool: asyncpg.Pool) -> uuid.UUID:
    _, gauge = await _gauge(pool)
    return gauge


def test_metreg_plan_today_plans_as_of_that_date_and_prints_what_it_did(
    database_url: str, cli_gauge: uuid.UUID
) -> None:
    """`metreg plan --today 2026-07-15`: every enterprise plans as of 07-15 (the gauge valid until
    07-14 gets its first overdue notice) and the command prints what it planned; a second run plans
    nothing new for it."""
    runner = CliRunner()
    first = runner.invoke(main, ["plan", "--today", "2026-07-15"], env={"DATABASE_URL": database_url})
    assert first.exit_code == 0, first.output
    assert re.fullmatch(r"planned: (\w+ \d+, )*overdue [1-9]\d*(, \w+ \d+)*; cancelled \d+ stale\n", first.stdout)

    async def notices() -> list[tuple[str, int, dt.date, str]]:
        conn = await asyncpg.connect(database_url)
        try:
            rows = await conn.fetch(
                "SELECT kind, step, due_on, status FROM notices WHERE instrument_id = $1", cli_gauge
            )
        finally:
            await conn.close()
        return [(r["kind"], r["step"], r["due_on"], r["status"]) for r in rows]

    assert asyncio.run(notices()) == [("overdue", 0, dt.date(2026, 7, 15), "pending")]
    second = runner.invoke(main, ["plan", "--today", "2026-07-15"], env={"DATABASE_URL": database_url})
    assert second.exit_code == 0, second.output
    assert second.stdout == "planned: nothing new; cancelled 0 stale\n"
    assert asyncio.run(notices()) == [("overdue", 0, dt.date(2026, 7, 15), "pending")]


def test_metreg_plan_refuses_a_malformed_date(database_url: str) -> None:
    """`metreg plan --today` takes YYYY-MM-DD only."""
    result = CliRunner().invoke(main, ["plan", "--today", "15.07.2026"], env={"DATABASE_URL": database_url})
    assert result.exit_code == 2
    assert "--today" in result.output


# --- a planning run that overlaps a change of the instrument --------------------------------------


async def _waiting_on_a_lock(conn: asyncpg.Connection, condition: str, *args: Any) -> bool:
    return bool(
        await conn.fetchval(
            f"""SELECT EXISTS (SELECT 1 FROM pg_stat_activity
                               WHERE datname = current_database() AND wait_event_type = 'Lock' AND {condition})""",
            *args,
        )
    )


async def _until(predicate: Any, what: str) -> None:
    for _ in range(500):
        if await predicate():
            return
        await asyncio.sleep(0.01)
    pytest.fail(f"timed out waiting for {what}")


@pytest.mark.parametrize("change", ["seal", "re-verify"])
async def test_a_planning_run_overlapping_a_change_of_the_instrument_leaves_no_stale_notice(
    tenant: Tenant, lab: LabAccount, pool: asyncpg.Pool, change: str
) -> None:
    """Cancellation under concurrency: the seal's (or the new certificate's) transaction has changed
    the gauge and cancelled its stale notices, but not yet committed, when a planning run starts;
    once both have committed, no notice of the old cycle may be pending (a pending one would be
    dispatched before the next run cancels it)."""
    gauge = await tenant.register(**GAUGE, last_verified_on="2026-01-15")  # due_soon 30 is due on NOW
    gauge_id = uuid.UUID(gauge["id"])
    if change == "seal":
        request = tenant.api.post(f"/v1/instruments/{gauge['id']}/seal")
    else:
        await accepted_request(tenant, lab, gauge["id"])
        request = lab.record(gauge["id"], performed_on="2026-06-10", issued_on="2026-06-12")
    async with pool.acquire() as blocker, pool.acquire() as planner, pool.acquire() as watcher:
        # Hold the change between its cancel_stale and its commit: its history row must wait.
        lock = blocker.transaction()
        await lock.start()
        await blocker.execute("LOCK TABLE instrument_events IN SHARE ROW EXCLUSIVE MODE")
        changing = asyncio.create_task(request)
        others = blocker.get_server_pid()

        async def change_waits() -> bool:
            return await _waiting_on_a_lock(watcher, "query ILIKE '%instrument_events%' AND pid <> $1", others)

        await _until(change_waits, "the change to wait for its history row")
        run = asyncio.create_task(plan(planner, NOW))
        pid = planner.get_server_pid()

        async def plan_finished_or_waits() -> bool:
            return run.done() or await _waiting_on_a_lock(watcher, "pid = $1", pid)

        await _until(plan_finished_or_waits, "the planning run to finish or wait")
        await lock.rollback()
        response = await changing
        assert response.status_code in (200, 201), response.text
        await run
    rows = await _rows(pool, gauge_id)
    stale = [
        (r["kind"], r["cycle"], r["status"]) for r in rows if r["certificate_id"] is None and r["status"] == "pending"
    ]
    assert stale == []


def test_metreg_plan_refuses_a_day_still_to_come(database_url: str) -> None:
    """Planning a future day would send its notices early and move the planner's schedule past the
    reminders of the days before it."""
    coming = (dt.datetime.now(dt.UTC).date() + dt.timedelta(days=2)).isoformat()
    result = CliRunner().invoke(main, ["plan", "--today", coming], env={"DATABASE_URL": database_url})
    assert result.exit_code == 2, result.output
    assert "still to come" in result.output
    assert "--today" in result.output
