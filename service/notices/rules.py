"""Which notice an instrument is due on a local date: the pure twin of the planner's SQL.

Rules (design.md §6, issue 4; dates are the enterprise's local dates, R7):

- ``due_soon`` (``rotation_due`` for limited-life meters) at each reminder offset before
  ``valid_until`` (R5). A step whose day passed while nothing ran is still sent once while the
  instrument is not yet overdue — only the latest such step, never a pile of them.
- ``overdue`` on the first overdue day (``valid_until + 1``, R3) and every ``overdue_repeat_days``
  after; after an outage only the latest step of the series is sent.
- ``escalation`` once, ``escalate_after_days`` after the first overdue day, to the regulator.
- Only instruments in service are planned for: sealed, failed, scrapped, replaced and pending ones
  get nothing, and a pending notice of a cycle that no longer governs is cancelled.

``jobs.plan`` applies these to the instruments whose day has come: :func:`next_notice_on` is the
first day after a run on which :func:`due_notices` can give an instrument something new.
"""

from __future__ import annotations

import datetime as dt
import enum

import msgspec

from service.catalog.rules import Regime
from service.instruments.rules import Lifecycle

__all__ = ("Audience", "DueNotice", "NoticeKind", "NoticeStatus", "Pacing", "due_notices", "next_notice_on")


class NoticeKind(enum.StrEnum):
    DUE_SOON = "due_soon"
    ROTATION_DUE = "rotation_due"
    OVERDUE = "overdue"
    ESCALATION = "escalation"
    RESULT_RECORDED = "result_recorded"
    VERIFICATION_FAILED = "verification_failed"


#: Notices the planner makes from dates; the others are written with the result they report.
PLANNED = frozenset({NoticeKind.DUE_SOON, NoticeKind.ROTATION_DUE, NoticeKind.OVERDUE, NoticeKind.ESCALATION})
#: The planned notices sent before valid_until, one series per cycle.
REMINDERS = frozenset({NoticeKind.DUE_SOON, NoticeKind.ROTATION_DUE})


class NoticeStatus(enum.StrEnum):
    PENDING = "pending"
    DISPATCHED = "dispatched"
    DELIVERED = "delivered"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Audience(enum.StrEnum):
    ENTERPRISE = "enterprise"
    REGULATOR = "regulator"


class Pacing(msgspec.Struct, frozen=True, kw_only=True):
    """An enterprise's reminder settings."""

    reminder_days: tuple[int, ...]
    rotation_reminder_days: tuple[int, ...]
    overdue_repeat_days: int
    escalate_after_days: int


class DueNotice(msgspec.Struct, frozen=True, kw_only=True):
    kind: NoticeKind
    cycle: dt.date
    step: int
    due_on: dt.date
    audience: Audience = Audience.ENTERPRISE


def due_notices(
    *,
    lifecycle: Lifecycle,
    regime: Regime,
    valid_until: dt.date | None,
    pacing: Pacing,
    today: dt.date,
) -> list[DueNotice]:
    """The planned notices due for one instrument on ``today`` (each exists at most once)."""
    if lifecycle is not Lifecycle.IN_SERVICE or valid_until is None:
        return []
    found: list[DueNotice] = []
    if today <= valid_until:
        limited = regime is Regime.INITIAL_ONLY_LIMITED_LIFE
        offsets = pacing.rotation_reminder_days if limited else pacing.reminder_days
        passed = [days for days in offsets if valid_until - dt.timedelta(days=days) <= today]
        if passed:
            step = min(passed)
            kind = NoticeKind.ROTATION_DUE if limited else NoticeKind.DUE_SOON
            found.append(DueNotice(kind=kind, cycle=valid_until, step=step, due_on=valid_until - dt.timedelta(step)))
        return found
    first = valid_until + dt.timedelta(days=1)
    repeat = (today - first).days // pacing.overdue_repeat_days
    found.append(
        DueNotice(
            kind=NoticeKind.OVERDUE,
            cycle=valid_until,
            step=repeat,
            due_on=first + dt.timedelta(days=repeat * pacing.overdue_repeat_days),
        )
    )
    escalate_on = first + dt.timedelta(days=pacing.escalate_after_days)
    if today >= escalate_on:
        found.append(
            DueNotice(
                kind=NoticeKind.ESCALATION,
                cycle=valid_until,
                step=0,
                due_on=escalate_on,
                audience=Audience.REGULATOR,
            )
        )
    return found


def next_notice_on(
    *,
    lifecycle: Lifecycle,
    regime: Regime,
    valid_until: dt.date | None,
    pacing: Pacing,
    today: dt.date,
) -> dt.date | None:
    """The first local date after ``today`` on which :func:`due_notices` gives something it does not
    give on ``today`` (a smaller reminder step, the first overdue day — when pending reminders are
    also cancelled —, the next overdue step, the escalation); None while nothing can come until the
    instrument or its enterprise's settings change. On every day before it, planning again would
    find only what ``today``'s run already wrote."""
    if lifecycle is not Lifecycle.IN_SERVICE or valid_until is None:
        return None
    first = valid_until + dt.timedelta(days=1)
    if today < first:
        offsets = pacing.rotation_reminder_days if regime is Regime.INITIAL_ONLY_LIMITED_LIFE else pacing.reminder_days
        steps = [valid_until - dt.timedelta(days=days) for days in offsets]
        return min([step for step in steps if step > today] + [first])
    repeat = pacing.overdue_repeat_days
    following = first + dt.timedelta(days=((today - first).days // repeat + 1) * repeat)
    escalate_on = first + dt.timedelta(days=pacing.escalate_after_days)
    return min(following, escalate_on) if escalate_on > today else following
