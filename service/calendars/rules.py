"""An enterprise's due dates as iCalendar text (RFC 5545), written by hand.

What a feed holds: one all-day event per instrument in service that has a ``valid_until``, on that
date (the last valid day, R2), with one display alarm per reminder offset that applies to it
(R5: ``valid_until − offset``, so ``TRIGGER:-P<offset>D`` relative to the event's start). The
offsets are the enterprise's ``rotation_reminder_days`` for limited-life meters and its
``reminder_days`` for the rest, as the planner uses them (``jobs.plan``). Instruments that get no
reminders get no event either: sealed (validity is not paused, but nothing is sent), failed,
scrapped, replaced and pending verification; and scrap-on-failure instruments, which have no
``valid_until``.

Lines end in CRLF and are folded at 75 octets without splitting a UTF-8 character (§3.1); TEXT
values escape backslash, semicolon, comma and line breaks (§3.3.11). Event dates are floating
(``VALUE=DATE``): a due date is a local date of the enterprise (R7), whatever the reader's zone.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid

import msgspec

from service.catalog.rules import Regime
from service.instruments.rules import Status

__all__ = (
    "UID_DOMAIN",
    "DueEntry",
    "FeedHeader",
    "calendar_end",
    "calendar_start",
    "escape_text",
    "event",
    "fold",
    "reminder_offsets",
    "summary",
)

#: Right-hand side of every event's UID: the same instrument has the same UID whichever host
#: serves the feed, so that a calendar app updates its event rather than adding another.
UID_DOMAIN = "instruments.metreg"
_PRODID = "-//metreg//Due dates of measuring instruments//ZH"
_LIMIT = 75  # octets of one line, CRLF excluded (RFC 5545 §3.1)
_CRLF = "\r\n"
# TEXT holds no control character but HTAB (§3.3.11); line breaks are escaped before this applies.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
# How a calendar app should call an event, by how the instrument is kept legal.
_WHAT = {
    Regime.PERIODIC: "检定到期",
    Regime.INITIAL_ONLY_LIMITED_LIFE: "到期轮换",
    Regime.NOT_CONTROLLED: "校准到期",
}


class DueEntry(msgspec.Struct, frozen=True, kw_only=True):
    """What a feed shows of one instrument."""

    id: uuid.UUID
    name: str
    model: str
    serial_no: str
    management_no: str | None
    location: str | None
    department: str | None
    regime: Regime
    valid_until: dt.date
    version: int
    updated_at: dt.datetime


class FeedHeader(msgspec.Struct, frozen=True, kw_only=True):
    """The calendar as a whole: whose it is, in which zone its dates are, and when it was made."""

    enterprise_name: str
    timezone: str
    generated_at: dt.datetime
    """DTSTAMP of every event: the instant the feed was read (UTC)."""


def escape_text(value: str) -> str:
    r"""A TEXT value: ``\`` ``;`` ``,`` escaped, every line break as ``\n``, other control characters as spaces."""
    escaped = value.replace("\\", "\\\\").replace(";", "\\;").replace(",", "\\,")
    return _CONTROL.sub(" ", _LINE_BREAK.sub("\\\\n", escaped))


def fold(line: str) -> str:
    """``line`` with its CRLF, folded into lines of at most 75 octets.

    A continuation line starts with one space, which counts towards its 75. Breaks fall between
    characters, never inside a character's UTF-8 bytes.
    """
    parts: list[str] = []
    current: list[str] = []
    size = 0
    for char in line:
        width = len(char.encode())
        if size + width > _LIMIT:
            parts.append("".join(current))
            current, size = [" "], 1
        current.append(char)
        size += width
    parts.append("".join(current))
    return _CRLF.join(parts) + _CRLF


def _lines(*lines: str) -> str:
    return "".join(fold(line) for line in lines)


def _utc(instant: dt.datetime) -> str:
    return instant.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%SZ")


def _date(day: dt.date) -> str:
    return day.strftime("%Y%m%d")


def reminder_offsets(regime: Regime, reminder_days: list[int], rotation_reminder_days: list[int]) -> list[int]:
    """The days before ``valid_until`` on which the instrument is reminded of, largest first."""
    offsets = rotation_reminder_days if regime is Regime.INITIAL_ONLY_LIMITED_LIFE else reminder_days
    return sorted(set(offsets), reverse=True)


def calendar_start(header: FeedHeader) -> str:
    """The calendar's opening lines, up to its first event."""
    name = escape_text(f"{header.enterprise_name} · 计量器具到期")
    return _lines(
        "BEGIN:VCALENDAR",
        "VERSION:2.0",
        f"PRODID:{_PRODID}",
        "CALSCALE:GREGORIAN",
        f"X-WR-CALNAME:{name}",
        f"NAME:{name}",
        f"X-WR-TIMEZONE:{escape_text(header.timezone)}",
        # Due dates move when a result is recorded: ask subscribers to look twice a day (RFC 7986).
        "REFRESH-INTERVAL;VALUE=DURATION:PT12H",
        "X-PUBLISHED-TTL:PT12H",
    )


def calendar_end() -> str:
    return _lines("END:VCALENDAR")


def summary(entry: DueEntry) -> str:
    """``检定到期：一般压力表（PG-001）``: what falls due, and the instrument's management number."""
    number = f"（{entry.management_no}）" if entry.management_no else ""
    return f"{_WHAT.get(entry.regime, '到期')}：{entry.name}{number}"


def _description(entry: DueEntry, status: Status, link: str) -> str:
    facts = [
        ("有效期至 Valid until", entry.valid_until.isoformat()),
        ("型号 Model", entry.model),
        ("出厂编号 Serial no.", entry.serial_no),
        ("管理编号 Management no.", entry.management_no),
        ("位置 Location", entry.location),
        ("部门 Department", entry.department),
        ("状态 Status", status.value),
    ]
    return "\n".join([*(f"{label}: {value}" for label, value in facts if value), link])


def event(entry: DueEntry, *, header: FeedHeader, offsets: list[int], status: Status, link: str) -> str:
    """One instrument's VEVENT: an all-day event on its ``valid_until`` with an alarm per offset.

    ``status`` is the instrument's status on the enterprise's local today; ``link`` is where its
    record is read in the API.
    """
    title = escape_text(summary(entry))
    lines = [
        "BEGIN:VEVENT",
        f"UID:{entry.id}@{UID_DOMAIN}",
        f"DTSTAMP:{_utc(header.generated_at)}",
        f"DTSTART;VALUE=DATE:{_date(entry.valid_until)}",
        f"DTEND;VALUE=DATE:{_date(entry.valid_until + dt.timedelta(days=1))}",
        # Every change of the instrument raises its version: the event's revision follows it.
        f"SEQUENCE:{entry.version - 1}",
        f"LAST-MODIFIED:{_utc(entry.updated_at)}",
        f"SUMMARY:{title}",
        f"DESCRIPTION:{escape_text(_description(entry, status, link))}",
        f"URL:{link}",
        "TRANSP:TRANSPARENT",
    ]
    for days in offsets:
        lines += [
            "BEGIN:VALARM",
            "ACTION:DISPLAY",
            f"TRIGGER:-P{days}D",
            f"DESCRIPTION:{escape_text(f'{summary(entry)}：有效期 {days} 天后届满')}",
            "END:VALARM",
        ]
    lines.append("END:VEVENT")
    return _lines(*lines)
