"""The yardstick: a bare Litestar + asyncpg app doing the same reads as metreg, and nothing else.

No authentication, no row-level security, no status computation, no middleware: one primary-key
read (``GET /instruments/{id}``) and one 100-row page of an enterprise in due order
(``GET /enterprises/{id}/instruments``), served by uvicorn exactly as ``metreg serve`` serves
(one process, uvloop, httptools), on a pool of the same size. What metreg reaches of this
throughput is the figure design.md §9 sets its targets on.

    python -m bench.bare --dsn postgresql://postgres@127.0.0.1:5432/metreg_bench --port 8100
"""

from __future__ import annotations

import argparse
import datetime as dt
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import msgspec
from litestar import Litestar, get
from litestar.datastructures import State
from litestar.exceptions import NotFoundException

__all__ = ("COLUMNS", "BareInstrument", "create_app")

# The columns a reader of an instrument needs; metreg returns these and more (status, catalogue rule).
COLUMNS = """id, enterprise_id, catalog_code, name, model, serial_no, manufacturer, management_no, legal_use,
              regime, cycle_months, lifecycle, last_verified_on, valid_until, version, created_at, updated_at"""


class BareInstrument(msgspec.Struct, frozen=True):
    id: uuid.UUID
    enterprise_id: uuid.UUID
    catalog_code: str | None
    name: str
    model: str
    serial_no: str
    manufacturer: str
    management_no: str | None
    legal_use: str
    regime: str
    cycle_months: int | None
    lifecycle: str
    last_verified_on: dt.date | None
    valid_until: dt.date | None
    version: int
    created_at: dt.datetime
    updated_at: dt.datetime


class BarePage(msgspec.Struct, frozen=True):
    items: list[BareInstrument]


@get("/instruments/{instrument_id:uuid}")
async def read_instrument(state: State, instrument_id: uuid.UUID) -> BareInstrument:
    pool: asyncpg.Pool = state.pool
    row = await pool.fetchrow(f"SELECT {COLUMNS} FROM instruments WHERE id = $1", instrument_id)
    if row is None:
        raise NotFoundException()
    return BareInstrument(*row)


@get("/enterprises/{enterprise_id:uuid}/instruments")
async def list_instruments(state: State, enterprise_id: uuid.UUID, limit: int = 100) -> BarePage:
    pool: asyncpg.Pool = state.pool
    rows = await pool.fetch(
        f"SELECT {COLUMNS} FROM instruments WHERE enterprise_id = $1 ORDER BY due_key, id LIMIT $2",
        enterprise_id,
        limit,
    )
    return BarePage([BareInstrument(*r) for r in rows])


@get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


def create_app(dsn: str, pool_size: int = 10) -> Litestar:
    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        app.state.pool = await asyncpg.create_pool(dsn, min_size=2, max_size=pool_size)
        try:
            yield
        finally:
            await app.state.pool.close()

    return Litestar([read_instrument, list_instruments, healthz], lifespan=[lifespan], openapi_config=None)


def serve(make_app: Callable[[str, int], Any], description: str | None, argv: list[str] | None) -> None:
    """Serve ``make_app(dsn, pool_size)`` as ``metreg serve`` serves metreg (uvicorn, uvloop, httptools)."""
    import uvicorn

    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--pool-size", type=int, default=10, help="as metreg's METREG_DB_POOL_MAX default")
    args = parser.parse_args(argv)
    uvicorn.run(
        make_app(args.dsn, args.pool_size),
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http="httptools",
        log_config=None,
        access_log=False,
        server_header=False,
    )


def main(argv: list[str] | None = None) -> None:
    serve(create_app, __doc__, argv)


if __name__ == "__main__":
    main()
