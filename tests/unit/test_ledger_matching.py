"""Which identities an import looks up in the register (service/ledger/importing.py)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from service.catalog.rules import LegalUse, Regime
from service.instruments.queries import InstrumentRow
from service.instruments.rules import Lifecycle, ValiditySource
from service.ledger.importing import IDENTITY, PlannedRow, identities_to_look_up, identity

AT = dt.datetime(2026, 6, 15, tzinfo=dt.UTC)


def instrument(number: str | None, maker: str, model: str, serial: str) -> InstrumentRow:
    return InstrumentRow(
        id=uuid.uuid4(), enterprise_id=uuid.uuid4(), catalog_code=None, name="压力表", model=model,
        serial_no=serial, manufacturer=maker, management_no=number, measuring_range=None,
        accuracy_class=None, mpe=None, location=None, department=None, legal_use=LegalUse.NONE,
        regime=Regime.NOT_CONTROLLED, cycle_months=12, lifecycle=Lifecycle.IN_SERVICE,
        last_verified_on=None, valid_until=None, validity_source=ValiditySource.COMPUTED,
        current_certificate_id=None, current_certificate_number=None, replaces=None, replaced_by=None,
        version=1, created_at=AT, updated_at=AT,
    )  # fmt: skip


def row(n: int, **given: Any) -> PlannedRow:
    return PlannedRow(row=n, given=given)


def test_identity_takes_the_parts_the_file_has_and_blank_for_missing_values() -> None:
    given = {"manufacturer": "红旗", "model": None, "serial_no": "S1"}
    assert identity(given) == ("红旗", "", "S1")
    assert identity(given, ("model", "serial_no")) == ("", "S1")


def test_rows_found_by_number_with_their_own_identity_need_no_lookup() -> None:
    registered = [instrument("PG-1", "红旗", "Y-100", "S1"), instrument("PG-2", "红旗", "Y-100", "S2")]
    rows = [
        row(2, management_no="PG-1", manufacturer="红旗", model="Y-100", serial_no="S1"),  # itself
        row(3, management_no="PG-2", manufacturer="红旗", model="Y-100", serial_no="S9"),  # a new serial
        row(4, management_no="PG-3", manufacturer="红旗", model="Y-100", serial_no="S3"),  # an unknown number
        row(5, management_no=None, manufacturer="红旗", model="Y-100", serial_no="S4"),  # no number
        row(6, management_no=None, manufacturer="红旗", model="Y-100", serial_no=None),  # no serial: refused later
    ]
    assert identities_to_look_up(rows, registered, IDENTITY) == [
        ("红旗", "Y-100", "S3"),
        ("红旗", "Y-100", "S4"),
        ("红旗", "Y-100", "S9"),
    ]


def test_without_a_manufacturer_column_the_identity_is_model_and_serial() -> None:
    registered = [instrument("PG-1", "红旗", "Y-100", "S1")]
    rows = [row(2, management_no="PG-1", model="Y-100", serial_no="S1"), row(3, model="Y-100", serial_no="S2")]
    assert identities_to_look_up(rows, registered, ("model", "serial_no")) == [("Y-100", "S2")]
