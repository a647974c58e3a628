"""Compulsory determination, cycle limits, validity, status and required action (design.md §4)."""

from __future__ import annotations

import datetime as dt

import pytest

from service.catalog.rules import CatalogRule, LegalUse, Regime, effective_regime
from service.dates import PeriodRule
from service.errors import RuleViolationError
from service.instruments.rules import (
    CycleSource,
    DueSoonWindows,
    Lifecycle,
    RequiredAction,
    Status,
    ValiditySource,
    assess,
    derive,
    required_action,
    resolve_cycle,
    status_of,
)

D = dt.date
GAUGE = CatalogRule(
    code="pressure_gauge",
    regime=Regime.PERIODIC,
    compulsory_uses=(LegalUse.SAFETY_PROTECTION,),
    legal_max_cycle_months=6,
    default_cycle_months=6,
    regulation="JJG 52-2013",
)
WATER = CatalogRule(
    code="water_meter_dn25",
    regime=Regime.INITIAL_ONLY_LIMITED_LIFE,
    compulsory_uses=(LegalUse.TRADE_SETTLEMENT,),
    legal_max_cycle_months=72,
    default_cycle_months=72,
    regulation="JJG 162-2019",
)
THERMOMETER = CatalogRule(
    code="clinical_thermometer_glass",
    regime=Regime.INITIAL_ONLY_SCRAP_ON_FAILURE,
    compulsory_uses=(LegalUse.MEDICAL,),
    legal_max_cycle_months=None,
    default_cycle_months=None,
    regulation="JJG 111",
)
LOAD_CELL = CatalogRule(
    code="load_cell",
    regime=Regime.TYPE_APPROVAL_ONLY,
    compulsory_uses=(),
    legal_max_cycle_months=None,
    default_cycle_months=None,
    regulation="JJG 669-2003",
)
WINDOWS = DueSoonWindows(periodic_days=30, rotation_days=90)


@pytest.mark.parametrize(
    ("why", "item", "use", "expected"),
    [
        ("catalogued and used for its compulsory purpose", GAUGE, LegalUse.SAFETY_PROTECTION, Regime.PERIODIC),
        ("same type, other use: not compulsory (§0 fact 1)", GAUGE, LegalUse.NONE, Regime.NOT_CONTROLLED),
        ("a compulsory use, but not this item's", GAUGE, LegalUse.TRADE_SETTLEMENT, Regime.NOT_CONTROLLED),
        ("limited-life meter used for billing", WATER, LegalUse.TRADE_SETTLEMENT, Regime.INITIAL_ONLY_LIMITED_LIFE),
        ("glass thermometer in medical use", THERMOMETER, LegalUse.MEDICAL, Regime.INITIAL_ONLY_SCRAP_ON_FAILURE),
        ("type approval only carries no in-use duty", LOAD_CELL, LegalUse.TRADE_SETTLEMENT, Regime.NOT_CONTROLLED),
        ("no catalogue item", None, LegalUse.TRADE_SETTLEMENT, Regime.NOT_CONTROLLED),
    ],
)
def test_effective_regime(why: str, item: CatalogRule | None, use: LegalUse, expected: Regime) -> None:
    assert effective_regime(item, use) is expected, why


def test_cycle_defaults_to_the_catalogue_for_compulsory_instruments() -> None:
    cycle = resolve_cycle(GAUGE, Regime.PERIODIC, None)
    assert (cycle.months, cycle.source) == (6, CycleSource.CATALOG)


def test_cycle_may_be_shortened() -> None:
    cycle = resolve_cycle(GAUGE, Regime.PERIODIC, 3)
    assert (cycle.months, cycle.source) == (3, CycleSource.INSTRUMENT)


def test_cycle_above_the_legal_maximum_names_the_maximum_and_regulation() -> None:
    with pytest.raises(RuleViolationError) as caught:
        resolve_cycle(GAUGE, Regime.PERIODIC, 12)
    assert caught.value.errors[0].field == "cycle_months"
    assert "6 months" in caught.value.detail
    assert "JJG 52-2013" in caught.value.detail


def test_limited_life_may_not_exceed_its_use_life() -> None:
    with pytest.raises(RuleViolationError, match="72 months"):
        resolve_cycle(WATER, Regime.INITIAL_ONLY_LIMITED_LIFE, 96)


