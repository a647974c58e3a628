"""``make bench``: design.md §9's figures, measured side by side in one run, each beside its target.

Builds the ``metreg demo --instruments`` register (1,000,000 instruments over 10,000 enterprises by
default) in a database of its own, then measures, ``--runs`` times each:

- reads: ``GET /v1/instruments/{id}`` of ``metreg serve`` against the same primary-key read of a
  bare Litestar + asyncpg app (:mod:`bench.bare`) and of a bare FastAPI + pydantic one
  (:mod:`bench.bare_fastapi`, when the ``bench`` extra is installed), in turn, 32 keep-alive
  connections each;
- lists: ``GET /v1/enterprises/{id}/instruments?status=valid&due_before=…&limit=100`` on the
  largest enterprise against the bare apps' 100-row page;
- import: a CSV ledger into a new enterprise, bytes to commit (:mod:`bench.import_throughput`);
- planner: ``jobs.plan`` for today over the whole register, the day before planned and kept first
  (each measured run rolled back);
- delivery: ``metreg worker --burst`` delivering planned notices to a local webhook receiver;
- the peak RSS of the API process (over reads and lists) and of the worker.

Servers run pinned to one core and the load to the other where the machine has two. Prints one
table and writes it as JSON to ``--results`` (``<UTC time>.json`` and ``latest.json``). Absolute
figures on a shared machine move 2-3x within minutes: the ratios, paired run by run, are the figures.

    python -m bench                                     # the full register, ~5 minutes
    python -m bench --small                             # 20,000 instruments, ~3 minutes
    python -m bench --only reads --runs 5 --keep        # keep the register for the next run
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import os
import platform
import sys
import time
import uuid
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import uvloop

from bench import import_throughput
from bench.load import LoadResult, request_bytes, run_load
from bench.processes import BIN, Process, free_port, pin_self, server_core, wait_http
from bench.receiver import Receiver
from bench.register import Register, build_register, describe_register, ensure_register
from bench.report import Figure, Goal, Report, figure, render, write
from jobs.plan import plan
from service import dates, migrate
from service.clock import SystemClock

__all__ = ("MEASUREMENTS", "main")

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/metreg_bench"
RESULTS = Path(__file__).parent / "results"
CONNECTIONS = 32


class Options(msgspec.Struct, frozen=True, kw_only=True):
    dsn: str
    redis_url: str
    instruments: int
    enterprises: int
    seed: int
    runs: int
    seconds: float
    import_rows: int
    delivery_instruments: int
    only: frozenset[str]
    keep: bool
    results: Path


class Context:
    """What the measurements share: options, the register, the clock, and what they found."""

    def __init__(self, options: Options, register: Register, now: dt.datetime) -> None:
        self.options = options
        self.register = register
        self.now = now
        self.today = dates.local_today(now, "Asia/Shanghai")
        self.figures: list[Figure] = []
        self.details: dict[str, Any] = {}
        self.load_core = server_core()

    def derived_dsn(self, suffix: str) -> str:
        return f"{self.options.dsn}_{suffix}"

    def env(self, **extra: str) -> dict[str, str]:
        return {
            **os.environ,
            "DATABASE_URL": self.options.dsn,
            "REDIS_URL": self.options.redis_url,
            "METREG_LOG_LEVEL": "WARNING",
            # One key makes every request: the per-key limit would measure itself.
            "METREG_RATE_LIMIT": "0",
            **extra,
        }

    async def load(self, port: int, requests: list[bytes], seconds: float) -> LoadResult:
        core = self.load_core
        before = pin_self(None if core is None else os.sched_getaffinity(0) - {core})
        try:
            result = await run_load("127.0.0.1", port, requests, connections=CONNECTIONS, seconds=seconds)
        finally:
            pin_self(before)
        if result.errors or set(result.statuses) != {200}:
            raise RuntimeError(f"the load on port {port} got {result.statuses} and {result.errors} errors")
        return result


def _bare_apps() -> list[str]:
    """The yardsticks that can run here: FastAPI's only with the ``bench`` extra installed."""
    return ["litestar", "fastapi"] if importlib.util.find_spec("fastapi") is not None else ["litestar"]


