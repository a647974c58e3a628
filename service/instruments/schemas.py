"""Instruments in and out of the API (design.md §5)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated

import msgspec

from service.catalog.rules import LegalUse, Regime
from service.instruments.rules import Basis, Lifecycle, RequiredAction, Status, Traceability
from service.types import CycleMonths, LongText, Name, ShortText, Text

__all__ = ("Instrument", "InstrumentCreate", "InstrumentUpdate")

SerialNo = Annotated[str, Text(100, min_length=1, description="出厂编号 (serial number).")]
ManagementNo = Annotated[str, Text(100, min_length=1, description="管理编号: unique within the enterprise.")]
CatalogCode = Annotated[str, Text(64, description="Code of a catalogue item (GET /v1/catalog).")]
Manufacturer = Annotated[str, Text(200)]


class InstrumentCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """An instrument to register.

    ``last_verified_on`` is the state before metreg (not in the future); ``valid_until``, when given,
    is the date printed on that certificate and is trusted as written. ``cycle_months`` defaults to
    the catalogue's for compulsory instruments, may shorten it but never exceed the legal maximum,
    and is required for everything else (calibrated on the enterprise's own cycle).
    """

    catalog_code: CatalogCode | None = None
    name: Name
    model: ShortText = ""
    serial_no: SerialNo
    manufacturer: Manufacturer = ""
    management_no: ManagementNo | None = None
    measuring_range: LongText | None = None
    accuracy_class: ShortText | None = None
    mpe: LongText | None = None
    location: LongText | None = None
    department: LongText | None = None
    legal_use: LegalUse = LegalUse.NONE
    cycle_months: CycleMonths | None = None
    lifecycle: Lifecycle = Lifecycle.IN_SERVICE
    last_verified_on: dt.date | None = None
    valid_until: dt.date | None = None


_U = msgspec.UnsetType


class InstrumentUpdate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Changes to an instrument; absent fields stay, ``null`` clears a nullable one.

    ``version`` (or an ``If-Match`` header) is the version last read: a stale one is refused with
    409. The lifecycle changes through its own operations, not here.
    """

    version: int | _U = msgspec.UNSET
    catalog_code: CatalogCode | _U | None = msgspec.UNSET
    name: Name | _U = msgspec.UNSET
    model: ShortText | _U = msgspec.UNSET
    serial_no: SerialNo | _U = msgspec.UNSET
    manufacturer: Manufacturer | _U = msgspec.UNSET
    management_no: ManagementNo | _U | None = msgspec.UNSET
    measuring_range: LongText | _U | None = msgspec.UNSET
    accuracy_class: ShortText | _U | None = msgspec.UNSET
    mpe: LongText | _U | None = msgspec.UNSET
    location: LongText | _U | None = msgspec.UNSET
    department: LongText | _U | None = msgspec.UNSET
    legal_use: LegalUse | _U = msgspec.UNSET
    cycle_months: CycleMonths | _U | None = msgspec.UNSET
    last_verified_on: dt.date | _U | None = msgspec.UNSET
    valid_until: dt.date | _U | None = msgspec.UNSET


class Instrument(msgspec.Struct, frozen=True, gc=False):
    """An instrument with its legal status computed for ``as_of`` (the enterprise's local date).

    Not keyword-only: ``to_instrument`` builds it by position, so its field order is part of that code.
    Not tracked by the garbage collector, as ``InstrumentRow`` (a page makes hundreds; none is in a cycle).

    ``days_until_due`` is ``valid_until`` − ``as_of``: 0 on the last valid day, negative when overdue.
    ``basis`` says how ``valid_until`` was reached; ``status_reason`` says why the status is what it is.
    """

    id: uuid.UUID
    enterprise_id: uuid.UUID
    catalog_code: str | None
    name: str
    model: str
    serial_no: str
    manufacturer: str
    management_no: str | None
    measuring_range: str | None
    accuracy_class: str | None
    mpe: str | None
    location: str | None
    department: str | None
    legal_use: LegalUse
    compulsory: bool
    regime: Regime
    traceability: Traceability
    cycle_months: int | None
    lifecycle: Lifecycle
    last_verified_on: dt.date | None
    valid_until: dt.date | None
    next_due: dt.date | None
    status: Status
    status_reason: str
    days_until_due: int | None
    required_action: RequiredAction
    basis: Basis
    current_certificate_id: uuid.UUID | None
    """The document that governs the status: the passing certificate, or the notice that failed it."""
    current_certificate_number: str | None
    replaces: uuid.UUID | None
    """The instrument this one replaced (``/replace``)."""
    replaced_by: uuid.UUID | None
    as_of: dt.date
    version: int
    created_at: dt.datetime
    updated_at: dt.datetime
