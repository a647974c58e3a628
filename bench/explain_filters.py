"""EXPLAIN the register's list filters on a large register: every one must be an index scan.

Builds (once, and reuses) a database with ``--instruments`` instruments spread over
``--enterprises`` enterprises plus one large enterprise of ``--large`` instruments, then runs
``EXPLAIN (ANALYZE, BUFFERS)`` of the exact SQL ``GET /v1/enterprises/{id}/instruments`` sends for
each status, the due-date filter and search, on the large enterprise and on a small one. Prints
each plan's shape and time, as PostgreSQL first plans the statement and as it plans it from its
sixth run on a connection; exits 1 if any plan reads the instruments table sequentially, or sorts
a page without search.

    python -m bench.explain_filters                        # 1,000,000 instruments
    python -m bench.explain_filters --instruments 20000 --large 5000 --fresh
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import sys
import time
import uuid
from collections.abc import Collection, Sequence
from typing import Any, cast

import asyncpg
import msgspec

from service import dates, migrate
from service.auth import Principal, Role
from service.catalog.rules import LegalUse
from service.clock import SystemClock
from service.enterprises.queries import select_enterprise
from service.enterprises.schemas import Enterprise
from service.instruments.queries import InstrumentFilters, list_query, prefer_ordered_scan
from service.instruments.rules import Status
from service.pagination import FOR_ITS_VALUES

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/metreg_bench"
# Indexes cheaper to build once after the load than to maintain row by row during it.
_DEFERRED_INDEXES = (
    "instruments_due",
    "instruments_lifecycle_due",
    "instruments_search",
    "instruments_catalog_due",
    "instruments_use_due",
)


async def _index_definitions(conn: asyncpg.Connection) -> dict[str, str]:
    rows = await conn.fetch(
        "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'instruments' AND indexname = any($1)",
        list(_DEFERRED_INDEXES),
    )
    return {r["indexname"]: r["indexdef"] for r in rows}


async def build(dsn: str, *, instruments: int, enterprises: int, large: int, today: dt.date) -> None:
    """Load the register with set-based SQL (generate_series), then build the deferred indexes."""
    # Synthetic rows: no audit trail (and no per-row triggers at all) for a million of them.
    conn = await asyncpg.connect(dsn, server_settings={"session_replication_role": "replica"})
    try:
        definitions = await _index_definitions(conn)
        for name in definitions:
            await conn.execute(f"DROP INDEX {name}")
        started = time.perf_counter()
        await conn.execute(
            """
            INSERT INTO enterprises (name, credit_code, region_code)
            SELECT 'bench ' || n, lpad(n::text, 17, '0') || '0', '310115'
            FROM generate_series(0, $1) AS n
            """,
            enterprises,
        )
        # Enterprise 0 is the large one; the rest share what is left.
        await conn.execute(
            """
            WITH e AS (SELECT id, row_number() OVER (ORDER BY credit_code) - 1 AS k FROM enterprises
                       WHERE name LIKE 'bench %'),
                 n AS (SELECT g, CASE WHEN g < $2 THEN 0 ELSE 1 + (g % $3) END AS k
                       FROM generate_series(0, $1 - 1) AS g),
                 r AS (
                   SELECT e.id AS enterprise_id, g,
                          (ARRAY['periodic','periodic','periodic','initial_only_limited_life',
                                 'initial_only_scrap_on_failure','not_controlled'])[1 + g % 6] AS regime,
                          (ARRAY['in_service','in_service','in_service','in_service','in_service','in_service',
                                 'in_service','in_service','sealed','failed','scrapped','replaced',
                                 'pending_verification'])[1 + (g / 7) % 13] AS lifecycle,
                          $4::date - ((g::bigint * 7919) % 730)::int AS verified
                   FROM n JOIN e USING (k))
            INSERT INTO instruments (enterprise_id, name, serial_no, management_no, regime, cycle_months, lifecycle,
                                     last_verified_on, valid_until, catalog_code, legal_use)
            SELECT enterprise_id, 'instrument ' || g, 'SN' || g, 'M' || g, regime,
                   CASE WHEN regime = 'initial_only_scrap_on_failure' THEN NULL ELSE 12 END, lifecycle,
                   CASE WHEN g % 20 = 0 THEN NULL ELSE verified END,
                   CASE WHEN g % 20 = 0 OR regime = 'initial_only_scrap_on_failure' THEN NULL
                        ELSE verified + 364 END,
                   CASE regime WHEN 'periodic' THEN (ARRAY['pressure_gauge','price_scale','combustible_gas_detector',
                                                           'electronic_balance'])[1 + (g / 6) % 4]
                               WHEN 'initial_only_limited_life' THEN 'water_meter_dn25'
                               WHEN 'initial_only_scrap_on_failure' THEN 'clinical_thermometer_glass' END,
                   CASE regime WHEN 'not_controlled' THEN 'none'
                               WHEN 'initial_only_scrap_on_failure' THEN 'medical'
                               WHEN 'initial_only_limited_life' THEN 'trade_settlement'
                               ELSE (ARRAY['safety_protection','trade_settlement','safety_protection',
                                           'trade_settlement'])[1 + (g / 6) % 4] END
            FROM r
            """,
            instruments,
            large,
            enterprises,
            today,
        )
        loaded = time.perf_counter() - started
        for definition in definitions.values():
            await conn.execute(definition)
        await conn.execute("VACUUM ANALYZE instruments")
        await conn.execute("VACUUM ANALYZE enterprises")
        print(f"loaded {instruments:,} instruments in {loaded:.1f} s, indexed in {time.perf_counter() - started:.1f} s")
    finally:
        await conn.close()


class Case(msgspec.Struct, frozen=True, kw_only=True):
    label: str
    filters: dict[str, Any]


CASES = [
    Case(label="no filter", filters={}),
    *[Case(label=f"status={s.value}", filters={"status": s}) for s in Status],
    Case(label="due_before=+30d", filters={"due_before": 30}),
    Case(label="status=valid & due_before=+90d", filters={"status": Status.VALID, "due_before": 90}),
    Case(label="catalog_code=pressure_gauge", filters={"catalog_code": "pressure_gauge"}),
    Case(label="catalog_code=taximeter (none)", filters={"catalog_code": "taximeter"}),
    Case(label="legal_use=medical", filters={"legal_use": LegalUse.MEDICAL}),
    Case(label="legal_use=environmental (none)", filters={"legal_use": LegalUse.ENVIRONMENTAL_MONITORING}),
    Case(label="q=SN12345", filters={"q": "SN12345"}),
]


# The principal's settings, as the API's authentication sets them (service/auth.py _PRINCIPAL).
AS_PRINCIPAL = """SELECT set_config('metreg.key_id', $1, true), set_config('metreg.role', $2, true),
                          set_config('metreg.enterprise_id', $3, true), set_config('metreg.lab_id', $4, true),
                          set_config('metreg.region_code', $5, true)"""


def _walk(plan: dict[str, Any]) -> list[dict[str, Any]]:
    nodes = [plan]
    for child in plan.get("Plans", []):
        nodes += _walk(child)
    return nodes


def _main_nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    """The nodes of ``plan`` outside its subplans (a correlated subquery's, a policy's lookups)."""
    nodes = [plan]
    for child in plan.get("Plans", []):
        if child.get("Parent Relationship") not in ("SubPlan", "InitPlan"):
            nodes += _main_nodes(child)
    return nodes


class PagePlan(msgspec.Struct, frozen=True, kw_only=True):
    """What one EXPLAIN ANALYZE of a page read found."""

    milliseconds: float
    rows: int
    buffers: int = 0
    """Shared buffers the execution touched (hit or read), the functions its policies and index
    bounds call included."""
    scans: list[str]
    """Scans of the register's tables (the catalogue left out), as 'Node Type on index or table'."""
    sequential: bool
    """Whether it reads one of the large tables sequentially."""
    sorted: bool
    """Whether it sorts (a page without search should come in index order)."""
    read: int
    """Rows its scans of the listed table read, outside subplans: returned, or filtered out (by
    row-level security, by a filter the index does not hold), over every loop."""
    jit: bool
    """Whether the statement was compiled by JIT."""
    parallel: bool
    """Whether it started parallel workers (Gather)."""
    row_filters: list[str] = []
    """The Filter of each node outside subplans: what is evaluated for each row those nodes read
    (a function there runs once a row, where in an InitPlan it runs once)."""


