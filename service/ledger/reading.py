"""Ledger files in: CSV (UTF-8, UTF-8 with BOM, UTF-16 with BOM, GB18030) and XLSX, as rows of cells.

The format is read from the bytes, not from a name or a header a client may get wrong. The header
is the first row, among the first ten, that names at least two ledger columns: Chinese ledgers
often carry a title row or two above it. Row numbers are those a spreadsheet shows (1-based,
blank rows counted), so that the report points at the line the user sees.
"""

from __future__ import annotations

import codecs
import csv
import io
import zipfile
from collections.abc import Iterator, Sequence
from typing import Final

import msgspec
import python_calamine

from service.errors import InvalidInputError, PayloadTooLargeError, UnsupportedMediaError
from service.ledger.columns import match_header

__all__ = ("HEADER_SEARCH_ROWS", "Table", "read_table")

HEADER_SEARCH_ROWS: Final = 10
#: How far an XLSX may unpack, as a multiple of the largest accepted file: real workbooks compress
#: their XML about 5–20 times; a zip bomb, thousands of times.
UNPACK_FACTOR: Final = 25

_XLSX_MAGIC = b"PK\x03\x04"
_OLE2_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # legacy .xls (and other Office 97 files)


class Table(msgspec.Struct, kw_only=True):
    """A ledger as read: how, its header, and its data rows with their spreadsheet row numbers."""

    format: str
    """``csv`` or ``xlsx``."""
    encoding: str | None
    """The text encoding of a CSV (``utf-8``, ``utf-8-sig``, ``utf-16``, ``gb18030``)."""
    sheet: str | None
    """The worksheet of an XLSX that was read (the first)."""
    header_row: int
    headers: list[str]
    rows: list[tuple[int, Sequence[object]]]


def read_table(data: bytes, *, max_rows: int, max_unpacked: int) -> Table:
    """Read ``data`` as a CSV or XLSX ledger.

    Raises:
        InvalidInputError: empty, or no header row to be found.
        UnsupportedMediaError: neither CSV nor XLSX text (a legacy .xls, an image, random bytes).
        PayloadTooLargeError: more than ``max_rows`` data rows, or an XLSX that unpacks to more
            than ``max_unpacked`` bytes.
    """
    if not data.strip():
        raise InvalidInputError.for_field("file", "is empty: send the ledger as CSV or XLSX")
    if data.startswith(_XLSX_MAGIC):
        fmt, encoding, sheet, grid = "xlsx", None, *_xlsx_rows(data, max_unpacked)
    elif data.startswith(_OLE2_MAGIC):
        raise UnsupportedMediaError(
            "this is a legacy Excel (.xls) file: save it as .xlsx (Excel Workbook) or CSV and send that"
        )
    else:
        encoding, text = _decode(data)
        fmt, sheet, grid = "csv", None, _csv_rows(text)
    header_row, headers = _find_header(grid)
    rows: list[tuple[int, Sequence[object]]] = []
    for number, cells in grid:
        if not any(_filled(c) for c in cells):  # the grid goes on after the header row
            continue
        if len(rows) == max_rows:
            raise PayloadTooLargeError(f"the file has more than {max_rows} data rows (METREG_MAX_IMPORT_ROWS)")
        rows.append((number, cells))
    return Table(format=fmt, encoding=encoding, sheet=sheet, header_row=header_row, headers=headers, rows=rows)


def _filled(cell: object) -> bool:
    return cell is not None and (not isinstance(cell, str) or bool(cell.strip()))


def _decode(data: bytes) -> tuple[str, str]:
    """The text of a CSV and its encoding: a BOM decides; else UTF-8 if it is that, else GB18030."""
    if data.startswith(codecs.BOM_UTF8):
        encoding = "utf-8-sig"
    elif data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        encoding = "utf-16"  # Excel's "Unicode text" export: tab-separated UTF-16
    elif b"\x00" in data[:8192]:
        raise UnsupportedMediaError("this is not a CSV or XLSX file (it holds binary data)")
    else:
        encoding = "utf-8"
    try:
        return encoding, data.decode(encoding)
    except UnicodeDecodeError:
        if encoding != "utf-8":
            raise UnsupportedMediaError(f"the file starts as {encoding} text but is not valid {encoding}") from None
    try:
        # What Chinese Excel writes for "CSV"; GBK and GB2312 are subsets of it.
        return "gb18030", data.decode("gb18030")
    except UnicodeDecodeError:
        raise UnsupportedMediaError("this is not a CSV or XLSX file: its text is neither UTF-8 nor GB18030") from None


