"""The ``metreg`` command: migrate, serve, mint keys, seed the demo, plan and deliver notices."""

from __future__ import annotations

import asyncio
import hashlib
import sys
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import click
import msgspec
from redis.exceptions import RedisError

from service import migrate as migrations
from service.auth import Role
from service.clock import SystemClock
from service.db import init_connection
from service.deliveries.email import SmtpConfig
from service.demo import DemoKeys, seed_demo
from service.enterprises.queries import select_enterprise
from service.errors import MetregError, RowsRejectedError
from service.keys.queries import create_key
from service.keys.schemas import ApiKeyCreate
from service.ledger.console import ProgressBar, problem_table, summary
from service.ledger.pipeline import import_ledger, read_ledger
from service.ledger.reading import Table
from service.ledger.schemas import ImportReport
from service.logs import configure_logging
from service.settings import Settings

__all__ = ("main",)

T = TypeVar("T")


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except msgspec.ValidationError as exc:
        raise click.ClickException(f"configuration: {exc}") from None


def _run(coro: Coroutine[Any, Any, T]) -> T:
    try:
        return asyncio.run(coro)
    except (OSError, asyncpg.PostgresError, migrations.MigrationError, RedisError) as exc:
        raise click.ClickException(str(exc) or type(exc).__name__) from None


async def _connected(dsn: str, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
    """``work`` on a connection of its own, which manages its own transactions.

    It runs as the DSN's login (the operator's), and what it writes is audited as the command.
    """
    context = click.get_current_context(silent=True)
    action = context.command_path if context is not None else "metreg"
    conn = await asyncpg.connect(
        dsn, server_settings={"application_name": "metreg-cli", "timezone": "UTC", "metreg.action": action}
    )
    try:
        await init_connection(conn)
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
    applied = _run(migrations.migrate(settings.database_url, SystemClock().now()))
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
def demo(keys_file: Path, url: str | None) -> None:
    """Seed a demo enterprise with about 200 instruments and a lab (once) and print their keys.

    Example: metreg demo
    """
    settings = _settings()
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
    help="Plan as if every enterprise's local date were this one (default: each enterprise's own today).",
)
def plan(today: Any) -> None:
    """Plan reminders, overdue notices and escalations that are due (idempotent).

    The worker does this every few minutes; run it by hand to catch up or to rehearse a date.

    Example: metreg plan --today 2026-07-15 && metreg worker --burst
    """
    from jobs.plan import plan as run_plan

    settings = _settings()
    day = today.date() if today is not None else None
    result = _run(_connected(settings.database_url, lambda db: run_plan(db, SystemClock().now(), today=day)))
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

        result = _run(run_burst(settings, SystemClock()))
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
