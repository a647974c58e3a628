"""Every keyset-paged list but the register's (tests/integration/test_page_plans.py) reads its page
from an index in page order and stops there, for every kind of principal that may read it, as
PostgreSQL plans the read for its first runs on a connection (custom, for the page's values) and
as it may plan it from the sixth run on (generic, for any values): no sort, no sequential scan of
a large table, no JIT, no parallel workers. Where the index holds exactly the principal's scope (an enterprise's, a
lab's, an instrument's rows, or everyone's for an admin) the page reads no more rows than it
returns; a regulator's scope is a region, which the index walked holds among other rows.

On the ``metreg demo --instruments`` register of 10,000 instruments over 50 enterprises, with
notices, history, audit rows, requests, documents, keys, feeds and imports written beside it
(bench/explain_lists.py ``fill``), analysed, in a database of its own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from bench.explain_lists import CASES, ListCase, Subjects, Volumes, explain_case, fill, misplanned, subjects
from service.db import init_connection
from service.demo_register import load_register
from service.pagination import walks_for_region
from tests.conftest import NOW, fresh_database

LIMIT = 50
VOLUMES = Volumes(
    instruments=10_000, enterprises=50, notices=10, events=5, audit=10, requests=6, keys=2, feeds=120, long=120
)


@pytest.fixture(scope="module")
async def lists() -> AsyncIterator[tuple[asyncpg.Connection, Subjects]]:
    """The register and what accumulates beside it, in a database of its own (its statistics are
    this data's alone); whose lists are read."""
    async with fresh_database("metreg_lists") as dsn:
        await load_register(
            lambda: asyncpg.connect(dsn, server_settings={"timezone": "UTC"}),
            instruments=VOLUMES.instruments,
            enterprises=VOLUMES.enterprises,
            seed=1,
            jobs=1,
            now=NOW,
        )
        await fill(dsn, VOLUMES, NOW)
        conn = await asyncpg.connect(dsn)
        await init_connection(conn)
        try:
            yield conn, await subjects(conn, NOW)
        finally:
            await conn.close()


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
async def test_a_page_is_read_from_its_index_in_page_order_in_either_plan(
    lists: tuple[asyncpg.Connection, Subjects], case: ListCase
) -> None:
    conn, found = lists
    pages = await explain_case(conn, case, found, limit=LIMIT)
    # Each list has a full second page, read from the first page's cursor.
    assert [(page.page, page.returned) for page in pages] == [("first page", LIMIT), ("after a cursor", LIMIT)], pages
    for page in pages:
        for plan in (page.custom, page.generic):
            assert misplanned(case, plan, limit=LIMIT, gathered=page.gathered) == [], (page.page, plan)
            assert plan.rows == LIMIT + 1, (page.page, plan)


async def test_a_regulator_walks_everyones_rows_only_where_its_region_holds_enough_of_them(
    lists: tuple[asyncpg.Connection, Subjects],
) -> None:
    """A walk of everyone's rows reads about limit ÷ share of them to fill a page: for a region with
    little or nothing in it, gathering its rows and sorting them is what stays small."""
    conn, found = lists

    async def walks(region: str, table: str, limit: int) -> bool:
        async with conn.transaction():
            await conn.execute("SET LOCAL ROLE metreg_api")
            await conn.execute(
                "SELECT set_config('metreg.role', 'regulator', true), set_config('metreg.region_code', $1, true)",
                region,
            )
            return await walks_for_region(conn, table, limit)

    province = found.principal("province").region_code
    assert province is not None
    assert await walks(province, "notices", LIMIT)
    assert not await walks(province, "notices", 10_000_000)  # more than the table holds: gather
    assert not await walks("99", "notices", LIMIT)  # no enterprise there: nothing to walk for
    assert not await walks("99", "verification_requests", LIMIT)


async def test_a_gathered_page_of_a_span_finds_its_bounds_once(lists: tuple[asyncpg.Connection, Subjects]) -> None:
    """A regulator of a small region gathers its rows from audit_log_region, which holds no seq: a
    span's bounds there are no index condition but a condition on each row gathered, and each is a
    bisection of the trail. They are InitPlans, run once for the page."""
    conn, found = lists
    [case] = [c for c in CASES if c.name == "audit trail of a span as remote"]
    for page in await explain_case(conn, case, found, limit=LIMIT):
        assert page.gathered, page.page
        for plan in (page.custom, page.generic):
            assert not [f for f in plan.row_filters if "audit_seq_" in f], (page.page, plan.row_filters)
            assert misplanned(case, plan, limit=LIMIT, gathered=True) == [], (page.page, plan)
