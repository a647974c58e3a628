"""EXPLAIN the planner on a large register: it reads only due rows, and never the whole table.

Uses the register :mod:`bench.explain_filters` builds (1,000,000 instruments by default). Inside a
transaction that is rolled back, plans the day before (what a worker that ran yesterday leaves),
then runs ``EXPLAIN (ANALYZE, BUFFERS)`` of the statement that reads the instruments whose day has
come, then the whole planning run, twice: the first run of a day (creates that day's notices) and a
second one (reads no instrument at all). Prints the rows read from ``instruments`` beside the rows
that are in a reminder window or overdue; exits 1 if a plan reads ``instruments`` sequentially,
reads more instrument rows than those, or the second run reads any.

    python -m bench.explain_planner                     # 1,000,000 instruments
    python -m bench.explain_planner --instruments 20000 --large 5000
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import sys
import time
from typing import Any

import asyncpg
import msgspec

from bench.explain_filters import DEFAULT_DSN, ensure_register
from jobs.plan import _DUE, _LATEST, plan
from service import dates
from service.clock import SystemClock

STATEMENTS = {"instruments whose day came": _DUE}

# In-service instruments a day's planning may concern: in the widest reminder window, or overdue.
_DUE = """
SELECT count(*) FROM instruments i JOIN enterprises e ON e.id = i.enterprise_id
WHERE i.lifecycle = 'in_service'
  AND i.due_key <= $1::date + greatest((SELECT max(o) FROM unnest(e.reminder_days) o),
                                       (SELECT max(o) FROM unnest(e.rotation_reminder_days) o))
"""


def _nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    found = [plan]
    for child in plan.get("Plans", []):
        found += _nodes(child)
    return found


class Measured(msgspec.Struct, frozen=True, kw_only=True):
    label: str
    run: str
    ms: float
    instrument_rows: int
    found: int
    sequential: bool


async def _explain(conn: asyncpg.Connection, label: str, run: str, sql: str, now: dt.datetime) -> Measured:
    latest = await conn.fetchval(_LATEST, now, None)
    raw = await conn.fetchval(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {sql}", now, None, [], latest)
    top = msgspec.json.decode(raw)[0]
    nodes = _nodes(top["Plan"])
    on_instruments = [n for n in nodes if n.get("Relation Name") == "instruments" and "Scan" in n["Node Type"]]
    return Measured(
        label=label,
        run=run,
        ms=top["Execution Time"],
        # Rows a scan returned plus those its filter dropped: every row it looked at.
        instrument_rows=sum(
            int((n.get("Actual Rows", 0) + n.get("Rows Removed by Filter", 0)) * n.get("Actual Loops", 1))
            for n in on_instruments
        ),
        found=int(top["Plan"].get("Actual Rows", 0)),
        sequential=any(n["Node Type"] == "Seq Scan" for n in on_instruments),
    )


async def explain(dsn: str, now: dt.datetime) -> bool:
    conn = await asyncpg.connect(dsn, server_settings={"timezone": "UTC"})
    try:
        today = dates.local_today(now, "Asia/Shanghai")
        total = await conn.fetchval("SELECT count(*) FROM instruments")
        due = await conn.fetchval(_DUE, today)
        print(f"register: {total:,} instruments, {due:,} in service and due or overdue on {today}\n")
        ok = True
        transaction = conn.transaction()
        await transaction.start()
        try:
            await conn.execute("SET LOCAL ROLE metreg_worker")  # as the worker runs it
            started = time.perf_counter()
            before = await plan(conn, now - dt.timedelta(days=1))
            took = (time.perf_counter() - started) * 1000
            # As autovacuum would after a run that rescheduled most of the register.
            await conn.execute("ANALYZE notice_schedule")
            created = sum(before.created.values())
            print(f"  {'the day before':22} {'plan() in all':26} {took:10.1f} ms  created {created:>9,}")
            for run in ("first run of the day", "second run"):
                for label, sql in STATEMENTS.items():
                    m = await _explain(conn, label, run, sql, now)
                    bounded = m.instrument_rows <= (due if run.startswith("first") else 0)
                    ok &= bounded and not m.sequential
                    mark = "SEQ SCAN" if m.sequential else ("ok" if bounded else "READS TOO MUCH")
                    print(
                        f"  {run:22} {label:26} {m.ms:10.1f} ms  read {m.instrument_rows:>9,} instruments  "
                        f"found {m.found:>9,}  {mark}"
                    )
                started = time.perf_counter()
                result = await plan(conn, now)
                took = (time.perf_counter() - started) * 1000
                print(f"  {run:22} {'plan() in all':26} {took:10.1f} ms  created {sum(result.created.values()):>9,}")
        finally:
            await transaction.rollback()
        return ok
    finally:
        await conn.close()


async def _schedule_all(dsn: str) -> None:
    """Give the register's instruments their planning schedule: :mod:`bench.explain_filters` loads
    them with triggers off (session_replication_role), and so without the rows the insert trigger of
    schema/0013 adds."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "INSERT INTO notice_schedule (instrument_id) SELECT id FROM instruments ON CONFLICT DO NOTHING"
        )
        await conn.execute("VACUUM ANALYZE notice_schedule")
    finally:
        await conn.close()


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dsn", default=os.environ.get("METREG_BENCH_DATABASE_URL", DEFAULT_DSN))
    parser.add_argument("--instruments", type=int, default=1_000_000)
    parser.add_argument("--enterprises", type=int, default=4_000)
    parser.add_argument("--large", type=int, default=200_000, help="instruments of the largest enterprise")
    parser.add_argument("--drop", action="store_true", help="drop the bench database when done")
    # `make bench` passes the same BENCH_ARGS to both scripts: the other's options are not ours.
    args, _ = parser.parse_known_args(argv)
    now = SystemClock().now()
    await ensure_register(args.dsn, now, instruments=args.instruments, enterprises=args.enterprises, large=args.large)
    await _schedule_all(args.dsn)
    ok = await explain(args.dsn, now)
    if args.drop:
        from service import migrate

        await migrate.drop_database(args.dsn)
    print("the planner reads only due rows" if ok else "THE PLANNER READS MORE THAN THE DUE ROWS", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
