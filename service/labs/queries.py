"""Lab rows."""

from __future__ import annotations

import datetime as dt
import uuid

import asyncpg
import msgspec

from service.labs.schemas import Lab, LabCreate

__all__ = ("insert_lab", "select_lab")

_COLUMNS = "id, name, accreditation_no, region_code, scope, sla_working_days, created_at, updated_at"


async def insert_lab(db: asyncpg.Connection, data: LabCreate, now: dt.datetime) -> Lab:
    row = await db.fetchrow(
        f"""INSERT INTO labs (name, accreditation_no, region_code, scope, sla_working_days, created_at, updated_at)
            VALUES ($1, $2, $3, $4, $5, $6, $6) RETURNING {_COLUMNS}""",
        data.name,
        data.accreditation_no,
        data.region_code,
        data.scope,
        data.sla_working_days,
        now,
    )
    assert row is not None
    return msgspec.convert(dict(row), Lab)


async def select_lab(db: asyncpg.Connection, lab_id: uuid.UUID) -> Lab | None:
    row = await db.fetchrow(f"SELECT {_COLUMNS} FROM labs WHERE id = $1", lab_id)
    return msgspec.convert(dict(row), Lab) if row else None
