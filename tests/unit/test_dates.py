"""The date engine, rule by rule (domain.md §2.3 R1–R7 and §5's worked examples)."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.dates import MAX_DATE, MIN_DATE, PeriodRule, add_months, local_today, next_due, reminder_date, valid_until

D = dt.date
INCL, CIVIL = PeriodRule.INCLUSIVE_MINUS_ONE, PeriodRule.CIVIL_CODE


@pytest.mark.parametrize(
    ("rule", "start", "months", "expected"),
    [
        ("R1 plain month addition", D(2026, 1, 15), 6, D(2026, 7, 15)),
        ("R1 clamps Aug 31 into a short February", D(2025, 8, 31), 6, D(2026, 2, 28)),
        ("R1 clamps into a leap February", D(2023, 8, 31), 6, D(2024, 2, 29)),
        ("R1 leap day + 12 lands on Feb 28", D(2024, 2, 29), 12, D(2025, 2, 28)),
        ("R1 leap day + 48 lands on the next leap day", D(2024, 2, 29), 48, D(2028, 2, 29)),
        ("R1 Jan 31 + 1 clamps to Feb 28", D(2026, 1, 31), 1, D(2026, 2, 28)),
        ("R1 Mar 31 + 1 clamps to Apr 30", D(2026, 3, 31), 1, D(2026, 4, 30)),
        ("R1 crosses a year boundary", D(2026, 11, 30), 3, D(2027, 2, 28)),
        ("R1 Dec 31 + 12 stays on Dec 31", D(2026, 12, 31), 12, D(2027, 12, 31)),
        ("R1 zero months is the same day", D(2026, 5, 19), 0, D(2026, 5, 19)),
        ("R1 long use-life (electricity meter, 96 months)", D(2018, 6, 3), 96, D(2026, 6, 3)),
        ("R1 negative months go back and clamp", D(2026, 3, 31), -1, D(2026, 2, 28)),
    ],
)
def test_add_months(rule: str, start: dt.date, months: int, expected: dt.date) -> None:
    assert add_months(start, months) == expected, rule


@pytest.mark.parametrize(
    ("rule", "verified", "months", "period_rule", "expected"),
    [
        ("R2 pressure gauge of domain.md §5", D(2026, 1, 15), 6, INCL, D(2026, 7, 14)),
        ("R4 the same gauge under the Civil Code", D(2026, 1, 15), 6, CIVIL, D(2026, 7, 15)),
        ("R1+R2 month end: Aug 31 + 6 − 1 → Feb 27", D(2025, 8, 31), 6, INCL, D(2026, 2, 27)),
        ("R1+R4 month end under the Civil Code → Feb 28", D(2025, 8, 31), 6, CIVIL, D(2026, 2, 28)),
        ("R1+R2 into a leap February", D(2023, 8, 31), 6, INCL, D(2024, 2, 28)),
        ("R1+R4 into a leap February", D(2023, 8, 31), 6, CIVIL, D(2024, 2, 29)),
        ("R2 price scale re-verified 2026-05-12 (§5)", D(2026, 5, 12), 12, INCL, D(2027, 5, 11)),
        ("R2 year boundary: Jan 1 + 12 − 1 = Dec 31", D(2026, 1, 1), 12, INCL, D(2026, 12, 31)),
        ("R2 year boundary: Dec 31 + 6 − 1 = Jun 29", D(2025, 12, 31), 6, INCL, D(2026, 6, 29)),
        ("R2 verified on a leap day, 12 months", D(2024, 2, 29), 12, INCL, D(2025, 2, 27)),
        ("R2 limited life: water meter DN≤25, 72 months", D(2020, 3, 1), 72, INCL, D(2026, 2, 28)),
    ],
)
def test_valid_until(rule: str, verified: dt.date, months: int, period_rule: PeriodRule, expected: dt.date) -> None:
    assert valid_until(verified, months, period_rule) == expected, rule


@pytest.mark.parametrize(
    ("rule", "last_valid", "expected"),
    [
        ("R3 next due is the day after (§5 gauge)", D(2026, 7, 14), D(2026, 7, 15)),
        ("R3 across a month end", D(2026, 2, 28), D(2026, 3, 1)),
        ("R3 across a leap day", D(2028, 2, 28), D(2028, 2, 29)),
        ("R3 across a year end", D(2026, 12, 31), D(2027, 1, 1)),
    ],
)
def test_next_due(rule: str, last_valid: dt.date, expected: dt.date) -> None:
    assert next_due(last_valid) == expected, rule


def test_r3_next_due_equals_add_months_under_r2() -> None:
    """R3: under the −1 rule, next_due = add_months(D, N) (the "next verification date")."""
    verified = D(2025, 8, 31)
    assert next_due(valid_until(verified, 6, INCL)) == add_months(verified, 6)


@pytest.mark.parametrize(
    ("rule", "last_valid", "offset", "expected"),
    [
        ("R5 30-day reminder of the §5 gauge", D(2026, 7, 14), 30, D(2026, 6, 14)),
        ("R5 7-day reminder", D(2026, 7, 14), 7, D(2026, 7, 7)),
        ("R5 90-day rotation reminder across a year", D(2026, 2, 28), 90, D(2025, 11, 30)),
    ],
)
def test_reminder_date(rule: str, last_valid: dt.date, offset: int, expected: dt.date) -> None:
    assert reminder_date(last_valid, offset) == expected, rule


@pytest.mark.parametrize(
    ("rule", "now", "zone", "expected"),
    [
        (
            "R7 17:30Z on Jul 14 is Jul 15 in Shanghai",
            dt.datetime(2026, 7, 14, 17, 30, tzinfo=dt.UTC),
            "Asia/Shanghai",
            D(2026, 7, 15),
        ),
        (
            "R7 15:59Z is still the same day in Shanghai",
            dt.datetime(2026, 7, 14, 15, 59, tzinfo=dt.UTC),
            "Asia/Shanghai",
            D(2026, 7, 14),
        ),
        (
            "R7 16:00Z is the next day in Shanghai",
            dt.datetime(2026, 7, 14, 16, 0, tzinfo=dt.UTC),
            "Asia/Shanghai",
            D(2026, 7, 15),
        ),
        (
            "R7 New Year arrives in Shanghai first",
            dt.datetime(2026, 12, 31, 16, 0, tzinfo=dt.UTC),
            "Asia/Shanghai",
            D(2027, 1, 1),
        ),
        (
            "R7 a tenant in Berlin is still on Jul 14",
            dt.datetime(2026, 7, 14, 17, 30, tzinfo=dt.UTC),
            "Europe/Berlin",
            D(2026, 7, 14),
        ),
        (
            "R7 an offset instant is converted, not truncated",
            dt.datetime(2026, 7, 14, 1, 0, tzinfo=dt.timezone(dt.timedelta(hours=-5))),
            "Asia/Shanghai",
            D(2026, 7, 14),
        ),
    ],
)
def test_local_today(rule: str, now: dt.datetime, zone: str, expected: dt.date) -> None:
    assert local_today(now, zone) == expected, rule


def test_local_today_refuses_naive_instants() -> None:
    with pytest.raises(ValueError, match="aware"):
        local_today(dt.datetime(2026, 7, 14, 17, 30), "Asia/Shanghai")


def test_r4_and_r2_differ_by_exactly_one_day() -> None:
    """R4: the Civil Code date is always one day after the −1 date."""
    for day in range(1, 32):
        verified = D(2026, 1, day)
        assert valid_until(verified, 6, CIVIL) - valid_until(verified, 6, INCL) == dt.timedelta(days=1)


def test_valid_until_refuses_negative_cycles() -> None:
    with pytest.raises(ValueError, match="negative"):
        valid_until(D(2026, 1, 1), -1, INCL)


def test_add_months_refuses_to_leave_the_calendar() -> None:
    with pytest.raises(OverflowError):
        add_months(D(9999, 12, 1), 1)


dates_in_range = st.dates(min_value=MIN_DATE, max_value=MAX_DATE)
cycles = st.integers(min_value=0, max_value=1200)


@given(dates_in_range, cycles)
def test_add_months_never_overflows_into_the_next_month(start: dt.date, months: int) -> None:
    result = add_months(start, months)
    index = (result.year * 12 + result.month) - (start.year * 12 + start.month)
    assert index == months
    assert result.day == start.day or (result.day < start.day and (result + dt.timedelta(days=1)).day == 1)


@given(dates_in_range, cycles)
def test_add_months_clamps_to_month_end_only_when_needed(start: dt.date, months: int) -> None:
    result = add_months(start, months)
    assert result.day <= start.day
    if result.day < start.day:
        assert (result + dt.timedelta(days=1)).month != result.month  # the last day of its month


@given(dates_in_range, dates_in_range, cycles)
def test_add_months_is_monotone_in_the_start(a: dt.date, b: dt.date, months: int) -> None:
    if a <= b:
        assert add_months(a, months) <= add_months(b, months)


@given(dates_in_range, cycles, cycles)
def test_add_months_is_monotone_in_the_months(start: dt.date, m: int, n: int) -> None:
    if m <= n:
        assert add_months(start, m) <= add_months(start, n)


@given(dates_in_range, st.integers(min_value=1, max_value=1200), st.sampled_from(list(PeriodRule)))
def test_valid_until_is_never_before_verification(verified: dt.date, months: int, rule: PeriodRule) -> None:
    assert valid_until(verified, months, rule) >= verified
