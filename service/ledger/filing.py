"""The filing table of compulsory instruments (强制检定计量器具备案表, domain.md §4.2) as XLSX.

What an enterprise hands the market-regulation bureau: a title block naming the user organisation
(name, credit code, and the address, contact and phone the enterprise keeps in metreg), then one
row per instrument under legal control that it still keeps (scrapped and replaced ones are no
longer in use and are left out). An address, contact or phone the enterprise has not given is left
blank for it to fill in by hand, as are the seal and the verifying institution (which the
institution side fills). The national form's exact layout is not fixed (domain.md §4.2: provinces
differ); the columns are those the filing systems ask for.
"""

from __future__ import annotations

import asyncio
from typing import IO, Final

from service.db import Connection
from service.instruments.schemas import Instrument
from service.ledger.columns import LEGAL_USE_ZH
from service.ledger.exporting import LedgerExport, catalog_labels, instrument_batches
from service.ledger.writing import Cell, Lang, XlsxSheet, text_width

__all__ = ("FILING_COLUMNS", "FILING_TITLE", "filing_cells", "filing_xlsx")

FILING_TITLE: Final = "强制检定计量器具备案表"
#: The table's columns and the widths their values usually need.
FILING_COLUMNS: Final = (
    ("序号", 6),
    ("计量器具名称", 20),
    ("强检目录项", 14),
    ("规格型号", 14),
    ("准确度等级", 10),
    ("测量范围", 14),
    ("出厂编号", 14),
    ("数量", 6),
    ("强检用途", 10),
    ("安装使用地点", 18),
    ("生产厂家", 18),
    ("检定周期(月)", 8),
    ("检定机构", 18),
)


def _contact_line(name: str | None, phone: str | None) -> str:
    """The title block's 联系人 / 联系电话 line; a part not kept is blank, with room to write it in."""
    # Full-width spaces: as wide as the characters written into them by hand.
    person = f"{name}　　　　" if name else "　" * 8
    return f"联系人：{person}联系电话：{phone or ''}"


def filing_cells(number: int, instrument: Instrument, catalog: dict[str, str]) -> list[Cell]:
    """The filing row of ``instrument``, the ``number``-th of the table.

    The verifying institution is left blank: the institution side fills it in (domain.md §4.2).
    """
    i = instrument
    return [
        number,
        i.name,
        catalog.get(i.catalog_code, i.catalog_code) if i.catalog_code is not None else None,
        i.model,
        i.accuracy_class,
        i.measuring_range,
        i.serial_no,
        1,
        LEGAL_USE_ZH[i.legal_use],
        i.location,
        i.manufacturer,
        i.cycle_months,
        None,
    ]


async def filing_xlsx(db: Connection, export: LedgerExport, file: IO[bytes]) -> int:
    """Write the filing table into ``file``; the number of instruments it lists (always in Chinese)."""
    enterprise, today = export.enterprise, export.today
    labels = await catalog_labels(db, Lang.ZH)
    sheet = XlsxSheet(file, FILING_TITLE)
    width = len(FILING_COLUMNS)
    sheet.title(FILING_TITLE, width)
    sheet.line(f"使用单位名称：{enterprise.name}", width)
    sheet.line(f"统一社会信用代码：{enterprise.credit_code}", width)
    sheet.line(f"单位地址：{enterprise.address or ''}", width)
    sheet.line(_contact_line(enterprise.contact_name, enterprise.contact_phone), width)
    sheet.header(
        [label for label, _ in FILING_COLUMNS],
        [max(text_width(label) + 2, chars) for label, chars in FILING_COLUMNS],
    )
    count = 0
    try:
        async for batch in instrument_batches(
            db, enterprise, today=today, batch_rows=export.batch_rows, compulsory_only=True
        ):
            cells = [filing_cells(count + n, i, labels) for n, i in enumerate(batch, start=1)]
            count += len(batch)
            await asyncio.to_thread(sheet.rows, cells)
        sheet.row += 1
        sheet.line(f"共 {count} 台件　　　　单位公章：　　　　　　　　填表日期：{today.isoformat()}", width)
    finally:
        await asyncio.to_thread(sheet.close)
    return count
