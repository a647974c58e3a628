"""Who must verify what: the compulsory-verification determination (domain.md §0 facts 1–2).

Pure functions over catalogue data. The catalogue itself is data (``schema/0002_catalog.sql``), so
a new SAMR catalogue or another jurisdiction's list changes rows, not code.
"""

from __future__ import annotations

import enum

import msgspec

__all__ = ("CatalogRule", "LegalUse", "Regime", "effective_regime")


class LegalUse(enum.StrEnum):
    """The four uses that make a catalogued instrument compulsory (计量法 §9 [S-LAW1]), or none."""

    TRADE_SETTLEMENT = "trade_settlement"
    SAFETY_PROTECTION = "safety_protection"
    MEDICAL = "medical"
    ENVIRONMENTAL_MONITORING = "environmental_monitoring"
    NONE = "none"


class Regime(enum.StrEnum):
    """How an instrument is kept legal (1991 有关规定 [S-1991]; 2020 catalogue point 四 [S-CAT2]).

    ``not_controlled`` is not a catalogue value: it is the regime of every instrument that is not
    under compulsory verification (no catalogue item, a non-compulsory use, or a catalogue item under
    type approval only). Such instruments are kept by calibration on a cycle the enterprise chooses.
    """

    PERIODIC = "periodic"
    INITIAL_ONLY_LIMITED_LIFE = "initial_only_limited_life"
    INITIAL_ONLY_SCRAP_ON_FAILURE = "initial_only_scrap_on_failure"
    TYPE_APPROVAL_ONLY = "type_approval_only"
    NOT_CONTROLLED = "not_controlled"


class CatalogRule(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """The part of a catalogue item that the legal rules read (frozen and never in a reference
    cycle: untracked by the garbage collector, as every row read carries one)."""

    code: str
    regime: Regime
    compulsory_uses: tuple[LegalUse, ...]
    legal_max_cycle_months: int | None
    default_cycle_months: int | None
    regulation: str


def effective_regime(item: CatalogRule | None, legal_use: LegalUse) -> Regime:
    """The regime an instrument is under, given its catalogue item and its actual use.

    Compulsory verification applies only when both hold (domain.md §0 fact 1, [S-LAW1, S-CAT2]):
    the item's regime is a compulsory one (not ``type_approval_only``), and the instrument is used
    for one of the item's compulsory uses. The same type in another use is not compulsory; the
    enterprise may verify or calibrate it on its own cycle.
    """
    if item is None or item.regime is Regime.TYPE_APPROVAL_ONLY:
        return Regime.NOT_CONTROLLED
    if legal_use not in item.compulsory_uses:
        return Regime.NOT_CONTROLLED
    return item.regime
