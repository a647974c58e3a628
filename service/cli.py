"""The ``metreg`` command: migrate, serve, mint keys, seed the demo, plan and deliver notices, import
and export ledgers."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import IO, Any, TypeVar

import asyncpg
import click
import msgspec
import uvloop
from redis.exceptions import RedisError

from service import dates
from service import migrate as migrations
from service.auth import Role
from service.clock import SystemClock
from service.db import init_connection
from service.deliveries.email import SmtpConfig
from service.demo import DemoKeys, seed_demo
from service.enterprises.queries import select_enterprise
from service.errors import MetregError, RowsRejectedError
from service.instruments.rules import Status
from service.keys.queries import create_key
from service.keys.schemas import ApiKeyCreate
from service.ledger.console import ProgressBar, problem_table, summary
from service.ledger.exporting import LedgerExport, Tally, ledger_csv, ledger_xlsx
from service.ledger.filing import filing_xlsx
from service.ledger.pipeline import import_ledger, read_ledger
from service.ledger.reading import Table
from service.ledger.schemas import ImportReport
from service.ledger.writing import ExportFormat, Lang
from service.logs import configure_logging
from service.settings import Settings

__all__ = ("main",)

T = TypeVar("T")


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except msgspec.ValidationError as exc:
        raise click.ClickException(f"configuration: {exc}") from None


def _run(coro: Coroutine[Any, Any, T], *, fast_loop: bool = False) -> T:
    """Run ``coro``; ``fast_loop``: on uvloop, as the long-running worker and the server run."""
    try:
        return uvloop.run(coro) if fast_loop else asyncio.run(coro)
    except (OSError, asyncpg.PostgresError, migrations.MigrationError, RedisError) as exc:
        raise click.ClickException(str(exc) or type(exc).__name__) from None


async def _connect(dsn: str, action: str) -> asyncpg.Connection:
    """A connection as the DSN's login (the operator's); what it writes is audited as ``action``."""
    conn = await asyncpg.connect(
        dsn, server_settings={"application_name": "metreg-cli", "timezone": "UTC", "metreg.action": action}
    )
    await init_connection(conn)
    return conn


def _action() -> str:
    context = click.get_current_context(silent=True)
    return context.command_path if context is not None else "metreg"


async def _connected(dsn: str, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
    """``work`` on a connection of its own, which manages its own transactions.

    It runs as the DSN's login (the operator's), and what it writes is audited as the command.
    """
    conn = await _connect(dsn, _action())
    try:
        return await work(conn)
    finally:
        await conn.close()


async def _in_transaction(dsn: str, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
    async def transaction(conn: asyncpg.Connection) -> T:
        async with conn.transaction():
            return await work(conn)

    return await _connected(dsn, transaction)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """metreg: the legal register of measuring instruments.

    Configuration comes from the environment (DATABASE_URL, REDIS_URL, METREG_*); see .env.example.
    """


@main.command()
@click.option("--create-database", is_flag=True, help="Create the database first if it does not exist.")
@click.option("--check", is_flag=True, help="Apply nothing; exit 1 if migrations are pending.")
def migrate(create_database: bool, check: bool) -> None:
    """Apply pending schema migrations (safe to run twice, and from two places at once).

    Example: metreg migrate --create-database
    """
    settings = _settings()
    if check:
        todo = _run(migrations.pending(settings.database_url))
        for m in todo:
            click.echo(f"pending {m.version:04d}_{m.name}")
        sys.exit(1 if todo else 0)
    if create_database and _run(migrations.create_database(settings.database_url)):
        click.echo("created the database", err=True)
    lock_timeout = dt.timedelta(seconds=settings.migrate_lock_timeout_s)
    applied = _run(migrations.migrate(settings.database_url, SystemClock().now(), lock_timeout=lock_timeout))
    for m in applied:
        click.echo(f"applied {m.version:04d}_{m.name}", err=True)
    if not applied:
        click.echo("the schema is up to date", err=True)


@main.command()
@click.option("--host", default=None, help="Address to bind (default METREG_HOST or 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default METREG_PORT or 8000).")
@click.option("--workers", type=int, default=1, show_default=True, help="Processes (one per core).")
def serve(host: str | None, port: int | None, workers: int) -> None:
    """Serve the HTTP API with uvicorn (uvloop, httptools).

    Example: metreg serve --host 0.0.0.0 --port 8000
    """
    import uvicorn

    settings = _settings()
    uvicorn.run(
        "service.app:create_app",
        factory=True,
        host=host or settings.host,
        port=port or settings.port,
        workers=workers,
        loop="uvloop",
        http="httptools",
        log_config=None,
        access_log=False,
        timeout_keep_alive=max(1, round(settings.keep_alive_s)),
        # Only a trusted proxy may say who the client is (the public check is limited per address).
        proxy_headers=bool(settings.forwarded_allow_ips),
        forwarded_allow_ips=settings.forwarded_allow_ips or None,
        server_header=False,
    )


@main.command("create-key")
@click.option("--role", type=click.Choice([r.value for r in Role]), required=True)
@click.option("--name", required=True, help="Who or what the key is for.")
@click.option("--enterprise", "enterprise_id", type=click.UUID, help="Enterprise id (enterprise keys).")
@click.option("--lab", "lab_id", type=click.UUID, help="Lab id (lab keys).")
@click.option("--region", "region_code", help="Region code prefix (regulator keys), e.g. 31 or 310115.")
def create_key_command(
    role: str, name: str, enterprise_id: uuid.UUID | None, lab_id: uuid.UUID | None, region_code: str | None
) -> None:
    """Mint an API key and print it on stdout (the only time it is shown).

    Example: metreg create-key --role admin --name ops
    """
    try:
        data = msgspec.convert(
            {"role": role, "name": name, "enterprise_id": enterprise_id, "lab_id": lab_id, "region_code": region_code},
            ApiKeyCreate,
        )
    except msgspec.ValidationError as exc:
        raise click.ClickException(str(exc)) from None
    settings = _settings()
    try:
        created = _run(_in_transaction(settings.database_url, lambda db: create_key(db, data, SystemClock().now())))
    except MetregError as exc:
        raise click.ClickException(exc.detail) from None
    click.echo(created.key)


@main.command()
@click.option(
    "--keys-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path(".metreg-demo-keys.json"),
    show_default=True,
    help="Where the demo keys are kept between runs (the database keeps only their hashes).",
)
@click.option("--url", default=None, help="Base URL to print (default from METREG_HOST and METREG_PORT).")
@click.option(
    "--instruments",
    type=click.IntRange(min=1),
    default=None,
    help="Generate a register of this many instruments instead (for trying and benchmarking).",
)
@click.option(
    "--enterprises",
    type=click.IntRange(min=1),
    default=None,
    help="Enterprises to spread the generated instruments over [default: instruments // 100, at least 1].",
)
@click.option("--seed", type=int, default=1, show_default=True, help="The generated register's seed.")
@click.option("--jobs", type=click.IntRange(min=1), default=2, show_default=True, help="Connections loading at once.")
def demo(
    keys_file: Path, url: str | None, instruments: int | None, enterprises: int | None, seed: int, jobs: int
) -> None:
    """Seed a demo enterprise with about 200 instruments and a lab (once) and print their keys.

    With --instruments N, generate a register of N instruments over many enterprises of several
    trades and regions instead, every status in fixed shares, and print keys for one of them. The
    same seed and sizes give the same register; run again, the command loads only the enterprises
    still missing (an interrupted load completes, a finished one is left as it is). Another seed
    adds another set.

    Example: metreg demo

    Example: metreg demo --instruments 1000000 --enterprises 10000 --seed 7
    """
    settings = _settings()
    if instruments is not None:
        _generated_demo(settings, instruments, enterprises, seed, jobs, url)
        return
    for name, given in (("--enterprises", enterprises is not None), ("--seed", seed != 1), ("--jobs", jobs != 2)):
        if given:
            raise click.UsageError(f"{name} goes with --instruments")
    kept = None
    if keys_file.exists():
        try:
            kept = msgspec.json.decode(keys_file.read_bytes(), type=DemoKeys)
        except msgspec.DecodeError:
            click.echo(f"{keys_file} is unreadable: minting new demo keys", err=True)
    result = _run(_in_transaction(settings.database_url, lambda db: seed_demo(db, SystemClock().now(), kept)))
    if result.keys != kept:
        keys_file.write_bytes(msgspec.json.encode(result.keys))
        keys_file.chmod(0o600)
    base = url or f"http://{settings.host}:{settings.port}"
    state = "seeded" if result.created else "already present"
    click.echo(
        f"""
