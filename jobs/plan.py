"""The planner: every notice that is due and does not exist yet, in a few set-based statements.

The SQL twin of :func:`service.notices.rules.due_notices` (a test holds them together). Each
statement walks the ``instruments_lifecycle_due`` index per enterprise over the date range that can
be due on the enterprise's local today, so the work grows with the instruments that are due, not
with the register. Unique keys make planning idempotent; a transaction-level advisory lock keeps
overlapping runs from doing the same work twice. The due rows are read FOR SHARE: a write that
changes an instrument (and cancels its notices) in the meantime is waited for and re-read, so no
notice for a cycle that no longer governs slips in after that cancellation.
"""

from __future__ import annotations

import datetime as dt

import asyncpg
import msgspec

from service.notices.queries import cancel_stale

__all__ = ("PLAN_LOCK", "PlanResult", "plan")

#: pg_try_advisory_xact_lock key of the planner (any fixed bigint; this one spells "plan").
PLAN_LOCK = 0x706C616E

# Every enterprise with its local "today" ($2 overrides it, for `metreg plan --today`).
_ENTERPRISES = """
    SELECT id, region_code, reminder_days, rotation_reminder_days, overdue_repeat_days, escalate_after_days,
           coalesce($2::date, ($1::timestamptz AT TIME ZONE timezone)::date) AS today
    FROM enterprises
"""

# Reminders: the latest step whose day has come, while the instrument is still valid; skipped
# when that step or a later (smaller) one of the same cycle already exists (settings changed
# meanwhile). The existence test sits inside the locked scan so that only rows that get a notice
# are locked, not every instrument in the reminder window.
_STEP = """(SELECT min(o) FROM unnest(CASE WHEN i.regime = 'initial_only_limited_life'
                                 THEN e.rotation_reminder_days ELSE e.reminder_days END) AS o
          WHERE i.valid_until - o <= e.today)"""
_REMINDERS = f"""
WITH e AS ({_ENTERPRISES}),
due AS (
    SELECT e.id AS enterprise_id, e.region_code, i.id AS instrument_id, i.valid_until, i.kind, i.step
    FROM e
    JOIN LATERAL (
        SELECT i.id, i.valid_until,
               CASE WHEN i.regime = 'initial_only_limited_life' THEN 'rotation_due' ELSE 'due_soon' END AS kind,
               {_STEP} AS step
        FROM instruments i
        WHERE i.enterprise_id = e.id AND i.lifecycle = 'in_service'
          AND i.due_key >= e.today
          AND i.due_key <= e.today + greatest((SELECT max(o) FROM unnest(e.reminder_days) o),
                                              (SELECT max(o) FROM unnest(e.rotation_reminder_days) o))
          AND NOT EXISTS (SELECT 1 FROM notices n
                          WHERE n.instrument_id = i.id AND n.cycle = i.valid_until
                            AND n.kind = CASE WHEN i.regime = 'initial_only_limited_life' THEN 'rotation_due'
                                              ELSE 'due_soon' END AND n.step <= {_STEP} AND n.certificate_id IS NULL)
        FOR SHARE OF i
    ) i ON true
)
INSERT INTO notices (enterprise_id, instrument_id, kind, audience, region_code, cycle, step, due_on, next_attempt_at,
                     created_at, updated_at)
SELECT d.enterprise_id, d.instrument_id, d.kind, 'enterprise', d.region_code, d.valid_until, d.step,
       d.valid_until - d.step, $1, $1, $1
FROM due d
WHERE d.step IS NOT NULL
ON CONFLICT DO NOTHING
RETURNING kind
"""

# Overdue: the latest step of the series (first overdue day, then every overdue_repeat_days), and
# the one escalation to the regulator after escalate_after_days. Overdue instruments stay overdue
# for weeks: only those missing today's step or a due escalation are locked and read on.
_OVERDUE_STEP = "(e.today - (i.valid_until + 1)) / e.overdue_repeat_days"
_ESCALATION_DUE = "e.today >= i.valid_until + 1 + e.escalate_after_days"
_OVERDUE = f"""
WITH e AS ({_ENTERPRISES}),
due AS (
    SELECT e.id AS enterprise_id, e.region_code, e.today, e.overdue_repeat_days, e.escalate_after_days,
           i.id AS instrument_id, i.valid_until, i.step
    FROM e
    JOIN LATERAL (
        SELECT i.id, i.valid_until, {_OVERDUE_STEP} AS step FROM instruments i
        WHERE i.enterprise_id = e.id AND i.lifecycle = 'in_service' AND i.due_key < e.today
          AND (NOT EXISTS (SELECT 1 FROM notices n
                           WHERE n.instrument_id = i.id AND n.kind = 'overdue' AND n.cycle = i.valid_until
                             AND n.step = {_OVERDUE_STEP} AND n.certificate_id IS NULL)
               OR ({_ESCALATION_DUE}
                   AND NOT EXISTS (SELECT 1 FROM notices n
                                   WHERE n.instrument_id = i.id AND n.kind = 'escalation'
                                     AND n.cycle = i.valid_until AND n.step = 0 AND n.certificate_id IS NULL)))
        FOR SHARE OF i
    ) i ON true
)
INSERT INTO notices (enterprise_id, instrument_id, kind, audience, region_code, cycle, step, due_on, next_attempt_at,
                     created_at, updated_at)
SELECT enterprise_id, instrument_id, 'overdue', 'enterprise', region_code, valid_until, step,
       valid_until + 1 + step * overdue_repeat_days, $1, $1, $1
FROM due
UNION ALL
SELECT enterprise_id, instrument_id, 'escalation', 'regulator', region_code, valid_until, 0,
       valid_until + 1 + escalate_after_days, $1, $1, $1
FROM due
WHERE today >= valid_until + 1 + escalate_after_days
ON CONFLICT DO NOTHING
RETURNING kind
"""


class PlanResult(msgspec.Struct, frozen=True, kw_only=True):
    """What one planning run did; ``ran`` is false when another run held the lock."""

    ran: bool
    created: dict[str, int]
    cancelled: int


async def plan(db: asyncpg.Connection, now: dt.datetime, *, today: dt.date | None = None) -> PlanResult:
    """Insert every due notice that does not exist yet and cancel the stale ones, in one transaction.

    ``today`` replaces every enterprise's local date (for ``metreg plan --today``); by default each
    enterprise's own local date at ``now`` applies.
    """
    async with db.transaction():
        if not await db.fetchval("SELECT pg_try_advisory_xact_lock($1)", PLAN_LOCK):
            return PlanResult(ran=False, created={}, cancelled=0)
        cancelled = await cancel_stale(db, now, today=today)
        created: dict[str, int] = {}
        for statement in (_REMINDERS, _OVERDUE):
            for row in await db.fetch(statement, now, today):
                created[row["kind"]] = created.get(row["kind"], 0) + 1
    return PlanResult(ran=True, created=created, cancelled=cancelled)