async def _servers(ctx: Context) -> dict[str, tuple[Process, int]]:
    """metreg and the bare apps, each on a port of its own, all on the server core."""
    core = ctx.load_core
    modules = {"litestar": "bench.bare", "fastapi": "bench.bare_fastapi"}
    started: dict[str, tuple[Process, int]] = {}
    try:
        port = free_port()
        started["metreg"] = (Process([str(BIN / "metreg"), "serve", "--port", str(port)], ctx.env(), core=core), port)
        for name in _bare_apps():
            port = free_port()
            argv = [sys.executable, "-m", modules[name], "--dsn", ctx.options.dsn, "--port", str(port)]
            started[name] = (Process(argv, ctx.env(), core=core), port)
        for process, port in started.values():
            await wait_http(process, port)
    except BaseException:
        for process, _ in started.values():
            await process.stop()
        raise
    return started


async def _paired(
    ctx: Context, label: str, requests: dict[str, list[bytes]]
) -> tuple[dict[str, list[LoadResult]], float]:
    """Runs of metreg and each bare app in turn (``requests``: by app name); metreg's peak RSS over them."""
    servers = await _servers(ctx)
    results: dict[str, list[LoadResult]] = {name: [] for name in servers}
    try:
        warm = min(2.0, ctx.options.seconds)  # pools filled, first-request paths taken
        for name, (_, port) in servers.items():
            await ctx.load(port, requests[name], warm)
        for run in range(ctx.options.runs):
            for name, (_, port) in servers.items():
                results[name].append(await ctx.load(port, requests[name], ctx.options.seconds))
            shown = "; ".join(f"{n} {r[-1].rps:,.0f} req/s p99 {r[-1].p99_ms:.1f} ms" for n, r in results.items())
            print(f"  {label} run {run + 1}: {shown}", flush=True)
    finally:
        rss = await servers["metreg"][0].stop()
        for name, (process, _) in servers.items():
            if name != "metreg":
                await process.stop()
    ctx.details[label] = results
    return results, rss


def _ratios(results: dict[str, list[LoadResult]], name: str) -> list[float]:
    return [a.rps / b.rps for a, b in zip(results["metreg"], results[name], strict=True)]


def _auth(ctx: Context) -> dict[str, str]:
    return {"Authorization": f"Bearer {ctx.register.enterprise_key}"}


async def measure_reads(ctx: Context) -> None:
    ids = ctx.register.sample
    bare = [request_bytes("127.0.0.1", f"/instruments/{i}") for i in ids]
    results, rss = await _paired(
        ctx,
        "reads",
        {
            "metreg": [request_bytes("127.0.0.1", f"/v1/instruments/{i}", _auth(ctx)) for i in ids],
            "litestar": bare,
            "fastapi": bare,
        },
    )
    ours = results["metreg"]
    ctx.figures += [
        figure("Instrument read, metreg ÷ bare Litestar", "×", _ratios(results, "litestar"),
               goal=Goal.AT_LEAST, target=0.60, note="throughput, paired runs"),
    ]  # fmt: skip
    if "fastapi" in results:
        ctx.figures.append(
            figure("Instrument read, metreg ÷ bare FastAPI", "×", _ratios(results, "fastapi"),
                   goal=Goal.AT_LEAST, target=1.0, note="throughput, paired runs")
        )  # fmt: skip
    ctx.figures += [
        figure("Instrument read p99, metreg", "ms", [r.p99_ms for r in ours], goal=Goal.UNDER, target=20),
        figure("Instrument read, metreg", "req/s", [r.rps for r in ours]),
        figure("Instrument read p50, metreg", "ms", [r.p50_ms for r in ours]),
        *[figure(f"Instrument read, bare {n}", "req/s", [r.rps for r in results[n.lower()]]) for n in _NAMES
          if n.lower() in results],
        *[figure(f"Instrument read p99, bare {n}", "ms", [r.p99_ms for r in results[n.lower()]]) for n in _NAMES
          if n.lower() in results],
        figure("API peak RSS, reads", "MB", [rss], goal=Goal.UNDER, target=200),
    ]  # fmt: skip


async def measure_lists(ctx: Context) -> None:
    enterprise = ctx.register.largest_enterprise
    due_before = ctx.today + dt.timedelta(days=90)
    bare = [request_bytes("127.0.0.1", f"/enterprises/{enterprise}/instruments?limit=100")]
    results, rss = await _paired(
        ctx,
        "lists",
        {
            "metreg": [
                request_bytes(
                    "127.0.0.1",
                    f"/v1/enterprises/{enterprise}/instruments?status=valid&due_before={due_before}&limit=100",
                    _auth(ctx),
                )
            ],
            "litestar": bare,
            "fastapi": bare,
        },
    )
    ours = results["metreg"]
    ctx.figures += [
        figure("List 100 rows filtered, metreg ÷ bare Litestar 100-row page", "×", _ratios(results, "litestar"),
               goal=Goal.AT_LEAST, target=0.60,
               note=f"status & due_before, enterprise of {ctx.register.largest_size:,}"),
        figure("List 100 rows filtered, metreg", "req/s", [r.rps for r in ours]),
        figure("List 100 rows filtered p50, metreg", "ms", [r.p50_ms for r in ours]),
        figure("List 100 rows filtered p99, metreg", "ms", [r.p99_ms for r in ours]),
        *[figure(f"List 100 rows, bare {n}", "req/s", [r.rps for r in results[n.lower()]]) for n in _NAMES
          if n.lower() in results],
        figure("API peak RSS, lists", "MB", [rss], goal=Goal.UNDER, target=200),
    ]  # fmt: skip


