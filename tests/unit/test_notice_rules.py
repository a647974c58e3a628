"""Which planned notice is due on a local date: ``due_notices`` row by row (issue 4 point 2;
design.md §6; domain.md §2.3 R3, R5, R7).

Each row names the rule it holds. ``V`` is the last valid day (valid_until); the first overdue day is
``V + 1`` (R3); a reminder's day is ``V − offset`` (R5). The result is the one notice per series the
planner must make on ``today`` (the catch-up rule: only the latest step that has come).
"""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.catalog.rules import Regime
from service.dates import local_today
from service.instruments.rules import Lifecycle
from service.notices.rules import PLANNED, Audience, DueNotice, NoticeKind, Pacing, due_notices, next_notice_on

V = dt.date(2026, 7, 14)  # a gauge verified 2026-01-15 on a 6-month cycle
DEFAULT = Pacing(reminder_days=(30, 7), rotation_reminder_days=(90, 30), overdue_repeat_days=7, escalate_after_days=30)
BUSY = Pacing(reminder_days=(60, 14, 1), rotation_reminder_days=(120,), overdue_repeat_days=1, escalate_after_days=2)

P = Regime.PERIODIC
L = Regime.INITIAL_ONLY_LIMITED_LIFE
C = Regime.NOT_CONTROLLED
IN = Lifecycle.IN_SERVICE


def day(offset: int) -> dt.date:
    return V + dt.timedelta(days=offset)


def soon(step: int, kind: NoticeKind = NoticeKind.DUE_SOON, cycle: dt.date = V) -> DueNotice:
    return DueNotice(kind=kind, cycle=cycle, step=step, due_on=cycle - dt.timedelta(days=step))


def rotation(step: int) -> DueNotice:
    return soon(step, NoticeKind.ROTATION_DUE)


def overdue(step: int, due: int, cycle: dt.date = V) -> DueNotice:
    return DueNotice(kind=NoticeKind.OVERDUE, cycle=cycle, step=step, due_on=cycle + dt.timedelta(days=due))


def escalation(due: int, cycle: dt.date = V) -> DueNotice:
    return DueNotice(
        kind=NoticeKind.ESCALATION,
        cycle=cycle,
        step=0,
        due_on=cycle + dt.timedelta(days=due),
        audience=Audience.REGULATOR,
    )


