"""Enterprise rows: SQL and the asyncpg calls."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any, Literal

import asyncpg
import msgspec

from service.enterprises.schemas import Enterprise, EnterpriseCreate
from service.errors import DuplicateError

__all__ = (
    "UPDATABLE",
    "enterprise_columns",
    "enterprise_from",
    "insert_enterprise",
    "select_enterprise",
    "update_enterprise",
)

_COLUMNS = """id, name, credit_code, region_code, timezone, period_rule, reminder_days,
              rotation_reminder_days, overdue_repeat_days, escalate_after_days, notify_emails, digest,
              address, contact_name, contact_phone, version, created_at, updated_at"""


def _enterprise(row: asyncpg.Record) -> Enterprise:
    return msgspec.convert(dict(row), Enterprise)


_NAMES = [c.strip() for c in _COLUMNS.split(",")]


def enterprise_columns(alias: str) -> str:
    """The enterprise's columns of table ``alias``, each as ``e_<name>``: for a statement that reads
    an enterprise beside another row (see :func:`enterprise_from`)."""
    return ", ".join(f"{alias}.{c} AS e_{c}" for c in _NAMES)


def enterprise_from(row: dict[str, Any]) -> Enterprise | None:
    """Take the ``e_`` columns out of ``row``: the enterprise they hold, or None if they are null
    (no such row, or row-level security hid it)."""
    data = {c: row.pop(f"e_{c}") for c in _NAMES}
    return None if data["id"] is None else msgspec.convert(data, Enterprise)


async def insert_enterprise(db: asyncpg.Connection, data: EnterpriseCreate, now: dt.datetime) -> Enterprise:
    try:
        row = await db.fetchrow(
            f"""INSERT INTO enterprises (name, credit_code, region_code, timezone, period_rule, reminder_days,
                                         rotation_reminder_days, overdue_repeat_days, escalate_after_days,
                                         notify_emails, digest, address, contact_name, contact_phone,
                                         created_at, updated_at)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $9, $10, $11, $12, $13, $14, $15, $8, $8)
                RETURNING {_COLUMNS}""",
            data.name,
            data.credit_code,
            data.region_code,
            data.timezone,
            data.period_rule.value,
            data.reminder_days,
            data.rotation_reminder_days,
            now,
            data.overdue_repeat_days,
            data.escalate_after_days,
            data.notify_emails,
            data.digest,
            data.address,
            data.contact_name,
            data.contact_phone,
        )
    except asyncpg.UniqueViolationError:
        raise DuplicateError.for_field("credit_code", "an enterprise with this credit code exists") from None
    assert row is not None
    return _enterprise(row)


async def select_enterprise(
    db: asyncpg.Connection, enterprise_id: uuid.UUID, *, lock: Literal["share", "update"] | None = None
) -> Enterprise | None:
    clause = {None: "", "share": " FOR SHARE", "update": " FOR UPDATE"}[lock]
    row = await db.fetchrow(f"SELECT {_COLUMNS} FROM enterprises WHERE id = $1{clause}", enterprise_id)
    return _enterprise(row) if row else None


# The columns a PATCH may set, in a fixed order (never from client-supplied names).
UPDATABLE = (
    "name",
    "region_code",
    "timezone",
    "period_rule",
    "reminder_days",
    "rotation_reminder_days",
    "overdue_repeat_days",
    "escalate_after_days",
    "notify_emails",
    "digest",
    "address",
    "contact_name",
    "contact_phone",
)


async def update_enterprise(
    db: asyncpg.Connection, enterprise_id: uuid.UUID, changes: dict[str, Any], now: dt.datetime
) -> Enterprise:
    """Apply ``changes`` (column -> value, columns from a fixed list) and bump the version."""
    columns = [c for c in UPDATABLE if c in changes]
    assignments = "".join(f", {c} = ${i}" for i, c in enumerate(columns, start=3))
    row = await db.fetchrow(
        f"""UPDATE enterprises SET version = version + 1, updated_at = $2{assignments}
            WHERE id = $1 RETURNING {_COLUMNS}""",
        enterprise_id,
        now,
        *(changes[c] for c in columns),
    )
    assert row is not None
    return _enterprise(row)
