"""The date engine: how a verification date and a cycle become legal dates.

Pure functions, no I/O, no clock. Rule numbers (R1–R7) are those of ``domain.md`` §2.3; each
function names the rule it implements and where the rule comes from.

Calendar facts are ``datetime.date`` (no time zone: a date printed on a certificate); instants are
aware ``datetime`` in UTC. The only bridge between the two is :func:`local_today` (R7).
"""

from __future__ import annotations

import calendar
import datetime as dt
import enum
from zoneinfo import ZoneInfo

__all__ = (
    "MAX_DATE",
    "MIN_DATE",
    "PeriodRule",
    "add_months",
    "add_working_days",
    "local_today",
    "next_due",
    "reminder_date",
    "valid_until",
)

#: Dates outside this range are refused at the edge, so that ``valid_until + 1 day`` and
#: ``add_months`` can never overflow ``datetime.date``.
MIN_DATE = dt.date(1900, 1, 1)
MAX_DATE = dt.date(2999, 12, 31)


class PeriodRule(enum.StrEnum):
    """How an enterprise's certificates turn a cycle into the last valid day.

    - ``inclusive_minus_one`` (default, R2): 有效期至 = verification date + cycle − 1 day.
    - ``civil_code`` (R4): the period ends on the corresponding day (民法典 §§201–202).

    Both stay within the legal cycle (they differ by one day). A rule that ends periods on
    31 December (German MessEV) would lengthen a Chinese compulsory cycle by up to eleven months, so
    it waits until jurisdictions, not enterprises, carry their period rule.
    """

    INCLUSIVE_MINUS_ONE = "inclusive_minus_one"
    CIVIL_CODE = "civil_code"


_MONTH_DAYS = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def add_months(start: dt.date, months: int) -> dt.date:
    """Add calendar months, clamping to the last day of the target month.

    Rule R1 (domain.md §2.3; ``dateutil.relativedelta`` semantics): 2025-08-31 + 6 → 2026-02-28,
    2024-02-29 + 12 → 2025-02-28. Never overflows into the next month (the classic
    ``setMonth`` bug gives 2026-03-03). ``months`` may be negative.

    Raises:
        OverflowError: the result is outside the years 1–9999.
    """
    index = start.year * 12 + (start.month - 1) + months
    year, month0 = divmod(index, 12)
    if not 1 <= year <= 9999:
        raise OverflowError(f"{start.isoformat()} + {months} months is outside the calendar")
    day = start.day
    if day > 28:  # only then can the target month be too short (monthrange also computes a weekday)
        day = min(day, 29 if month0 == 1 and calendar.isleap(year) else _MONTH_DAYS[month0])
    return dt.date(year, month0 + 1, day)


def valid_until(verified_on: dt.date, cycle_months: int, rule: PeriodRule) -> dt.date:
    """The last day on which an instrument verified on ``verified_on`` may legally be used.

    - R2 ``inclusive_minus_one``: add_months(D, N) − 1 day. What certificates print as 有效期至:
      "检定日期+6个月-1天" in a public certificate-archiving app [S-OCR]; "有效期是要少一天，下次检定日期
      应保持相同" [S-FORUM]. No national text fixes the −1 (domain.md marks it [U]), hence the setting.
    - R4 ``civil_code``: add_months(D, N). 民法典 §201 excludes the start day and §202 ends a period of
      months on the corresponding day, or the month end where there is none [S-CIVIL]. The §203
      holiday roll-over is not applied: no source applies it to certificates.

    R6: the period always runs from this verification's own date; periods never stack.
    """
    if cycle_months < 0:
        raise ValueError("cycle_months must not be negative")
    end = add_months(verified_on, cycle_months)
    if rule is PeriodRule.INCLUSIVE_MINUS_ONE:
        return end - dt.timedelta(days=1)
    return end


def next_due(last_valid_day: dt.date) -> dt.date:
    """The day the next verification falls due: the day after the last valid day.

    Rule R3 (domain.md §2.3): 下次检定日期 = 有效期至 + 1 day; the instrument is overdue from this
    day on (``today > valid_until``). Under R2 this equals add_months(D, N).
    """
    return last_valid_day + dt.timedelta(days=1)


def reminder_date(last_valid_day: dt.date, offset_days: int) -> dt.date:
    """The local date on which a reminder ``offset_days`` before expiry is due.

    Rule R5 (domain.md §2.3): reminder_date = valid_until − offset, in calendar days (business-day
    adjustment is off by default). An instrument is ``due_soon`` from the largest offset's reminder
    date through ``valid_until``.
    """
    return last_valid_day - dt.timedelta(days=offset_days)


def add_working_days(start: dt.date, days: int) -> dt.date:
    """The date ``days`` working days after ``start``, counting Monday to Friday only.

    A lab completes an accepted request within a time limit set by SAMR or the province (1987
    管理办法 Art. 8 [S-1987]); no national day count exists, so the count is the lab's
    ``sla_working_days`` (domain.md §1.4). Weekends are skipped; the Chinese calendar's public
    holidays (which would make the due date later) and make-up working Saturdays (earlier) are not
    modelled. ``start`` itself does not count: accepted on a Friday with one working day gives the
    Monday.
    """
    if days < 0:
        raise ValueError("days must not be negative")
    day, left = start, days
    while left:
        day += dt.timedelta(days=1)
        if day.weekday() < 5:
            left -= 1
    return day


def local_today(now: dt.datetime, timezone: str) -> dt.date:
    """The enterprise's calendar date at the instant ``now``.

    Rule R7 (domain.md §2.3): "today" is the local date of the enterprise (default Asia/Shanghai),
    so 2026-07-14T17:30Z is already 2026-07-15 in Shanghai.

    Raises:
        ValueError: ``now`` is naive; an instant without a zone is ambiguous.
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be an aware datetime")
    return now.astimezone(ZoneInfo(timezone)).date()
