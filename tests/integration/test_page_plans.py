"""A register page without search is read in index order, never sorted: as PostgreSQL plans the
page's statement for its first runs on a connection (for the page's values) and as it may plan it
from the sixth run on (for any values, the plan it then keeps). Either way a page costs the rows
it returns, whatever the size of the enterprise (design.md §9).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator

import asyncpg
import pytest

from bench.explain_filters import CASES, explain_page
from service import dates
from service.demo_register import load_register
from service.enterprises.queries import select_enterprise
from service.enterprises.schemas import Enterprise
from service.instruments.queries import InstrumentFilters, list_query
from tests.conftest import NOW, fresh_database

TODAY = dates.local_today(NOW, "Asia/Shanghai")


@pytest.fixture(scope="module")
async def register() -> AsyncIterator[tuple[asyncpg.Connection, Enterprise]]:
    """The ``metreg demo --instruments`` register of 10,000 instruments over 50 enterprises, analysed,
    in a database of its own (its statistics are this register's alone); its largest enterprise."""
    async with fresh_database("metreg_plans") as dsn:
        await load_register(
            lambda: asyncpg.connect(dsn, server_settings={"timezone": "UTC"}),
            instruments=10_000,
            enterprises=50,
            seed=1,
            jobs=1,
            now=NOW,
        )
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute("ANALYZE")
            largest = await conn.fetchval(
                "SELECT enterprise_id FROM instruments GROUP BY enterprise_id ORDER BY count(*) DESC LIMIT 1"
            )
            enterprise = await select_enterprise(conn, largest)
            assert enterprise is not None
            yield conn, enterprise
        finally:
            await conn.close()


@pytest.mark.parametrize("case", [c for c in CASES if "q" not in c.filters], ids=lambda c: c.label)
async def test_a_page_without_search_is_an_index_scan_in_page_order_in_either_plan(
    register: tuple[asyncpg.Connection, Enterprise], case: object
) -> None:
    conn, enterprise = register
    given = dict(case.filters)  # type: ignore[attr-defined]
    if "due_before" in given:
        given["due_before"] = TODAY + dt.timedelta(days=given["due_before"])
    filters = InstrumentFilters(as_of=TODAY, **given)
    sql, args = list_query(enterprise, filters, limit=100, cursor=None)
    for plan in await explain_page(conn, enterprise.id, filters, sql, args):
        assert not plan.sorted, plan
        assert not plan.sequential, plan
        assert any(scan.startswith("Index Scan on instruments_") for scan in plan.scans), plan
