"""Reading ledger cells: dates, cycles, uses and states as spreadsheets write them.

Each parser takes a cell as the reader gives it (text from CSV; text, number, date or datetime
from XLSX) and returns the value or raises :class:`CellError` with a message for the report.
Full-width digits and punctuation (what a Chinese input method types) are folded with NFKC first.
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from collections.abc import Callable
from functools import lru_cache
from typing import Final, TypeVar

from service import dates
from service.catalog.rules import LegalUse
from service.instruments.rules import Lifecycle
from service.ledger.columns import LEGAL_USE_ZH, LIFECYCLE_ZH

__all__ = (
    "EXCEL_EPOCH",
    "CellError",
    "Parser",
    "cell_text",
    "parse_cycle_months",
    "parse_date",
    "parse_legal_use",
    "parse_lifecycle",
)

Parser = Callable[[object], object]
E = TypeVar("E", LegalUse, Lifecycle)


class CellError(ValueError):
    """A cell that cannot be read as its column's type; the message goes into the report."""


def cell_text(value: object) -> str:
    """The cell as trimmed text ('' for empty). Whole floats lose their '.0' (Excel stores 12 as 12.0)."""
    if type(value) is str:  # nearly every cell: a million in a large ledger
        return value.strip()
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, dt.datetime):
        return value.date().isoformat() if value.time() == dt.time() else value.isoformat(sep=" ")
    return str(value).strip()


def _fold(text: str) -> str:
    return unicodedata.normalize("NFKC", text).strip()


#: Day 0 of Excel's 1900 date system, as counted after its fictitious 1900-02-29 (serial 60).
EXCEL_EPOCH: Final = dt.date(1899, 12, 30)
_FIRST_SERIAL: Final = 61  # 1900-03-01: before it, serials count the day that never was
_LAST_SERIAL: Final = (dates.MAX_DATE - EXCEL_EPOCH).days

_YMD = re.compile(r"(\d{4})\s*[-/.年]\s*(\d{1,2})\s*[-/.月]\s*(\d{1,2})\s*日?(?:\s+0{1,2}:00(?::00(?:\.0+)?)?)?")
_SERIAL = re.compile(r"\d{2,7}(?:\.0+)?")


def parse_date(value: object) -> dt.date:
    """A calendar date from ``2026-01-05``, ``2026/1/5``, ``2026.1.5``, ``2026年1月5日`` or an Excel serial.

    A date cell of an XLSX arrives as a date already; a number is an Excel serial (days in the 1900
    date system, 61 = 1900-03-01), which is also how a date reaches CSV from a cell that lost its
    format. A midnight time part ("2026-01-05 00:00:00") is what Excel appends to dates and is
    dropped; any other time is refused, because a ledger date is a day.

    Raises:
        CellError: not one of those forms, not a real day, or outside 1900–2999.
    """
    if isinstance(value, dt.datetime):
        if value.time() != dt.time():
            raise CellError("is a date and time: give the day only")
        return _in_range(value.date())
    if isinstance(value, dt.date):
        return _in_range(value)
    if isinstance(value, bool):
        raise CellError("is not a date")
    if isinstance(value, int | float):
        return _serial(float(value))
    return _parse_date_text(cell_text(value))


@lru_cache(maxsize=8192)
def _parse_date_text(text: str) -> dt.date:
    # Ledgers repeat the same few hundred dates: the cache makes a 100,000-row file cheap.
    folded = _fold(text)
    if match := _YMD.fullmatch(folded):
        year, month, day = (int(g) for g in match.groups())
        try:
            day_found = dt.date(year, month, day)
        except ValueError:
            raise CellError(f"{year}-{month:02d}-{day:02d} is not a day of the calendar") from None
        return _in_range(day_found)
    if _SERIAL.fullmatch(folded):
        return _serial(float(folded))
    raise CellError("is not a date: write 2026-01-05, 2026/1/5 or 2026年1月5日")


def _serial(number: float) -> dt.date:
    if not number.is_integer() or not _FIRST_SERIAL <= number <= _LAST_SERIAL:
        raise CellError(f"is not a date: as an Excel date number it must be a whole number from {_FIRST_SERIAL}")
    return EXCEL_EPOCH + dt.timedelta(days=int(number))


def _in_range(day: dt.date) -> dt.date:
    if not dates.MIN_DATE <= day <= dates.MAX_DATE:
        raise CellError(f"{day} is outside the supported years 1900–2999")
    return day