#: Each row: the rule it holds, then lifecycle, regime, valid_until, pacing, today and the expected notices.
ROWS: list[tuple[str, Lifecycle, Regime, dt.date | None, Pacing, dt.date, list[DueNotice]]] = [
    # R5 reminders before valid_until, at V − offset.
    ("R5: nothing before the first reminder day", IN, P, V, DEFAULT, day(-31), []),
    ("R5: the 30-day reminder on V-30", IN, P, V, DEFAULT, day(-30), [soon(30)]),
    ("R5: between steps the latest step that came (30)", IN, P, V, DEFAULT, day(-8), [soon(30)]),
    ("R5: the 7-day reminder on V-7", IN, P, V, DEFAULT, day(-7), [soon(7)]),
    ("R5: the last valid day still has the 7-day step", IN, P, V, DEFAULT, day(0), [soon(7)]),
    ("catch-up: both steps passed unplanned -> only the latest (7)", IN, P, V, DEFAULT, day(-3), [soon(7)]),
    ("R5 custom offsets: 60 on V-60", IN, P, V, BUSY, day(-60), [soon(60)]),
    ("R5 custom offsets: 14 from V-14 to V-2", IN, P, V, BUSY, day(-2), [soon(14)]),
    ("R5 custom offsets: 1 on V-1", IN, P, V, BUSY, day(-1), [soon(1)]),
    ("R5 custom offsets: nothing before V-60", IN, P, V, BUSY, day(-61), []),
    ("R5: calibrated instruments are reminded too", IN, C, V, DEFAULT, day(-7), [soon(7)]),
    # Limited-life meters: rotation_due on rotation_reminder_days, never due_soon.
    ("rotation: nothing before V-90", IN, L, V, DEFAULT, day(-91), []),
    ("rotation: the 90-day rotation notice on V-90", IN, L, V, DEFAULT, day(-90), [rotation(90)]),
    ("rotation: reminder_days do not apply (V-7 is still step 30)", IN, L, V, DEFAULT, day(-7), [rotation(30)]),
    ("rotation: the 30-day step on V-30", IN, L, V, DEFAULT, day(-30), [rotation(30)]),
    ("rotation: own offsets (120 only)", IN, L, V, BUSY, day(-1), [rotation(120)]),
    ("rotation then R3: an expired meter is overdue, not rotation_due", IN, L, V, DEFAULT, day(1), [overdue(0, 1)]),
    # R3: overdue from V + 1, then every overdue_repeat_days; only the latest step.
    ("R3: the first overdue day is V+1, step 0", IN, P, V, DEFAULT, day(1), [overdue(0, 1)]),
    ("R3: no reminder once overdue (catch-up stops at V)", IN, P, V, DEFAULT, day(2), [overdue(0, 1)]),
    ("R3 repeat: V+7 is still step 0", IN, P, V, DEFAULT, day(7), [overdue(0, 1)]),
    ("R3 repeat: V+8 is step 1 (7 days after the first)", IN, P, V, DEFAULT, day(8), [overdue(1, 8)]),
    ("R3 outage: only the latest step (4, due V+29) on V+30", IN, P, V, DEFAULT, day(30), [overdue(4, 29)]),
    ("R3 repeat 1: every day a step (escalated since V+3)", IN, P, V, BUSY, day(5), [overdue(4, 5), escalation(3)]),
    # Escalation once, on V + 1 + escalate_after_days, to the regulator.
    ("escalation: not on V+30 (29 days overdue)", IN, P, V, DEFAULT, day(30), [overdue(4, 29)]),
    ("escalation: on V+31 (30 days after V+1)", IN, P, V, DEFAULT, day(31), [overdue(4, 29), escalation(31)]),
    ("escalation: still the same one later", IN, P, V, DEFAULT, day(100), [overdue(14, 99), escalation(31)]),
    ("escalation after 2 days", IN, P, V, BUSY, day(3), [overdue(2, 3), escalation(3)]),
    ("escalation: limited-life meters too", IN, L, V, DEFAULT, day(31), [overdue(4, 29), escalation(31)]),
    # Only instruments in service with a valid_until are planned for.
    *[
        (f"{lc}: nothing on {label}", lc, P, V, DEFAULT, day(offset), [])
        for lc in (
            Lifecycle.SEALED,
            Lifecycle.FAILED,
            Lifecycle.SCRAPPED,
            Lifecycle.REPLACED,
            Lifecycle.PENDING_VERIFICATION,
        )
        for label, offset in (("a reminder day", -7), ("the first overdue day", 1), ("the escalation day", 31))
    ],
    ("no valid_until (initial only): nothing", IN, Regime.INITIAL_ONLY_SCRAP_ON_FAILURE, None, DEFAULT, day(0), []),
    ("no valid_until (never verified): nothing", IN, P, None, DEFAULT, day(400), []),
]


@pytest.mark.parametrize(
    ("rule", "lifecycle", "regime", "valid_until", "pacing", "today", "expected"), ROWS, ids=[r[0] for r in ROWS]
)
def test_due_notices(
    rule: str,
    lifecycle: Lifecycle,
    regime: Regime,
    valid_until: dt.date | None,
    pacing: Pacing,
    today: dt.date,
    expected: list[DueNotice],
) -> None:
    found = due_notices(lifecycle=lifecycle, regime=regime, valid_until=valid_until, pacing=pacing, today=today)
    assert sorted(found, key=lambda n: n.kind) == sorted(expected, key=lambda n: n.kind), rule


def test_r7_today_is_the_local_date_the_caller_passes() -> None:
    """R7: 2026-07-14T17:30Z is 2026-07-15 in Shanghai: the gauge valid until 07-14 is overdue there,
    while in UTC it is still its last valid day (the 7-day reminder)."""
    instant = dt.datetime(2026, 7, 14, 17, 30, tzinfo=dt.UTC)
    shanghai = due_notices(
        lifecycle=IN, regime=P, valid_until=V, pacing=DEFAULT, today=local_today(instant, "Asia/Shanghai")
    )
    utc = due_notices(lifecycle=IN, regime=P, valid_until=V, pacing=DEFAULT, today=local_today(instant, "UTC"))
    assert shanghai == [overdue(0, 1)]
    assert utc == [soon(7)]


offsets = st.lists(st.integers(1, 366), min_size=1, max_size=4, unique=True).map(
    lambda xs: tuple(sorted(xs, reverse=True))
)


