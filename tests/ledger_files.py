"""Ledger files as spreadsheets write them, built in memory: CSV in each encoding, XLSX, and a zip bomb.

A row is a sequence of cells; an empty sequence is a blank row (it still takes a row number, as
in the spreadsheet). XLSX cells keep their Python type: ``str`` is text, ``int``/``float`` a
number, ``datetime.date`` a date cell with a date format, ``None`` an empty cell.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import zipfile
from collections.abc import Sequence

import xlsxwriter

__all__ = ("PNG", "XLS", "csv_bytes", "xlsx_bytes", "zip_bomb")

Row = Sequence[object]

#: The first bytes of a PNG image, and of a legacy (OLE2) .xls workbook.
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10\x00\x00\x00\x10\x08\x06\x00\x00\x00\x1f\xf3\xffa"
XLS = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(504) + b"Workbook\x00"


def csv_bytes(rows: Sequence[Row], *, encoding: str = "utf-8", delimiter: str = ",") -> bytes:
    """The rows as a CSV file (CRLF, as Excel writes), encoded; ``utf-8-sig`` and ``utf-16`` add a BOM."""
    text = io.StringIO(newline="")
    writer = csv.writer(text, delimiter=delimiter, lineterminator="\r\n")
    for row in rows:
        writer.writerow(["" if cell is None else cell for cell in row])
    return text.getvalue().encode(encoding)


def xlsx_bytes(rows: Sequence[Row], *, title: str | None = None, sheet: str = "台账") -> bytes:
    """The rows as the first worksheet of a workbook, under a merged ``title`` row when one is given."""
    buffer = io.BytesIO()
    workbook = xlsxwriter.Workbook(buffer, {"in_memory": True})
    worksheet = workbook.add_worksheet(sheet)
    date_format = workbook.add_format({"num_format": "yyyy-mm-dd"})
    wrap = workbook.add_format({"text_wrap": True, "bold": True})
    first = 0
    if title is not None:
        width = max(len(row) for row in rows)
        worksheet.merge_range(0, 0, 0, width - 1, title, workbook.add_format({"bold": True, "align": "center"}))
        first = 1
    for r, row in enumerate(rows, start=first):
        for c, cell in enumerate(row):
            if cell is None:
                continue
            if isinstance(cell, dt.date):
                moment = cell if isinstance(cell, dt.datetime) else dt.datetime.combine(cell, dt.time())
                worksheet.write_datetime(r, c, moment, date_format)
            elif isinstance(cell, int | float) and not isinstance(cell, bool):
                worksheet.write_number(r, c, cell)
            else:
                worksheet.write_string(r, c, str(cell), wrap if r == first else None)
    workbook.close()
    return buffer.getvalue()


def zip_bomb(unpacked_mib: int) -> bytes:
    """A zip that looks like an XLSX (PK header, a worksheet entry) and inflates to ``unpacked_mib`` MiB of zeros.

    Written in 1 MiB steps, so building it never holds more than that in memory.
    """
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", '<?xml version="1.0"?><Types/>')
        with archive.open("xl/worksheets/sheet1.xml", "w", force_zip64=True) as member:
            chunk = bytes(1 << 20)
            for _ in range(unpacked_mib):
                member.write(chunk)
    return buffer.getvalue()
