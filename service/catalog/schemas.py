"""The catalogue as the API shows it."""

from __future__ import annotations

import msgspec

from service.catalog.rules import LegalUse, Regime

__all__ = ("CatalogItem",)


class CatalogItem(msgspec.Struct, frozen=True, kw_only=True):
    """One item of the legal catalogue (实施强制管理的计量器具目录)."""

    code: str
    name_zh: str
    name_en: str
    regime: Regime
    compulsory_uses: list[LegalUse]
    legal_max_cycle_months: int | None
    default_cycle_months: int | None
    regulation: str
    catalog_version: str
