"""Webhook rows."""

from __future__ import annotations

import datetime as dt
import uuid

import asyncpg
import msgspec

from service.auth import Principal, Role
from service.errors import DuplicateError
from service.pagination import Params
from service.webhooks.schemas import Webhook

__all__ = ("deactivate_webhook", "insert_webhook", "select_webhook_target", "select_webhooks")

_COLUMNS = "id, enterprise_id, region_code, url, events, active, created_at"


async def insert_webhook(
    db: asyncpg.Connection,
    *,
    enterprise_id: uuid.UUID | None,
    region_code: str | None,
    url: str,
    events: list[str],
    secret: str,
    now: dt.datetime,
) -> Webhook:
    """Insert an active webhook of the owner (``enterprise_id`` or ``region_code``).

    Raises:
        DuplicateError: naming ``url`` when the owner has an active webhook there already (one
            created by a concurrent request included: the insert waits for it, schema/0024).
    """
    row = await db.fetchrow(
        f"""INSERT INTO webhooks (enterprise_id, region_code, url, events, secret, created_at)
            VALUES ($1, $2, $3, $4, $5, $6)
            ON CONFLICT (enterprise_id, region_code, md5(url)) WHERE active DO NOTHING
            RETURNING {_COLUMNS}""",
        enterprise_id,
        region_code,
        url,
        events,
        secret,
        now,
    )
    if row is None:
        # A statement of its own sees the webhook it conflicted with (committed by then: read committed).
        column, owner = ("enterprise_id", enterprise_id) if enterprise_id is not None else ("region_code", region_code)
        existing = await db.fetchval(
            f"SELECT id FROM webhooks WHERE {column} = $1 AND md5(url) = md5($2) AND active", owner, url
        )
        whose = "this enterprise" if enterprise_id is not None else f"region {region_code}"
        held = f"webhook {existing}" if existing is not None else "a webhook"
        raise DuplicateError.for_field(
            "url", f"{whose} already has {held} at this URL (one per URL: a second would get every notice twice)"
        )
    return msgspec.convert(dict(row), Webhook)


def _owned(principal: Principal, bind: Params) -> str:
    """The webhooks a principal owns: its enterprise's, its region's, or (admins) all."""
    if principal.role is Role.ENTERPRISE:
        return f"enterprise_id = {bind(principal.enterprise_id)}"
    if principal.role is Role.REGULATOR:
        return f"region_code = {bind(principal.region_code)}"
    return "TRUE"


async def select_webhooks(db: asyncpg.Connection, principal: Principal) -> list[Webhook]:
    bind = Params()
    rows = await db.fetch(
        f"SELECT {_COLUMNS} FROM webhooks WHERE active AND {_owned(principal, bind)} ORDER BY created_at, id LIMIT 500",
        *bind.values,
    )
    return [msgspec.convert(dict(r), Webhook) for r in rows]


async def select_webhook_target(
    db: asyncpg.Connection, principal: Principal, webhook_id: uuid.UUID
) -> tuple[str, str] | None:
    """The URL and secret of an active webhook the principal owns."""
    bind = Params(webhook_id)
    row = await db.fetchrow(
        f"SELECT url, secret FROM webhooks WHERE id = $1 AND active AND {_owned(principal, bind)}", *bind.values
    )
    return (row["url"], row["secret"]) if row else None


async def deactivate_webhook(
    db: asyncpg.Connection, principal: Principal, webhook_id: uuid.UUID, now: dt.datetime
) -> bool:
    """Stop calling the webhook (its past deliveries stay visible); False when not the principal's."""
    bind = Params(webhook_id, now)
    status = await db.execute(
        f"UPDATE webhooks SET active = false, deleted_at = $2 WHERE id = $1 AND active AND {_owned(principal, bind)}",
        *bind.values,
    )
    return status.endswith(" 1")
