"""Writing an import set-based, and reading the history of imports.

The planned rows are copied into a temporary staging table (COPY, the fastest way in), and two
statements write them: one INSERT of the new instruments with their 'registered' events, one
UPDATE of the changed ones with their 'updated' events. COPY cannot write the register itself:
PostgreSQL refuses COPY FROM into a table under row-level security.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any, Final

import asyncpg
import msgspec

from service.auth import Principal
from service.errors import DuplicateError
from service.instruments.queries import WRITABLE
from service.ledger.importing import PlannedRow
from service.ledger.schemas import ImportRecord
from service.notices.queries import cancel_stale
from service.pagination import Params, decode_cursor, read_in_page_order, split_page

__all__ = ("STAGED", "ImportFile", "select_import", "select_imports", "write_import")

#: The columns an import writes, in the staging table's order: all a registration or change writes,
#: but the links a replacement makes.
STAGED: Final = tuple(c for c in WRITABLE if c not in ("replaces", "replaced_by"))
_TYPES: Final = {"cycle_months": "integer", "last_verified_on": "date", "valid_until": "date"}
_STAGING = f"""CREATE TEMP TABLE import_rows (
    row integer NOT NULL, id uuid NOT NULL DEFAULT gen_random_uuid(), target uuid, fields text[], before text,
    {", ".join(f"{c} {_TYPES.get(c, 'uuid' if c.endswith('_id') else 'text')}" for c in STAGED)}
) ON COMMIT DROP"""
_COLUMNS = ", ".join(STAGED)

# Events are written by statements of their own: the policy on instrument_events checks that the
# instrument exists, which a statement's own inserts are not yet, to that statement.
# In due order: four of the register's indexes lead with (enterprise, …, due date), and rows that
# arrive in that order land on neighbouring index pages instead of all over them (a third less
# time for 100,000 rows here).
_INSERT = f"""
INSERT INTO instruments (id, enterprise_id, created_at, updated_at, {_COLUMNS})
SELECT id, $1, $2, $2, {_COLUMNS} FROM import_rows WHERE target IS NULL ORDER BY valid_until, row
"""
_UPDATE = f"""
UPDATE instruments i SET version = i.version + 1, updated_at = $2, {", ".join(f"{c} = s.{c}" for c in STAGED)}
FROM import_rows s WHERE s.target = i.id AND i.enterprise_id = $1
"""
_EVENTS = """
INSERT INTO instrument_events (instrument_id, kind, to_lifecycle, detail, actor_key_id, actor_role, occurred_at)
SELECT coalesce(target, id), CASE WHEN target IS NULL THEN 'registered' ELSE 'updated' END,
       CASE WHEN target IS NULL THEN lifecycle END,
       CASE WHEN target IS NULL THEN jsonb_build_object('import_id', $2::text)
            ELSE jsonb_build_object('import_id', $2::text, 'fields', to_jsonb(fields), 'before', before::jsonb) END,
       $3, $4, $1
FROM import_rows ORDER BY row
"""


class ImportFile(msgspec.Struct, frozen=True, kw_only=True):
    """The file an import came from, as the history keeps it."""

    name: str | None
    sha256: bytes
    format: str
    encoding: str | None


def _record(row: PlannedRow) -> tuple[Any, ...]:
    # Enum fields go in as they are: every enum of the register is a StrEnum, which asyncpg
    # encodes as its text (db_value per cell was a sixth of the import's Python time).
    if row.target is None:
        return (row.row, None, None, None, *map(row.values.get, STAGED))
    target = row.target
    changed = sorted(k for k, v in row.values.items() if v != getattr(target, k))
    before = msgspec.json.encode({k: getattr(target, k) for k in changed}).decode()
    merged = (row.values[c] if c in row.values else getattr(target, c) for c in STAGED)
    return (row.row, target.id, changed, before, *merged)


async def write_import(
    db: asyncpg.Connection,
    *,
    import_id: uuid.UUID,
    enterprise_id: uuid.UUID,
    rows: list[PlannedRow],
    file: ImportFile,
    actor: Principal | None,
    request_id: str | None,
    now: dt.datetime,
) -> None:
    """Write the planned ``rows`` and the import's entry in the history, in the caller's transaction.

    The instruments are audited through the import's entry (schema/0010_imports.sql): the setting
    that says so lasts until the transaction ends.

    Raises:
        DuplicateError: a row collides with an instrument the plan did not see (written meanwhile,
            or two rows exchanging serial numbers).
    """
    await db.execute("SELECT set_config('metreg.import_id', $1, true)", str(import_id))
    await db.execute(_STAGING)
    await db.copy_records_to_table(
        "import_rows",
        records=(_record(r) for r in rows if r.outcome != "unchanged"),
        columns=("row", "target", "fields", "before", *STAGED),
    )
    key_id, role = (actor.key_id, actor.role.value) if actor else (None, None)
    try:
        await db.execute(_INSERT, enterprise_id, now)
        await db.execute(_UPDATE, enterprise_id, now)
    except asyncpg.UniqueViolationError as exc:
        raise DuplicateError(
            "a row collides with an instrument already in the register "
            f"({'management number' if exc.constraint_name == 'instruments_management_no' else 'serial number'}); "
            "nothing was imported: run the import again to see which row"
        ) from None
    await db.execute(_EVENTS, now, str(import_id), key_id, role)
    updated = [r.target.id for r in rows if r.target is not None and r.outcome == "updated"]
    if updated:
        await cancel_stale(db, now, instrument_ids=updated)
    counts = {o: sum(1 for r in rows if r.outcome == o) for o in ("created", "updated", "unchanged")}
    await db.execute(
        """INSERT INTO instrument_imports (id, enterprise_id, file_name, file_sha256, format, encoding, rows,
                                           created, updated, unchanged, actor_key_id, actor_role, request_id,
                                           imported_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)""",
        import_id,
        enterprise_id,
        file.name,
        file.sha256,
        file.format,
        file.encoding,
        len(rows),
        counts["created"],
        counts["updated"],
        counts["unchanged"],
        key_id,
        role,
        request_id,
        now,
    )


_RECORD = """id, enterprise_id, file_name, encode(file_sha256, 'hex') AS file_sha256, format, encoding, rows,
             created, updated, unchanged, actor_key_id, actor_role, request_id, imported_at"""


class _PageKey(msgspec.Struct, frozen=True, array_like=True):
    imported_at: dt.datetime
    id: uuid.UUID


async def select_imports(
    db: asyncpg.Connection, enterprise_id: uuid.UUID, *, limit: int, cursor: str | None
) -> tuple[list[ImportRecord], str | None]:
    """One page of the enterprise's imports, newest first."""
    params = Params(enterprise_id)
    after = ""
    if cursor:
        last = decode_cursor(cursor, _PageKey)
        after = f"AND (imported_at, id) < ({params(last.imported_at)}, {params(last.id)})"
    await read_in_page_order(db)
    rows = await db.fetch(
        f"""SELECT {_RECORD} FROM instrument_imports WHERE enterprise_id = $1 {after}
            ORDER BY imported_at DESC, id DESC LIMIT {params(limit + 1)}""",
        *params.values,
    )
    return split_page(
        [msgspec.convert(dict(r), ImportRecord) for r in rows],
        limit,
        lambda last: _PageKey(imported_at=last.imported_at, id=last.id),
    )


async def select_import(db: asyncpg.Connection, import_id: uuid.UUID) -> ImportRecord | None:
    row = await db.fetchrow(f"SELECT {_RECORD} FROM instrument_imports WHERE id = $1", import_id)
    return msgspec.convert(dict(row), ImportRecord) if row else None
