"""The planner: every notice that is due and does not exist yet, for the instruments whose day has come.

``notice_schedule`` (schema/0013) holds, per instrument, the next local day on which the planner
has something to do for it (:func:`service.notices.rules.next_notice_on`), or '-infinity' once
anything planning depends on changed. A run reads the instruments whose day has come by that
index, applies :func:`service.notices.rules.due_notices` to each — the rules themselves, not a
twin of them — and stores each one's next day: its work grows with the notices due that day, not
with the register, and a second run the same day reads nothing. When an enterprise's reminder
settings changed since its schedule was computed (``notice_pacing``), all its instruments in
service are read once.

Unique keys make planning idempotent; a transaction-level advisory lock keeps overlapping runs
from doing the same work twice. The instruments read are locked FOR SHARE: a write that changes
one (and cancels its notices) in the meantime is waited for and re-read, so no notice for a cycle
that no longer governs slips in after that cancellation.

The schedule assumes days go forward: ``plan(today=...)`` on a day before one already planned
plans only the instruments changed since.
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from typing import Any

import asyncpg
import msgspec

from service.catalog.rules import Regime
from service.instruments.rules import Lifecycle
from service.notices.queries import cancel_stale
from service.notices.rules import REMINDERS, Pacing, due_notices, next_notice_on

__all__ = ("PLAN_LOCK", "PlanResult", "plan")

#: pg_try_advisory_xact_lock key of the planner (any fixed bigint; this one spells "plan").
PLAN_LOCK = 0x706C616E

#: Instruments handled at a time: a run after a settings change (or the first after migration 0013)
#: reads a whole enterprise (or register), and the worker must not hold it all in memory.
BATCH = 5000

_DAY = dt.timedelta(days=1)

# Every enterprise with its local "today" ($2 overrides it, for `metreg plan --today`).
_ENTERPRISES = """
    SELECT id, region_code, reminder_days, rotation_reminder_days, overdue_repeat_days, escalate_after_days,
           coalesce($2::date, ($1::timestamptz AT TIME ZONE timezone)::date) AS today
    FROM enterprises
"""

# The smallest reminder step of the current cycle already written: a step is skipped when it or a
# later (smaller) one exists, which happens when reminder_days grew after a step was sent.
_KIND = "CASE WHEN i.regime = 'initial_only_limited_life' THEN 'rotation_due' ELSE 'due_soon' END"
_REMINDED = f"""(SELECT min(n.step) FROM notices n
     WHERE n.instrument_id = i.id AND n.kind = {_KIND} AND n.cycle = i.valid_until AND n.certificate_id IS NULL)"""
_COLUMNS = """
    e.id AS enterprise_id, e.region_code, e.today, e.reminder_days, e.rotation_reminder_days,
    e.overdue_repeat_days, e.escalate_after_days, i.id AS instrument_id, i.lifecycle, i.regime, i.valid_until
"""

# The instruments whose day has come: one range of the schedule's index up to $4, the latest local
# today of any enterprise (a value, not a subquery, so that its selectivity is estimated from the
# statistics: a subquery's is a flat third of the table, and the plan a hash join over the whole
# register), each then held to its own enterprise's today; those _REPACED read ($3: enterprises
# whose settings changed) are not read twice. The instrument is read by its key, row by row (the
# locking subquery is not flattened into a join): a hash join would read the whole register
# wherever the statistics overrate the range. The schedule row is locked too (after the instrument,
# the order the triggers take them in), so that one changed while this run waited for its
# instrument is read as changed. ``scheduled``, the day the last run left, bounds what can be new:
# see _Run._write. Only an instrument that changed since can have a smaller reminder step of its
# cycle already written (``reminded``).
_LATEST = "SELECT max(coalesce($2::date, ($1::timestamptz AT TIME ZONE timezone)::date)) FROM enterprises"
_DUE = f"""
WITH e AS ({_ENTERPRISES})
SELECT {_COLUMNS}, s.next_on AS scheduled,
       CASE WHEN s.next_on = '-infinity' THEN {_REMINDED} END AS reminded
FROM notice_schedule s
JOIN LATERAL (SELECT i.id, i.enterprise_id, i.lifecycle, i.regime, i.valid_until, i.due_key
              FROM instruments i WHERE i.id = s.instrument_id FOR SHARE) i ON true
JOIN e ON e.id = i.enterprise_id
WHERE s.next_on <= $4::date AND s.next_on < 'infinity' AND s.next_on <= e.today
  AND NOT (e.id = ANY($3::uuid[]) AND i.lifecycle = 'in_service' AND i.due_key < 'infinity')