def _read(node: dict[str, Any]) -> int:
    # EXPLAIN shows rows per loop (rounded): read is about what they add up to.
    per_loop = sum(
        int(node.get(key, 0)) for key in ("Actual Rows", "Rows Removed by Filter", "Rows Removed by Index Recheck")
    )
    return per_loop * int(node.get("Actual Loops", 0))


def principal_settings(principal: Principal) -> list[str]:
    """The values of the settings a request of ``principal`` runs with, for :func:`explain_read`."""
    return [
        str(principal.key_id),
        principal.role.value,
        str(principal.enterprise_id or ""),
        str(principal.lab_id or ""),
        principal.region_code or "",
    ]


async def explain_read(
    conn: asyncpg.Connection,
    sql: str,
    args: Sequence[Any],
    *,
    principal: Principal,
    setup: Sequence[str],
    table: str,
    large: Collection[str],
) -> tuple[PagePlan, PagePlan]:
    """EXPLAIN ANALYZE the read ``sql`` as the API runs it (its role, under row-level security, as
    ``principal``, after the statements ``setup`` of its transaction): the plan PostgreSQL makes for
    the first runs of the statement on a connection (custom, for its values), then the one it may
    keep from the sixth run on (generic, for any values), or, for a read that is planned for its
    values on every run (:data:`~service.pagination.FOR_ITS_VALUES` among ``setup``), that plan
    twice. ``table`` is the table the read lists; ``large``, those it must never read sequentially."""
    plans = []
    custom_only = any(FOR_ITS_VALUES in statement for statement in setup)
    modes = ("force_custom_plan", "force_custom_plan" if custom_only else "force_generic_plan")
    for mode in modes:
        async with conn.transaction():
            await conn.execute("SET LOCAL ROLE metreg_api")
            await conn.execute(AS_PRINCIPAL, *principal_settings(principal))
            for statement in setup:
                await conn.execute(statement)
            await conn.execute(f"SET LOCAL plan_cache_mode = {mode}")
            # A prepared statement, as asyncpg runs the page; EXPLAIN EXECUTE takes its values as literals.
            await conn.execute(f"PREPARE page AS {sql}")
            try:
                values = [
                    "NULL" if a is None else await conn.fetchval("SELECT quote_literal($1::text)", str(a)) for a in args
                ]
                raw = await conn.fetchval(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) EXECUTE page({', '.join(values)})")
            finally:
                await conn.execute("DEALLOCATE page")
        # Text, or already decoded on a connection that decodes JSON (service.db.init_connection).
        top = (msgspec.json.decode(raw) if isinstance(raw, str) else raw)[0]
        nodes = _walk(top["Plan"])
        plans.append(
            PagePlan(
                milliseconds=top["Execution Time"],
                rows=top["Plan"].get("Actual Rows", 0),
                buffers=top["Plan"].get("Shared Hit Blocks", 0) + top["Plan"].get("Shared Read Blocks", 0),
                scans=sorted(
                    {
                        f"{n['Node Type']} on {n.get('Index Name') or n.get('Relation Name')}"
                        for n in nodes
                        if "Scan" in n["Node Type"]
                        and n.get("Relation Name", "") != "catalog_items"
                        and "catalog_items" not in (n.get("Index Name") or "")
                    }
                ),
                sequential=any(n["Node Type"] == "Seq Scan" and n.get("Relation Name") in large for n in nodes),
                sorted=any("Sort" in n["Node Type"] for n in nodes),
                read=sum(
                    _read(n)
                    for n in _main_nodes(top["Plan"])
                    if "Scan" in n["Node Type"] and n.get("Relation Name") == table
                ),
                jit="JIT" in top,
                parallel=any(n["Node Type"].startswith("Gather") for n in nodes),
                row_filters=[n["Filter"] for n in _main_nodes(top["Plan"]) if "Filter" in n],
            )
        )
    return plans[0], plans[1]


