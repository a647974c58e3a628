"""One import from file to report: read, map, check, match, and (unless a dry run) write.

Shared by ``POST /v1/enterprises/{id}/instruments/import`` and ``metreg import``.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable

from service import dates
from service.auth import Principal
from service.catalog.queries import select_catalog
from service.db import Connection
from service.enterprises.schemas import Enterprise
from service.errors import RowsRejectedError
from service.instruments.queries import select_by_identities, select_by_numbers
from service.ledger.importing import (
    IDENTITY,
    Catalog,
    ImportPlan,
    identities_to_look_up,
    map_columns,
    parse_rows,
    plan_rows,
)
from service.ledger.queries import ImportFile, write_import
from service.ledger.reading import UNPACK_FACTOR, Table, read_table
from service.ledger.schemas import ImportReport

__all__ = ("Progress", "import_ledger", "read_ledger")

#: Told how far the import is: ("checking" | "writing" | "done", rows so far, rows in all).
Progress = Callable[[str, int, int], None]


def read_ledger(data: bytes, *, max_bytes: int, max_rows: int) -> Table:
    """The file as a table, within the limits (see :func:`service.ledger.reading.read_table`)."""
    return read_table(data, max_rows=max_rows, max_unpacked=UNPACK_FACTOR * max_bytes)


async def import_ledger(
    db: Connection,
    enterprise: Enterprise,
    table: Table,
    *,
    file_name: str | None,
    file_sha256: bytes,
    dry_run: bool,
    actor: Principal | None,
    request_id: str | None,
    now: dt.datetime,
    progress: Progress | None = None,
) -> ImportReport:
    """Check ``table`` against the register and the rules, and write it unless ``dry_run``.

    The caller holds the enterprise locked for update (imports of one enterprise take turns, and
    no registration interleaves), in the transaction the import writes in.

    Raises:
        RowsRejectedError: a real run with problems: nothing was written; ``rows`` lists them.
        DuplicateError: a collision the plan could not see.
    """
    tell = progress or (lambda _stage, _done, _total: None)
    tell("checking", 0, len(table.rows))
    catalog = Catalog(await select_catalog(db))
    columns, fields, problems = map_columns(table)
    plan = ImportPlan(columns=columns, rows=[], problems=problems)
    if not problems:
        plan.rows, cell_problems = parse_rows(
            table, fields, catalog, lambda done: tell("checking", done, len(table.rows))
        )
        numbers = sorted({r.given["management_no"] for r in plan.rows if r.given.get("management_no")})
        parts = [part for part in IDENTITY if part in fields.values()]
        by_number = await select_by_numbers(db, enterprise.id, numbers)
        identities = identities_to_look_up(plan.rows, by_number, parts)
        by_identity = await select_by_identities(db, enterprise.id, identities, parts)
        existing = list({i.id: i for i in [*by_number, *by_identity]}.values())
        headers = {field: table.headers[index].strip() for index, field in fields.items()}
        planned = await plan_rows(
            db,
            plan.rows,
            existing,
            catalog=catalog,
            enterprise=enterprise,
            today=dates.local_today(now, enterprise.timezone),
            headers=headers,
            positions={field: index for index, field in fields.items()},
            parts=parts,
            skip=frozenset(p.row for p in cell_problems if p.row is not None),
        )
        plan.problems = sorted([*cell_problems, *planned], key=lambda p: p.row or 0)
        rejected = {p.row for p in plan.problems}
        for row in plan.rows:
            if row.row in rejected:
                row.outcome = "rejected"
    import_id = None
    if not dry_run:
        if plan.problems:
            raise RowsRejectedError(
                f"{len(plan.problems)} problem(s) in the file: nothing was imported; `rows` lists each by row "
                "and column (a dry run shows the same without trying)",
                rows=plan.problems,
            )
        import_id = uuid.uuid4()
        tell("writing", 0, len(plan.rows))
        await write_import(
            db,
            import_id=import_id,
            enterprise_id=enterprise.id,
            rows=plan.rows,
            file=ImportFile(name=file_name, sha256=file_sha256, format=table.format, encoding=table.encoding),
            actor=actor,
            request_id=request_id,
            now=now,
        )
    tell("done", len(plan.rows), len(plan.rows))
    return ImportReport(
        import_id=import_id,
        dry_run=dry_run,
        format=table.format,
        encoding=table.encoding,
        sheet=table.sheet,
        header_row=table.header_row,
        rows=len(table.rows),
        created=plan.count("created"),
        updated=plan.count("updated"),
        unchanged=plan.count("unchanged"),
        columns=plan.columns,
        problems=plan.problems,
    )
