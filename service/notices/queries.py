"""Notice rows: event notices written with results, cancellation of stale ones, and the reads."""

from __future__ import annotations

import datetime as dt
import uuid

import asyncpg
import msgspec

from service.auth import Principal, Role
from service.notices.rules import NoticeKind, NoticeStatus
from service.notices.schemas import Delivery, Notice
from service.pagination import Params, decode_cursor, read_in_page_order, split_page, walks_for_region

__all__ = (
    "NoticeFilters",
    "cancel_stale",
    "cancel_stale_notices",
    "delivery_scope",
    "drop_deliveries",
    "insert_event_notice",
    "notice_scope",
    "select_delivery",
    "select_notice",
    "select_notices",
)

# Pending planned notices whose cycle no longer governs (re-verified, failed, sealed, scrapped,
# replaced), and reminders of a cycle that has run out (once overdue, only the overdue series).
# What was still to be sent for them is failed by a trigger on notices (schema/0014), which reaches
# the deliveries whoever cancels: row-level security hides them from a lab. updated_at is the
# cancellation's instant the trigger goes by.
_CANCEL = """
WITH cancelled AS (
UPDATE notices n
SET status = 'cancelled', closed_at = $1, updated_at = $1,
    last_error = CASE WHEN i.lifecycle <> 'in_service' THEN 'cancelled: the instrument is ' || i.lifecycle
                      WHEN i.valid_until IS DISTINCT FROM n.cycle THEN 'cancelled: a newer result governs'
                      ELSE 'cancelled: the instrument is overdue' END
FROM instruments i JOIN enterprises e ON e.id = i.enterprise_id
WHERE n.instrument_id = i.id AND n.status IN ('pending', 'dispatched') AND n.certificate_id IS NULL
  AND {scope}
  AND (i.lifecycle <> 'in_service'
       OR i.valid_until IS DISTINCT FROM n.cycle
       OR (n.kind IN ('due_soon', 'rotation_due')
           AND n.cycle < coalesce($2::date, ($1::timestamptz AT TIME ZONE e.timezone)::date)))
RETURNING n.id
)
SELECT {result} FROM cancelled
"""


async def cancel_stale(
    db: asyncpg.Connection,
    now: dt.datetime,
    *,
    today: dt.date | None = None,
    instrument_id: uuid.UUID | None = None,
    instrument_ids: list[uuid.UUID] | None = None,
) -> int:
    """Cancel the pending planned notices of one instrument or some instruments (in the transaction
    that changed them) that no longer apply. Returns how many were cancelled."""
    if instrument_ids is not None:
        count = await db.fetchval(
            _CANCEL.format(scope="n.instrument_id = ANY($3::uuid[])", result="count(*)"), now, today, instrument_ids
        )
    elif instrument_id is not None:
        # Its own statement, so the plan walks the instrument's notices, not every pending one.
        count = await db.fetchval(
            _CANCEL.format(scope="n.instrument_id = $3", result="count(*)"), now, today, instrument_id
        )
    else:
        raise TypeError("cancel_stale needs instrument_id or instrument_ids")
    return int(count)


async def cancel_stale_notices(db: asyncpg.Connection, now: dt.datetime, notice_ids: list[uuid.UUID]) -> set[uuid.UUID]:
    """Cancel those of ``notice_ids`` that no longer apply (the delivery job's last look before
    sending); only these rows are touched, so jobs of other notices of the same instruments are not
    waited for. Returns the ids cancelled."""
    rows = await db.fetch(_CANCEL.format(scope="n.id = ANY ($3::uuid[])", result="id"), now, None, notice_ids)
    return {r["id"] for r in rows}


