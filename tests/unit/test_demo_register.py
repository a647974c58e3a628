"""The generated register: deterministic for a seed, every status in its share, dates the rules give."""

from __future__ import annotations

import collections
import datetime as dt
import uuid
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest

from service import dates
from service.catalog.rules import CatalogRule, LegalUse, Regime
from service.demo_register import SHARES, enterprise_plan, plan_register
from service.demo_register.generate import COLUMNS, EnterprisePlan, wheel
from service.demo_register.trades import TRADES
from service.enterprises.schemas import EnterpriseCreate
from service.instruments.rules import DueSoonWindows, Lifecycle, Status, derive, status_of

TODAY = dt.date(2026, 6, 15)
NOW = dt.datetime(2026, 6, 15, 4, tzinfo=dt.UTC)
ENTERPRISE = uuid.UUID("00000000-0000-4000-8000-000000000001")


def _rule(code: str, regime: Regime, use: LegalUse, cycle: int | None) -> CatalogRule:
    return CatalogRule(
        code=code,
        regime=regime,
        compulsory_uses=(use,),
        legal_max_cycle_months=cycle,
        default_cycle_months=cycle,
        regulation="JJG",
    )


# The seed catalogue's rules for the codes the trades use (schema/0002_catalog.sql).
RULES = {
    r.code: r
    for r in (
        _rule("pressure_gauge", Regime.PERIODIC, LegalUse.SAFETY_PROTECTION, 6),
        _rule("fuel_dispenser", Regime.PERIODIC, LegalUse.TRADE_SETTLEMENT, 6),
        _rule("price_scale", Regime.PERIODIC, LegalUse.TRADE_SETTLEMENT, 12),
        _rule("electronic_balance", Regime.PERIODIC, LegalUse.TRADE_SETTLEMENT, 12),
        _rule("weights", Regime.PERIODIC, LegalUse.TRADE_SETTLEMENT, 12),
        _rule("taximeter", Regime.PERIODIC, LegalUse.TRADE_SETTLEMENT, 12),
        _rule("sphygmomanometer", Regime.PERIODIC, LegalUse.MEDICAL, 6),
        _rule("bp_monitor_automated", Regime.PERIODIC, LegalUse.MEDICAL, 12),
        _rule("clinical_thermometer_glass", Regime.INITIAL_ONLY_SCRAP_ON_FAILURE, LegalUse.MEDICAL, None),
        _rule("water_meter_dn25", Regime.INITIAL_ONLY_LIMITED_LIFE, LegalUse.TRADE_SETTLEMENT, 72),
        _rule("water_meter_dn50", Regime.INITIAL_ONLY_LIMITED_LIFE, LegalUse.TRADE_SETTLEMENT, 48),
        _rule("water_meter_large", Regime.PERIODIC, LegalUse.TRADE_SETTLEMENT, 24),
        _rule("gas_meter_household", Regime.INITIAL_ONLY_LIMITED_LIFE, LegalUse.TRADE_SETTLEMENT, 120),
        _rule("electricity_meter_household", Regime.INITIAL_ONLY_LIMITED_LIFE, LegalUse.TRADE_SETTLEMENT, 96),
        _rule("breath_alcohol_analyser", Regime.PERIODIC, LegalUse.SAFETY_PROTECTION, 12),
        _rule("sound_level_meter", Regime.PERIODIC, LegalUse.ENVIRONMENTAL_MONITORING, 12),
        _rule("combustible_gas_detector", Regime.PERIODIC, LegalUse.SAFETY_PROTECTION, 12),
        _rule("co_detector", Regime.PERIODIC, LegalUse.SAFETY_PROTECTION, 12),
    )
}


def _register(instruments: int, enterprises: int, seed: int) -> Iterator[tuple[EnterprisePlan, list[dict[str, Any]]]]:
    for spec in plan_register(instruments, enterprises, seed):
        plan = enterprise_plan(spec, RULES, TODAY)
        yield plan, [dict(zip(COLUMNS, row, strict=True)) for row in plan.rows(ENTERPRISE, NOW)]


def test_every_catalogue_code_the_trades_use_is_in_the_seed_catalogue() -> None:
    used = {k.catalog_code for t in TRADES for k in t.kinds if k.catalog_code}
    assert used <= set(RULES)


def test_the_same_seed_gives_the_same_register_and_another_seed_another() -> None:
    first = [(p.name, p.credit_code, p.period_rule, rows) for p, rows in _register(600, 6, seed=7)]
    again = [(p.name, p.credit_code, p.period_rule, rows) for p, rows in _register(600, 6, seed=7)]
    other = [(p.name, p.credit_code, p.period_rule, rows) for p, rows in _register(600, 6, seed=8)]
    assert first == again
    assert first != other
    assert {c for _, c, _, _ in first}.isdisjoint({c for _, c, _, _ in other})


def test_an_enterprise_is_the_same_whichever_order_it_is_generated_in() -> None:
    specs = plan_register(500, 5, seed=3)
    forward = [list(enterprise_plan(s, RULES, TODAY).rows(ENTERPRISE, NOW)) for s in specs]
    backward = [list(enterprise_plan(s, RULES, TODAY).rows(ENTERPRISE, NOW)) for s in reversed(specs)]
    assert forward == backward[::-1]


def test_sizes_add_up_every_enterprise_keeps_one_and_trades_and_regions_vary() -> None:
    specs = plan_register(10_000, 100, seed=1)
    assert sum(s.size for s in specs) == 10_000
    assert min(s.size for s in specs) >= 1
    assert [s.offset for s in specs] == [sum(x.size for x in specs[:i]) for i in range(len(specs))]
    assert {s.trade.code for s in specs} == {t.code for t in TRADES}
    assert len({s.region.code[:2] for s in specs}) >= 5
    assert max(s.size for s in specs) > 3 * min(s.size for s in specs)
    assert len({s.key for s in specs}) == 100


