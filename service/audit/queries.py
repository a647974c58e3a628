"""Reading the audit trail: newest first, within the principal's scope."""

from __future__ import annotations

import datetime as dt
import uuid

import asyncpg
import msgspec

from service.audit.schemas import AuditEntry
from service.auth import Principal, Role
from service.pagination import Params, decode_cursor, read_in_page_order, split_page, walks_for_region

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
    """One page of the rows the principal may see (row-level security holds the same line).

    Each filter has an index in page order (schema/0008, 0027: the enterprise, the actor, the
    action, the entity, the entity id), and a time span is a range of seq (audit_seq_from,
    audit_seq_until, each found once for the page), so a page reads its rows and stops. A
    regulator's rows are found walking the trail from its newest row, keeping its region's, or,
    where its region holds too little of the trail for that (:func:`walks_for_region`), gathered
    by region code and sorted.
    """
    params = Params()
    clauses = []
    walk = True
    if principal.role is Role.ENTERPRISE:
        clauses.append(f"enterprise_id = {params(principal.enterprise_id)}")
    elif principal.role is Role.REGULATOR:
        # Its region's register, and its own keys and webhooks, not its enterprises' (0008_trust.sql).
        assert principal.region_code is not None
        region = params(principal.region_code)
        clauses.append(
            f"starts_with(region_code, {region}) AND (entity NOT IN ('webhooks', 'api_keys') "
            f"OR enterprise_id IS NULL AND region_code = {region})"
        )
        walk = await walks_for_region(db, "audit_log", limit)
        if not walk:
            # The codes the prefix starts, as a range of audit_log_region (in "C" order: digits).
            beyond = params(_next_prefix(principal.region_code))
            clauses.append(f'region_code COLLATE "C" >= {region} AND region_code COLLATE "C" < {beyond}')
    for column in ("entity", "entity_id", "action", "actor_key_id", "enterprise_id"):
        value = getattr(where, column)
        if value is not None:
            clauses.append(f"{column} = {params(value)}")
    # `at` is in seq order only to within the trail's lag: the bounds of seq take the span's rows
    # and those within that lag of its ends, and `at` keeps the span's. Each bound is a bisection
    # of the trail, run once for the page (an InitPlan), never as a condition on each row read. A
    # gathered page takes no bounds: it reads its region's few rows from audit_log_region, which
    # holds no seq, so a bound would only be a condition on each of them (with a bare call, a
    # bisection a row: 34,000 buffers, 120 ms on the test register), and given bounds as
    # InitPlans PostgreSQL walks the primary key between them instead, for every row of the span.
    if where.since is not None:
        since = params(where.since)
        clauses.append(f"at >= {since}" + (f" AND seq >= (SELECT audit_seq_from({since}))" if walk else ""))
    if where.until is not None:
        until = params(where.until)
        clauses.append(f"at < {until}" + (f" AND seq < (SELECT audit_seq_until({until}))" if walk else ""))
    if cursor:
        clauses.append(f"seq < {params(decode_cursor(cursor, _PageKey).seq)}")
    # The actions and entities are few, and one of each fills most of the trail. A gathered page
    # reads its region's rows from audit_log_region alone: a bitmap of them ANDed with one of the
    # primary key below the cursor (which a plan for any cursor finds cheap) reads every row below
    # the cursor.
    await read_in_page_order(
        db, walk=walk, for_its_values=where.action is not None or where.entity is not None, bitmaps=False
    )
    rows = await db.fetch(
        f"""SELECT seq, at, request_id, actor_key_id, actor_role, action, entity, entity_id, operation,
                   enterprise_id, region_code, before, after, encode(prev_hash, 'hex') AS prev_hash,
                   encode(hash, 'hex') AS hash
            FROM audit_log {"WHERE " + " AND ".join(clauses) if clauses else ""}
            ORDER BY seq DESC LIMIT {params(limit + 1)}""",
        *params.values,
    )
    return split_page([msgspec.convert(dict(r), AuditEntry) for r in rows], limit, lambda last: _PageKey(seq=last.seq))


def _next_prefix(prefix: str) -> str:
    """The first string after every string that starts with ``prefix`` (of digits), in "C" order."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)