_NAMES = ("Litestar", "FastAPI")


async def measure_import(ctx: Context) -> None:
    rows = ctx.options.import_rows
    results = await import_throughput.measure(
        ctx.derived_dsn("import"), rows=rows, runs=ctx.options.runs, labels={"CSV, new instruments"}
    )
    [(_, speeds, counts)] = results
    ctx.details["import"] = {"rows": rows, "counts": counts}
    ctx.figures.append(
        figure("Bulk import, CSV file to commit", "rows/s", speeds, goal=Goal.AT_LEAST,
               target=import_throughput.TARGET_ROWS_PER_SECOND, note=f"{rows:,} rows a file")
    )  # fmt: skip


class PlannerRun(msgspec.Struct, frozen=True, kw_only=True):
    seconds: float
    created: dict[str, int]
    cancelled: int
    notices_written: int
    """Notices in the table after the run less before: what ``created`` says, counted apart."""


async def plan_once(dsn: str, now: dt.datetime) -> PlannerRun:
    """One planning run for ``now`` as the worker runs it, rolled back so the next run finds the same work."""
    conn = await asyncpg.connect(dsn, server_settings={"timezone": "UTC"})
    try:
        transaction = conn.transaction()
        await transaction.start()
        try:
            await conn.execute("SET LOCAL ROLE metreg_worker")
            before = await conn.fetchval("SELECT count(*) FROM notices")
            started = time.perf_counter()
            result = await plan(conn, now)
            seconds = time.perf_counter() - started
            after = await conn.fetchval("SELECT count(*) FROM notices")
        finally:
            await transaction.rollback()
    finally:
        await conn.close()
    if not result.ran:
        raise RuntimeError("another planning run held the planner's lock")
    return PlannerRun(
        seconds=seconds, created=result.created, cancelled=result.cancelled, notices_written=after - before
    )


async def catch_up(dsn: str, now: dt.datetime) -> PlannerRun:
    """Plan the day before ``now`` and keep it: the state a worker that ran yesterday leaves.

    A generated register has never been planned: its first run writes every notice that is due,
    hundreds of thousands on a million instruments. What the target is about is a day's run after
    that, which writes the reminders and overdue steps falling due that day.
    """
    conn = await asyncpg.connect(dsn, server_settings={"timezone": "UTC"})
    try:
        async with conn.transaction():
            await conn.execute("SET LOCAL ROLE metreg_worker")
            before = await conn.fetchval("SELECT count(*) FROM notices")
            started = time.perf_counter()
            result = await plan(conn, now - dt.timedelta(days=1))
            seconds = time.perf_counter() - started
            after = await conn.fetchval("SELECT count(*) FROM notices")
        # That run rescheduled most of the register: autovacuum analyses the schedule within a
        # minute of such a commit, and the measured runs should not depend on when it comes by.
        await conn.execute("ANALYZE notice_schedule")
    finally:
        await conn.close()
    return PlannerRun(
        seconds=seconds, created=result.created, cancelled=result.cancelled, notices_written=after - before
    )


async def measure_planner(ctx: Context) -> None:
    backlog = await catch_up(ctx.options.dsn, ctx.now)
    print(f"  the day before: {sum(backlog.created.values()):,} notices in {backlog.seconds:.1f} s", flush=True)
    runs = [await plan_once(ctx.options.dsn, ctx.now) for _ in range(ctx.options.runs)]
    for run in runs:
        if sum(run.created.values()) != run.notices_written:
            raise RuntimeError(f"the planner says it created {run.created} but wrote {run.notices_written} notices")
    ctx.details["planner"] = runs
    ctx.details["planner_day_before"] = backlog
    ctx.figures += [
        figure(f"Planning a day over {ctx.register.instruments:,} instruments", "s", [r.seconds for r in runs],
               goal=Goal.UNDER, target=2.0, note="after the day before was planned"),
        figure("Planning the backlog: a never-planned register", "s", [backlog.seconds],
               note=f"{sum(backlog.created.values()):,} notices"),
        figure("Planning: notices created (rows touched)", "rows", [sum(r.created.values()) for r in runs]),
    ]  # fmt: skip