async def drop_deliveries(db: asyncpg.Connection, now: dt.datetime, notice_ids: list[uuid.UUID]) -> int:
    """Fail what is due to be sent for the cancelled notices ``notice_ids`` (the caller holds their
    locks). Their cancellation did so already (schema/0014) except for tries then claimed: this is
    for those whose claim was lost with its job (the lease ran out unrecorded), which the digest
    and the dispatch tick's sweep (``jobs.dispatch.end_lost_tries``) find. A claim still in its
    lease is not due: its try may be on the wire, and the job that made it records it. Returns how
    many."""
    # A lost try says so, in the words of the cancellation's trigger (schema/0022): it left no
    # attempt row and may have arrived, so "not tried again" alone would hide it.
    status = await db.execute(
        """UPDATE deliveries d
           SET status = 'failed', updated_at = $1,
               last_error = CASE
                   WHEN d.attempts = 0 THEN 'not sent: the notice was cancelled'
                   WHEN NOT EXISTS (SELECT 1 FROM delivery_attempts a
                                    WHERE a.delivery_id = d.id AND a.attempt = d.attempts)
                       THEN 'try ' || d.attempts || ' went unrecorded (its job ended first; it may have arrived); '
                            'not tried again: the notice was cancelled'
                   ELSE 'not tried again: the notice was cancelled' END
           WHERE d.notice_id = ANY ($2::uuid[]) AND d.status = 'pending' AND d.next_attempt_at <= $1""",
        now,
        notice_ids,
    )
    return int(status.split()[-1])


async def insert_event_notice(
    db: asyncpg.Connection,
    *,
    enterprise_id: uuid.UUID,
    region_code: str,
    instrument_id: uuid.UUID,
    certificate_id: uuid.UUID,
    kind: NoticeKind,
    performed_on: dt.date,
    today: dt.date,
    now: dt.datetime,
) -> None:
    """The notice of a recorded result, written in the certificate's transaction (the outbox)."""
    await db.execute(
        """INSERT INTO notices (enterprise_id, instrument_id, kind, audience, region_code, cycle, step,
                                certificate_id, due_on, next_attempt_at, created_at, updated_at)
           VALUES ($1, $2, $3, 'enterprise', $4, $5, 0, $6, $7, $8, $8, $8)
           ON CONFLICT DO NOTHING""",
        enterprise_id,
        instrument_id,
        kind.value,
        region_code,
        performed_on,
        certificate_id,
        today,
        now,
    )


_SELECT = """
    SELECT n.id, n.enterprise_id, n.instrument_id, i.name AS instrument_name, n.kind, n.audience, n.cycle, n.step,
           n.certificate_id, n.due_on, n.status, n.attempts, n.last_error, n.created_at, n.updated_at,
           n.dispatched_at, n.closed_at, n.region_code
    FROM notices n JOIN instruments i ON i.id = n.instrument_id
"""


_DELIVERIES = """
    SELECT d.id, d.notice_id, d.channel, d.webhook_id, d.target, d.digest, d.status, d.attempts, d.next_attempt_at,
           d.last_status, d.last_error, d.delivered_at,
           coalesce((SELECT jsonb_agg(jsonb_build_object(
                         'attempt', a.attempt, 'started_at', a.started_at, 'duration_ms', a.duration_ms,
                         'status_code', a.status_code, 'error', a.error, 'outcome', a.outcome)
                         ORDER BY a.attempt)
                     FROM delivery_attempts a WHERE a.delivery_id = d.id), '[]') AS history
    FROM deliveries d
"""


class NoticeFilters(msgspec.Struct, frozen=True, kw_only=True):
    instrument_id: uuid.UUID | None = None
    kind: NoticeKind | None = None
    status: NoticeStatus | None = None
    due_from: dt.date | None = None
    due_to: dt.date | None = None


class _PageKey(msgspec.Struct, frozen=True, array_like=True):
    created_at: dt.datetime
    id: uuid.UUID


def notice_scope(principal: Principal, bind: Params) -> str:
    if principal.role is Role.ENTERPRISE:
        return f"n.enterprise_id = {bind(principal.enterprise_id)}"
    if principal.role is Role.REGULATOR:
        # The enterprise's region now, not the one stored on the notice: a regulator loses sight of
        # an enterprise that moves away and gains its history when one moves in.
        return (
            f"EXISTS (SELECT 1 FROM enterprises e WHERE e.id = n.enterprise_id "
            f"AND e.region_code LIKE {bind(f'{principal.region_code}%')})"
        )
    return "TRUE"


