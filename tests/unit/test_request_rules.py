"""Verification requests: the state table cell by cell, the working-day due date, overdue (issue 3 point 1)."""

from __future__ import annotations

import datetime as dt

import pytest

from service.dates import add_working_days
from service.errors import ConflictError, TransitionError
from service.instruments.rules import Lifecycle
from service.requests.rules import (
    REQUESTABLE,
    TRANSITIONS,
    RequestAction,
    RequestStatus,
    due_by,
    is_overdue,
    transition,
)

D = dt.date
S = RequestStatus
ACCEPT, REJECT, CANCEL = RequestAction.ACCEPT, RequestAction.REJECT, RequestAction.CANCEL

#: (action, from) -> target, or None when refused. Every one of the 15 cells.
TABLE: dict[tuple[RequestAction, RequestStatus], RequestStatus | None] = {
    (ACCEPT, S.SUBMITTED): S.ACCEPTED,
    (ACCEPT, S.ACCEPTED): None,
    (ACCEPT, S.REJECTED): None,
    (ACCEPT, S.CANCELLED): None,
    (ACCEPT, S.COMPLETED): None,
    (REJECT, S.SUBMITTED): S.REJECTED,
    (REJECT, S.ACCEPTED): None,
    (REJECT, S.REJECTED): None,
    (REJECT, S.CANCELLED): None,
    (REJECT, S.COMPLETED): None,
    (CANCEL, S.SUBMITTED): S.CANCELLED,
    (CANCEL, S.ACCEPTED): S.CANCELLED,
    (CANCEL, S.REJECTED): None,
    (CANCEL, S.CANCELLED): None,
    (CANCEL, S.COMPLETED): None,
}

#: What a 409 lists from each state, in table order (accept, reject, cancel).
ALLOWED: dict[RequestStatus, list[str]] = {
    S.SUBMITTED: ["accept", "reject", "cancel"],
    S.ACCEPTED: ["cancel"],
    S.REJECTED: [],
    S.CANCELLED: [],
    S.COMPLETED: [],
}


def test_the_table_covers_every_action_and_status() -> None:
    assert set(TABLE) == {(a, s) for a in RequestAction for s in RequestStatus}
    assert {a: t for a, (_, t) in TRANSITIONS.items()} == {ACCEPT: S.ACCEPTED, REJECT: S.REJECTED, CANCEL: S.CANCELLED}


@pytest.mark.parametrize(
    ("action", "status", "expected"),
    [(a, s, t) for (a, s), t in TABLE.items()],
    ids=[f"{a}-from-{s}" for (a, s) in TABLE],
)
def test_request_transition_cell(action: RequestAction, status: RequestStatus, expected: RequestStatus | None) -> None:
    if expected is not None:
        assert transition(action, status, results=0) is expected
        return
    with pytest.raises(TransitionError) as raised:
        transition(action, status, results=0)
    assert list(raised.value.allowed) == ALLOWED[status]
    assert (raised.value.status, raised.value.slug) == (409, "illegal-transition")
    assert str(status) in raised.value.detail


@pytest.mark.parametrize("status", [S.SUBMITTED, S.ACCEPTED])
def test_cancel_with_results_is_a_conflict_not_a_transition_error(status: RequestStatus) -> None:
    """Results are evidence and stay: a request with one can no longer be cancelled."""
    with pytest.raises(ConflictError) as raised:
        transition(CANCEL, status, results=1)
    assert type(raised.value) is ConflictError
    assert raised.value.status == 409
    assert "1 result(s)" in raised.value.detail


def test_cancel_from_a_final_state_with_results_is_still_a_transition_error() -> None:
    """The state check comes first: a completed request is refused by the table, listing nothing."""
    with pytest.raises(TransitionError) as raised:
        transition(CANCEL, S.COMPLETED, results=3)
    assert raised.value.allowed == ()


@pytest.mark.parametrize("action", [ACCEPT, REJECT])
def test_results_only_block_cancelling(action: RequestAction) -> None:
    assert transition(action, S.SUBMITTED, results=2) is TABLE[(action, S.SUBMITTED)]


