"""Delivery rows: targets of a notice, claims on them, what each try came to, the notice settled.

A claim moves ``next_attempt_at`` a lease into the future and counts the try before anything is
sent, so two jobs that run for the same notice (after a lost queue, say) never send the same
delivery at once, and a result is recorded only by the claim that still holds it: nothing is ever
recorded as delivered twice.
"""

from __future__ import annotations

import datetime as dt
import uuid

import asyncpg
import msgspec

from service.deliveries.attempt import Attempted
from service.deliveries.rules import (
    FIRST_DELAY,
    MAX_TRIES,
    DeliveryStatus,
    Outcome,
    Settlement,
    Tally,
    next_status,
    retry_delay,
    settle,
)

__all__ = (
    "Claimed",
    "LockedNotice",
    "claim_held",
    "claim_live",
    "create_targets",
    "lock_notice",
    "record",
    "reopen_delivery",
    "settle_notice",
)


class LockedNotice(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    enterprise_id: uuid.UUID
    instrument_id: uuid.UUID
    kind: str
    audience: str
    region_code: str
    status: str
    attempts: int
    certificate_id: uuid.UUID | None
    timezone: str
    digest: bool


class Claimed(msgspec.Struct, frozen=True, kw_only=True):
    """A delivery claimed for one try."""

    id: uuid.UUID
    notice_id: uuid.UUID
    channel: str
    target: str
    attempts: int
    """The number of this try, over the delivery's life."""
    series_start: int
    secret: str | None
    """The webhook's signing secret; None for e-mail, and for a webhook deleted since."""
    enterprise_id: uuid.UUID


async def lock_notice(db: asyncpg.Connection, notice_id: uuid.UUID) -> LockedNotice | None:
    row = await db.fetchrow(
        """SELECT n.id, n.enterprise_id, n.instrument_id, n.kind, n.audience, n.region_code, n.status, n.attempts,
                  n.certificate_id, e.timezone, e.digest
           FROM notices n JOIN enterprises e ON e.id = n.enterprise_id
           WHERE n.id = $1 FOR UPDATE OF n""",
        notice_id,
    )
    return msgspec.convert(dict(row), LockedNotice) if row else None


async def create_targets(db: asyncpg.Connection, notice: LockedNotice, now: dt.datetime, digest_at: dt.datetime) -> int:
    """One delivery per target of the notice, as they are now: every active webhook of the owner
    subscribed to its kind (an escalation's owner is every regulator whose region covers the
    enterprise's), and for the enterprise's own notices every ``notify_emails`` address (held for
    ``digest_at`` when the enterprise takes a digest)."""
    status = await db.execute(
        """
        INSERT INTO deliveries (notice_id, channel, webhook_id, target, digest, next_attempt_at, created_at, updated_at)
        SELECT $1::uuid, 'webhook', w.id, w.url, false, $5::timestamptz, $5, $5
        FROM webhooks w
        WHERE w.active
          AND (cardinality(w.events) = 0 OR $2::text = ANY (w.events))
          AND CASE WHEN $3::text = 'regulator' THEN w.region_code IS NOT NULL AND starts_with($4::text, w.region_code)
                   ELSE w.enterprise_id = $6::uuid END
        UNION ALL
        SELECT $1, 'email', NULL, address, e.digest, CASE WHEN e.digest THEN $7::timestamptz ELSE $5 END, $5, $5
        FROM enterprises e, unnest(e.notify_emails) AS address
        WHERE e.id = $6 AND $3 = 'enterprise'
        ON CONFLICT DO NOTHING
        """,
        notice.id,
        notice.kind,
        notice.audience,
        notice.region_code,
        now,
        notice.enterprise_id,
        digest_at,
    )
    return int(status.split()[-1])


_CLAIM = """
UPDATE deliveries d
SET attempts = d.attempts + 1, next_attempt_at = $1::timestamptz + $2::interval, updated_at = $1
FROM notices n
WHERE n.id = d.notice_id AND d.id IN (
    SELECT id FROM deliveries
    WHERE {where} AND status = 'pending' AND next_attempt_at <= $3
    ORDER BY next_attempt_at
    LIMIT $4
    FOR UPDATE SKIP LOCKED)
RETURNING d.id, d.notice_id, d.channel, d.target, d.attempts, d.series_start, n.enterprise_id,
          (SELECT w.secret FROM webhooks w WHERE w.id = d.webhook_id AND w.active) AS secret
"""
#: Due by then: every held digest e-mail, whatever its hour (``metreg worker --burst``).
_EVERYTHING = dt.datetime(9999, 1, 1, tzinfo=dt.UTC)


async def claim_live(
    db: asyncpg.Connection, notice_id: uuid.UUID, now: dt.datetime, lease: dt.timedelta
) -> list[Claimed]:
    """Claim the notice's deliveries that are due now and sent one by one."""
    rows = await db.fetch(_CLAIM.format(where="notice_id = $5 AND NOT digest"), now, lease, now, 1000, notice_id)
    return [msgspec.convert(dict(r), Claimed) for r in rows]


async def claim_held(
    db: asyncpg.Connection, now: dt.datetime, lease: dt.timedelta, *, limit: int, everything: bool = False
) -> list[Claimed]:
    """Claim digest e-mails whose hour has come (``everything``: all held ones, for a burst run)."""
    due_by = _EVERYTHING if everything else now
    rows = await db.fetch(_CLAIM.format(where="digest"), now, lease, due_by, limit)
    return [msgspec.convert(dict(r), Claimed) for r in rows]


async def record(
    db: asyncpg.Connection,
    claimed: Claimed,
    attempted: Attempted,
    *,
    started_at: dt.datetime,
    now: dt.datetime,
    jitter: float,
    max_tries: int = MAX_TRIES,
    first_delay: dt.timedelta = FIRST_DELAY,
) -> DeliveryStatus | None:
    """Record what the try of ``claimed`` came to and schedule the next one; None when the claim was
    lost meanwhile (the lease ran out and another try took over: its result counts, not this one).

    ``max_tries`` and ``first_delay``: the retry series (``METREG_RETRY_TRIES``, ``METREG_RETRY_DELAY``)."""
    tries = claimed.attempts - claimed.series_start
    status = next_status(attempted.outcome, tries, max_tries=max_tries)
    outcome = attempted.outcome if status is not DeliveryStatus.FAILED else Outcome.FAILED
    next_at = now
    if status is DeliveryStatus.PENDING:
        next_at = now + retry_delay(tries, jitter, attempted.retry_after, first=first_delay)
    error = attempted.error
    if status is DeliveryStatus.FAILED and attempted.outcome is Outcome.RETRY:
        error = f"{error}; gave up after {tries} tries"
    recorded = await db.fetchval(
        """
        WITH d AS (
            UPDATE deliveries
            SET status = $2::text, next_attempt_at = $3, last_status = $4, last_error = $5,
                updated_at = $6::timestamptz,
                delivered_at = CASE WHEN $2::text = 'delivered' THEN $6::timestamptz END
            WHERE id = $1 AND status = 'pending' AND attempts = $7
            RETURNING id)
        INSERT INTO delivery_attempts (delivery_id, attempt, started_at, duration_ms, status_code, error, outcome)
        SELECT id, $7, $8, $9, $4, $5, $10 FROM d
        RETURNING delivery_id
        """,
        claimed.id,
        status.value,
        next_at,
        attempted.status_code,
        error,
        now,
        claimed.attempts,
        started_at,
        attempted.duration_ms,
        outcome.value,
    )
    return status if recorded is not None else None


async def settle_notice(
    db: asyncpg.Connection, notice_id: uuid.UUID, now: dt.datetime, sweep_after: dt.timedelta
) -> Settlement:
    """Bring the notice's status in line with its deliveries (:func:`rules.settle`)."""
    row = await db.fetchrow(
        """SELECT count(*) FILTER (WHERE status = 'pending' AND NOT digest) AS live,
                  min(next_attempt_at) FILTER (WHERE status = 'pending' AND NOT digest) AS next_live,
                  count(*) FILTER (WHERE status = 'pending' AND digest) AS held,
                  max(next_attempt_at) FILTER (WHERE status = 'pending' AND digest) AS next_held,
                  count(*) FILTER (WHERE status = 'delivered') AS delivered,
                  count(*) FILTER (WHERE status = 'failed') AS failed
           FROM deliveries WHERE notice_id = $1""",
        notice_id,
    )
    assert row is not None
    settlement = settle(msgspec.convert(dict(row), Tally), now, sweep_after)
    await db.execute(
        """UPDATE notices
           SET status = $2, next_attempt_at = $3, last_error = $4, updated_at = $5::timestamptz,
               closed_at = CASE WHEN $6::boolean THEN $5::timestamptz END
           WHERE id = $1 AND status <> 'cancelled'""",
        notice_id,
        settlement.status.value,
        settlement.next_attempt_at,
        settlement.last_error,
        now,
        settlement.closed,
    )
    return settlement


async def reopen_delivery(
    db: asyncpg.Connection, delivery_id: uuid.UUID, notice_id: uuid.UUID, now: dt.datetime
) -> None:
    """Try a delivery again now, with a fresh series of tries, and put its notice back in the outbox."""
    await db.execute(
        """UPDATE deliveries SET status = 'pending', next_attempt_at = $2, series_start = attempts, updated_at = $2
           WHERE id = $1""",
        delivery_id,
        now,
    )
    await db.execute(
        """UPDATE notices
           SET status = CASE WHEN status = 'dispatched' THEN status ELSE 'pending' END,
               next_attempt_at = $2, closed_at = NULL, last_error = NULL, updated_at = $2
           WHERE id = $1""",
        notice_id,
        now,
    )
