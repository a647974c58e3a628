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
from typing import Any

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
_KIND = "CASE WHEN i.regime = 'initial_only_limited_life' THEN 'rotation_due' ELSE 'due_soon' END"
_DUE_REMINDERS = f"""
WITH e AS ({_ENTERPRISES})
SELECT e.id AS enterprise_id, e.region_code, i.id AS instrument_id, i.valid_until, i.kind, i.step
FROM e
JOIN LATERAL (
    SELECT i.id, i.valid_until, {_KIND} AS kind, {_STEP} AS step
    FROM instruments i
    WHERE i.enterprise_id = e.id AND i.lifecycle = 'in_service'
      AND i.due_key >= e.today
      AND i.due_key <= e.today + greatest((SELECT max(o) FROM unnest(e.reminder_days) o),
                                          (SELECT max(o) FROM unnest(e.rotation_reminder_days) o))
      AND NOT EXISTS (SELECT 1 FROM notices n
                      WHERE n.instrument_id = i.id AND n.kind = {_KIND} AND n.cycle = i.valid_until
                        AND n.step <= {_STEP} AND n.certificate_id IS NULL)
    FOR SHARE OF i
) i ON true
WHERE i.step IS NOT NULL
"""

# Overdue: the latest step of the series (first overdue day, then every overdue_repeat_days), and
# the one escalation to the regulator after escalate_after_days. Overdue instruments stay overdue
# for weeks: only those missing today's step or a due escalation are locked and read on.
_OVERDUE_STEP = "(e.today - (i.valid_until + 1)) / e.overdue_repeat_days"
_ESCALATE_ON = "i.valid_until + 1 + e.escalate_after_days"
_DUE_OVERDUE = f"""
WITH e AS ({_ENTERPRISES})
SELECT e.id AS enterprise_id, e.region_code, i.id AS instrument_id, i.valid_until, i.step,
       i.valid_until + 1 + i.step * e.overdue_repeat_days AS due_on,
       CASE WHEN e.today >= i.escalate_on THEN i.escalate_on END AS escalate_on
FROM e
JOIN LATERAL (
    SELECT i.id, i.valid_until, {_OVERDUE_STEP} AS step, {_ESCALATE_ON} AS escalate_on FROM instruments i
    WHERE i.enterprise_id = e.id AND i.lifecycle = 'in_service' AND i.due_key < e.today
      AND (NOT EXISTS (SELECT 1 FROM notices n
                       WHERE n.instrument_id = i.id AND n.kind = 'overdue' AND n.cycle = i.valid_until
                         AND n.step = {_OVERDUE_STEP} AND n.certificate_id IS NULL)
           OR (e.today >= {_ESCALATE_ON}
               AND NOT EXISTS (SELECT 1 FROM notices n
                               WHERE n.instrument_id = i.id AND n.kind = 'escalation'
                                 AND n.cycle = i.valid_until AND n.step = 0 AND n.certificate_id IS NULL)))
    FOR SHARE OF i
) i ON true
"""

# The notices found due, written in one statement. Reading and writing are two statements on
# purpose: were they one, each existence probe would walk the rows the same statement had just
# inserted (invisible to it, but still visited), and the run would grow with the square of the
# notices it writes.
_INSERT = """
INSERT INTO notices (enterprise_id, instrument_id, kind, audience, region_code, cycle, step, due_on, next_attempt_at,
                     created_at, updated_at)
SELECT t.enterprise_id, t.instrument_id, t.kind, t.audience, t.region_code, t.cycle, t.step, t.due_on, $1, $1, $1
FROM unnest($2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::text[], $7::date[], $8::int[], $9::date[])
     AS t(enterprise_id, instrument_id, kind, audience, region_code, cycle, step, due_on)
ON CONFLICT DO NOTHING
RETURNING kind
"""


class _Planned:
    """Columns of the notices to write, as arrays for one INSERT … SELECT FROM unnest."""

    def __init__(self) -> None:
        self.columns: tuple[list[Any], ...] = ([], [], [], [], [], [], [], [])

    def add(self, row: asyncpg.Record, kind: str, audience: str, step: int, due_on: dt.date) -> None:
        values = (row["enterprise_id"], row["instrument_id"], kind, audience, row["region_code"], row["valid_until"])
        for column, value in zip(self.columns, (*values, step, due_on), strict=True):
            column.append(value)


async def _due(db: asyncpg.Connection, now: dt.datetime, today: dt.date | None) -> _Planned:
    planned = _Planned()
    for row in await db.fetch(_DUE_REMINDERS, now, today):
        step = row["step"]
        planned.add(row, row["kind"], "enterprise", step, row["valid_until"] - dt.timedelta(days=step))
    for row in await db.fetch(_DUE_OVERDUE, now, today):
        planned.add(row, "overdue", "enterprise", row["step"], row["due_on"])
        if row["escalate_on"] is not None:
            planned.add(row, "escalation", "regulator", 0, row["escalate_on"])
    return planned


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
        planned = await _due(db, now, today)
        created: dict[str, int] = {}
        for row in await db.fetch(_INSERT, now, *planned.columns):
            created[row["kind"]] = created.get(row["kind"], 0) + 1
    return PlanResult(ran=True, created=created, cancelled=cancelled)