FOR SHARE OF s
"""

# Enterprises whose reminder settings are not those their schedule was computed with (or that
# were never planned): stored as they are now, and their instruments in service read below.
_PACING = """
WITH changed AS (
    SELECT e.id, e.reminder_days, e.rotation_reminder_days, e.overdue_repeat_days, e.escalate_after_days
    FROM enterprises e LEFT JOIN notice_pacing p ON p.enterprise_id = e.id
    WHERE p.enterprise_id IS NULL
       OR (p.reminder_days, p.rotation_reminder_days, p.overdue_repeat_days, p.escalate_after_days)
          IS DISTINCT FROM (e.reminder_days, e.rotation_reminder_days, e.overdue_repeat_days, e.escalate_after_days)
)
INSERT INTO notice_pacing AS p (enterprise_id, reminder_days, rotation_reminder_days, overdue_repeat_days,
                                escalate_after_days)
SELECT * FROM changed
ON CONFLICT (enterprise_id) DO UPDATE
SET reminder_days = excluded.reminder_days, rotation_reminder_days = excluded.rotation_reminder_days,
    overdue_repeat_days = excluded.overdue_repeat_days, escalate_after_days = excluded.escalate_after_days
RETURNING p.enterprise_id
"""
_REPACED = f"""
WITH e AS ({_ENTERPRISES})
SELECT {_COLUMNS}, '-infinity'::date AS scheduled, {_REMINDED} AS reminded
FROM e JOIN instruments i ON i.enterprise_id = e.id
WHERE e.id = ANY($3::uuid[]) AND i.lifecycle = 'in_service' AND i.due_key < 'infinity'
FOR SHARE OF i
"""

# The notices found due, written in one statement apart from the read: were they one, each
# existence probe would walk the rows the same statement had just inserted (invisible to it, but
# still visited), and the run would grow with the square of the notices it writes. Most of a day's
# run is this statement, row by row: a query checking its foreign key (one for instrument and
# enterprise, schema/0016), an entry in each index of notices, and the probe for a conflict, in the
# series' key only (without a target the primary key was probed too, a page of its own a row). The
# ids are made by _notice_ids.
_INSERT = """
INSERT INTO notices (id, enterprise_id, instrument_id, kind, audience, region_code, cycle, step, due_on,
                     next_attempt_at, created_at, updated_at)
SELECT t.id, t.enterprise_id, t.instrument_id, t.kind, t.audience, t.region_code, t.cycle, t.step, t.due_on,
       $1, $1, $1
FROM unnest($2::uuid[], $3::uuid[], $4::uuid[], $5::text[], $6::text[], $7::text[], $8::date[], $9::int[],
            $10::date[])
     AS t(id, enterprise_id, instrument_id, kind, audience, region_code, cycle, step, due_on)
