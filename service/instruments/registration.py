"""Registering an instrument: input clean-up, the registration rules, the row and its first event.

Shared by ``POST …/instruments`` and ``/replace`` (which registers the successor in the same
transaction).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec

from service import dates
from service.auth import Principal
from service.catalog.queries import select_catalog_rule
from service.catalog.rules import CatalogRule, Regime, effective_regime
from service.db import Connection
from service.enterprises.schemas import Enterprise
from service.errors import FieldError, InvalidInputError, RuleViolationError
from service.history.queries import record_event
from service.history.schemas import EventKind
from service.instruments.queries import InstrumentRow, insert_instrument
from service.instruments.rules import Lifecycle, ValiditySource, derive, resolve_cycle
from service.instruments.schemas import InstrumentCreate
from service.types import validate_date

__all__ = ("RULE_INPUTS", "catalog_rule", "clean", "rederive", "refuse_certificate_facts", "register")

_TEXT_FIELDS = (
    "name",
    "model",
    "serial_no",
    "manufacturer",
    "management_no",
    "measuring_range",
    "accuracy_class",
    "mpe",
    "location",
    "department",
    "catalog_code",
)
_REQUIRED_TEXT = ("name", "serial_no")


def clean(values: dict[str, Any]) -> dict[str, Any]:
    """Trim text fields (a trailing space must not make a second serial number); refuse blanks."""
    problems = []
    for name in _TEXT_FIELDS:
        value = values.get(name)
        if isinstance(value, str):
            value = value.strip()
            if not value and name in _REQUIRED_TEXT:
                problems.append(FieldError(field=name, message="must not be blank"))
            values[name] = value if value or name in ("model", "manufacturer") else None
    for name in ("last_verified_on", "valid_until"):
        validate_date(name, values.get(name))
    if problems:
        raise InvalidInputError.for_fields(problems)
    return values


async def catalog_rule(db: Connection, code: str | None) -> CatalogRule | None:
    """The catalogue rule of ``code`` (None for uncatalogued instruments).

    Raises:
        RuleViolationError: naming ``catalog_code`` when it is not in the catalogue.
    """
    if code is None:
        return None
    rule = await select_catalog_rule(db, code)
    if rule is None:
        raise RuleViolationError.for_field("catalog_code", f"{code!r} is not in the catalogue (GET /v1/catalog)")
    return rule


async def register(
    db: Connection,
    enterprise: Enterprise,
    data: InstrumentCreate,
    *,
    actor: Principal,
    now: dt.datetime,
    extra: dict[str, Any] | None = None,
) -> InstrumentRow:
    """Check ``data`` against the registration rules, insert it and record the registration.

    ``extra`` sets further columns (such as ``replaces``). The caller holds the enterprise locked
    for share (its period rule decides the dates).

    Raises:
        InvalidInputError, RuleViolationError: naming the field at fault.
        DuplicateError: the serial or management number is taken.
    """
    values = clean(msgspec.structs.asdict(data))
    if values["lifecycle"] is Lifecycle.REPLACED:
        raise RuleViolationError.for_field(
            "lifecycle", "an instrument becomes replaced by the replace operation, not at registration"
        )
    derived = derive(
        item=await catalog_rule(db, values["catalog_code"]),
        legal_use=values["legal_use"],
        cycle_months=values["cycle_months"],
        last_verified_on=values["last_verified_on"],
        printed_valid_until=values["valid_until"],
        rule=enterprise.period_rule,
        today=dates.local_today(now, enterprise.timezone),
    )
    values.update(msgspec.structs.asdict(derived))
    values.update(extra or {})
    row = await insert_instrument(db, enterprise.id, values, now)
    await record_event(
        db,
        instrument_id=row.id,
        kind=EventKind.REGISTERED,
        actor=actor,
        now=now,
        to_lifecycle=row.lifecycle,
        related_instrument_id=row.replaces,
    )
    return row


def refuse_certificate_facts(current: InstrumentRow, changes: dict[str, Any]) -> None:
    """Dates set by a recorded result are evidence: they change by a new result or a correction."""
    if current.validity_source is not ValiditySource.CERTIFICATE:
        return
    for name in ("last_verified_on", "valid_until"):
        if name in changes and changes[name] != getattr(current, name):
            raise RuleViolationError.for_field(
                name,
                f"is set by certificate {current.current_certificate_number}: record a new result or a "
                "correction (POST /v1/instruments/{id}/certificates) instead",
            )


RULE_INPUTS = ("catalog_code", "legal_use", "cycle_months", "last_verified_on", "valid_until")


async def rederive(
    db: Connection,
    current: InstrumentRow,
    changes: dict[str, Any],
    item: CatalogRule | None,
    enterprise: Enterprise,
    today: dt.date,
) -> dict[str, Any]:
    """Re-apply the registration rules when a fact they read changes; {} when none did.

    ``item`` is the catalogue rule of the instrument's catalogue code after ``changes``.
    """
    if not any(k in changes for k in RULE_INPUTS):
        return {}
    merged = {k: changes.get(k, getattr(current, k)) for k in RULE_INPUTS}
    if current.validity_source is ValiditySource.CERTIFICATE:
        # The governing certificate's dates stand; only the regime and the cycle are re-checked,
        # unless the instrument becomes compulsory on a calibration, which does not satisfy
        # compulsory verification ([S-360TABLE]): then it has no validity until it is verified.
        regime = effective_regime(item, merged["legal_use"])
        resolve_cycle(item, regime, merged["cycle_months"])
        governing = "SELECT kind FROM certificates WHERE id = $1"
        if (
            regime is not Regime.NOT_CONTROLLED
            and await db.fetchval(governing, current.current_certificate_id) == "calibration_certificate"
        ):
            return {
                "regime": regime,
                "last_verified_on": None,
                "valid_until": None,
                "validity_source": ValiditySource.COMPUTED,
                "current_certificate_id": None,
            }
        return {"regime": regime}
    if "valid_until" in changes:
        printed = changes["valid_until"]
    elif "last_verified_on" in changes or current.validity_source is ValiditySource.COMPUTED:
        # A printed date belongs to the certificate of the old verification date.
        printed = None
    elif effective_regime(item, merged["legal_use"]) is Regime.INITIAL_ONLY_SCRAP_ON_FAILURE:
        printed = None  # the instrument no longer expires: the old date does not apply
    else:
        printed = current.valid_until
    derived = derive(
        item=item,
        legal_use=merged["legal_use"],
        cycle_months=merged["cycle_months"],
        last_verified_on=merged["last_verified_on"],
        printed_valid_until=printed,
        rule=enterprise.period_rule,
        today=today,
    )
    return msgspec.structs.asdict(derived)