def delivery_scope(principal: Principal, bind: Params) -> str:
    """The deliveries a principal may see and retry: those to its own targets. An enterprise sees
    its webhooks and e-mails, a regulator the webhooks of its region, an admin all; nobody sees
    where another owner has notices sent (an escalation's regulator webhooks, say)."""
    if principal.role is Role.ENTERPRISE:
        owner = bind(principal.enterprise_id)
        return (
            f"n.enterprise_id = {owner} AND (d.webhook_id IS NULL OR EXISTS "
            f"(SELECT 1 FROM webhooks w WHERE w.id = d.webhook_id AND w.enterprise_id = {owner}))"
        )
    if principal.role is Role.REGULATOR:
        # Webhooks of exactly its region: those it owns (lists, pings, deletes).
        return (
            f"{notice_scope(principal, bind)} AND EXISTS "
            f"(SELECT 1 FROM webhooks w WHERE w.id = d.webhook_id AND w.region_code = {bind(principal.region_code)})"
        )
    return "TRUE"


def _notice(record: asyncpg.Record, deliveries: list[Delivery] | None = None) -> Notice:
    data = dict(record)
    data.pop("region_code")
    data["deliveries"] = deliveries
    return msgspec.convert(data, Notice)


async def select_notices(
    db: asyncpg.Connection, principal: Principal, filters: NoticeFilters, *, limit: int, cursor: str | None
) -> tuple[list[Notice], str | None]:
    """One page of the notices the principal may see, newest first.

    An enterprise's come from notices_enterprise in page order; everyone's (an admin's) and a
    region's from notices_listing (schema/0019), a regulator's keeping those of enterprises in its
    region as it walks. One instrument's are few, found by notices_series and sorted.
    """
    bind = Params()
    where = [notice_scope(principal, bind)]
    if filters.instrument_id is not None:
        where.append(f"n.instrument_id = {bind(filters.instrument_id)}")
    if filters.kind is not None:
        where.append(f"n.kind = {bind(filters.kind.value)}")
    if filters.status is not None:
        where.append(f"n.status = {bind(filters.status.value)}")
    if filters.due_from is not None:
        where.append(f"n.due_on >= {bind(filters.due_from)}::date")
    if filters.due_to is not None:
        where.append(f"n.due_on <= {bind(filters.due_to)}::date")
    if cursor is not None:
        key = decode_cursor(cursor, _PageKey)
        where.append(f"(n.created_at, n.id) < ({bind(key.created_at)}::timestamptz, {bind(key.id)}::uuid)")
    if filters.instrument_id is None:
        walk = principal.role is not Role.REGULATOR or await walks_for_region(db, "notices", limit)
        await read_in_page_order(db, walk=walk)
    records = await db.fetch(
        f"{_SELECT} WHERE {' AND '.join(where)} ORDER BY n.created_at DESC, n.id DESC LIMIT {bind(limit + 1)}",
        *bind.values,
    )
    return split_page(
        [_notice(r) for r in records], limit, lambda last: _PageKey(created_at=last.created_at, id=last.id)
    )


async def select_delivery(db: asyncpg.Connection, principal: Principal, delivery_id: uuid.UUID) -> Delivery | None:
    """One delivery of a notice the principal may see, with its attempts."""
    bind = Params(delivery_id)
    row = await db.fetchrow(
        f"""{_DELIVERIES} JOIN notices n ON n.id = d.notice_id
            WHERE d.id = $1 AND {delivery_scope(principal, bind)}""",
        *bind.values,
    )
    return msgspec.convert(dict(row), Delivery, strict=False) if row else None


async def select_notice(db: asyncpg.Connection, principal: Principal, notice_id: uuid.UUID) -> Notice | None:
    """One notice the principal may see, with its deliveries and their attempts."""
    bind = Params(notice_id)
    record = await db.fetchrow(f"{_SELECT} WHERE n.id = $1 AND {notice_scope(principal, bind)}", *bind.values)
    if record is None:
        return None
    bind = Params(notice_id)
    rows = await db.fetch(
        f"""{_DELIVERIES} JOIN notices n ON n.id = d.notice_id
            WHERE d.notice_id = $1 AND {delivery_scope(principal, bind)}
            ORDER BY d.created_at, d.channel, d.target, d.id""",
        *bind.values,
    )
    return _notice(record, [msgspec.convert(dict(r), Delivery, strict=False) for r in rows])