#: What makes a spreadsheet run a cell as a formula. metreg's export puts an apostrophe before a
#: CSV cell that starts with one of these, after any apostrophes of its own (the OWASP guard
#: against CSV injection, service/ledger/writing.py); the import takes exactly one off again. An
#: XLSX cell needs no guard (text is stored as text), so keeps its apostrophes.
FORMULA_START: Final = frozenset("=+-@\t\r")


def unguard(cell: str) -> str:
    """``cell`` without the apostrophe of a formula guard, when it has one."""
    return cell[1:] if cell[:1] == "'" and cell.lstrip("'")[:1] in FORMULA_START else cell


def _csv_rows(text: str) -> Iterator[tuple[int, Sequence[object]]]:
    delimiter = _delimiter(text)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        # Records, not lines: a quoted cell with a line break is one row of the spreadsheet.
        for number, cells in enumerate(reader, start=1):
            yield number, [unguard(cell) if cell[:1] == "'" else cell for cell in cells]
    except csv.Error as exc:
        raise InvalidInputError.for_field("file", f"line {reader.line_num} is not valid CSV: {exc}") from None


def _delimiter(text: str) -> str:
    """The delimiter with which one of the first lines reads as a header; else the most frequent one.

    Counting alone misleads both ways: a title line has no delimiters, and cells such as
    "200mV, 2V, 20V" put more commas than tabs into the rows of a tab-separated file.
    """
    lines = [line for line in text[:65536].splitlines() if line.strip()][:HEADER_SEARCH_ROWS]
    for delimiter in ",\t;":
        for cells in csv.reader(lines, delimiter=delimiter):
            if sum(1 for cell in cells if match_header(cell)[0] is not None) >= 2:
                return delimiter
    sample = "\n".join(lines)
    return max(",\t;", key=sample.count)


def _xlsx_rows(data: bytes, max_unpacked: int) -> tuple[str, Iterator[tuple[int, Sequence[object]]]]:
    _refuse_bomb(data, max_unpacked)
    try:
        workbook = python_calamine.CalamineWorkbook.from_filelike(io.BytesIO(data))
        sheet = workbook.get_sheet_by_index(0)
        grid = sheet.to_python(skip_empty_area=False)  # from row 1, so that row numbers are Excel's
    except (python_calamine.CalamineError, python_calamine.ZipError, python_calamine.XmlError, ValueError) as exc:
        raise UnsupportedMediaError(f"this XLSX file cannot be read: {exc}") from None
    return sheet.name, enumerate(grid, start=1)


def _refuse_bomb(data: bytes, max_unpacked: int) -> None:
    """Refuse a workbook that unpacks to more than ``max_unpacked`` bytes, by counting what inflates.

    The sizes in a zip's directory are the sender's word; the bytes that come out of inflating are
    not. Reading stops as soon as the limit is passed, so a bomb costs at most that much work.
    """
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            unpacked = 0
            for info in archive.infolist():
                if info.is_dir():
                    continue
                with archive.open(info) as member:
                    while chunk := member.read(1 << 20):
                        unpacked += len(chunk)
                        if unpacked > max_unpacked:
                            raise PayloadTooLargeError(
                                f"the workbook unpacks to more than {max_unpacked} bytes "
                                f"({UNPACK_FACTOR} × METREG_MAX_IMPORT_BYTES): not imported"
                            )
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, NotImplementedError) as exc:
        raise UnsupportedMediaError(f"this is not a readable XLSX file ({exc})") from None


def _find_header(grid: Iterator[tuple[int, Sequence[object]]]) -> tuple[int, list[str]]:
    """The first row among the first ten naming two ledger columns; the grid continues after it."""
    for seen, (number, cells) in enumerate(grid, start=1):
        headers = ["" if c is None else str(c) for c in cells]
        if sum(1 for h in headers if match_header(h)[0] is not None) >= 2:
            return number, headers
        if seen == HEADER_SEARCH_ROWS:
            break
    raise InvalidInputError.for_field(
        "file",
        f"no header row in the first {HEADER_SEARCH_ROWS} rows: the ledger needs a row of column names "
        "such as 计量器具名称 and 出厂编号 (name, serial_no)",
    )