class Recorder:
    """Stands in for a connection: remembers the statements a query function sends, and runs them
    on ``conn`` (None: runs nothing, and reads nothing)."""

    def __init__(self, conn: asyncpg.Connection | None) -> None:
        self._conn = conn
        self.setup: list[str] = []
        """The statements without values it was given to execute (a read's scan settings)."""
        self.reads: list[tuple[str, list[Any]]] = []
        """Each SELECT it was given, with its values."""

    def connection(self) -> asyncpg.Connection:
        """This recorder, typed as the connection the query functions take."""
        return cast(asyncpg.Connection, self)

    async def execute(self, sql: str, *args: Any) -> str:
        if not args:
            self.setup.append(sql)
        return "" if self._conn is None else await self._conn.execute(sql, *args)

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        self.reads.append((sql, list(args)))
        return [] if self._conn is None else await self._conn.fetch(sql, *args)

    async def fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        """A read that decides how the page is read (:func:`service.pagination.walks_for_region`),
        run as it is; not a page read."""
        return None if self._conn is None else await self._conn.fetchrow(sql, *args)


async def explain_page(
    conn: asyncpg.Connection, enterprise_id: uuid.UUID, filters: InstrumentFilters, sql: str, args: list[Any]
) -> tuple[PagePlan, PagePlan]:
    """EXPLAIN ANALYZE the register page ``sql`` as the API runs it, with an enterprise key of
    ``enterprise_id`` and the page's scan settings (see :func:`explain_read`)."""
    steering = Recorder(None)
    await prefer_ordered_scan(steering.connection(), filters)
    principal = Principal(key_id=uuid.uuid4(), role=Role.ENTERPRISE, enterprise_id=enterprise_id)
    return await explain_read(
        conn, sql, args, principal=principal, setup=steering.setup, table="instruments", large={"instruments"}
    )


