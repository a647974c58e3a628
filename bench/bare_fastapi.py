"""The second yardstick design.md §9 names: the same reads as :mod:`bench.bare` in FastAPI + pydantic v2.

Same SQL, same pool size, same server (uvicorn, one process, uvloop, httptools); the response
models are pydantic. FastAPI and pydantic come from the ``bench`` optional dependencies and are
never imported by the service.

    python -m bench.bare_fastapi --dsn postgresql://postgres@127.0.0.1:5432/metreg_bench --port 8101
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from fastapi import FastAPI, HTTPException, Request
from pydantic import BaseModel

from bench.bare import COLUMNS, serve

__all__ = ("create_app",)


class Instrument(BaseModel):
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


class Page(BaseModel):
    items: list[Instrument]


def create_app(dsn: str, pool_size: int = 10) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.pool = await asyncpg.create_pool(dsn, min_size=2, max_size=pool_size)
        try:
            yield
        finally:
            await app.state.pool.close()

    app = FastAPI(lifespan=lifespan, openapi_url=None, docs_url=None, redoc_url=None)

    @app.get("/instruments/{instrument_id}")
    async def read_instrument(request: Request, instrument_id: uuid.UUID) -> Instrument:
        pool: asyncpg.Pool = request.app.state.pool
        row = await pool.fetchrow(f"SELECT {COLUMNS} FROM instruments WHERE id = $1", instrument_id)
        if row is None:
            raise HTTPException(status_code=404)
        return Instrument.model_validate(dict(row))

    @app.get("/enterprises/{enterprise_id}/instruments")
    async def list_instruments(request: Request, enterprise_id: uuid.UUID, limit: int = 100) -> Page:
        pool: asyncpg.Pool = request.app.state.pool
        rows = await pool.fetch(
            f"SELECT {COLUMNS} FROM instruments WHERE enterprise_id = $1 ORDER BY due_key, id LIMIT $2",
            enterprise_id,
            limit,
        )
        return Page(items=[Instrument.model_validate(dict(r)) for r in rows])

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def main(argv: list[str] | None = None) -> None:
    serve(create_app, __doc__, argv)


if __name__ == "__main__":
    main()