ON CONFLICT (instrument_id, kind, cycle, step, certificate_id) DO NOTHING
RETURNING kind
"""

# 'infinity': nothing until the instrument changes (the triggers of schema/0013 bring it back).
_RESCHEDULE = """
UPDATE notice_schedule s SET next_on = coalesce(t.next_on, 'infinity')
FROM unnest($1::uuid[], $2::date[]) AS t(instrument_id, next_on)
WHERE s.instrument_id = t.instrument_id
"""

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _notice_ids(now: dt.datetime, count: int) -> list[uuid.UUID]:
    """``count`` new notice ids, time-ordered (UUID version 7: ``now`` in milliseconds, then 74
    random bits).

    A run's notices then go to the right edge of the primary key's index, on a few pages: random
    ids put each on a page of its own, to be read and written back (a tenth of the run's time in
    the database)."""
    milliseconds = (now - _EPOCH) // dt.timedelta(milliseconds=1)
    prefix = milliseconds << 80 | 0x7 << 76 | 0b10 << 62  # the time, the version, the variant
    random = os.urandom(10 * count)
    ids = []
    for start in range(0, 10 * count, 10):
        bits = int.from_bytes(random[start : start + 10])  # 80 bits: the top 12 and the low 62 used
        ids.append(uuid.UUID(int=prefix | (bits >> 68) << 64 | (bits & (1 << 62) - 1)))
    return ids


class _Planned:
    """Columns of the notices to write, as arrays for one INSERT … SELECT FROM unnest."""

    def __init__(self) -> None:
        self.columns: tuple[list[Any], ...] = ([], [], [], [], [], [], [], [])

    def add(self, row: asyncpg.Record, kind: str, audience: str, step: int, due_on: dt.date) -> None:
        values = (row["enterprise_id"], row["instrument_id"], kind, audience, row["region_code"], row["valid_until"])
        for column, value in zip(self.columns, (*values, step, due_on), strict=True):
            column.append(value)


class _Run:
    """One planning run: what it wrote so far, and the enterprises' settings as read."""

    def __init__(self, db: asyncpg.Connection, now: dt.datetime, today: dt.date | None) -> None:
        self.db = db
        self.now = now
        self.today = today
        self.created: dict[str, int] = {}
        self.cancelled = 0
        self._pacings: dict[uuid.UUID, Pacing] = {}

    def _pacing(self, row: asyncpg.Record) -> Pacing:
        pacing = self._pacings.get(row["enterprise_id"])
        if pacing is None:
            pacing = Pacing(
                reminder_days=tuple(row["reminder_days"]),
                rotation_reminder_days=tuple(row["rotation_reminder_days"]),
                overdue_repeat_days=row["overdue_repeat_days"],
                escalate_after_days=row["escalate_after_days"],
            )
            self._pacings[row["enterprise_id"]] = pacing
        return pacing

    async def read(self, sql: str, *args: Any) -> None:
        """Plan the instruments ``sql`` reads, a batch at a time."""
        # A generic plan (after five runs on one connection) would estimate the schedule's range
        # without its bound, as a third of the table: the read is planned for its arguments, when
        # its cursor opens. Only the read: the foreign-key checks of the notices written below run
        # saved plans too, and forced custom they were planned afresh for every row (a fifth of the
        # run's time in the database).
        # Nor a sequential scan: on a register never planned, notices is empty and analysed as
        # such, and the probe for a cycle's reminders already written (_REMINDED) was planned as
        # a scan of notices, run again for every instrument while the run fills the table (more
        # than 25 minutes for a million instruments). Every read here goes by an index.
        await self.db.execute("SET LOCAL plan_cache_mode = force_custom_plan; SET LOCAL enable_seqscan = off")
        cursor = await self.db.cursor(sql, self.now, self.today, *args)
        await self.db.execute("SET LOCAL plan_cache_mode = DEFAULT; SET LOCAL enable_seqscan = DEFAULT")
        while rows := await cursor.fetch(BATCH):
            await self._write(rows)

    async def _write(self, rows: list[asyncpg.Record]) -> None:
        planned = _Planned()
        ids: list[uuid.UUID] = []
        next_days: list[dt.date | None] = []
        stale: list[uuid.UUID] = []
        for row in rows:
            facts: dict[str, Any] = {
                "lifecycle": Lifecycle(row["lifecycle"]),
                "regime": Regime(row["regime"]),
                "valid_until": row["valid_until"],
                "pacing": self._pacing(row),
                "today": row["today"],
            }
            # The day the last run that read the instrument left for it (date.min: changed since,
            # or never read). due_notices gave the same on every day from that run up to this day,
            # so a notice due before it was offered then, and exists (or was rightly skipped).
            scheduled: dt.date = row["scheduled"]
            reminded = row["reminded"]
            for notice in due_notices(**facts):
                if notice.due_on < scheduled:
                    continue
                if notice.kind in REMINDERS and reminded is not None and reminded <= notice.step:
                    continue  # that step or a later one of this cycle was sent (the settings changed since)
                planned.add(row, notice.kind.value, notice.audience.value, notice.step, notice.due_on)
            ids.append(row["instrument_id"])
            next_days.append(next_notice_on(**facts))
            # Pending notices go stale when the instrument changes (date.min) or its reminders'
            # cycle runs out, which the first run after valid_until sees (its day was at most then).
            until = row["valid_until"]
            if scheduled == dt.date.min or (until is not None and until < row["today"] and scheduled <= until + _DAY):
                stale.append(row["instrument_id"])
        # Stale notices go before the new ones come (a reminder of a cycle that ran out, say, when
        # its overdue notice is written).
        if stale:
            self.cancelled += await cancel_stale(self.db, self.now, today=self.today, instrument_ids=stale)
        notice_ids = _notice_ids(self.now, len(planned.columns[0]))
        for row in await self.db.fetch(_INSERT, self.now, notice_ids, *planned.columns):
            self.created[row["kind"]] = self.created.get(row["kind"], 0) + 1
        await self.db.execute(_RESCHEDULE, ids, next_days)


class PlanResult(msgspec.Struct, frozen=True, kw_only=True):
    """What one planning run did; ``ran`` is false when another run held the lock."""

    ran: bool
    created: dict[str, int]
    cancelled: int


async def plan(db: asyncpg.Connection, now: dt.datetime, *, today: dt.date | None = None) -> PlanResult:
    """Insert every due notice that does not exist yet and cancel the stale ones, for the instruments
    whose day has come, in one transaction.

    ``today`` replaces every enterprise's local date (for ``metreg plan --today``); by default each
    enterprise's own local date at ``now`` applies.
    """
    async with db.transaction():
        if not await db.fetchval("SELECT pg_try_advisory_xact_lock($1)", PLAN_LOCK):
            return PlanResult(ran=False, created={}, cancelled=0)
        # Every statement here is meant to look rows up by key, as many as are due: a hash or merge
        # join reads a whole table to find them (the schedule's update from a batch's keys did: a
        # million rows for 20,000). Nor does compiling the read's plan (JIT, some 25 ms a cursor)
        # pay for itself on rows fetched one key at a time.
        await db.execute("SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off; SET LOCAL jit = off")
        run = _Run(db, now, today)
        repaced = [r["enterprise_id"] for r in await db.fetch(_PACING)]
        if repaced:
            await run.read(_REPACED, repaced)
        await run.read(_DUE, repaced, await db.fetchval(_LATEST, now, today))
    return PlanResult(ran=True, created=run.created, cancelled=run.cancelled)