def test_requestable_lifecycles() -> None:
    """In use or waiting for verification; a sealed one is unsealed first; scrapped/replaced are gone."""
    assert {Lifecycle.IN_SERVICE, Lifecycle.FAILED, Lifecycle.PENDING_VERIFICATION} == REQUESTABLE


# 2026-06-12 is a Friday; 2026-06-15 a Monday.
FRI, SAT, SUN, MON, WED = D(2026, 6, 12), D(2026, 6, 13), D(2026, 6, 14), D(2026, 6, 15), D(2026, 6, 17)


def test_the_calendar_assumption() -> None:
    assert [d.strftime("%a") for d in (FRI, SAT, SUN, MON, WED)] == ["Fri", "Sat", "Sun", "Mon", "Wed"]


@pytest.mark.parametrize(
    ("rule", "start", "days", "expected"),
    [
        ("Friday + 1 working day is the Monday", FRI, 1, MON),
        ("Saturday + 1 is the Monday", SAT, 1, MON),
        ("Sunday + 1 is the Monday", SUN, 1, MON),
        ("Saturday + 5 is the Friday after", SAT, 5, D(2026, 6, 19)),
        ("Sunday + 2 is the Tuesday", SUN, 2, D(2026, 6, 16)),
        ("0 days is the start itself (a weekday)", WED, 0, WED),
        ("0 days is the start itself (even a Saturday)", SAT, 0, SAT),
        ("Monday + 1 is the Tuesday", MON, 1, D(2026, 6, 16)),
        ("Monday + 4 stays in the week (Friday)", MON, 4, D(2026, 6, 19)),
        ("Monday + 5 spans one weekend", MON, 5, D(2026, 6, 22)),
        ("Wednesday + 5 spans one weekend", WED, 5, D(2026, 6, 24)),
        ("Friday + 5 spans one weekend", FRI, 5, D(2026, 6, 19)),
        ("Monday + 10 spans two weekends (default service level)", MON, 10, D(2026, 6, 29)),
        ("Wednesday + 10 spans two weekends", WED, 10, D(2026, 7, 1)),
        ("Friday + 10 spans two weekends", FRI, 10, D(2026, 6, 26)),
        ("across a month and a year end", D(2026, 12, 30), 3, D(2027, 1, 4)),
    ],
)
def test_add_working_days(rule: str, start: dt.date, days: int, expected: dt.date) -> None:
    assert add_working_days(start, days) == expected, rule
    if days:
        assert expected.weekday() < 5, f"{rule}: a due date is a working day"


@pytest.mark.parametrize("days", [-1, -10])
def test_add_working_days_refuses_negative(days: int) -> None:
    with pytest.raises(ValueError, match="must not be negative"):
        add_working_days(MON, days)


def test_due_by_is_accepted_date_plus_the_service_level() -> None:
    assert due_by(FRI, 10) == D(2026, 6, 26)
    assert due_by(FRI, 1) == MON
    with pytest.raises(ValueError, match="must not be negative"):
        due_by(FRI, -1)


DUE = D(2026, 6, 26)


@pytest.mark.parametrize(
    ("rule", "status", "due", "today", "expected"),
    [
        ("accepted, before the due date", S.ACCEPTED, DUE, D(2026, 6, 25), False),
        ("accepted, on the due date: still in time", S.ACCEPTED, DUE, DUE, False),
        ("accepted, the day after the due date: overdue", S.ACCEPTED, DUE, D(2026, 6, 27), True),
        ("accepted, long after", S.ACCEPTED, DUE, D(2027, 1, 1), True),
        ("accepted without a due date", S.ACCEPTED, None, D(2027, 1, 1), False),
        ("submitted: not yet running", S.SUBMITTED, DUE, D(2026, 7, 1), False),
        ("completed: every result is in", S.COMPLETED, DUE, D(2026, 7, 1), False),
        ("cancelled", S.CANCELLED, DUE, D(2026, 7, 1), False),
        ("rejected", S.REJECTED, DUE, D(2026, 7, 1), False),
    ],
)
def test_is_overdue(rule: str, status: RequestStatus, due: dt.date | None, today: dt.date, expected: bool) -> None:
    assert is_overdue(status, due, today) is expected, rule
