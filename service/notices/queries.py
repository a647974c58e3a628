"""Notice rows: event notices written with results, cancellation of stale ones, and the reads."""

from __future__ import annotations

import datetime as dt
import uuid

import asyncpg

from service.notices.rules import NoticeKind

__all__ = ("cancel_stale", "insert_event_notice")

# Pending planned notices whose cycle no longer governs (re-verified, failed, sealed, scrapped,
# replaced), and reminders of a cycle that has run out (once overdue, only the overdue series).
_CANCEL = """
UPDATE notices n
SET status = 'cancelled', closed_at = $1, updated_at = $1,
    last_error = CASE WHEN i.lifecycle <> 'in_service' THEN 'cancelled: the instrument is ' || i.lifecycle
                      WHEN i.valid_until IS DISTINCT FROM n.cycle THEN 'cancelled: a newer result governs'
                      ELSE 'cancelled: the instrument is overdue' END
FROM instruments i JOIN enterprises e ON e.id = i.enterprise_id
WHERE n.instrument_id = i.id AND n.status IN ('pending', 'dispatched') AND n.certificate_id IS NULL
  AND ($3::uuid IS NULL OR n.instrument_id = $3)
  AND (i.lifecycle <> 'in_service'
       OR i.valid_until IS DISTINCT FROM n.cycle
       OR (n.kind IN ('due_soon', 'rotation_due')
           AND n.cycle < coalesce($2::date, ($1::timestamptz AT TIME ZONE e.timezone)::date)))
"""


async def cancel_stale(
    db: asyncpg.Connection,
    now: dt.datetime,
    *,
    today: dt.date | None = None,
    instrument_id: uuid.UUID | None = None,
) -> int:
    """Cancel pending planned notices that no longer apply: all of them, or one instrument's (in
    the transaction that changed it). Returns how many were cancelled."""
    status = await db.execute(_CANCEL, now, today, instrument_id)
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