_CYCLE = re.compile(r"(\d+(?:\.0+)?)\s*(个月|月|months?|年|years?)?", re.IGNORECASE)
_CYCLE_WORDS: Final = {"半年": 6, "一年": 12, "两年": 24, "二年": 24, "三年": 36, "半年一次": 6, "一年一次": 12}


@lru_cache(maxsize=1024)
def _parse_cycle_text(text: str) -> int:
    folded = _fold(text).casefold()
    if folded in _CYCLE_WORDS:
        return _CYCLE_WORDS[folded]
    match = _CYCLE.fullmatch(folded)
    if match is None:
        raise CellError("is not a cycle: write a number of months, such as 12, 12个月 or 1年")
    months = int(float(match.group(1)))
    if match.group(2) and match.group(2)[0] in "年y":
        months *= 12
    if not 1 <= months <= 1200:
        raise CellError("must be from 1 to 1200 months")
    return months


def parse_cycle_months(value: object) -> int:
    """A cycle in months from ``12``, ``12个月``, ``12月``, ``1年``, ``半年`` or ``12 months``.

    Raises:
        CellError: not a whole number of months from 1 to 1200.
    """
    if isinstance(value, bool):
        raise CellError("is not a cycle")
    if isinstance(value, float) and not value.is_integer():
        raise CellError("must be a whole number of months")
    return _parse_cycle_text(cell_text(value))


def _labels(labels: dict[E, str], extra: dict[str, E]) -> dict[str, E]:
    index = {_fold(str(member)).casefold(): member for member in labels}
    index.update({_fold(label).casefold(): member for member, label in labels.items()})
    index.update({_fold(label).casefold(): member for label, member in extra.items()})
    return index


_LEGAL_USES: Final = _labels(
    LEGAL_USE_ZH,
    {
        "贸易": LegalUse.TRADE_SETTLEMENT,
        "贸易结算用": LegalUse.TRADE_SETTLEMENT,
        "安全": LegalUse.SAFETY_PROTECTION,
        "安全防护用": LegalUse.SAFETY_PROTECTION,
        "医疗": LegalUse.MEDICAL,
        "医疗卫生用": LegalUse.MEDICAL,
        "环境": LegalUse.ENVIRONMENTAL_MONITORING,
        "环境监测用": LegalUse.ENVIRONMENTAL_MONITORING,
        "否": LegalUse.NONE,
        "无": LegalUse.NONE,
        "非强制检定": LegalUse.NONE,
        "非强检用途": LegalUse.NONE,
        "-": LegalUse.NONE,
        "/": LegalUse.NONE,
        "no": LegalUse.NONE,
    },
)


def parse_legal_use(value: object) -> LegalUse:
    """The use that may make an instrument compulsory: 贸易结算, 安全防护, 医疗卫生, 环境监测 or none.

    A bare 是 (yes) is refused: the use decides which catalogue uses apply, so the ledger must say
    which one. An empty cell is no compulsory use.

    Raises:
        CellError: naming the accepted values.
    """
    text = _fold(cell_text(value)).casefold()
    if not text:
        return LegalUse.NONE
    if (use := _LEGAL_USES.get(text)) is not None:
        return use
    if text in ("是", "yes", "强检"):
        raise CellError("says compulsory but not for which use: write 贸易结算, 安全防护, 医疗卫生 or 环境监测")
    raise CellError("is not a legal use: write 贸易结算, 安全防护, 医疗卫生, 环境监测 or 非强检")


_LIFECYCLES: Final = _labels(
    LIFECYCLE_ZH,
    {
        "合格": Lifecycle.IN_SERVICE,
        "准用": Lifecycle.IN_SERVICE,
        "正常": Lifecycle.IN_SERVICE,
        "使用": Lifecycle.IN_SERVICE,
        "使用中": Lifecycle.IN_SERVICE,
        "停用": Lifecycle.SEALED,
        "不合格": Lifecycle.FAILED,
        "待检定": Lifecycle.PENDING_VERIFICATION,
    },
)


def parse_lifecycle(value: object) -> Lifecycle:
    """The recorded state: 在用 (or 合格, 准用), 封存 (or 停用), 禁用 (or 不合格), 报废, 待检; empty is in service.

    Raises:
        CellError: naming the accepted values.
    """
    text = _fold(cell_text(value)).casefold()
    if not text:
        return Lifecycle.IN_SERVICE
    if (state := _LIFECYCLES.get(text)) is not None:
        return state
    raise CellError("is not a state: write 在用, 封存, 禁用, 报废 or 待检")