@settings(derandomize=True, max_examples=300, deadline=None)
@given(
    regime=st.sampled_from([P, L, C]),
    reminder=offsets,
    rotation_days=offsets,
    repeat=st.integers(1, 366),
    escalate=st.integers(1, 3660),
    offset=st.integers(-400, 4000),
)
def test_invariants_of_every_answer(
    regime: Regime, reminder: tuple[int, ...], rotation_days: tuple[int, ...], repeat: int, escalate: int, offset: int
) -> None:
    """Whatever the settings: at most one notice per kind, each already due (due_on ≤ today) and
    no older than one step; reminders only while valid (R5), the overdue series only after (R3)."""
    pacing = Pacing(
        reminder_days=reminder,
        rotation_reminder_days=rotation_days,
        overdue_repeat_days=repeat,
        escalate_after_days=escalate,
    )
    today = day(offset)
    found = due_notices(lifecycle=IN, regime=regime, valid_until=V, pacing=pacing, today=today)
    kinds = [n.kind for n in found]
    assert len(kinds) == len(set(kinds))
    assert all(n.kind in PLANNED and n.cycle == V and n.due_on <= today for n in found)
    if today <= V:
        used = rotation_days if regime is L else reminder
        expected_kind = NoticeKind.ROTATION_DUE if regime is L else NoticeKind.DUE_SOON
        assert all(n.kind is expected_kind for n in found)
        came = [d for d in used if day(-d) <= today]
        assert [n.step for n in found] == ([min(came)] if came else [])
        return
    series = [n for n in found if n.kind is NoticeKind.OVERDUE]
    assert len(series) == 1
    (o,) = series
    assert o.due_on == V + dt.timedelta(days=1 + o.step * repeat)
    assert today - dt.timedelta(days=repeat) < o.due_on <= today  # the latest step, not an older one
    escalated = [n for n in found if n.kind is NoticeKind.ESCALATION]
    assert bool(escalated) == (offset >= 1 + escalate)
    assert all(n.audience is Audience.REGULATOR and n.step == 0 for n in escalated)
    assert all(n.audience is Audience.ENTERPRISE for n in found if n.kind is not NoticeKind.ESCALATION)


# --- next_notice_on: the planner's schedule ---------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "regime", "pacing", "today", "expected"),
    [
        ("before any reminder: the first step's day", P, DEFAULT, day(-100), day(-30)),
        ("on a step's day: the next step's", P, DEFAULT, day(-30), day(-7)),
        ("after the last step: the first overdue day", P, DEFAULT, day(-7), day(1)),
        ("on the last valid day: the first overdue day", P, DEFAULT, day(0), day(1)),
        ("limited life: the rotation steps", L, DEFAULT, day(-100), day(-90)),
        ("first overdue day: the next repeat", P, DEFAULT, day(1), day(8)),
        ("between repeats: the next repeat", P, DEFAULT, day(10), day(15)),
        ("the escalation comes before the next repeat", P, DEFAULT, day(30), day(31)),
        ("after the escalation: repeats only", P, DEFAULT, day(31), day(36)),
        ("daily repeats", P, BUSY, day(5), day(6)),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_next_notice_on(rule: str, regime: Regime, pacing: Pacing, today: dt.date, expected: dt.date) -> None:
    assert next_notice_on(lifecycle=IN, regime=regime, valid_until=V, pacing=pacing, today=today) == expected, rule


@pytest.mark.parametrize("lifecycle", [lc for lc in Lifecycle if lc is not IN])
def test_next_notice_on_is_none_out_of_service(lifecycle: Lifecycle) -> None:
    """Nothing comes until the instrument changes (and the schedule's trigger brings it back)."""
    assert next_notice_on(lifecycle=lifecycle, regime=P, valid_until=V, pacing=DEFAULT, today=day(0)) is None
    assert next_notice_on(lifecycle=IN, regime=P, valid_until=None, pacing=DEFAULT, today=day(0)) is None


@settings(derandomize=True, max_examples=300, deadline=None)
@given(
    regime=st.sampled_from([P, L, C]),
    reminder=offsets,
    rotation_days=offsets,
    repeat=st.integers(1, 40),
    escalate=st.integers(1, 60),
    offset=st.integers(-130, 130),
)
def test_nothing_new_is_due_before_next_notice_on_and_something_is_on_it(
    regime: Regime, reminder: tuple[int, ...], rotation_days: tuple[int, ...], repeat: int, escalate: int, offset: int
) -> None:
    """The schedule skips no notice: on every day after ``today`` and before next_notice_on,
    due_notices gives exactly what it gave on ``today`` (so a run on any of them has nothing to
    write or cancel), and on next_notice_on it gives something else."""
    pacing = Pacing(
        reminder_days=reminder,
        rotation_reminder_days=rotation_days,
        overdue_repeat_days=repeat,
        escalate_after_days=escalate,
    )
    today = day(offset)

    def due(on: dt.date) -> list[DueNotice]:
        return due_notices(lifecycle=IN, regime=regime, valid_until=V, pacing=pacing, today=on)

    following = next_notice_on(lifecycle=IN, regime=regime, valid_until=V, pacing=pacing, today=today)
    assert following is not None
    assert following > today
    on_today = due(today)
    between = today + dt.timedelta(days=1)
    while between < following:
        assert due(between) == on_today, between
        between += dt.timedelta(days=1)
    assert due(following) != on_today
