"""Delivery rows: targets of a notice, claims on them, what each try came to, the notice settled.

A claim moves ``next_attempt_at`` a lease into the future and counts the try before anything is
sent, so two jobs that run for the same notice (after a lost queue, say) never send the same
delivery at once, and a result is recorded only by the claim that still holds it: nothing is ever
recorded as delivered twice.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Collection, Sequence

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
    "LOST_TO_CANCELLED",
    "Claimed",
    "LockedNotice",
    "claim_held",
    "claim_live_of",
    "create_targets_of",
    "held_notices",
    "lock_lost_to_cancelled",
    "lock_notices",
    "record_many",
    "reopen_delivery",
    "settle_notices",
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


async def lock_notices(db: asyncpg.Connection, notice_ids: Sequence[uuid.UUID]) -> list[LockedNotice]:
    """Lock the notices ``notice_ids`` (with their enterprise's timezone and digest setting) for
    update, in id order, so that two jobs whose batches overlap wait for each other instead of
    deadlocking."""
    rows = await db.fetch(
        """SELECT n.id, n.enterprise_id, n.instrument_id, n.kind, n.audience, n.region_code, n.status, n.attempts,
                  n.certificate_id, e.timezone, e.digest
           FROM notices n JOIN enterprises e ON e.id = n.enterprise_id
           WHERE n.id = ANY ($1::uuid[]) ORDER BY n.id FOR UPDATE OF n""",
        list(notice_ids),
    )
    return [msgspec.convert(dict(r), LockedNotice) for r in rows]


async def create_targets_of(
    db: asyncpg.Connection, notices: Sequence[LockedNotice], now: dt.datetime, digest_at: Sequence[dt.datetime]
) -> int:
    """One delivery per target of each notice, as they are now, in one statement: every active
    webhook of the owner subscribed to its kind (an escalation's owner is every regulator whose
    region covers the enterprise's), and for the enterprise's own notices every ``notify_emails``
    address (held for the notice's ``digest_at`` when the enterprise takes a digest).

    A webhook's delivery is its own, keyed by the webhook (deliveries_webhook, schema/0025), not
    by its URL: two owners' webhooks at one URL each get theirs, signed with their own secret and
    seen by their own owner. An e-mail's is keyed by its address (deliveries_email).

    The two owners are joined apart (by enterprise, by region) so that an enterprise's webhooks are
    found by their index rather than by testing every webhook against every notice."""
    # No conflict target: one statement writes both channels, and each has its own unique index.
    # Conflicts are not expected (targets are made once, under the notice's lock, with its
    # attempts counted in the same transaction); DO NOTHING keeps a second run harmless all the same.
    status = await db.execute(
        """
        WITH t AS (SELECT * FROM unnest($1::uuid[], $3::timestamptz[]) AS t(id, digest_at)),
        n AS (SELECT n.id, n.kind, n.audience, n.region_code, n.enterprise_id, t.digest_at
              FROM t JOIN notices n ON n.id = t.id)
        INSERT INTO deliveries (notice_id, channel, webhook_id, target, digest, next_attempt_at, created_at, updated_at)
        SELECT n.id, 'webhook', w.id, w.url, false, $2::timestamptz, $2, $2
        FROM n JOIN webhooks w ON w.enterprise_id = n.enterprise_id
        WHERE n.audience <> 'regulator' AND w.active AND (cardinality(w.events) = 0 OR n.kind = ANY (w.events))
        UNION ALL
        SELECT n.id, 'webhook', w.id, w.url, false, $2::timestamptz, $2, $2
        FROM n JOIN webhooks w ON w.region_code IS NOT NULL AND starts_with(n.region_code, w.region_code)
        WHERE n.audience = 'regulator' AND w.active AND (cardinality(w.events) = 0 OR n.kind = ANY (w.events))
        UNION ALL
        SELECT n.id, 'email', NULL, mail.address, e.digest, CASE WHEN e.digest THEN n.digest_at ELSE $2 END, $2, $2
        FROM n JOIN enterprises e ON e.id = n.enterprise_id, unnest(e.notify_emails) AS mail(address)
        WHERE n.audience = 'enterprise'
        ON CONFLICT DO NOTHING
        """,
        [n.id for n in notices],
        now,
        list(digest_at),
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
# A digest e-mail claimed by a run whose lease has not run out, and not recorded yet: it may be on
# the wire. Only a burst run, which takes held e-mails whatever their hour, could reach it (a claim
# moves next_attempt_at to the lease's end): it leaves it to the run that claimed it, as the
# cancellation's trigger does (schema/0014).
_NOT_IN_FLIGHT = """NOT (d.attempts > 0 AND d.next_attempt_at > {now}
         AND NOT EXISTS (SELECT 1 FROM delivery_attempts a WHERE a.delivery_id = d.id AND a.attempt = d.attempts))"""


async def claim_live_of(
    db: asyncpg.Connection, notice_ids: Sequence[uuid.UUID], now: dt.datetime, lease: dt.timedelta, *, limit: int
) -> list[Claimed]:
    """Claim the notices' deliveries that are due now and sent one by one (not held for a digest),
    at most ``limit`` of them (the rest stay due)."""
    rows = await db.fetch(
        _CLAIM.format(where="notice_id = ANY ($5::uuid[]) AND NOT digest"), now, lease, now, limit, list(notice_ids)
    )
    return [msgspec.convert(dict(r), Claimed) for r in rows]


async def held_notices(
    db: asyncpg.Connection, now: dt.datetime, *, limit: int, everything: bool = False
) -> list[uuid.UUID]:
    """The notices of the first ``limit`` digest e-mails whose hour has come (``everything``: of
    all held ones), in id order, unlocked: the digest locks them before it claims their e-mails.

    Delivered and failed notices are left out (they never hold an e-mail); cancelled ones are not:
    their cancellation fails their held e-mails but not one claimed then, whose claim may since
    have been lost with its job."""
    rows = await db.fetch(
        f"""SELECT DISTINCT notice_id FROM (
               SELECT d.notice_id FROM deliveries d JOIN notices n ON n.id = d.notice_id
               WHERE d.digest AND d.status = 'pending' AND d.next_attempt_at <= $1
                 AND n.status IN ('pending', 'dispatched', 'cancelled') AND {_NOT_IN_FLIGHT.format(now="$3")}
               ORDER BY d.next_attempt_at
               LIMIT $2) AS due
           ORDER BY notice_id""",
        _EVERYTHING if everything else now,
        limit,
        now,
    )
    return [r["notice_id"] for r in rows]


#: The cancelled notices with lost tries, locked (see :func:`lock_lost_to_cancelled`). Each due try's
#: notice is looked up by its key (the scalar subquery), not joined: the planner takes every claim
#: and retry waiting for due (a partial index has no statistics of its own, and most deliveries'
#: next_attempt_at is past), and would hash every cancelled notice for a join to read a few rows.
LOST_TO_CANCELLED = """
SELECT id FROM notices
WHERE id IN (SELECT d.notice_id FROM deliveries d
             WHERE d.status = 'pending' AND NOT d.digest AND d.attempts > 0 AND d.next_attempt_at <= $1
               AND (SELECT n.status FROM notices n WHERE n.id = d.notice_id) = 'cancelled'
             LIMIT $2)
  AND status = 'cancelled'
ORDER BY id
FOR UPDATE SKIP LOCKED
"""


async def lock_lost_to_cancelled(db: asyncpg.Connection, now: dt.datetime, *, limit: int) -> list[uuid.UUID]:
    """Lock, in id order, the cancelled notices that have a try sent one by one (not held for a
    digest) whose claim ran out by ``now`` unrecorded, lost with its job: the notices of at most
    ``limit`` such tries, skipping those another transaction holds (a later sweep takes them).
    Runs in the caller's transaction.

    Nothing else is pending under a cancelled notice once its time has come: the cancellation
    fails all but the claims on the wire (schema/0014), and a cancelled notice is never claimed
    again. They are found through deliveries_claimed (schema/0022), among the few claims and
    retries that have come due, not by reading every delivery or every cancelled notice."""
    # The same misestimate would have the plan compiled (JIT, tens of ms) for a few rows' read.
    await db.execute("SET LOCAL jit = off")
    rows = await db.fetch(LOST_TO_CANCELLED, now, limit)
    return [r["id"] for r in rows]


_CLAIM_HELD = f"""
WITH due AS (
    SELECT d.id, n.enterprise_id, d.target
    FROM deliveries d JOIN notices n ON n.id = d.notice_id
    WHERE d.notice_id = ANY ($5::uuid[]) AND d.digest AND d.status = 'pending' AND d.next_attempt_at <= $3
      AND {_NOT_IN_FLIGHT.format(now="$1::timestamptz")}
    FOR UPDATE OF d SKIP LOCKED),
-- One message per enterprise and address: whole messages are claimed, the first $6 of them.
messages AS (
    SELECT id, dense_rank() OVER (ORDER BY enterprise_id, target) AS message FROM due)
UPDATE deliveries d
SET attempts = d.attempts + 1, next_attempt_at = $1::timestamptz + $2::interval, updated_at = $1
FROM notices n
WHERE n.id = d.notice_id AND d.id IN (
    SELECT id FROM messages WHERE message <= $6 ORDER BY message LIMIT $4)
RETURNING d.id, d.notice_id, d.channel, d.target, d.attempts, d.series_start, n.enterprise_id, NULL::text AS secret
"""


async def claim_held(
    db: asyncpg.Connection,
    notice_ids: Sequence[uuid.UUID],
    now: dt.datetime,
    lease: dt.timedelta,
    *,
    limit: int,
    messages: int,
    everything: bool = False,
) -> list[Claimed]:
    """Claim the digest e-mails of ``notice_ids`` whose hour has come (``everything``: all held
    ones, for a burst run): those of at most ``messages`` digests (one per enterprise and address),
    at most ``limit`` e-mails in all."""
    due_by = _EVERYTHING if everything else now
    rows = await db.fetch(_CLAIM_HELD, now, lease, due_by, limit, list(notice_ids), messages)
    return [msgspec.convert(dict(r), Claimed) for r in rows]


def _recording(
    claimed: Claimed,
    attempted: Attempted,
    *,
    now: dt.datetime,
    jitter: float,
    max_tries: int,
    first_delay: dt.timedelta,
    cancelled: bool,
) -> tuple[DeliveryStatus, dt.datetime, Outcome, str | None]:
    """What a try comes to: the delivery's status, its next try, the attempt's outcome and error.

    ``cancelled``: its notice was cancelled while the try was on the wire. The try was made, so it
    is recorded as it went; only a further try is not made."""
    tries = claimed.attempts - claimed.series_start
    status = next_status(attempted.outcome, tries, max_tries=max_tries)
    error = attempted.error
    if status is DeliveryStatus.PENDING and cancelled:
        status = DeliveryStatus.FAILED
        error = f"{error}; not tried again: the notice was cancelled"
    elif status is DeliveryStatus.FAILED and attempted.outcome is Outcome.RETRY:
        error = f"{error}; gave up after {tries} tries"
    outcome = attempted.outcome if status is not DeliveryStatus.FAILED else Outcome.FAILED
    next_at = now
    if status is DeliveryStatus.PENDING:
        next_at = now + retry_delay(tries, jitter, attempted.retry_after, first=first_delay)
    return status, next_at, outcome, error


async def record_many(
    db: asyncpg.Connection,
    tries: Sequence[tuple[Claimed, Attempted]],
    *,
    started_at: dt.datetime,
    now: dt.datetime,
    jitter: Callable[[], float],
    max_tries: int = MAX_TRIES,
    first_delay: dt.timedelta = FIRST_DELAY,
    cancelled: Collection[uuid.UUID] = frozenset(),
) -> dict[uuid.UUID, DeliveryStatus]:
    """Record what each try came to and schedule the next one, in one statement (``jitter``: a
    fresh one for each try; ``max_tries`` and ``first_delay``: the retry series,
    ``METREG_RETRY_TRIES`` and ``METREG_RETRY_DELAY``). ``cancelled``: the notices of ``tries``
    that were cancelled while they were on the wire (the caller holds the notices' locks): their
    tries are recorded as they went, but none is scheduled again.

    Returns the status of each delivery whose claim still held; the others are left out and
    unrecorded (the lease ran out and another try took over: its result counts, not this one)."""
    columns: tuple[list[object], ...] = ([], [], [], [], [], [], [], [])
    planned: dict[uuid.UUID, DeliveryStatus] = {}
    for claimed, attempted in sorted(tries, key=lambda t: t[0].id):
        status, next_at, outcome, error = _recording(
            claimed,
            attempted,
            now=now,
            jitter=jitter(),
            max_tries=max_tries,
            first_delay=first_delay,
            cancelled=claimed.notice_id in cancelled,
        )
        planned[claimed.id] = status
        row = (claimed.id, status.value, next_at, attempted.status_code, error, claimed.attempts,
               attempted.duration_ms, outcome.value)  # fmt: skip
        for column, value in zip(columns, row, strict=True):
            column.append(value)
    recorded = await db.fetch(
        """
        WITH r AS (
            SELECT * FROM unnest($1::uuid[], $2::text[], $3::timestamptz[], $4::int[], $5::text[], $6::int[],
                                 $7::int[], $8::text[])
                          AS r(id, status, next_at, status_code, error, attempt, duration_ms, outcome)),
        d AS (
            UPDATE deliveries
            SET status = r.status, next_attempt_at = r.next_at, last_status = r.status_code, last_error = r.error,
                updated_at = $9::timestamptz,
                delivered_at = CASE WHEN r.status = 'delivered' THEN $9::timestamptz END
            FROM r
            WHERE deliveries.id = r.id AND deliveries.status = 'pending' AND deliveries.attempts = r.attempt
            RETURNING deliveries.id)
        INSERT INTO delivery_attempts (delivery_id, attempt, started_at, duration_ms, status_code, error, outcome)
        SELECT r.id, r.attempt, $10, r.duration_ms, r.status_code, r.error, r.outcome FROM r JOIN d ON d.id = r.id
        RETURNING delivery_id
        """,
        *columns,
        now,
        started_at,
    )
    return {r["delivery_id"]: planned[r["delivery_id"]] for r in recorded}


async def settle_notices(
    db: asyncpg.Connection, notice_ids: Sequence[uuid.UUID], now: dt.datetime, sweep_after: dt.timedelta
) -> dict[uuid.UUID, Settlement]:
    """Bring the notices' statuses in line with their deliveries (:func:`rules.settle`), in two
    statements whatever their number; a cancelled notice stays cancelled."""
    ids = sorted(set(notice_ids))
    rows = await db.fetch(
        """SELECT notice_id,
                  count(*) FILTER (WHERE status = 'pending' AND NOT digest) AS live,
                  min(next_attempt_at) FILTER (WHERE status = 'pending' AND NOT digest) AS next_live,
                  count(*) FILTER (WHERE status = 'pending' AND digest) AS held,
                  max(next_attempt_at) FILTER (WHERE status = 'pending' AND digest) AS next_held,
                  count(*) FILTER (WHERE status = 'delivered') AS delivered,
                  count(*) FILTER (WHERE status = 'failed') AS failed
           FROM deliveries WHERE notice_id = ANY ($1::uuid[]) GROUP BY notice_id""",
        ids,
    )
    tallies = {r["notice_id"]: msgspec.convert({k: v for k, v in r.items() if k != "notice_id"}, Tally) for r in rows}
    # A notice without deliveries has no row: the empty tally (no target) settles it.
    settlements = {i: settle(tallies.get(i, Tally()), now, sweep_after) for i in ids}
    await db.execute(
        """UPDATE notices n
           SET status = s.status, next_attempt_at = s.next_at, last_error = s.error, updated_at = $6::timestamptz,
               closed_at = CASE WHEN s.closed THEN $6::timestamptz END
           FROM unnest($1::uuid[], $2::text[], $3::timestamptz[], $4::text[], $5::boolean[])
                AS s(id, status, next_at, error, closed)
           WHERE n.id = s.id AND n.status <> 'cancelled'""",
        ids,
        [settlements[i].status.value for i in ids],
        [settlements[i].next_attempt_at for i in ids],
        [settlements[i].last_error for i in ids],
        [settlements[i].closed for i in ids],
        now,
    )
    return settlements


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
