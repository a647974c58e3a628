"""Ledger files out: an instrument as the cells of a ledger row, in CSV or XLSX.

The mirror of the import (``reading.py``, ``values.py``): headers are the ``zh`` or ``en`` labels
of :data:`~service.ledger.columns.COLUMNS`, which the import matches; dates are ``YYYY-MM-DD`` in
CSV and date cells in XLSX; uses and states are the Chinese labels the import reads, or with
``lang=en`` the API's own values (``safety_protection``, ``in_service``), which it reads too. The
columns metreg computes (:data:`~service.ledger.columns.COMPUTED`) follow; the import reads past them.
"""

from __future__ import annotations

import csv
import datetime as dt
import enum
import io
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from typing import IO, Final

import xlsxwriter
from xlsxwriter.format import Format
from xlsxwriter.worksheet import Worksheet

from service.catalog.rules import LegalUse
from service.instruments.rules import Lifecycle, Status, Traceability
from service.instruments.schemas import Instrument
from service.ledger.columns import COLUMNS, COMPUTED, LEGAL_USE_ZH, LIFECYCLE_ZH, STATUS_ZH, TRACEABILITY_ZH
from service.ledger.reading import FORMULA_START

__all__ = (
    "BOM",
    "CSV_MEDIA_TYPE",
    "XLSX_MEDIA_TYPE",
    "Cell",
    "CsvRows",
    "ExportFormat",
    "Lang",
    "XlsxSheet",
    "guard_formula",
    "ledger_cells",
    "ledger_headers",
    "ledger_widths",
    "text_width",
)

CSV_MEDIA_TYPE: Final = "text/csv"  # Litestar adds "; charset=utf-8" to text types
XLSX_MEDIA_TYPE: Final = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
#: Excel takes a CSV without it for the local code page (GBK on a Chinese Windows) and garbles it.
BOM: Final = "\ufeff".encode()

Cell = str | int | dt.date | None


class ExportFormat(enum.StrEnum):
    CSV = "csv"
    XLSX = "xlsx"


class Lang(enum.StrEnum):
    """The language of headers and labels: ``zh`` (what Chinese ledgers and the filing use) or ``en``."""

    ZH = "zh"
    EN = "en"


_COMPULSORY: Final = {Lang.ZH: ("否", "是"), Lang.EN: ("no", "yes")}


def ledger_headers(lang: Lang) -> list[str]:
    """The header row: every imported column, then the computed ones."""
    return [c.zh if lang is Lang.ZH else c.en for c in (*COLUMNS, *COMPUTED)]


#: Widths (in characters) the values of a column usually need; a header wider than that wins.
_WIDTHS: Final = {
    "name": 20,
    "catalog_code": 16,
    "model": 14,
    "measuring_range": 14,
    "manufacturer": 18,
    "serial_no": 14,
    "location": 18,
    "department": 12,
    "last_verified_on": 12,
    "valid_until": 12,
    "current_certificate_number": 16,
}


def ledger_widths(lang: Lang) -> list[int]:
    """Column widths for :func:`ledger_headers`: room for the header and for typical values."""
    return [
        max(text_width(label) + 2, _WIDTHS.get(column.field, 8))
        for label, column in zip(ledger_headers(lang), (*COLUMNS, *COMPUTED), strict=True)
    ]


def _label(
    value: LegalUse | Lifecycle | Status | Traceability,
    labels: Mapping[LegalUse, str] | Mapping[Lifecycle, str] | Mapping[Status, str] | Mapping[Traceability, str],
    lang: Lang,
) -> str:
    return labels[value] if lang is Lang.ZH else value.value  # type: ignore[index]


def ledger_cells(instrument: Instrument, lang: Lang, catalog: Mapping[str, str]) -> list[Cell]:
    """The ledger row of ``instrument``, in the order of :func:`ledger_headers`.

    ``catalog`` gives the label of each catalogue code as the import will read it back. The cycle
    is the one in force (the instrument's own, else the catalogue's default) and the valid-until
    the one the register holds: what a reader of the ledger needs, not how they are stored.
    """
    i = instrument
    no, yes = _COMPULSORY[lang]
    return [
        i.management_no,
        i.name,
        catalog.get(i.catalog_code, i.catalog_code) if i.catalog_code is not None else None,
        i.model,
        i.accuracy_class,
        i.mpe,
        i.measuring_range,
        i.manufacturer,
        i.serial_no,
        i.location,
        i.department,
        _label(i.legal_use, LEGAL_USE_ZH, lang),
        i.cycle_months,
        i.last_verified_on,
        i.valid_until,
        _label(i.lifecycle, LIFECYCLE_ZH, lang),
        yes if i.compulsory else no,
        _label(i.traceability, TRACEABILITY_ZH, lang),
        i.current_certificate_number,
        _label(i.status, STATUS_ZH, lang),
        i.days_until_due,
    ]