def test_non_compulsory_instruments_need_their_own_cycle() -> None:
    with pytest.raises(RuleViolationError, match="required"):
        resolve_cycle(GAUGE, Regime.NOT_CONTROLLED, None)
    with pytest.raises(RuleViolationError, match="required"):
        resolve_cycle(None, Regime.NOT_CONTROLLED, None)
    # ... and may choose any cycle: the legal maximum binds compulsory use only.
    assert resolve_cycle(GAUGE, Regime.NOT_CONTROLLED, 24).months == 24


def test_scrap_on_failure_instruments_have_no_cycle() -> None:
    assert resolve_cycle(THERMOMETER, Regime.INITIAL_ONLY_SCRAP_ON_FAILURE, None).months is None
    with pytest.raises(RuleViolationError, match="no verification cycle"):
        resolve_cycle(THERMOMETER, Regime.INITIAL_ONLY_SCRAP_ON_FAILURE, 12)


def _status(valid_until: dt.date | None, today: dt.date, **kw: object) -> Status:
    args: dict[str, object] = {
        "lifecycle": Lifecycle.IN_SERVICE,
        "regime": Regime.PERIODIC,
        "last_verified_on": D(2026, 1, 15),
        "valid_until": valid_until,
        "today": today,
        "windows": WINDOWS,
    } | kw
    return status_of(**args)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("why", "valid_until", "today", "extra", "expected"),
    [
        ("R3 last valid day is still valid (and due soon)", D(2026, 7, 14), D(2026, 7, 14), {}, Status.DUE_SOON),
        ("R3 overdue from the day after", D(2026, 7, 14), D(2026, 7, 15), {}, Status.OVERDUE),
        ("R5 due soon from valid_until − 30", D(2026, 7, 14), D(2026, 6, 14), {}, Status.DUE_SOON),
        ("R5 valid the day before the window", D(2026, 7, 14), D(2026, 6, 13), {}, Status.VALID),
        (
            "R5 rotation window is 90 days",
            D(2026, 7, 14),
            D(2026, 4, 15),
            {"regime": Regime.INITIAL_ONLY_LIMITED_LIFE},
            Status.DUE_SOON,
        ),
        (
            "R5 rotation: valid before 90 days",
            D(2026, 7, 14),
            D(2026, 4, 14),
            {"regime": Regime.INITIAL_ONLY_LIMITED_LIFE},
            Status.VALID,
        ),
        ("no verification on record", None, D(2026, 7, 1), {"last_verified_on": None}, Status.UNVERIFIED),
        (
            "scrap-on-failure with its initial verification never expires",
            None,
            D(2040, 1, 1),
            {"regime": Regime.INITIAL_ONLY_SCRAP_ON_FAILURE},
            Status.VALID,
        ),
        (
            "scrap-on-failure never verified",
            None,
            D(2026, 7, 1),
            {"regime": Regime.INITIAL_ONLY_SCRAP_ON_FAILURE, "last_verified_on": None},
            Status.UNVERIFIED,
        ),
        (
            "sealed keeps valid_until but reports sealed",
            D(2027, 1, 1),
            D(2026, 7, 1),
            {"lifecycle": Lifecycle.SEALED},
            Status.SEALED,
        ),
        (
            "failed, even within the old validity",
            D(2027, 1, 1),
            D(2026, 7, 1),
            {"lifecycle": Lifecycle.FAILED},
            Status.FAILED,
        ),
        (
            "pending verification",
            None,
            D(2026, 7, 1),
            {"lifecycle": Lifecycle.PENDING_VERIFICATION},
            Status.PENDING_VERIFICATION,
        ),
        ("scrapped", D(2020, 1, 1), D(2026, 7, 1), {"lifecycle": Lifecycle.SCRAPPED}, Status.SCRAPPED),
        ("replaced", D(2020, 1, 1), D(2026, 7, 1), {"lifecycle": Lifecycle.REPLACED}, Status.REPLACED),
    ],
)
def test_status_of(
    why: str, valid_until: dt.date | None, today: dt.date, extra: dict[str, object], expected: Status
) -> None:
    assert _status(valid_until, today, **extra) is expected, why


