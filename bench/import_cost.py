"""What new instruments cost PostgreSQL, part by part: the reason behind the bulk import figure.

Fills a database of its own with a register of ``--rows`` imported instruments, stages as many new
ones, then runs the INSERT an import ends with (:mod:`service.ledger.queries`) again and again in
transactions that are rolled back: as the schema has it, then without each secondary index in
turn, without the triggers (foreign-key checks and the notice schedule), and with none of them (the
table and its primary key). Each is the least of ``--runs`` runs, in the CPU time of the database
backend (``/proc/<pid>/stat``, when PostgreSQL runs on this machine; else wall time, and it says
so): CPU time stays put while other work shares the machine, wall time does not.

The difference between a row and "as the schema has it" is what that part costs; ``rows/s`` is the
most a single backend could write with the rest in place, however fast everything before it.

    python -m bench.import_cost                    # 100,000 rows onto 100,000
    python -m bench.import_cost --rows 5000 --runs 1
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

import asyncpg

from bench.import_throughput import _enterprise, _import_once, as_csv, generate_ledger
from service import migrate
from service.clock import SystemClock
from service.db import init_connection
from service.ledger.queries import STAGED

__all__ = ("main", "measure")

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/metreg_bench_import_cost"

_COLUMNS = ", ".join(STAGED)
# New instruments beside the register's: other ids, serial and management numbers.
_RENUMBERED = ", ".join(f"{c} || '+' AS {c}" if c in ("serial_no", "management_no") else c for c in STAGED)
_STAGE = f"CREATE TABLE cost_stage AS SELECT gen_random_uuid() AS id, enterprise_id, {_RENUMBERED} FROM instruments"
_INSERT = f"""
INSERT INTO instruments (id, enterprise_id, created_at, updated_at, {_COLUMNS})
SELECT id, enterprise_id, now(), now(), {_COLUMNS} FROM cost_stage ORDER BY valid_until
"""
# Secondary indexes, and the unique constraints whose index is theirs (dropped as constraints). A
# foreign key names the index it references too (conindid): instruments' own links to
# instruments_id_enterprise (schema/0020) are not that index's owners.
_INDEXES = """
SELECT i.relname AS name, c.conname AS constraint_name
FROM pg_index x
JOIN pg_class i ON i.oid = x.indexrelid
LEFT JOIN pg_constraint c ON c.conindid = x.indexrelid AND c.conrelid = x.indrelid AND c.contype IN ('p', 'u', 'x')
WHERE x.indrelid = 'instruments'::regclass AND NOT x.indisprimary
ORDER BY i.relname
"""
_NO_TRIGGERS = "SET LOCAL session_replication_role = replica"


def _cpu_seconds(pid: int) -> float | None:
    """The process's user and system CPU time, or None where /proc does not show it."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _drop(name: str, constraint: str | None) -> str:
    if constraint is not None:
        # CASCADE: foreign keys may rest on the constraint (notices' and instruments' own links on
        # instruments_id_enterprise); they go with it, in a transaction rolled back.
        return f'ALTER TABLE instruments DROP CONSTRAINT "{constraint}" CASCADE'
    return f'DROP INDEX "{name}"'


async def _insert_cost(conn: asyncpg.Connection, pid: int, setup: list[str], runs: int) -> tuple[float, bool]:
    """The least cost of the INSERT after ``setup``, each run rolled back; True when it is CPU time."""
    costs: list[float] = []
    on_cpu = True
    for _ in range(runs):
        transaction = conn.transaction()
        await transaction.start()
        try:
            for statement in setup:
                await conn.execute(statement)
            cpu, wall = _cpu_seconds(pid), time.perf_counter()
            await conn.execute(_INSERT)
            after = _cpu_seconds(pid)
            if cpu is None or after is None:
                on_cpu = False
                costs.append(time.perf_counter() - wall)
            else:
                costs.append(after - cpu)
        finally:
            await transaction.rollback()
    return min(costs), on_cpu


async def measure(dsn: str, *, rows: int, runs: int) -> list[tuple[str, float]]:
    """(variant, seconds) for writing ``rows`` new instruments onto a register of as many."""
    await migrate.drop_database(dsn)
    await migrate.create_database(dsn)
    await migrate.migrate(dsn, SystemClock().now())
    conn = await asyncpg.connect(dsn)
    try:
        await init_connection(conn)
        ledger = as_csv(generate_ledger(rows, today=SystemClock().now().date()))
        await _import_once(conn, ledger, await _enterprise(conn))
        await conn.execute(_STAGE)
        await conn.execute("ANALYZE cost_stage")
        # Sorts of the staged rows stay in memory, as they do for an import of this size.
        await conn.execute("SET work_mem = '256MB'")
        pid = await conn.fetchval("SELECT pg_backend_pid()")
        indexes = [(r["name"], r["constraint_name"]) for r in await conn.fetch(_INDEXES)]
        variants = [
            ("as the schema has it", []),
            *[(f"without {name}", [_drop(name, constraint)]) for name, constraint in indexes],
            ("without triggers (foreign keys, notice schedule)", [_NO_TRIGGERS]),
            ("table and primary key only", [*(_drop(n, c) for n, c in indexes), _NO_TRIGGERS]),
        ]
        await _insert_cost(conn, pid, [], 1)  # caches warmed, as for every run after it
        results: list[tuple[str, float]] = []
        on_cpu = True
        for label, setup in variants:
            seconds, cpu = await _insert_cost(conn, pid, setup, runs)
            on_cpu = on_cpu and cpu
            results.append((label, seconds))
        whole = results[0][1]
        unit = "CPU s" if on_cpu else "wall s"
        print(f"INSERT of {rows:,} new instruments onto {rows:,}, least of {runs} run(s), database backend {unit}:")
        print(f"  {'':<52} {'seconds':>9} {'its part':>10} {'rows/s':>12}")
        for label, seconds in results:
            part = "" if label == results[0][0] else f"{whole - seconds:.2f} s"
            speed = f"{rows / seconds:,.0f}" if seconds > 0 else "-"  # below the clock's tick (10 ms)
            print(f"  {label:<52} {seconds:7.2f} s {part:>10} {speed:>12}")
        return results
    finally:
        await conn.close()
        await migrate.drop_database(dsn)


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dsn", default=os.environ.get("METREG_BENCH_IMPORT_COST_DATABASE_URL", DEFAULT_DSN))
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args(argv)
    await measure(args.dsn, rows=args.rows, runs=args.runs)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
