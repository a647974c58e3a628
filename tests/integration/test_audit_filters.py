"""The audit trail's filters answer exactly what a plain filter would, read the way schema/0027
reads them (their plans: tests/integration/test_list_plans.py).

A time span is read as a range of seq bounded by the trail's clock (audit_clock: the latest `at`,
and how far any row's `at` falls behind an earlier row's): the rows of a trail whose `at` goes
back and forth must all be found, and the bounds must hold little more than the span. A small
region's page gathers its rows by region code as written. Each is checked, page by page, against
the plain query, on a database of its own (the bounds are of the whole trail, which other tests'
clocks would make loose).
"""

from __future__ import annotations

import datetime as dt
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest

from bench.explain_filters import AS_PRINCIPAL, Recorder, principal_settings
from service.audit.queries import AuditFilter, select_entries
from service.auth import Principal, Role
from service.db import init_connection
from service.pagination import GATHER
from tests.conftest import NOW, fresh_database

ADMIN = Principal(key_id=uuid.uuid4(), role=Role.ADMIN)
STEP = dt.timedelta(minutes=1)


@pytest.fixture(scope="module")
async def conn() -> AsyncIterator[asyncpg.Connection]:
    async with fresh_database("metreg_audit_filters") as dsn:
        connection = await asyncpg.connect(dsn)
        await init_connection(connection)
        try:
            yield connection
        finally:
            await connection.close()


async def as_principal(
    conn: asyncpg.Connection, principal: Principal, read: Callable[[asyncpg.Connection], Awaitable[Any]]
) -> tuple[Any, Recorder]:
    """``read`` on ``conn`` as the API runs it for ``principal`` (its role, under row-level
    security), rolled back; and what it sent."""
    recorder = Recorder(conn)
    async with conn.transaction():
        await conn.execute("SET LOCAL ROLE metreg_api")
        await conn.execute(AS_PRINCIPAL, *principal_settings(principal))
        found = await read(recorder.connection())
    return found, recorder


async def every_page(
    conn: asyncpg.Connection, principal: Principal, where: AuditFilter, *, limit: int
) -> tuple[list[int], list[Recorder]]:
    """The seq of every row of every page, following the cursors; and each page's statements."""
    seqs: list[int] = []
    recorders = []
    cursor: str | None = None
    while True:

        async def read(db: asyncpg.Connection, cursor: str | None = cursor) -> Any:
            return await select_entries(db, principal, where, limit=limit, cursor=cursor)

        (items, cursor), recorder = await as_principal(conn, principal, read)
        seqs += [item.seq for item in items]
        recorders.append(recorder)
        if cursor is None:
            return seqs, recorders
        assert len(items) == limit


async def append(conn: asyncpg.Connection, rows: list[dict[str, Any]]) -> list[int]:
    """Append ``rows`` to the trail as audit_record would (as its owner; the clock's trigger
    runs), one statement each; their seqs."""
    seqs = []
    for row in rows:
        seq = await conn.fetchval(
            """INSERT INTO audit_log (seq, at, actor_key_id, actor_role, action, entity, entity_id, operation,
                                      enterprise_id, region_code, prev_hash, hash)
               SELECT coalesce(max(seq), 0) + 1, $1, $2, 'admin', $3, $4, $5, 'update', $6, $7,
                      sha256('x'::bytea), sha256('x'::bytea)
               FROM audit_log RETURNING seq""",
            row["at"],
            row.get("actor"),
            row.get("action", "UpdateInstrument"),
            row.get("entity", "instruments"),
            row.get("entity_id", str(uuid.uuid4())),
            row.get("enterprise_id"),
            row.get("region_code"),
        )
        seqs.append(seq)
    return seqs


async def plain(conn: asyncpg.Connection, where: str, *args: Any) -> list[int]:
    return [r["seq"] for r in await conn.fetch(f"SELECT seq FROM audit_log WHERE {where} ORDER BY seq DESC", *args)]