def guard_formula(text: str) -> str:
    """``text`` with a leading ``'`` when a spreadsheet opening the CSV would run it as a formula.

    A text that starts with apostrophes before such a character gets one more as well, so that the
    import, which takes one off (:func:`service.ledger.reading.unguard`), gives it back whole.

    >>> guard_formula("=HYPERLINK(\\"http://x\\")"), guard_formula("-0.5%"), guard_formula("0.5%")
    ('\\'=HYPERLINK("http://x")', "'-0.5%", '0.5%')
    >>> guard_formula("'=x"), guard_formula("'quoted")
    ("''=x", "'quoted")
    """
    return f"'{text}" if text.lstrip("'")[:1] in FORMULA_START else text


def _csv_text(cell: Cell) -> str:
    if cell is None:
        return ""
    if isinstance(cell, str):
        return guard_formula(cell)
    if isinstance(cell, dt.date):
        return cell.isoformat()
    return str(cell)


class CsvRows:
    """Rows to CSV bytes (UTF-8, CRLF as RFC 4180 and Excel write it), a batch at a time."""

    def __init__(self) -> None:
        self._buffer = io.StringIO()
        self._writer = csv.writer(self._buffer, lineterminator="\r\n")

    def encode(self, rows: Iterable[Sequence[Cell]]) -> bytes:
        for row in rows:
            self._writer.writerow([_csv_text(c) for c in row])
        text = self._buffer.getvalue()
        self._buffer.seek(0)
        self._buffer.truncate()
        return text.encode()


def text_width(text: str) -> int:
    """Columns ``text`` takes in a spreadsheet: CJK and full-width characters take two."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


class XlsxSheet:
    """One worksheet written row by row in XlsxWriter's ``constant_memory`` mode.

    Rows go to a temporary file as they are written, so memory holds one row whatever the count;
    the price is that rows must come in order. Text is always written as text: a cell starting
    with ``=`` is never a formula, so no quote is needed (and none is added).
    """

    def __init__(self, file: IO[bytes], sheet_name: str) -> None:
        self.workbook = xlsxwriter.Workbook(
            file,
            {
                "constant_memory": True,
                "strings_to_numbers": False,
                "strings_to_formulas": False,
                "strings_to_urls": False,
            },
        )
        self.sheet: Worksheet = self.workbook.add_worksheet(sheet_name)
        self.bold: Format = self.workbook.add_format({"bold": True, "valign": "vcenter", "text_wrap": True})
        self.title_format: Format = self.workbook.add_format({"bold": True, "font_size": 16, "align": "center"})
        self.date: Format = self.workbook.add_format({"num_format": "yyyy-mm-dd"})
        self.row = 0

    def title(self, text: str, columns: int) -> None:
        self.sheet.merge_range(self.row, 0, self.row, columns - 1, text, self.title_format)
        self.row += 1

    def line(self, text: str, columns: int) -> None:
        """A line of text across ``columns`` (a title block's field, a footer)."""
        self.sheet.merge_range(self.row, 0, self.row, columns - 1, text)
        self.row += 1

    def header(self, labels: Sequence[str], widths: Sequence[int]) -> None:
        """The header row, bold and frozen, and the columns as wide as ``widths`` (in characters)."""
        for col, (label, width) in enumerate(zip(labels, widths, strict=True)):
            self.sheet.set_column(col, col, width)
            self.sheet.write_string(self.row, col, label, self.bold)
        self.row += 1
        self.sheet.freeze_panes(self.row, 0)

    def rows(self, rows: Iterable[Sequence[Cell]]) -> None:
        for cells in rows:
            for col, cell in enumerate(cells):
                if cell is None or cell == "":
                    continue
                if isinstance(cell, str):
                    self.sheet.write_string(self.row, col, cell)
                elif isinstance(cell, dt.date):
                    self.sheet.write_datetime(self.row, col, cell, self.date)
                else:
                    self.sheet.write_number(self.row, col, cell)
            self.row += 1

    def close(self) -> None:
        """Assemble the workbook into the file (the slow part: it zips every row)."""
        self.workbook.close()