@pytest.mark.parametrize(
    ("status", "regime", "expected"),
    [
        (Status.VALID, Regime.PERIODIC, RequiredAction.NONE),
        (Status.DUE_SOON, Regime.PERIODIC, RequiredAction.VERIFY),
        (Status.OVERDUE, Regime.PERIODIC, RequiredAction.VERIFY),
        (Status.DUE_SOON, Regime.INITIAL_ONLY_LIMITED_LIFE, RequiredAction.REPLACE),
        (Status.OVERDUE, Regime.INITIAL_ONLY_LIMITED_LIFE, RequiredAction.REPLACE),
        (Status.FAILED, Regime.PERIODIC, RequiredAction.REPAIR_OR_SCRAP),
        (Status.FAILED, Regime.INITIAL_ONLY_SCRAP_ON_FAILURE, RequiredAction.SCRAP),
        (Status.FAILED, Regime.INITIAL_ONLY_LIMITED_LIFE, RequiredAction.REPLACE),
        (Status.UNVERIFIED, Regime.PERIODIC, RequiredAction.VERIFY),
        (Status.PENDING_VERIFICATION, Regime.NOT_CONTROLLED, RequiredAction.VERIFY),
        (Status.SEALED, Regime.PERIODIC, RequiredAction.NONE),
        (Status.SCRAPPED, Regime.PERIODIC, RequiredAction.NONE),
        (Status.REPLACED, Regime.INITIAL_ONLY_LIMITED_LIFE, RequiredAction.NONE),
    ],
)
def test_required_action(status: Status, regime: Regime, expected: RequiredAction) -> None:
    assert required_action(status, regime) is expected


def _derive(**kw: object) -> object:
    args: dict[str, object] = {
        "item": GAUGE,
        "legal_use": LegalUse.SAFETY_PROTECTION,
        "cycle_months": None,
        "last_verified_on": D(2026, 1, 15),
        "printed_valid_until": None,
        "rule": PeriodRule.INCLUSIVE_MINUS_ONE,
        "today": D(2026, 6, 15),
    } | kw
    return derive(**args)  # type: ignore[arg-type]


def test_derive_computes_valid_until_by_the_enterprise_rule() -> None:
    assert _derive().valid_until == D(2026, 7, 14)  # type: ignore[attr-defined]
    assert _derive(rule=PeriodRule.CIVIL_CODE).valid_until == D(2026, 7, 15)  # type: ignore[attr-defined]


def test_derive_trusts_a_printed_valid_until() -> None:
    derived = _derive(printed_valid_until=D(2026, 7, 10))
    assert derived.valid_until == D(2026, 7, 10)  # type: ignore[attr-defined]
    assert derived.validity_source is ValiditySource.PRINTED  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("why", "kw", "field"),
    [
        ("verification in the future", {"last_verified_on": D(2026, 6, 16)}, "last_verified_on"),
        ("printed date before the verification", {"printed_valid_until": D(2026, 1, 14)}, "valid_until"),
        (
            "printed date without a verification",
            {"last_verified_on": None, "printed_valid_until": D(2026, 7, 1)},
            "valid_until",
        ),
        (
            "scrap-on-failure has no valid-until",
            {"item": THERMOMETER, "legal_use": LegalUse.MEDICAL, "printed_valid_until": D(2027, 1, 1)},
            "valid_until",
        ),
        ("cycle above the legal maximum", {"cycle_months": 7}, "cycle_months"),
    ],
)
def test_derive_refuses(why: str, kw: dict[str, object], field: str) -> None:
    with pytest.raises(RuleViolationError) as caught:
        _derive(**kw)
    assert caught.value.errors[0].field == field, why


def test_assess_the_pressure_gauge_of_domain_md() -> None:
    """domain.md §5: verified 2026-01-15, 6 months: valid until 2026-07-14, overdue from 2026-07-15."""
    common = {
        "item": GAUGE,
        "regime": Regime.PERIODIC,
        "lifecycle": Lifecycle.IN_SERVICE,
        "own_cycle_months": None,
        "last_verified_on": D(2026, 1, 15),
        "valid_until": D(2026, 7, 14),
        "validity_source": ValiditySource.COMPUTED,
        "rule": PeriodRule.INCLUSIVE_MINUS_ONE,
        "windows": WINDOWS,
    }
    on_last_day = assess(today=D(2026, 7, 14), **common)  # type: ignore[arg-type]
    assert on_last_day.status is Status.DUE_SOON
    assert on_last_day.days_until_due == 0
    assert on_last_day.next_due == D(2026, 7, 15)
    assert on_last_day.compulsory
    assert on_last_day.traceability == "verification"
    assert on_last_day.basis.text == "valid until = 2026-01-15 + 6 months − 1 day"
    assert on_last_day.basis.regulation == "JJG 52-2013"
    overdue = assess(today=D(2026, 7, 15), **common)  # type: ignore[arg-type]
    assert (overdue.status, overdue.days_until_due, overdue.required_action) == (
        Status.OVERDUE,
        -1,
        RequiredAction.VERIFY,
    )
    valid = assess(today=D(2026, 1, 15), **common)  # type: ignore[arg-type]
    assert (valid.status, valid.days_until_due) == (Status.VALID, 180)