@pytest.fixture(scope="module")
async def trail(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    """2,000 rows a minute apart, of two enterprises, as a busy register writes them: a row in 20
    from a transaction that began up to 15 minutes before the rows it follows, and once a clock
    set a day back."""
    rng = random.Random(24)
    enterprises = [uuid.uuid4(), uuid.uuid4()]
    rows = []
    for i in range(2000):
        at = NOW + i * STEP
        if rng.random() < 0.05:
            at -= rng.randint(1, 15) * STEP
        rows.append({"at": at, "enterprise_id": enterprises[i % 2], "region_code": "310115"})
    rows[1500]["at"] = NOW + 1500 * STEP - dt.timedelta(days=1)
    # Two rows of the same instant as the row before them, and one at a span's exact end.
    rows[700]["at"] = rows[699]["at"]
    rows[701]["at"] = rows[699]["at"]
    await append(conn, rows)
    return rows


async def test_the_clock_keeps_the_latest_instant_and_the_longest_lag_of_the_rows_appended(
    conn: asyncpg.Connection, trail: list[dict[str, Any]]
) -> None:
    """The clock's `high` is the latest `at` rounded up to the next minute, and its lag is counted
    from it (so that the row changes at most once a minute, and when the lag grows): at least the
    trail's true lag, so the bounds hold every row, and at most a minute more."""
    clock = await conn.fetchrow("SELECT high, lag FROM audit_clock")
    assert clock is not None
    latest, true_lag = trail[0]["at"], dt.timedelta(0)
    high, lag = None, dt.timedelta(0)
    for row in trail:
        true_lag, latest = max(true_lag, latest - row["at"]), max(latest, row["at"])
        high = max(high or latest, minute_after(row["at"]))
        lag = max(lag, high - row["at"])
    assert (clock["high"], clock["lag"]) == (high, lag)
    assert latest < clock["high"] <= latest + STEP
    assert true_lag <= clock["lag"] <= true_lag + STEP
    assert true_lag > dt.timedelta(hours=23)  # the row of a day back
    assert tuple(await conn.fetchrow("SELECT high, lag FROM audit_clock_recount()")) == tuple(clock)


async def test_the_clock_row_is_rewritten_once_a_minute_not_once_a_commit(
    conn: asyncpg.Connection, trail: list[dict[str, Any]]
) -> None:
    """Each append is a commit of its own here: rows in order within one minute leave the clock's
    row as it is (no dead version of it for an old snapshot to keep), the first row of the next
    minute moves it."""
    start = NOW + dt.timedelta(days=10)
    version = "SELECT xmin::text FROM audit_clock"
    await append(conn, [{"at": start + dt.timedelta(seconds=1)}])
    moved = await conn.fetchval(version)
    await append(conn, [{"at": start + dt.timedelta(seconds=s)} for s in range(2, 40, 3)])
    assert await conn.fetchval(version) == moved
    await append(conn, [{"at": start + STEP}])
    assert await conn.fetchval(version) != moved
    assert await conn.fetchval("SELECT high FROM audit_clock") == start + 2 * STEP


def minute_after(at: dt.datetime) -> dt.datetime:
    """The whole minute (UTC) after ``at``."""
    return at.astimezone(dt.UTC).replace(second=0, microsecond=0) + STEP


@pytest.mark.parametrize("scope", ["admin", "enterprise"])
async def test_a_time_span_is_every_row_whose_instant_is_in_it_whatever_the_order_they_came_in(
    conn: asyncpg.Connection, trail: list[dict[str, Any]], scope: str
) -> None:
    rng = random.Random(scope)
    enterprise = trail[0]["enterprise_id"]
    principal = (
        ADMIN if scope == "admin" else Principal(key_id=uuid.uuid4(), role=Role.ENTERPRISE, enterprise_id=enterprise)
    )
    instants = sorted({row["at"] for row in trail})
    spans: list[tuple[dt.datetime | None, dt.datetime | None]] = [
        (trail[699]["at"], None),  # since the instant three rows share
        (None, trail[699]["at"]),
        (trail[699]["at"], trail[699]["at"] + STEP),
        (NOW + 1400 * STEP, NOW + 1600 * STEP),  # around where the row of a day back was written
        (NOW + 30 * STEP, NOW + 90 * STEP),  # and where its instant falls
        (NOW - dt.timedelta(days=2), NOW - dt.timedelta(days=1)),  # nothing in it
        (None, None),
    ]
    for _ in range(12):
        a, b = sorted(rng.sample(instants, 2))
        spans.append((a + rng.choice([dt.timedelta(0), dt.timedelta(seconds=1)]), b))
    for since, until in spans:
        where = AuditFilter(since=since, until=until)
        got, _ = await every_page(conn, principal, where, limit=rng.choice([7, 50, 500]))
        clauses, args = ["TRUE"], []
        if scope == "enterprise":
            args.append(enterprise)
            clauses.append(f"enterprise_id = ${len(args)}")
        if since is not None:
            args.append(since)
            clauses.append(f"at >= ${len(args)}")
        if until is not None:
            args.append(until)
            clauses.append(f"at < ${len(args)}")
        assert got == await plain(conn, " AND ".join(clauses), *args), (since, until)


async def test_the_bounds_of_a_span_hold_its_rows_and_only_those_near_its_ends(
    conn: asyncpg.Connection, trail: list[dict[str, Any]]
) -> None:
    """What a page may read beyond its rows: those within twice the lag of either end."""
    lag = await conn.fetchval("SELECT lag FROM audit_clock")
    for i, j in [(100, 300), (1000, 1100), (1800, 1999)]:
        since, until = trail[i]["at"], trail[j]["at"]
        first = await conn.fetchval("SELECT audit_seq_from($1)", since)
        beyond = await conn.fetchval("SELECT audit_seq_until($1)", until)
        inside = await conn.fetch("SELECT seq, at FROM audit_log WHERE seq >= $1 AND seq < $2", first, beyond)
        assert {r["seq"] for r in inside} >= set(await plain(conn, "at >= $1 AND at < $2", since, until))
        assert all(since - 2 * lag <= r["at"] < until + 2 * lag for r in inside)


async def test_each_filter_of_the_trail_is_every_row_it_names(conn: asyncpg.Connection) -> None:
    actor, entity_id, enterprise = uuid.uuid4(), str(uuid.uuid4()), uuid.uuid4()
    rows = [
        {"at": NOW + dt.timedelta(days=3, minutes=i), "actor": actor if i % 9 == 0 else None,
         "action": "SealInstrument" if i % 7 == 0 else "UpdateInstrument",
         "entity": "labs" if i % 5 == 0 else "instruments", "entity_id": entity_id if i % 4 == 0 else str(i),
         "enterprise_id": enterprise}
        for i in range(300)
    ]  # fmt: skip
    await append(conn, rows)
    for where, clause, value in [
        (AuditFilter(actor_key_id=actor), "actor_key_id = $1", actor),
        (AuditFilter(action="SealInstrument", enterprise_id=enterprise), "action = $1", "SealInstrument"),
        (AuditFilter(entity="labs", enterprise_id=enterprise), "entity = $1", "labs"),
        (AuditFilter(entity_id=entity_id), "entity_id = $1", entity_id),
        (AuditFilter(entity="labs", entity_id=entity_id), "entity = 'labs' AND entity_id = $1", entity_id),
    ]:
        got, _ = await every_page(conn, ADMIN, where, limit=10)
        assert got == await plain(conn, f"{clause} AND enterprise_id = '{enterprise}'", value), where
        assert got


async def test_a_small_region_gathers_its_rows_as_written_and_its_own_keys(conn: asyncpg.Connection) -> None:
    """A regulator of a region with one enterprise in many gathers its rows by the region code each
    row was written with: the enterprise's rows from before it moved away stay there, those from
    after it moved in are found, and its own keys' rows (no enterprise) too, not its enterprises'."""
    async with conn.transaction():
        await conn.executemany(
            "INSERT INTO enterprises (name, credit_code, region_code) VALUES ($1, $2, $3)",
            [(f"e{i}", f"9131{i:014d}", "330106") for i in range(40)],
        )
        moved = await conn.fetchval(
            "INSERT INTO enterprises (name, credit_code, region_code) VALUES ('moved', '913200000000000099', '650102') "
            "RETURNING id"
        )
    start = NOW + dt.timedelta(days=10)
    rows = [
        {"at": start + i * STEP, "enterprise_id": moved, "region_code": "650102" if i < 60 else "440305"}
        for i in range(90)
    ]
    rows += [{"at": start + i * STEP, "entity": "api_keys", "region_code": "6501"} for i in range(90, 95)]
    rows += [{"at": start + i * STEP, "entity": "api_keys", "region_code": "650102"} for i in range(95, 100)]
    rows += [{"at": start + i * STEP, "entity": "webhooks", "enterprise_id": moved, "region_code": "650102"}
             for i in range(100, 105)]  # fmt: skip
    seqs = await append(conn, rows)
    for region in ("650102", "6501", "65"):
        regulator = Principal(key_id=uuid.uuid4(), role=Role.REGULATOR, region_code=region)
        got, recorders = await every_page(conn, regulator, AuditFilter(), limit=8)
        assert all(any(s.startswith(GATHER) for s in recorder.setup) for recorder in recorders), region
        expected = await plain(
            conn,
            "starts_with(region_code, $1) AND (entity NOT IN ('webhooks', 'api_keys', 'calendar_feeds') "
            "OR enterprise_id IS NULL AND region_code = $1)",
            region,
        )
        assert got == expected, region
        assert set(seqs[:60]) <= set(got)  # written while it was there
        assert not set(seqs[60:90]) & set(got)  # written after it moved away
        assert (set(seqs[90:95]) <= set(got)) == (region == "6501")  # a key of region 6501's own
        assert (set(seqs[95:100]) <= set(got)) == (region == "650102")