class DeliveryRun(msgspec.Struct, frozen=True, kw_only=True):
    notices: int
    delivered: int
    """Webhook deliveries the database records as delivered."""
    received: int
    """Webhook calls the receiver answered."""
    seconds: float
    """First call received to last: the worker's steady rate, without its start-up."""
    wall_seconds: float
    """Worker start to exit."""
    peak_rss_mb: float


async def deliver_once(ctx: Context) -> DeliveryRun:
    """A fresh database of ``--delivery-instruments`` instruments, a webhook for every enterprise and one
    for their regulator, a planning run, then one ``metreg worker --burst`` delivering it all."""
    dsn = ctx.derived_dsn("delivery")
    size = ctx.options.delivery_instruments
    await build_register(dsn, instruments=size, enterprises=max(1, size // 1000), seed=ctx.options.seed, now=ctx.now)
    async with Receiver() as receiver:
        conn = await asyncpg.connect(dsn, server_settings={"timezone": "UTC"})
        try:
            await conn.execute(
                """INSERT INTO webhooks (enterprise_id, url, secret, created_at)
                   SELECT id, $1, 'whsec_bench_' || md5(id::text), $2::timestamptz FROM enterprises""",
                receiver.url,
                ctx.now,
            )
            await conn.execute(
                """INSERT INTO webhooks (region_code, url, secret, created_at)
                   SELECT DISTINCT substr(region_code, 1, 2), $1, 'whsec_bench_regulator', $2::timestamptz
                   FROM enterprises""",
                receiver.url,
                ctx.now,
            )
            planned = await plan(conn, ctx.now)
            notices = sum(planned.created.values())
            env = ctx.env(
                DATABASE_URL=dsn,
                METREG_QUEUE=f"metreg-bench:{uuid.uuid4().hex}",
                METREG_ALLOW_PRIVATE_WEBHOOKS="true",
            )
            started = time.perf_counter()
            worker = Process([str(BIN / "metreg"), "worker", "--burst"], env, core=ctx.load_core)
            code = await worker.wait(timeout_s=600)
            wall = time.perf_counter() - started
            if code != 0:
                raise RuntimeError(f"metreg worker --burst exited with {code}: {worker.stderr.decode()[-2000:]}")
            delivered = await conn.fetchval(
                "SELECT count(*) FROM deliveries WHERE channel = 'webhook' AND status = 'delivered'"
            )
        finally:
            await conn.close()
    await migrate.drop_database(dsn)
    span = (receiver.last - receiver.first) if receiver.first is not None and receiver.last is not None else 0.0
    return DeliveryRun(
        notices=notices,
        delivered=delivered,
        received=receiver.received,
        seconds=span,
        wall_seconds=wall,
        peak_rss_mb=worker.peak_rss_mb,
    )


async def measure_delivery(ctx: Context) -> None:
    runs = []
    for n in range(ctx.options.runs):
        run = await deliver_once(ctx)
        print(f"  delivery run {n + 1}: {run.delivered:,} of {run.notices:,} notices in {run.seconds:.1f} s "
              f"({run.wall_seconds:.1f} s from start to exit)", flush=True)  # fmt: skip
        if not (run.delivered == run.received == run.notices):
            raise RuntimeError(f"delivery: {run.notices} notices, {run.delivered} delivered, {run.received} received")
        runs.append(run)
    ctx.details["delivery"] = runs
    ctx.figures += [
        figure("Delivery, webhook notices a second, one worker", "1/s",
               [r.delivered / r.seconds if r.seconds else 0.0 for r in runs], goal=Goal.AT_LEAST, target=1000,
               note=f"{runs[0].notices:,} notices, first call to last"),
        figure("Delivery, start to exit", "s", [r.wall_seconds for r in runs]),
        figure("Worker peak RSS", "MB", [r.peak_rss_mb for r in runs], goal=Goal.UNDER, target=200),
    ]  # fmt: skip


Measurement = Callable[[Context], Coroutine[Any, Any, None]]
MEASUREMENTS: dict[str, Measurement] = {
    "reads": measure_reads,
    "lists": measure_lists,
    "import": measure_import,
    "planner": measure_planner,
    "delivery": measure_delivery,
}


def _options(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dsn", default=os.environ.get("METREG_BENCH_DATABASE_URL", DEFAULT_DSN),
                        help="the bench database (created, and dropped at the end unless --keep)")  # fmt: skip
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--instruments", type=int, default=None, help="default 1,000,000 (--small: 20,000)")
    parser.add_argument("--enterprises", type=int, default=None, help="default 10,000 (--small: 200)")
    parser.add_argument("--small", action="store_true", help="a register of 20,000 instruments, shorter runs")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--runs", type=int, default=3, help="runs of each measurement (median, min, max)")
    parser.add_argument("--seconds", type=float, default=None, help="each load run (default 10, --small 5)")
    parser.add_argument("--import-rows", type=int, default=None, help="rows a ledger file (default 20,000)")
    parser.add_argument(
        "--delivery-instruments",
        type=int,
        default=None,
        help="instruments of the delivery database; about a third get a notice (default 4,000)",
    )
    parser.add_argument("--only", action="append", choices=sorted(MEASUREMENTS), help="this measurement (repeatable)")
    parser.add_argument("--keep", action="store_true", help="keep the register and reuse a kept one of the same size")
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder of the JSON results")
    args = parser.parse_args(argv)
    small = args.small
    options = Options(
        dsn=args.dsn,
        redis_url=args.redis_url,
        instruments=args.instruments or (20_000 if small else 1_000_000),
        enterprises=args.enterprises or (200 if small else 10_000),
        seed=args.seed,
        runs=args.runs,
        seconds=args.seconds or (5.0 if small else 10.0),
        import_rows=args.import_rows or (5_000 if small else 20_000),
        delivery_instruments=args.delivery_instruments or (2_000 if small else 4_000),
        only=frozenset(args.only or MEASUREMENTS),
        keep=args.keep,
        results=args.results,
    )
    if min(options.instruments, options.enterprises, options.runs, options.import_rows) < 1:
        parser.error("--instruments, --enterprises, --runs and --import-rows must be at least 1")
    if options.enterprises > options.instruments:
        parser.error("--enterprises must not exceed --instruments")
    return options


async def run(options: Options) -> Report:
    started_at = SystemClock().now()
    started = time.perf_counter()
    now = started_at
    built = await ensure_register(
        options.dsn,
        instruments=options.instruments,
        enterprises=options.enterprises,
        seed=options.seed,
        now=now,
        reuse=options.keep,
    )
    state = "built" if built else "kept from an earlier run"
    print(
        f"register: {options.instruments:,} instruments over {options.enterprises:,} enterprises ({state}) "
        f"in {time.perf_counter() - started:.0f} s",
        flush=True,
    )
    try:
        ctx = Context(options, await describe_register(options.dsn, now), now)
        for name, measurement in MEASUREMENTS.items():
            if name in options.only:
                began = time.perf_counter()
                print(f"{name} …", flush=True)
                await measurement(ctx)
                print(f"{name}: {time.perf_counter() - began:.0f} s", flush=True)
    finally:
        if not options.keep:
            await migrate.drop_database(options.dsn)
    return Report(
        started_at=started_at,
        seconds=time.perf_counter() - started,
        machine={
            "cpus": os.cpu_count(),
            "load_pinned": ctx.load_core is not None,
            "python": platform.python_version(),
            "postgres": await _postgres_version(options.dsn.rsplit("/", 1)[0] + "/postgres"),
            "platform": platform.platform(),
        },
        scale={
            "instruments": ctx.register.instruments,
            "enterprises": ctx.register.enterprises,
            "largest_enterprise": ctx.register.largest_size,
            "runs": options.runs,
            "seconds_per_load_run": options.seconds,
            "connections": CONNECTIONS,
            "import_rows": options.import_rows,
            "delivery_instruments": options.delivery_instruments,
        },
        figures=ctx.figures,
        details=msgspec.to_builtins(ctx.details, str_keys=True),
    )


async def _postgres_version(dsn: str) -> str:
    conn = await asyncpg.connect(dsn)
    try:
        version: str = await conn.fetchval("SHOW server_version")
        return version
    finally:
        await conn.close()


async def bench(argv: list[str] | None = None) -> tuple[Report, Path]:
    """Run, print the table, write the JSON; the report and the JSON file."""
    options = _options(argv)
    report = await run(options)
    print()
    print(render(report))
    path = write(report, options.results)
    misses = [f.name for f in report.figures if f.passed is False]
    print(f"\n{len(misses)} of {sum(f.passed is not None for f in report.figures)} targets missed; "
          f"written to {path} in {report.seconds:.0f} s")  # fmt: skip
    return report, path


def main(argv: list[str] | None = None) -> int:
    # A missed target is a finding, not a failure of the bench: the table says it.
    uvloop.run(bench(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
