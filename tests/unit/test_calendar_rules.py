"""iCalendar writing (service.calendars.rules): folding, escaping, events and alarms, read back by
``icalendar``; and the log line's path with a feed token kept out (service.logs.logged_path)."""

from __future__ import annotations

import datetime as dt
import uuid

import icalendar
from hypothesis import given
from hypothesis import strategies as st

from service.calendars.rules import (
    DueEntry,
    FeedHeader,
    calendar_end,
    calendar_start,
    escape_text,
    event,
    fold,
    reminder_offsets,
)
from service.catalog.rules import Regime
from service.instruments.rules import Status
from service.logs import logged_path

HEADER = FeedHeader(
    enterprise_name="上海某某公司; 计量科, A\\B",
    timezone="Asia/Shanghai",
    generated_at=dt.datetime(2026, 6, 15, 4, 0, tzinfo=dt.UTC),
)


def entry(**fields: object) -> DueEntry:
    base: dict[str, object] = {
        "id": uuid.UUID("00000000-0000-4000-8000-000000000001"),
        "name": "一般压力表",
        "model": "Y-100",
        "serial_no": "A123",
        "management_no": "PG-001",
        "location": "一号车间",
        "department": None,
        "regime": Regime.PERIODIC,
        "valid_until": dt.date(2026, 11, 30),
        "version": 3,
        "updated_at": dt.datetime(2026, 6, 1, 2, 0, tzinfo=dt.UTC),
    }
    return DueEntry(**(base | fields))  # type: ignore[arg-type]


def test_escape_text() -> None:
    assert escape_text("a\\b;c,d") == "a\\\\b\\;c\\,d"
    assert escape_text("一\r\n二\n三\r四") == "一\\n二\\n三\\n四"
    assert escape_text('tab\tok: "quoted"') == 'tab\tok: "quoted"'
    assert escape_text("bell\x07 and del\x7f") == "bell  and del "


def test_fold_keeps_short_lines_whole() -> None:
    assert fold("SUMMARY:short") == "SUMMARY:short\r\n"
    exactly = "X" * 75
    assert fold(exactly) == exactly + "\r\n"


def test_fold_at_75_octets_without_splitting_a_character() -> None:
    line = "SUMMARY:" + "压力表" * 30  # 8 + 270 octets
    folded = fold(line)
    assert folded.endswith("\r\n")
    pieces = folded.removesuffix("\r\n").split("\r\n")
    encoded = [p.encode() for p in pieces]
    assert all(len(p) <= 75 for p in encoded)
    assert all(p.startswith(b" ") for p in encoded[1:])
    # Each piece is whole UTF-8 (a three-octet character never straddles a break) and full: the
    # next character would not have fitted.
    assert len(encoded[0]) == 74  # 8 + 22 × 3; a 23rd character would make 77
    assert all(len(p) == 73 for p in encoded[1:-1])  # the space + 24 × 3
    assert "".join(p[1:] if i else p for i, p in enumerate(pieces)) == line


@given(st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=400))
def test_fold_round_trips_any_text(text: str) -> None:
    line = "DESCRIPTION:" + escape_text(text)
    folded = fold(line)
    pieces = folded.removesuffix("\r\n").split("\r\n")
    assert all(len(p.encode()) <= 75 for p in pieces)
    assert "".join(p[1:] if i else p for i, p in enumerate(pieces)) == line


def test_reminder_offsets_by_regime() -> None:
    assert reminder_offsets(Regime.PERIODIC, [7, 30], [90, 30]) == [30, 7]
    assert reminder_offsets(Regime.NOT_CONTROLLED, [30, 7], [90, 30]) == [30, 7]
    assert reminder_offsets(Regime.INITIAL_ONLY_LIMITED_LIFE, [30, 7], [90, 30, 30]) == [90, 30]


def _calendar(*events: str) -> icalendar.Calendar:
    text = calendar_start(HEADER) + "".join(events) + calendar_end()
    raw = text.encode()
    assert b"\n" not in raw.replace(b"\r\n", b"")
    assert all(len(line) <= 75 for line in raw.split(b"\r\n"))
    return icalendar.Calendar.from_ical(raw)


def test_an_event_reads_back_with_a_standard_parser() -> None:
    item = entry(location="东区;二楼,\n靠窗")
    text = event(item, header=HEADER, offsets=[30, 7], status=Status.VALID, link="https://m.example/v1/instruments/x")
    calendar = _calendar(text)
    # The parser keeps the calendar's name as written (it types neither property): TEXT-escaped.
    for name in ("NAME", "X-WR-CALNAME"):
        assert str(calendar[name]) == "上海某某公司\\; 计量科\\, A\\\\B · 计量器具到期"
    assert str(calendar["X-WR-TIMEZONE"]) == "Asia/Shanghai"
    (found,) = calendar.walk("VEVENT")
    assert str(found["UID"]) == "00000000-0000-4000-8000-000000000001@instruments.metreg"
    assert found["DTSTART"].dt == dt.date(2026, 11, 30)
    assert found["DTEND"].dt == dt.date(2026, 12, 1)
    assert found["DTSTAMP"].dt == HEADER.generated_at
    assert found["LAST-MODIFIED"].dt == item.updated_at
    assert int(found["SEQUENCE"]) == 2
    assert str(found["SUMMARY"]) == "检定到期：一般压力表（PG-001）"
    assert str(found["DESCRIPTION"]).splitlines() == [
        "有效期至 Valid until: 2026-11-30",
        "型号 Model: Y-100",
        "出厂编号 Serial no.: A123",
        "管理编号 Management no.: PG-001",
        "位置 Location: 东区;二楼,",
        "靠窗",
        "状态 Status: valid",
        "https://m.example/v1/instruments/x",
    ]
    alarms = found.walk("VALARM")
    assert [a["TRIGGER"].dt for a in alarms] == [dt.timedelta(days=-30), dt.timedelta(days=-7)]
    assert all(str(a["ACTION"]) == "DISPLAY" for a in alarms)
    assert str(alarms[0]["DESCRIPTION"]) == "检定到期：一般压力表（PG-001）：有效期 30 天后届满"


def test_what_falls_due_is_named_by_regime() -> None:
    kinds = {
        Regime.PERIODIC: "检定到期：水表",
        Regime.INITIAL_ONLY_LIMITED_LIFE: "到期轮换：水表",
        Regime.NOT_CONTROLLED: "校准到期：水表",
    }
    for regime, expected in kinds.items():
        text = event(
            entry(regime=regime, name="水表", management_no=None),
            header=HEADER,
            offsets=[],
            status=Status.VALID,
            link="x",
        )
        (found,) = _calendar(text).walk("VEVENT")
        assert str(found["SUMMARY"]) == expected
        assert found.walk("VALARM") == []


def test_logged_paths_keep_feed_tokens_out() -> None:
    token = "hYlG3vag6G0i4187KdJk6CTqi7TwgsTQwFsadC2M6yM"
    assert logged_path(f"/v1/calendar/{token}.ics") == "/v1/calendar/…"
    assert logged_path(f"//v1//calendar//{token}.ics/x") == "//v1//calendar/…"
    assert logged_path(f"/calendar/{token}.ics") == "/calendar/….ics"
    # Ids stay readable.
    path = "/v1/instruments/00000000-0000-4000-8000-000000000001/certificates"
    assert logged_path(path) == path
