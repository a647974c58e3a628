"""Reading the catalogue."""

from __future__ import annotations

import asyncpg
import msgspec

from service.catalog.rules import CatalogRule
from service.catalog.schemas import CatalogItem

__all__ = ("select_catalog", "select_catalog_rule", "select_unknown_codes")

_COLUMNS = """code, name_zh, name_en, regime, compulsory_uses, legal_max_cycle_months,
              default_cycle_months, regulation, catalog_version"""


async def select_catalog(db: asyncpg.Connection) -> list[CatalogItem]:
    rows = await db.fetch(f"SELECT {_COLUMNS} FROM catalog_items ORDER BY code")
    return [msgspec.convert(dict(row), CatalogItem) for row in rows]


async def select_catalog_rule(db: asyncpg.Connection, code: str) -> CatalogRule | None:
    row = await db.fetchrow(
        """SELECT code, regime, compulsory_uses, legal_max_cycle_months, default_cycle_months, regulation
           FROM catalog_items WHERE code = $1""",
        code,
    )
    return msgspec.convert(dict(row), CatalogRule) if row else None


async def select_unknown_codes(db: asyncpg.Connection, codes: list[str]) -> list[str]:
    """The codes in ``codes`` that are not in the catalogue, in the order given."""
    known = {r["code"] for r in await db.fetch("SELECT code FROM catalog_items WHERE code = any($1)", codes)}
    return [c for c in codes if c not in known]