def test_sizes_that_cannot_work_are_refused() -> None:
    with pytest.raises(ValueError, match="at least one instrument per enterprise"):
        plan_register(5, 6, seed=1)
    with pytest.raises(ValueError, match="at least one enterprise"):
        plan_register(5, 0, seed=1)


def test_the_wheel_holds_each_status_in_its_share() -> None:
    assert collections.Counter(wheel()) == dict(SHARES)
    assert sum(share for _, share in SHARES) == 100


@pytest.mark.parametrize(("instruments", "enterprises"), [(100, 1), (1000, 10), (3000, 7)])
def test_statuses_come_in_their_fixed_shares(instruments: int, enterprises: int) -> None:
    counts: collections.Counter[Status] = collections.Counter()
    for plan, rows in _register(instruments, enterprises, seed=11):
        counts.update(plan.statuses)
        assert len(rows) == plan.spec.size
    assert set(counts) == set(Status)
    for status, share in SHARES:
        assert counts[status] == instruments * share // 100, status


def test_a_register_of_one_instrument_is_valid_rather_than_replaced_by_nothing() -> None:
    statuses = [p.statuses for p, _ in _register(100, 100, seed=2)]
    assert all(s == [Status.VALID] or Status.REPLACED not in s for s in statuses)


def test_every_row_has_the_status_meant_by_the_registration_rules() -> None:
    for plan, rows in _register(2000, 12, seed=5):
        windows = DueSoonWindows.from_reminders(plan.reminder_days, plan.rotation_reminder_days)
        for row, meant in zip(rows, plan.statuses, strict=True):
            rule = RULES.get(row["catalog_code"] or "")
            derived = derive(
                item=rule,
                legal_use=LegalUse(row["legal_use"]),
                cycle_months=row["cycle_months"],
                last_verified_on=row["last_verified_on"],
                printed_valid_until=None,
                rule=plan.period_rule,
                today=TODAY,
            )
            assert (row["regime"], row["valid_until"]) == (derived.regime.value, derived.valid_until)
            got = status_of(
                lifecycle=Lifecycle(row["lifecycle"]),
                regime=derived.regime,
                last_verified_on=row["last_verified_on"],
                valid_until=row["valid_until"],
                today=TODAY,
                windows=windows,
            )
            assert got is meant


def test_dates_are_plausible_and_spread_over_years() -> None:
    verified = [r["last_verified_on"] for _, rows in _register(3000, 30, seed=9) for r in rows]
    known = [d for d in verified if d is not None]
    assert all(d <= TODAY for d in known)
    assert min(known) >= TODAY - dt.timedelta(days=12 * 366)
    assert len({d.year for d in known}) >= 6
    assert len(known) / len(verified) > 0.9


def test_the_register_mixes_regimes_uses_and_period_rules() -> None:
    rows = [r for _, rows in _register(5000, 50, seed=4) for r in rows]
    regimes = collections.Counter(r["regime"] for r in rows)
    assert set(regimes) == {r.value for r in Regime if r is not Regime.TYPE_APPROVAL_ONLY}
    assert {r["legal_use"] for r in rows} == {u.value for u in LegalUse}
    assert any(r["catalog_code"] is None for r in rows)
    rules = {p.period_rule for p, _ in _register(5000, 50, seed=4)}
    assert rules == set(dates.PeriodRule)


def test_identities_are_unique_per_enterprise_and_replacements_name_their_successor() -> None:
    for _plan, rows in _register(3000, 5, seed=6):
        assert len({r["management_no"] for r in rows}) == len(rows)
        assert len({(r["manufacturer"], r["model"], r["serial_no"]) for r in rows}) == len(rows)
        assert len({r["id"] for r in rows}) == len(rows)
        by_id = {r["id"]: r for r in rows}
        replaced = [r for r in rows if r["lifecycle"] == "replaced"]
        assert replaced
        for old in replaced:
            new = by_id[old["replaced_by"]]
            assert new["replaces"] == old["id"]
            assert new["lifecycle"] == "in_service"
            assert new["catalog_code"] == old["catalog_code"]
            assert old["last_verified_on"] is None or old["last_verified_on"] <= new["last_verified_on"]
        assert sum(r["replaces"] is not None for r in rows) == len(replaced)


def test_every_enterprise_has_an_address_in_its_region_and_a_contact_the_api_accepts() -> None:
    plans = [p for p, _ in _register(300, 30, seed=12)]
    for plan in plans:
        region = plan.spec.region
        assert plan.address.startswith(region.district)
        assert plan.address.endswith("号")
        assert plan.contact_phone.startswith(f"{region.area_code}-")
        # As the API would take them (lengths, the phone's pattern), so the filing is complete.
        body = {"name": plan.name, "credit_code": plan.credit_code, "region_code": region.code}
        contact = {"address": plan.address, "contact_name": plan.contact_name, "contact_phone": plan.contact_phone}
        created = msgspec.convert(body | contact, EnterpriseCreate)
        assert (created.address, created.contact_name, created.contact_phone) == tuple(contact.values())
    assert len({p.address for p in plans}) == len(plans)
    assert any("转" in p.contact_phone for p in plans)
    again = [p for p, _ in _register(300, 30, seed=12)]
    assert [(p.address, p.contact_name, p.contact_phone) for p in again] == [
        (p.address, p.contact_name, p.contact_phone) for p in plans
    ]
