"""Imports over the API: the report of a dry run or an import, and an import as kept in the history."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated

import msgspec

from service.errors import RowProblem
from service.ledger.importing import ImportColumn

__all__ = ("ImportRecord", "ImportReport")


class ImportReport(msgspec.Struct, frozen=True, kw_only=True):
    """What an import did (or, for a dry run, would do), and every problem found, by row and column.

    ``rows`` counts data rows (blank rows are skipped); ``created``, ``updated`` and ``unchanged``
    count the rows without problems, so they add up to ``rows`` when there are none. Row numbers are
    those the spreadsheet shows.
    """

    import_id: uuid.UUID | None
    """The import in the history (GET /v1/imports/{id}); null for a dry run."""
    dry_run: bool
    format: str
    encoding: str | None
    sheet: str | None
    header_row: int
    rows: int
    created: int
    updated: int
    unchanged: int
    columns: list[ImportColumn]
    """How each header was read: the field it fills, or why it is not imported."""
    problems: list[RowProblem]


class ImportRecord(msgspec.Struct, frozen=True, kw_only=True):
    """An import as kept: the file (by its SHA-256), who imported it, when, and what it did."""

    id: uuid.UUID
    enterprise_id: uuid.UUID
    file_name: Annotated[
        str | None,
        msgspec.Meta(
            description="The file's name as sent; for a generated register, its command, seed and enterprise."
        ),
    ]
    file_sha256: str
    format: Annotated[
        str,
        msgspec.Meta(
            description="`csv` or `xlsx`; `generated` for an enterprise loaded by `metreg demo --instruments`.",
            examples=["csv", "xlsx", "generated"],
        ),
    ]
    encoding: str | None
    rows: int
    created: int
    updated: int
    unchanged: int
    actor_key_id: uuid.UUID | None
    actor_role: str | None
    request_id: str | None
    imported_at: dt.datetime