metreg is starting at {base}
  API docs:        {base}/docs
  demo enterprise: {result.enterprise_name} ({result.enterprise_id}), {result.instruments} instruments, {state}
  demo lab:        {result.lab_id}
  admin key:       {result.keys.admin_key}
  enterprise key:  {result.keys.enterprise_key}
  lab key:         {result.keys.lab_key}

Try:
  curl -s -H 'Authorization: Bearer {result.keys.enterprise_key}' \\
    '{base}/v1/enterprises/{result.enterprise_id}/instruments?status=overdue&limit=5'
"""
    )


@main.command()
@click.option(
    "--today",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    default=None,
    help="Plan as if every enterprise's local date were this one, a day not later than today "
    "(default: each enterprise's own today).",
)
def plan(today: Any) -> None:
    """Plan reminders, overdue notices and escalations that are due (idempotent).

    The worker does this every few minutes; run it by hand to catch up, or to plan a day that was
    missed with --today.

    Example: metreg plan --today 2026-07-15 && metreg worker --burst
    """
    from jobs.plan import plan as run_plan

    settings = _settings()
    day = today.date() if today is not None else None
    now = SystemClock().now()
    # No enterprise's local date is later than UTC's by more than a day (UTC+14 at most).
    if day is not None and day > now.date() + dt.timedelta(days=1):
        raise click.BadParameter(
            f"{day} is still to come: planning it now would send its notices early, and the planner's "
            "schedule would pass over the days before it (rehearse future dates on a copy of the database)",
            param_hint="--today",
        )
    result = _run(_connected(settings.database_url, lambda db: run_plan(db, now, today=day)))
    if not result.ran:
        click.echo("another planning run holds the lock: nothing done", err=True)
        return
    created = ", ".join(f"{kind} {count}" for kind, count in sorted(result.created.items())) or "nothing new"
    click.echo(f"planned: {created}; cancelled {result.cancelled} stale")


@main.command()
@click.option("--burst", is_flag=True, help="Deliver everything due now, drain the queue and exit.")
@click.option("--check", is_flag=True, help="Exit 0 if a worker reported healthy in the last 30 s, else 1.")
def worker(burst: bool, check: bool) -> None:
    """Run the background worker: plan notices, dispatch them, deliver by webhook and e-mail.

    Runs until SIGINT or SIGTERM; `make run` starts it beside the API. With --burst it dispatches
    every notice that is due, sends every held digest e-mail, waits for the deliveries and exits:

    Example: metreg plan --today 2026-07-15 && metreg worker --burst
    """
    settings = _settings()
    if settings.smtp_url:
        try:
            SmtpConfig.from_url(settings.smtp_url)
        except ValueError as exc:
            raise click.ClickException(f"configuration: {exc}") from None
    if check:
        sys.exit(_run(_worker_health(settings)))
    configure_logging(settings.log_level, settings.log_format)
    if burst:
        from jobs.worker import run_burst

        result = _run(run_burst(settings, SystemClock()), fast_loop=True)
        click.echo(f"dispatched {result.dispatched} notices; sent {result.digests} digest e-mails", err=True)
        return
    from jobs.worker import run_worker

    try:
        run_worker(settings, SystemClock())
    except (OSError, RedisError) as exc:
        raise click.ClickException(str(exc) or type(exc).__name__) from None


async def _worker_health(settings: Settings) -> int:
    from arq.connections import RedisSettings
    from arq.worker import async_check_health

    return await async_check_health(
        RedisSettings.from_dsn(settings.redis_url), f"{settings.queue_name}:health-check", settings.queue_name
    )


_HEAD = "SELECT seq, encode(hash, 'hex') AS hash FROM audit_log ORDER BY seq DESC LIMIT 1"


@main.group()
def audit() -> None:
    """The audit trail: every change to the register, hash-chained."""


@audit.command("verify")
def audit_verify() -> None:
    """Check the audit trail's hash chain from its first row to its last.

    Each row's hash covers the previous row's hash and the row itself, so a row changed, removed or
    slipped in (by someone who got past the database's refusal) breaks the chain there. Exits 0
    when the chain holds, 1 naming the first broken row.

    Example: metreg audit verify
    """
    from service.audit.chain import Break, verify

    async def check(db: asyncpg.Connection) -> tuple[int, Break | None, asyncpg.Record | None]:
        checked, broken = await verify(db)
        return checked, broken, await db.fetchrow(_HEAD)

    settings = _settings()
    checked, broken, head = _run(_connected(settings.database_url, check))
    if broken is not None:
        click.echo(f"audit trail broken at row {broken.seq}: {broken.reason} ({checked} rows before it hold)", err=True)
        sys.exit(1)
    click.echo(f"audit trail intact: {checked} rows")
    if head is not None:
        # Kept somewhere else (a ticket, a signed mail), the head shows later that nothing was cut
        # from the end or rewritten from some row on.
        click.echo(f"head: row {head['seq']}, hash {head['hash']}")


@main.command()
def openapi() -> None:
    """Print the OpenAPI document of this version as JSON (no database needed).

    Example: metreg openapi > openapi.json
    """
    from service.app import create_app

    app = create_app(Settings(log_level="WARNING"))
    click.echo(msgspec.json.encode(app.openapi_schema.to_schema()).decode())


@main.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--enterprise", "enterprise_id", type=click.UUID, required=True, help="The enterprise's id.")
@click.option("--dry-run", is_flag=True, help="Check and report only; write nothing.")
def import_command(file: Path, enterprise_id: uuid.UUID, dry_run: bool) -> None:
    """Import a ledger (台账) from a CSV or XLSX file into an enterprise's register.

    Headers may be Chinese or English (README: Importing a ledger). The import is all or nothing:
    with any problem nothing is written, and the problems are listed by row and column. Exits 1
    when there are problems, also on a dry run.

    Example: metreg import examples/ledger-zh.xlsx --enterprise 3f6c… --dry-run
    """
    settings = _settings()
    data = file.read_bytes()
    if len(data) > settings.max_import_bytes:
        raise click.ClickException(f"{file} is larger than METREG_MAX_IMPORT_BYTES ({settings.max_import_bytes})")
    progress = ProgressBar(enabled=sys.stderr.isatty())
    try:
        table = read_ledger(data, max_bytes=settings.max_import_bytes, max_rows=settings.max_import_rows)
        report = _run(
            _in_transaction(
                settings.database_url,
                lambda db: _import(db, enterprise_id, table, file, data, dry_run=dry_run, progress=progress),
            )
        )
    except RowsRejectedError as exc:
        click.echo(problem_table(exc.rows))
        raise click.ClickException(f"{len(exc.rows)} problem(s): nothing was imported") from None
    except MetregError as exc:
        raise click.ClickException(exc.detail) from None
    if report.problems:
        click.echo(problem_table(report.problems))
    click.echo(summary(report))
    if report.problems:
        sys.exit(1)


async def _import(
    db: asyncpg.Connection,
    enterprise_id: uuid.UUID,
    table: Table,
    file: Path,
    data: bytes,
    *,
    dry_run: bool,
    progress: ProgressBar,
) -> ImportReport:
    enterprise = await select_enterprise(db, enterprise_id, lock="update")
    if enterprise is None:
        raise click.ClickException(f"no enterprise {enterprise_id}")
    return await import_ledger(
        db,
        enterprise,
        table,
        file_name=file.name,
        file_sha256=hashlib.sha256(data).digest(),
        dry_run=dry_run,
        actor=None,
        request_id=None,
        now=SystemClock().now(),
        progress=progress,
    )


def _generated_demo(
    settings: Settings, instruments: int, enterprises: int | None, seed: int, jobs: int, url: str | None
) -> None:
    from service.demo_register import DemoRegisterError, load_register

    count = enterprises if enterprises is not None else max(1, instruments // 100)
    if count > instruments:
        raise click.BadParameter(f"{count} enterprises need at least {count} instruments", param_hint="--enterprises")
    action = _action()
    progress = ProgressBar(enabled=sys.stderr.isatty())
    done = 0

    def advance(rows: int) -> None:
        nonlocal done
        done += rows
        progress("loading", done, instruments)

    now = SystemClock().now()
    started = time.perf_counter()
    try:
        result = _run(
            load_register(
                lambda: _connect(settings.database_url, action),
                instruments=instruments,
                enterprises=count,
                seed=seed,
                jobs=jobs,
                now=now,
                progress=advance,
            )
        )
    except DemoRegisterError as exc:
        raise click.ClickException(str(exc)) from None
    except MetregError as exc:
        raise click.ClickException(f"{exc.detail} (the enterprises loaded before it are kept)") from None
    progress("done", done, instruments)
    elapsed = time.perf_counter() - started
    assert result.sample is not None
    assert result.sample_id is not None
    sample, sample_id = result.sample, result.sample_id
    region = sample.spec.region.code[:2]

    async def keys(db: asyncpg.Connection) -> tuple[str, str, str]:
        admin = await create_key(db, ApiKeyCreate(role=Role.ADMIN, name="generated demo admin"), now)
        member = await create_key(
            db, ApiKeyCreate(role=Role.ENTERPRISE, name="generated demo enterprise", enterprise_id=sample_id), now
        )
        regulator = await create_key(
            db, ApiKeyCreate(role=Role.REGULATOR, name="generated demo regulator", region_code=region), now
        )
        return admin.key, member.key, regulator.key

    admin_key, enterprise_key, regulator_key = _run(_in_transaction(settings.database_url, keys))
    base = url or f"http://{settings.host}:{settings.port}"
    shares = "  ".join(f"{status} {result.statuses[status]}" for status in Status if result.statuses[status])
    skipped = f" ({result.skipped} loaded before, left as they were)" if result.skipped else ""
    click.echo(
        f"""
generated register (seed {seed}): {result.enterprises} enterprises, {result.instruments} instruments loaded{skipped}
  in {elapsed:.1f} s, {result.instruments / elapsed:,.0f} instruments/s, {jobs} connection(s)
  by status: {shares or "nothing new"}
  sample enterprise: {sample.name} ({sample_id}), region {sample.spec.region.code}, {sample.spec.size} instruments
  admin key:          {admin_key}
  enterprise key:     {enterprise_key}
  regulator key ({region}): {regulator_key}

Try:
  curl -s -H 'Authorization: Bearer {enterprise_key}' \\
    '{base}/v1/enterprises/{sample_id}/instruments?status=overdue&limit=5'
"""
    )


@main.command("export")
@click.option("--enterprise", "enterprise_id", type=click.UUID, required=True, help="The enterprise's id.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice([f.value for f in ExportFormat]),
    default=None,
    help="csv (default; UTF-8 with BOM) or xlsx. Default: from the -o file's extension, else csv.",
)
@click.option(
    "--lang",
    type=click.Choice([lang.value for lang in Lang]),
    default=Lang.ZH.value,
    show_default=True,
    help="Headers and labels: zh (Chinese) or en (English).",
)
@click.option(
    "--filing",
    is_flag=True,
    help="The filing table of compulsory instruments (强制检定计量器具备案表) instead of the ledger; XLSX only.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    default=None,
    help="Write to this file (replaced whole once complete). Default: standard output.",
)
def export_command(enterprise_id: uuid.UUID, fmt: str | None, lang: str, filing: bool, output: Path | None) -> None:
    """Export an enterprise's ledger (台账) as CSV or XLSX, or its filing table as XLSX.

    The ledger has the columns `metreg import` reads, so the file imports back (README: Exporting
    the ledger), then the columns metreg computes (status, days until due) as of the enterprise's
    local today. Rows are read a batch at a time (METREG_EXPORT_BATCH_ROWS), so a big register
    does not sit in memory.

    Example: metreg export --enterprise 3f6c… -o ledger.xlsx

    Also: `--lang en > ledger.csv` (English CSV on standard output), `--filing -o 备案表.xlsx`.
    """
    settings = _settings()
    chosen = _export_format(fmt, filing, output)
    target = output.resolve() if output is not None else None
    if target is None and chosen is ExportFormat.XLSX and sys.stdout.isatty():
        raise click.ClickException("an XLSX workbook is binary: write it to a file with -o FILE (or redirect >)")
    with tempfile.NamedTemporaryFile(
        dir=target.parent if target else None, prefix=".metreg-export-", delete=False
    ) as file:
        try:
            count = _run(
                _connected(
                    settings.database_url,
                    lambda db: _export(db, enterprise_id, file, chosen, Lang(lang), filing, settings.export_batch_rows),
                )
            )
            file.flush()
            if target is not None:
                # A temporary file is private (0600); the export gets what any new file would.
                umask = os.umask(0)
                os.umask(umask)
                Path(file.name).chmod(0o666 & ~umask)
                # Whole or not at all: an interrupted export leaves the previous file as it was.
                Path(file.name).replace(target)
            else:
                file.seek(0)
                shutil.copyfileobj(file, sys.stdout.buffer)
                sys.stdout.buffer.flush()
        finally:
            Path(file.name).unlink(missing_ok=True)
    what = "filing table" if filing else f"ledger ({chosen.value}, {lang})"
    click.echo(f"exported the {what}: {count} instruments{f' to {output}' if output else ''}", err=True)


def _export_format(fmt: str | None, filing: bool, output: Path | None) -> ExportFormat:
    if filing:
        if fmt == ExportFormat.CSV:
            raise click.BadParameter("the filing table is XLSX only", param_hint="--format")
        return ExportFormat.XLSX
    if fmt is not None:
        return ExportFormat(fmt)
    if output is not None and output.suffix.lower() == ".xlsx":
        return ExportFormat.XLSX
    return ExportFormat.CSV


async def _export(
    db: asyncpg.Connection,
    enterprise_id: uuid.UUID,
    file: IO[bytes],
    fmt: ExportFormat,
    lang: Lang,
    filing: bool,
    batch_rows: int,
) -> int:
    # One read-only snapshot: every batch of the cursor sees the register as it was at the start.
    async with db.transaction(isolation="repeatable_read", readonly=True):
        enterprise = await select_enterprise(db, enterprise_id)
        if enterprise is None:
            raise click.ClickException(f"no enterprise {enterprise_id}")
        today = dates.local_today(SystemClock().now(), enterprise.timezone)
        export = LedgerExport(enterprise=enterprise, today=today, lang=lang, batch_rows=batch_rows)
        if filing:
            return await filing_xlsx(db, export, file)
        if fmt is ExportFormat.XLSX:
            return await ledger_xlsx(db, export, file)
        tally = Tally()
        async for chunk in ledger_csv(db, export, tally):
            file.write(chunk)
        return tally.rows
