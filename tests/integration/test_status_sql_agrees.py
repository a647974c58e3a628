"""The SQL status filters and the Python status function agree, row by row.

A generated register covers every lifecycle and regime, dates on and around each boundary, and
both due-soon windows; for many local dates, each status filter must return exactly the rows that
``status_of`` gives that status.
"""

from __future__ import annotations

import datetime as dt
import random

import asyncpg
import pytest

from service.catalog.rules import Regime
from service.enterprises.queries import insert_enterprise
from service.enterprises.schemas import Enterprise, EnterpriseCreate
from service.instruments.queries import InstrumentFilters, select_instruments
from service.instruments.rules import DueSoonWindows, Lifecycle, Status, status_of
from tests.conftest import NOW, new_credit_code

BASE = dt.date(2026, 6, 15)
REGIMES = [
    Regime.PERIODIC,
    Regime.INITIAL_ONLY_LIMITED_LIFE,
    Regime.INITIAL_ONLY_SCRAP_ON_FAILURE,
    Regime.NOT_CONTROLLED,
]


def _register(rng: random.Random) -> list[tuple[Lifecycle, Regime, dt.date | None, dt.date | None]]:
    rows = []
    offsets = [-400, -91, -90, -89, -31, -30, -29, -8, -7, -1, 0, 1, 6, 7, 8, 29, 30, 31, 89, 90, 91, 400]
    for lifecycle in Lifecycle:
        for regime in REGIMES:
            for offset in offsets:
                verified = BASE - dt.timedelta(days=800)
                until = None if regime is Regime.INITIAL_ONLY_SCRAP_ON_FAILURE else BASE + dt.timedelta(days=offset)
                rows.append((lifecycle, regime, verified, until))
            rows.append((lifecycle, regime, None, None))  # never verified
    for _ in range(300):
        regime = rng.choice(REGIMES)
        verified = BASE - dt.timedelta(days=rng.randrange(0, 900)) if rng.random() > 0.1 else None
        until = None
        if verified is not None and regime is not Regime.INITIAL_ONLY_SCRAP_ON_FAILURE:
            until = verified + dt.timedelta(days=rng.randrange(0, 1200))
        rows.append((rng.choice(list(Lifecycle)), regime, verified, until))
    return rows


@pytest.fixture(params=[([30, 7], [90, 30]), ([120, 7], [30])], ids=["periodic<rotation", "periodic>rotation"])
async def generated(
    request: pytest.FixtureRequest,
    pool: asyncpg.Pool,
) -> tuple[Enterprise, dict[str, tuple[Lifecycle, Regime, dt.date | None, dt.date | None]]]:
    rng = random.Random(7)
    async with pool.acquire() as conn, conn.transaction():
        enterprise = await insert_enterprise(
            conn,
            EnterpriseCreate(
                name="agreement",
                credit_code=new_credit_code(),
                region_code="310115",
                reminder_days=request.param[0],
                rotation_reminder_days=request.param[1],
            ),
            NOW,
        )
        rows = _register(rng)
        ids = await conn.fetch(
            """INSERT INTO instruments (enterprise_id, name, serial_no, regime, cycle_months, lifecycle,
                                        last_verified_on, valid_until, validity_source)
               SELECT $1, 'generated', 'G' || n, r, 12, l, v, u, 'printed'
               FROM unnest($2::text[], $3::text[], $4::date[], $5::date[]) WITH ORDINALITY AS t(r, l, v, u, n)
               RETURNING id, serial_no""",
            enterprise.id,
            [r[1].value for r in rows],
            [r[0].value for r in rows],
            [r[2] for r in rows],
            [r[3] for r in rows],
        )
    by_id = {str(row["id"]): rows[int(row["serial_no"][1:]) - 1] for row in ids}
    return enterprise, by_id


async def test_every_status_filter_matches_status_of(pool: asyncpg.Pool, generated: tuple) -> None:  # type: ignore[type-arg]
    enterprise, rows = generated
    windows = DueSoonWindows.from_reminders(enterprise.reminder_days, enterprise.rotation_reminder_days)
    days = [BASE + dt.timedelta(days=d) for d in range(-120, 500, 7)] + [
        BASE + dt.timedelta(days=d) for d in (-1, 0, 1, 29, 30, 31, 89, 90, 91)
    ]
    checked = 0
    async with pool.acquire() as conn:
        for today in days:
            expected: dict[Status, set[str]] = {s: set() for s in Status}
            for row_id, (lifecycle, regime, verified, until) in rows.items():
                status = status_of(
                    lifecycle=lifecycle,
                    regime=regime,
                    last_verified_on=verified,
                    valid_until=until,
                    today=today,
                    windows=windows,
                )
                expected[status].add(row_id)
            for status in Status:
                items, cursor = await select_instruments(
                    conn, enterprise, InstrumentFilters(as_of=today, status=status), limit=500, cursor=None
                )
                assert cursor is None
                found = {str(item.id) for item in items}
                assert found == expected[status], (today, status, found ^ expected[status])
                assert all(item.status is status for item in items)  # the read model agrees too
                checked += len(found)
    assert checked == len(rows) * len(days)  # every row landed in exactly one status each day
