"""The ledger out of the register, a batch at a time: as CSV chunks to stream, or into an XLSX file.

Shared by ``GET /v1/enterprises/{id}/ledger`` and ``metreg export``. Each function reads through
the caller's connection, in the caller's transaction (a server-side cursor lives in one), so
whatever principal that transaction has decides what row-level security lets it see.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from typing import IO

import msgspec

from service.catalog.queries import select_catalog
from service.db import Connection
from service.enterprises.schemas import Enterprise
from service.instruments.queries import select_register_batches, to_instruments
from service.instruments.schemas import Instrument
from service.ledger.importing import Catalog
from service.ledger.values import CellError
from service.ledger.writing import (
    BOM,
    CsvRows,
    Lang,
    XlsxSheet,
    ledger_cells,
    ledger_headers,
    ledger_widths,
)

__all__ = ("LedgerExport", "Tally", "catalog_labels", "instrument_batches", "ledger_csv", "ledger_xlsx")

#: The worksheet of a ledger workbook.
SHEET_NAME = {Lang.ZH: "计量器具台账", Lang.EN: "Instrument ledger"}


class LedgerExport(msgspec.Struct, frozen=True, kw_only=True):
    """What to export: whose ledger, as of which local date, in which language, how many rows a read."""

    enterprise: Enterprise
    today: dt.date
    lang: Lang = Lang.ZH
    batch_rows: int = 1000


class Tally(msgspec.Struct, kw_only=True):
    """How many instruments an export has written so far."""

    rows: int = 0


async def catalog_labels(db: Connection, lang: Lang) -> dict[str, str]:
    """Each catalogue code's name in ``lang``, where the import reads that name back as the code.

    A name two items share (or that another item's code spells) would import as the wrong item:
    such an item is written by its code, which is always read back as itself.
    """
    items = await select_catalog(db)
    reader = Catalog(items)
    labels: dict[str, str] = {}
    for item in items:
        name = item.name_zh if lang is Lang.ZH else item.name_en
        try:
            labels[item.code] = name if reader.code(name) == item.code else item.code
        except CellError:
            labels[item.code] = item.code
    return labels


async def instrument_batches(
    db: Connection, enterprise: Enterprise, *, today: dt.date, batch_rows: int, compulsory_only: bool = False
) -> AsyncIterator[list[Instrument]]:
    """The register as the API shows it on the local date ``today``, ``batch_rows`` instruments at a time."""
    batches = select_register_batches(db, enterprise.id, batch_rows=batch_rows, compulsory_only=compulsory_only)
    async for rows in batches:
        yield to_instruments(rows, enterprise, today)


async def ledger_csv(db: Connection, export: LedgerExport, tally: Tally | None = None) -> AsyncIterator[bytes]:
    """The ledger as CSV in UTF-8 with a BOM: the header first, then one chunk per batch."""
    tally = tally or Tally()
    lang = export.lang
    labels = await catalog_labels(db, lang)
    writer = CsvRows()
    yield BOM + writer.encode([ledger_headers(lang)])
    async for batch in instrument_batches(db, export.enterprise, today=export.today, batch_rows=export.batch_rows):
        tally.rows += len(batch)
        yield writer.encode(ledger_cells(i, lang, labels) for i in batch)


async def ledger_xlsx(db: Connection, export: LedgerExport, file: IO[bytes]) -> int:
    """Write the ledger as an XLSX workbook into ``file``; the number of instruments written.

    Rows are formatted and written, and the workbook zipped, in a thread: a big register takes
    seconds of CPU, which the event loop should not wait out.
    """
    lang = export.lang
    labels = await catalog_labels(db, lang)
    sheet = XlsxSheet(file, SHEET_NAME[lang])
    sheet.header(ledger_headers(lang), ledger_widths(lang))
    count = 0
    try:
        async for batch in instrument_batches(db, export.enterprise, today=export.today, batch_rows=export.batch_rows):
            count += len(batch)
            await asyncio.to_thread(sheet.rows, [ledger_cells(i, lang, labels) for i in batch])
    finally:
        # Also on failure: closing removes the workbook's temporary files.
        await asyncio.to_thread(sheet.close)
    return count
