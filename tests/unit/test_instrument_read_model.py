"""The read model of a page: each instrument exactly as assess gives it for its own row and its own
enterprise, whatever rows or enterprises were read before (to_instruments remembers answers)."""

from __future__ import annotations

import datetime as dt
import itertools
import uuid

import msgspec
import pytest

from service.catalog.rules import CatalogRule, LegalUse, Regime
from service.dates import PeriodRule
from service.enterprises.schemas import Enterprise
from service.instruments import queries
from service.instruments.queries import InstrumentRow, to_instrument, to_instruments
from service.instruments.rules import DueSoonWindows, Lifecycle, ValiditySource, assess

D = dt.date
NOW = dt.datetime(2026, 6, 15, 4, 0, tzinfo=dt.UTC)
GAUGE = CatalogRule(
    code="pressure_gauge",
    regime=Regime.PERIODIC,
    compulsory_uses=(LegalUse.SAFETY_PROTECTION,),
    legal_max_cycle_months=6,
    default_cycle_months=6,
    regulation="JJG 52-2013",
)


def _enterprise(rule: PeriodRule, reminder_days: list[int]) -> Enterprise:
    return Enterprise(
        id=uuid.uuid4(),
        name="e",
        credit_code="91350100M000100Y43",
        region_code="310115",
        timezone="Asia/Shanghai",
        period_rule=rule,
        reminder_days=reminder_days,
        rotation_reminder_days=[90, 30],
        overdue_repeat_days=7,
        escalate_after_days=30,
        notify_emails=[],
        digest=False,
        address=None,
        contact_name=None,
        contact_phone=None,
        version=1,
        created_at=NOW,
        updated_at=NOW,
    )


def _row(n: int, **facts: object) -> InstrumentRow:
    fields: dict[str, object] = {
        "id": uuid.UUID(int=n),
        "enterprise_id": uuid.UUID(int=0),
        "catalog_code": "pressure_gauge",
        "name": f"gauge {n}",
        "model": "Y-100",
        "serial_no": f"S{n}",
        "manufacturer": "",
        "management_no": None,
        "measuring_range": None,
        "accuracy_class": None,
        "mpe": None,
        "location": None,
        "department": None,
        "legal_use": LegalUse.SAFETY_PROTECTION,
        "regime": Regime.PERIODIC,
        "cycle_months": None,
        "lifecycle": Lifecycle.IN_SERVICE,
        "last_verified_on": D(2026, 1, 15),
        "valid_until": D(2026, 7, 14),
        "validity_source": ValiditySource.COMPUTED,
        "current_certificate_id": None,
        "current_certificate_number": None,
        "replaces": None,
        "replaced_by": None,
        "version": 1,
        "created_at": NOW,
        "updated_at": NOW,
        "rule": GAUGE,
    }
    return InstrumentRow(**(fields | facts))  # type: ignore[arg-type]


def _expected(row: InstrumentRow, enterprise: Enterprise, as_of: dt.date) -> dict[str, object]:
    """The instrument's computed fields as assess gives them, from nothing remembered."""
    found = assess(
        item=row.rule,
        regime=row.regime,
        lifecycle=row.lifecycle,
        own_cycle_months=row.cycle_months,
        last_verified_on=row.last_verified_on,
        valid_until=row.valid_until,
        validity_source=row.validity_source,
        rule=enterprise.period_rule,
        windows=DueSoonWindows.from_reminders(enterprise.reminder_days, enterprise.rotation_reminder_days),
        today=as_of,
        certificate_number=row.current_certificate_number,
    )
    return msgspec.to_builtins(found)  # type: ignore[no-any-return]


ROWS = [
    _row(1),
    _row(2),  # the same facts as the first
    _row(3, lifecycle=Lifecycle.SEALED),
    _row(4, valid_until=D(2026, 6, 1)),
    _row(5, validity_source=ValiditySource.CERTIFICATE, current_certificate_number="C-1"),
    _row(6, validity_source=ValiditySource.CERTIFICATE, current_certificate_number="C-2"),
    _row(7, cycle_months=3, valid_until=D(2026, 4, 14)),
    _row(8, last_verified_on=None, valid_until=None),
]
ENTERPRISES = [
    _enterprise(PeriodRule.INCLUSIVE_MINUS_ONE, [30, 7]),
    _enterprise(PeriodRule.CIVIL_CODE, [30, 7]),
    _enterprise(PeriodRule.INCLUSIVE_MINUS_ONE, [60]),
]
DAYS = [D(2026, 6, 1), D(2026, 6, 15), D(2026, 7, 15)]


@pytest.fixture(autouse=True)
def _nothing_remembered() -> None:
    queries._ASSESSED.clear()


def test_each_instrument_is_what_assess_gives_its_own_row_whatever_was_read_before() -> None:
    for _ in range(2):  # from nothing remembered, then with every answer remembered
        for enterprise, as_of in itertools.product(ENTERPRISES, DAYS):
            items = to_instruments(ROWS, enterprise, as_of)
            assert [i.id for i in items] == [r.id for r in ROWS]
            for row, item in zip(ROWS, items, strict=True):
                built = msgspec.to_builtins(item)
                expected = _expected(row, enterprise, as_of)
                assert {k: built[k] for k in expected} == expected, (row.id, enterprise.period_rule, as_of)
                assert (item.as_of, item.name, item.version) == (as_of, row.name, row.version)
                assert msgspec.json.encode(to_instrument(row, enterprise, as_of)) == msgspec.json.encode(item)


def test_what_is_remembered_stays_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(queries, "_ASSESSED_MAX", 5)
    enterprise = ENTERPRISES[0]
    for day in range(40):
        to_instruments(ROWS, enterprise, D(2026, 6, 1) + dt.timedelta(days=day))
        assert len(queries._ASSESSED) <= 5