async def explain(dsn: str, today: dt.date, limit: int) -> bool:
    conn = await asyncpg.connect(dsn)
    try:
        ids = await conn.fetch(
            """SELECT enterprise_id, count(*) AS n FROM instruments GROUP BY enterprise_id
               ORDER BY n DESC LIMIT 1"""
        )
        small = await conn.fetchval(
            "SELECT enterprise_id FROM instruments GROUP BY enterprise_id ORDER BY count(*) LIMIT 1"
        )
        total = await conn.fetchval("SELECT count(*) FROM instruments")
        print(f"register: {total:,} instruments; EXPLAIN ANALYZE of one page (limit {limit}), as of {today}")
        print("each as first planned (custom) and as planned from its sixth run on a connection (generic)\n")
        ok = True
        for label, enterprise_id, size in [("large", ids[0]["enterprise_id"], ids[0]["n"]), ("small", small, None)]:
            enterprise = await select_enterprise(conn, enterprise_id)
            assert isinstance(enterprise, Enterprise)
            count = size or await conn.fetchval("SELECT count(*) FROM instruments WHERE enterprise_id = $1", small)
            print(f"{label} enterprise ({count:,} instruments)")
            for case in CASES:
                given = dict(case.filters)
                if "due_before" in given:
                    given["due_before"] = today + dt.timedelta(days=given["due_before"])
                filters = InstrumentFilters(as_of=today, **given)
                sql, args = list_query(enterprise, filters, limit=limit, cursor=None)
                shown = []
                for plan in await explain_page(conn, enterprise_id, filters, sql, args):
                    # Search has no index in page order: only it may sort.
                    misplanned = plan.sequential or (plan.sorted and filters.q is None)
                    ok &= not misplanned
                    mark = "SEQ SCAN" if plan.sequential else "SORTED" if misplanned else "index"
                    shown.append(f"{plan.milliseconds:8.2f} ms  {plan.rows:4} rows  {mark:8} {'; '.join(plan.scans)}")
                print(f"  {case.label:34} {shown[0]}\n  {'':34} {shown[1]}")
            print()
        return ok
    finally:
        await conn.close()


async def ensure_register(dsn: str, now: dt.datetime, *, instruments: int, enterprises: int, large: int) -> None:
    """The bench database, migrated, holding a register of ``instruments`` (built if it holds another)."""
    await migrate.create_database(dsn)
    await migrate.migrate(dsn, now)
    conn = await asyncpg.connect(dsn)
    present = await conn.fetchval("SELECT count(*) FROM instruments")
    await conn.close()
    if present != instruments:  # a register of another size, or a half-built one: start over
        await migrate.drop_database(dsn)
        await migrate.create_database(dsn)
        await migrate.migrate(dsn, now)
        today = dates.local_today(now, "Asia/Shanghai")
        await build(dsn, instruments=instruments, enterprises=enterprises, large=large, today=today)


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dsn", default=os.environ.get("METREG_BENCH_DATABASE_URL", DEFAULT_DSN))
    parser.add_argument("--instruments", type=int, default=1_000_000)
    parser.add_argument("--enterprises", type=int, default=4_000)
    parser.add_argument("--large", type=int, default=200_000, help="instruments of the largest enterprise")
    parser.add_argument("--limit", type=int, default=50)
    parser.add_argument("--fresh", action="store_true", help="drop and rebuild the bench database")
    parser.add_argument("--drop", action="store_true", help="drop the bench database when done")
    args = parser.parse_args(argv)
    now = SystemClock().now()
    today = dates.local_today(now, "Asia/Shanghai")
    if args.fresh:
        await migrate.drop_database(args.dsn)
    await ensure_register(args.dsn, now, instruments=args.instruments, enterprises=args.enterprises, large=args.large)
    ok = await explain(args.dsn, today, args.limit)
    if args.drop:
        await migrate.drop_database(args.dsn)
    print("every filter is an index scan" if ok else "SEQUENTIAL SCAN FOUND", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
