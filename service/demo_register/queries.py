"""SQL of the generated register: what is loaded already, and one enterprise written as an import.

The loader connects as the operator's login, as ``metreg demo`` always has (service/cli.py), which
owns the tables: row-level security does not hold it, so the instruments are copied straight into
the register. (PostgreSQL refuses COPY FROM into a table whose policies apply to the copying role:
the ledger import, which runs as ``metreg_api``, stages through a temporary table instead.)
:func:`copies_directly` checks that before anything is written.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable
from typing import Any

import asyncpg

from service.catalog.rules import CatalogRule, LegalUse, Regime
from service.demo_register.generate import COLUMNS

__all__ = (
    "copies_directly",
    "copy_instruments",
    "insert_generated_events",
    "insert_generated_import",
    "select_catalog_rules",
    "select_enterprise_of",
    "select_loaded",
)


async def copies_directly(db: asyncpg.Connection) -> bool:
    """Whether this login may COPY into the register (row-level security does not apply to it)."""
    active: bool = await db.fetchval("SELECT row_security_active('instruments')")
    return not active


async def select_catalog_rules(db: asyncpg.Connection) -> dict[str, CatalogRule]:
    rows = await db.fetch(
        """SELECT code, regime, compulsory_uses, legal_max_cycle_months, default_cycle_months, regulation
           FROM catalog_items"""
    )
    return {
        r["code"]: CatalogRule(
            code=r["code"],
            regime=Regime(r["regime"]),
            compulsory_uses=tuple(LegalUse(u) for u in r["compulsory_uses"]),
            legal_max_cycle_months=r["legal_max_cycle_months"],
            default_cycle_months=r["default_cycle_months"],
            regulation=r["regulation"],
        )
        for r in rows
    }


async def select_loaded(db: asyncpg.Connection, digests: list[bytes]) -> set[bytes]:
    """Which of the generated enterprises (by the digest their import keeps) are loaded already."""
    rows = await db.fetch(
        "SELECT file_sha256 FROM instrument_imports WHERE format = 'generated' AND file_sha256 = ANY($1::bytea[])",
        digests,
    )
    return {bytes(r["file_sha256"]) for r in rows}


async def select_enterprise_of(db: asyncpg.Connection, digest: bytes) -> uuid.UUID | None:
    """The enterprise a generated import (known by its digest) was loaded into."""
    found: uuid.UUID | None = await db.fetchval(
        "SELECT enterprise_id FROM instrument_imports WHERE format = 'generated' AND file_sha256 = $1", digest
    )
    return found


async def insert_generated_import(
    db: asyncpg.Connection,
    *,
    import_id: uuid.UUID,
    enterprise_id: uuid.UUID,
    description: str,
    digest: bytes,
    rows: int,
    now: dt.datetime,
) -> None:
    """Record the enterprise's register as one import (its audit entry), and audit its rows through it.

    The setting lasts until the transaction ends (schema/0010_imports.sql).
    """
    await db.execute(
        """INSERT INTO instrument_imports (id, enterprise_id, file_name, file_sha256, format, encoding, rows,
                                           created, updated, unchanged, imported_at)
           VALUES ($1, $2, $3, $4, 'generated', NULL, $5, $5, 0, 0, $6)""",
        import_id,
        enterprise_id,
        description,
        digest,
        rows,
        now,
    )
    await db.execute("SELECT set_config('metreg.import_id', $1, true)", str(import_id))


async def copy_instruments(db: asyncpg.Connection, records: Iterable[tuple[Any, ...]]) -> None:
    """COPY the rows (of :data:`~service.demo_register.generate.COLUMNS`) into the register.

    A replaced instrument and its successor reference each other; the foreign keys are checked at
    the end of the statement, so both must be in the same COPY.
    """
    await db.copy_records_to_table("instruments", records=records, columns=COLUMNS)


# Written by SQL from the rows just copied rather than copied themselves: `detail` is jsonb, and the
# connection's jsonb codec is text-only (service/db.py), which binary COPY cannot use.
_REGISTERED = """
INSERT INTO instrument_events (instrument_id, kind, to_lifecycle, related_instrument_id, related_enterprise_id,
                               detail, occurred_at)
SELECT id, 'registered', CASE lifecycle WHEN 'replaced' THEN 'in_service' ELSE lifecycle END, replaces,
       CASE WHEN replaces IS NOT NULL THEN enterprise_id END, jsonb_build_object('import_id', $2::text), $3
FROM instruments WHERE enterprise_id = $1
ORDER BY replaces IS NOT NULL, management_no
"""
_REPLACED = """
INSERT INTO instrument_events (instrument_id, kind, effective_on, from_lifecycle, to_lifecycle,
                               related_instrument_id, related_enterprise_id, detail, occurred_at)
SELECT old.id, 'replaced', new.last_verified_on, 'in_service', 'replaced', new.id, old.enterprise_id,
       jsonb_build_object('import_id', $2::text), $3
FROM instruments old JOIN instruments new ON new.id = old.replaced_by
WHERE old.enterprise_id = $1 AND old.lifecycle = 'replaced'
ORDER BY old.management_no
"""


async def insert_generated_events(
    db: asyncpg.Connection, enterprise_id: uuid.UUID, import_id: uuid.UUID, now: dt.datetime
) -> None:
    """Each instrument's history as the API would have written it: registered, and replaced by its successor.

    Successors are registered after the others, as the replace operation registers them.
    """
    await db.execute(_REGISTERED, enterprise_id, str(import_id), now)
    await db.execute(_REPLACED, enterprise_id, str(import_id), now)
