"""Reading the audit trail: newest first, within the principal's scope."""

from __future__ import annotations

import datetime as dt
import uuid

import asyncpg
import msgspec

from service.audit.schemas import AuditEntry
from service.auth import Principal, Role
from service.pagination import Params, decode_cursor, read_in_page_order, split_page

__all__ = ("AuditFilter", "select_entries")


class AuditFilter(msgspec.Struct, frozen=True, kw_only=True):
    entity: str | None = None
    entity_id: str | None = None
    action: str | None = None
    actor_key_id: uuid.UUID | None = None
    enterprise_id: uuid.UUID | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None


class _PageKey(msgspec.Struct, frozen=True, array_like=True):
    seq: int


async def select_entries(
    db: asyncpg.Connection, principal: Principal, where: AuditFilter, *, limit: int, cursor: str | None
) -> tuple[list[AuditEntry], str | None]:
    """One page of the rows the principal may see (row-level security holds the same line)."""
    params = Params()
    clauses = []
    if principal.role is Role.ENTERPRISE:
        clauses.append(f"enterprise_id = {params(principal.enterprise_id)}")
    elif principal.role is Role.REGULATOR:
        # Its region's register, and its own keys and webhooks, not its enterprises' (0008_trust.sql).
        region = params(principal.region_code)
        clauses.append(
            f"starts_with(region_code, {region}) AND (entity NOT IN ('webhooks', 'api_keys') "
            f"OR enterprise_id IS NULL AND region_code = {region})"
        )
    for column in ("entity", "entity_id", "action", "actor_key_id", "enterprise_id"):
        value = getattr(where, column)
        if value is not None:
            clauses.append(f"{column} = {params(value)}")
    if where.since is not None:
        clauses.append(f"at >= {params(where.since)}")
    if where.until is not None:
        clauses.append(f"at < {params(where.until)}")
    if cursor:
        clauses.append(f"seq < {params(decode_cursor(cursor, _PageKey).seq)}")
    # An enterprise's rows, and one entity's (entity and entity_id), have an index in page order;
    # the rest are found walking the trail from its newest row, keeping what scope and filters let
    # through.
    await read_in_page_order(db)
    rows = await db.fetch(
        f"""SELECT seq, at, request_id, actor_key_id, actor_role, action, entity, entity_id, operation,
                   enterprise_id, region_code, before, after, encode(prev_hash, 'hex') AS prev_hash,
                   encode(hash, 'hex') AS hash
            FROM audit_log {"WHERE " + " AND ".join(clauses) if clauses else ""}
            ORDER BY seq DESC LIMIT {params(limit + 1)}""",
        *params.values,
    )
    return split_page([msgspec.convert(dict(r), AuditEntry) for r in rows], limit, lambda last: _PageKey(seq=last.seq))
