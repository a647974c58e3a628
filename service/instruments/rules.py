"""What an instrument's record means today: cycle, validity, status and the action it needs.

Pure functions (no I/O, no clock): the API uses them to answer reads, and the SQL list filters in
``queries.py`` mirror :func:`status_of` predicate by predicate (a test holds them together).
Rules and sources: design.md §4, domain.md §0, §2.2–§2.3.
"""

from __future__ import annotations

import datetime as dt
import enum

import msgspec

from service import dates
from service.catalog.rules import CatalogRule, LegalUse, Regime, effective_regime
from service.errors import RuleViolationError

__all__ = (
    "Assessment",
    "Basis",
    "Cycle",
    "CycleSource",
    "Derived",
    "DueSoonWindows",
    "Lifecycle",
    "RequiredAction",
    "Status",
    "Traceability",
    "Validity",
    "ValiditySource",
    "assess",
    "derive",
    "required_action",
    "resolve_cycle",
    "status_of",
    "validity",
)


class Lifecycle(enum.StrEnum):
    """Where the instrument is in its life, as recorded (not computed)."""

    IN_SERVICE = "in_service"
    SEALED = "sealed"
    FAILED = "failed"
    SCRAPPED = "scrapped"
    REPLACED = "replaced"
    PENDING_VERIFICATION = "pending_verification"


class Status(enum.StrEnum):
    """Whether the instrument may be used on a given local date, and if not, why."""

    VALID = "valid"
    DUE_SOON = "due_soon"
    OVERDUE = "overdue"
    FAILED = "failed"
    SEALED = "sealed"
    SCRAPPED = "scrapped"
    REPLACED = "replaced"
    PENDING_VERIFICATION = "pending_verification"
    UNVERIFIED = "unverified"


class RequiredAction(enum.StrEnum):
    """What the enterprise has to do about the instrument now."""

    NONE = "none"
    VERIFY = "verify"
    REPLACE = "replace"
    REPAIR_OR_SCRAP = "repair_or_scrap"
    SCRAP = "scrap"


class Traceability(enum.StrEnum):
    """Verification (检定, legal, pass/fail with a valid-until) or calibration (校准)."""

    VERIFICATION = "verification"
    CALIBRATION = "calibration"


class CycleSource(enum.StrEnum):
    CATALOG = "catalog"
    INSTRUMENT = "instrument"
    NONE = "none"


class ValiditySource(enum.StrEnum):
    """Where the stored ``valid_until`` comes from.

    ``computed`` and ``printed``: registration data (computed by metreg, or copied from the paper
    certificate); ``certificate``: a result recorded in metreg, whose own date governs.
    """

    COMPUTED = "computed"
    PRINTED = "printed"
    CERTIFICATE = "certificate"


# The structs that assess() makes for every instrument read are frozen records of scalars: never
# part of a reference cycle, so the garbage collector need not track them (gc=False), and the
# hundreds a page makes do not hasten its next collection.
class Cycle(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    months: int | None
    source: CycleSource


class DueSoonWindows(msgspec.Struct, frozen=True, kw_only=True):
    """How many days before ``valid_until`` an instrument counts as due soon (R5).

    The window is the largest reminder offset of the enterprise: its ``reminder_days`` for
    periodic and calibrated instruments, its ``rotation_reminder_days`` for limited-life meters.
    """

    periodic_days: int
    rotation_days: int

    @classmethod
    def from_reminders(cls, reminder_days: list[int], rotation_reminder_days: list[int]) -> DueSoonWindows:
        """The windows of an enterprise: its largest reminder offsets."""
        return cls(periodic_days=max(reminder_days), rotation_days=max(rotation_reminder_days))

    def for_regime(self, regime: Regime) -> int:
        """The window that applies to an instrument under ``regime``."""
        if regime is Regime.INITIAL_ONLY_LIMITED_LIFE:
            return self.rotation_days
        return self.periodic_days


class Basis(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """How ``valid_until`` was reached, in fields and in words."""

    rule: str
    from_: dt.date | None = msgspec.field(default=None, name="from")
    cycle_months: int | None = None
    cycle_source: CycleSource = CycleSource.NONE
    regulation: str | None = None
    text: str


class Validity(msgspec.Struct, frozen=True, kw_only=True):
    valid_until: dt.date | None
    basis: Basis


class Assessment(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """Every computed field of an instrument read (design.md §5), for one local date."""

    compulsory: bool
    regime: Regime
    traceability: Traceability
    cycle_months: int | None
    valid_until: dt.date | None
    next_due: dt.date | None
    status: Status
    status_reason: str
    days_until_due: int | None
    required_action: RequiredAction
    basis: Basis


def resolve_cycle(item: CatalogRule | None, regime: Regime, requested: int | None) -> Cycle:
    """The cycle in months that governs the instrument, checked against the law.

    - Compulsory periodic and limited-life instruments: the institution sets the cycle per the JJG
      regulation and the user may shorten it but never lengthen it (1987 管理办法 Art. 6; domain.md
      §2.2). Without a request the catalogue default applies. A longer request is refused with the
      maximum and the regulation named.
    - Scrap-on-failure instruments have no cycle: they are verified once and scrapped when they fail
      (1991 有关规定 [S-1991]).
    - Instruments outside compulsory verification are calibrated on a cycle the enterprise chooses
      (design.md §4), so it must be given.

    Raises:
        RuleViolationError: naming ``cycle_months``.
    """
    if regime is Regime.INITIAL_ONLY_SCRAP_ON_FAILURE:
        if requested is not None:
            raise RuleViolationError.for_field(
                "cycle_months",
                f"{item.code if item else 'this item'} has no verification cycle: it is verified once and "
                "scrapped when it fails (强制检定的工作计量器具实施检定的有关规定, 1991)",
            )
        return Cycle(months=None, source=CycleSource.NONE)
    if regime is Regime.NOT_CONTROLLED or item is None:
        if requested is None:
            raise RuleViolationError.for_field(
                "cycle_months",
                "is required: the instrument is not under compulsory verification, so its calibration "
                "interval is the enterprise's choice",
            )
        return Cycle(months=requested, source=CycleSource.INSTRUMENT)
    if requested is None:
        return Cycle(months=item.default_cycle_months, source=CycleSource.CATALOG)
    maximum = item.legal_max_cycle_months
    if maximum is not None and requested > maximum:
        raise RuleViolationError.for_field(
            "cycle_months",
            f"{requested} months exceeds the legal maximum of {maximum} months for {item.code} set by "
            f"{item.regulation}; a compulsory cycle may be shortened but never lengthened",
        )
    return Cycle(months=requested, source=CycleSource.INSTRUMENT)


def validity(
    *,
    regime: Regime,
    cycle: Cycle,
    last_verified_on: dt.date | None,
    printed_valid_until: dt.date | None,
    rule: dates.PeriodRule,
    regulation: str | None,
) -> Validity:
    """The last valid day and its basis, from the registration or certificate data.

    A ``valid_until`` printed on the certificate is trusted as written (design.md §5, issue 2);
    otherwise it is computed from the verification date and the cycle by the enterprise's period
    rule (R2/R4). Scrap-on-failure instruments never expire (domain.md §1.5).
    """
    basis = _basis(
        regime=regime,
        cycle=cycle,
        last_verified_on=last_verified_on,
        printed_valid_until=printed_valid_until,
        rule=rule,
        regulation=regulation,
    )
    until = None
    if last_verified_on is not None and regime is not Regime.INITIAL_ONLY_SCRAP_ON_FAILURE:
        if printed_valid_until is not None:
            until = printed_valid_until
        elif cycle.months is not None:
            until = dates.valid_until(last_verified_on, cycle.months, rule)
    return Validity(valid_until=until, basis=basis)


# Frozen, so one instance serves every instrument they describe.
_UNVERIFIED = Basis(rule="unverified", text="no verification on record")
_NO_CYCLE = Basis(rule="unverified", text="no cycle to compute from")


def _basis(
    *,
    regime: Regime,
    cycle: Cycle,
    last_verified_on: dt.date | None,
    printed_valid_until: dt.date | None,
    rule: dates.PeriodRule,
    regulation: str | None,
) -> Basis:
    """How :func:`validity` reaches its date, in fields and in words, without computing the date:
    a read has it stored (:func:`assess`)."""
    if last_verified_on is None:
        return _UNVERIFIED
    if regime is Regime.INITIAL_ONLY_SCRAP_ON_FAILURE:
        return Basis(
            rule="no_expiry",
            from_=last_verified_on,
            regulation=regulation,
            text=f"verified on {last_verified_on}; initial verification only, no valid-until date "
            "(scrapped when it fails)",
        )
    if printed_valid_until is not None:
        return Basis(
            rule="printed",
            from_=last_verified_on,
            cycle_months=cycle.months,
            cycle_source=cycle.source,
            regulation=regulation,
            text=f"valid until {printed_valid_until} as printed on the certificate of {last_verified_on}",
        )
    if cycle.months is None:
        return _NO_CYCLE
    life = " (use life)" if regime is Regime.INITIAL_ONLY_LIMITED_LIFE else ""
    span = f"{last_verified_on} + {cycle.months} months{life}"
    if rule is dates.PeriodRule.INCLUSIVE_MINUS_ONE:
        text = f"valid until = {span} − 1 day"
    else:
        text = f"valid until = {span} (Civil Code: ends on the corresponding day)"
    return Basis(
        rule=rule.value,
        from_=last_verified_on,
        cycle_months=cycle.months,
        cycle_source=cycle.source,
        regulation=regulation,
        text=text,
    )


def status_of(
    *,
    lifecycle: Lifecycle,
    regime: Regime,
    last_verified_on: dt.date | None,
    valid_until: dt.date | None,
    today: dt.date,
    windows: DueSoonWindows,
) -> Status:
    """The instrument's status on the local date ``today``.

    - A recorded lifecycle other than in service (failed, sealed, scrapped, replaced, pending
      verification) is the status itself: a sealed instrument keeps its ``valid_until`` but is
      reported as sealed (design.md §4).
    - Overdue from the day after ``valid_until`` (R3: ``today > valid_until``).
    - Due soon from ``valid_until − window`` through ``valid_until`` (R5).
    - A scrap-on-failure instrument with its initial verification is valid with no end date;
      anything else without a ``valid_until`` is unverified.

    Mirrored in SQL by ``service.instruments.queries.STATUS_PREDICATES``.
    """
    if lifecycle is not Lifecycle.IN_SERVICE:
        return Status(lifecycle.value)
    if valid_until is None:
        if regime is Regime.INITIAL_ONLY_SCRAP_ON_FAILURE and last_verified_on is not None:
            return Status.VALID
        return Status.UNVERIFIED
    if today > valid_until:
        return Status.OVERDUE
    if (valid_until - today).days <= windows.for_regime(regime):
        return Status.DUE_SOON
    return Status.VALID


def required_action(status: Status, regime: Regime, *, expired: bool = False) -> RequiredAction:
    """What to do about an instrument in ``status`` under ``regime``.

    Limited-life meters are replaced at expiry, never re-verified (限期使用，到期轮换 [S-1991]), also
    when one waits for verification past its use life (``expired``, e.g. unsealed after it);
    scrap-on-failure instruments are scrapped when they fail (失准报废); other failed instruments
    are repaired and re-verified, or scrapped (domain.md §1.5).
    """
    limited = regime is Regime.INITIAL_ONLY_LIMITED_LIFE
    if status in (Status.DUE_SOON, Status.OVERDUE):
        return RequiredAction.REPLACE if limited else RequiredAction.VERIFY
    if status is Status.PENDING_VERIFICATION and limited and expired:
        return RequiredAction.REPLACE
    if status in (Status.UNVERIFIED, Status.PENDING_VERIFICATION):
        return RequiredAction.VERIFY
    if status is Status.FAILED:
        if regime is Regime.INITIAL_ONLY_SCRAP_ON_FAILURE:
            return RequiredAction.SCRAP
        return RequiredAction.REPLACE if limited else RequiredAction.REPAIR_OR_SCRAP
    return RequiredAction.NONE


# The reasons that name no date.
_REASONS = {
    Status.UNVERIFIED: "no verification on record: it may not be used for a compulsory purpose",
    Status.SEALED: "sealed (封存): withdrawn from use; its validity is not paused",
    Status.FAILED: "failed verification: it may not be used",
    Status.PENDING_VERIFICATION: "waiting for verification before it may be used",
    Status.SCRAPPED: "scrapped",
    Status.REPLACED: "replaced by another instrument",
}


def _reason(status: Status, valid_until: dt.date | None, days: int | None) -> str:
    if (fixed := _REASONS.get(status)) is not None:
        return fixed
    if valid_until is None:
        assert status is Status.VALID  # only a valid instrument may have no end date
        return "in service with its initial verification; it does not expire"
    if status is Status.OVERDUE:
        return f"overdue since {dates.next_due(valid_until)}: its validity ended on {valid_until}"
    soon = "due soon: " if status is Status.DUE_SOON else ""
    return f"{soon}valid until {valid_until}, {days} days left"


# Every answer of required_action, worked out once: assess asks it for every instrument read.
_ACTIONS = {
    (status, regime, expired): required_action(status, regime, expired=expired)
    for status in Status
    for regime in Regime
    for expired in (False, True)
}


def assess(
    *,
    item: CatalogRule | None,
    regime: Regime,
    lifecycle: Lifecycle,
    own_cycle_months: int | None,
    last_verified_on: dt.date | None,
    valid_until: dt.date | None,
    validity_source: ValiditySource,
    rule: dates.PeriodRule,
    windows: DueSoonWindows,
    today: dt.date,
    certificate_number: str | None = None,
) -> Assessment:
    """Compute every derived field of an instrument for the local date ``today``.

    ``own_cycle_months`` is the cycle recorded on the instrument (null: the catalogue default);
    ``valid_until`` the stored last valid day, which decides the status; ``certificate_number`` the
    number of the governing document when a result recorded in metreg set the validity.
    """
    cycle = _cycle_for_read(item, regime, own_cycle_months)
    regulation = item.regulation if item and regime is not Regime.NOT_CONTROLLED else None
    if validity_source is ValiditySource.CERTIFICATE:
        basis = _certificate_basis(regime, cycle, last_verified_on, valid_until, certificate_number, regulation)
    else:
        basis = _basis(
            regime=regime,
            cycle=cycle,
            last_verified_on=last_verified_on,
            printed_valid_until=valid_until if validity_source is ValiditySource.PRINTED else None,
            rule=rule,
            regulation=regulation,
        )
    # The stored date is the legal record and what the SQL filters read; the basis above only
    # explains it (they agree by construction: writes store what validity() computes).
    until = None if regime is Regime.INITIAL_ONLY_SCRAP_ON_FAILURE else valid_until
    status = status_of(
        lifecycle=lifecycle,
        regime=regime,
        last_verified_on=last_verified_on,
        valid_until=until,
        today=today,
        windows=windows,
    )
    days = None if until is None else (until - today).days
    compulsory = regime is not Regime.NOT_CONTROLLED
    return Assessment(
        compulsory=compulsory,
        regime=regime,
        traceability=Traceability.VERIFICATION if compulsory else Traceability.CALIBRATION,
        cycle_months=cycle.months,
        valid_until=until,
        next_due=None if until is None else dates.next_due(until),
        status=status,
        status_reason=_reason(status, until, days),
        days_until_due=days,
        required_action=_ACTIONS[status, regime, days is not None and days < 0],
        basis=basis,
    )


def _certificate_basis(
    regime: Regime,
    cycle: Cycle,
    last_verified_on: dt.date | None,
    valid_until: dt.date | None,
    number: str | None,
    regulation: str | None,
) -> Basis:
    """The basis of a validity set by a recorded result: the document's own dates govern (R6)."""
    document = f"certificate {number}" if number else "the governing certificate"
    if valid_until is not None:
        text = f"valid until {valid_until} per {document} of {last_verified_on}"
    elif regime is Regime.INITIAL_ONLY_SCRAP_ON_FAILURE and last_verified_on is not None:
        text = f"verified on {last_verified_on} per {document}; initial verification only, no valid-until date"
    else:
        text = f"no valid-until date: {document} failed the instrument or was revoked (see its history)"
    return Basis(
        rule="certificate",
        from_=last_verified_on,
        cycle_months=cycle.months,
        cycle_source=cycle.source,
        regulation=regulation,
        text=text,
    )


_NO_CYCLE_READ = Cycle(months=None, source=CycleSource.NONE)


def _cycle_for_read(item: CatalogRule | None, regime: Regime, own: int | None) -> Cycle:
    if regime is Regime.INITIAL_ONLY_SCRAP_ON_FAILURE:
        return _NO_CYCLE_READ
    if own is not None:
        return Cycle(months=own, source=CycleSource.INSTRUMENT)
    if item is not None and item.default_cycle_months is not None:
        return Cycle(months=item.default_cycle_months, source=CycleSource.CATALOG)
    return _NO_CYCLE_READ


class Derived(msgspec.Struct, frozen=True, kw_only=True):
    """What a write stores besides the fields as given: the regime and the last valid day."""

    regime: Regime
    valid_until: dt.date | None
    validity_source: ValiditySource


def derive(
    *,
    item: CatalogRule | None,
    legal_use: LegalUse,
    cycle_months: int | None,
    last_verified_on: dt.date | None,
    printed_valid_until: dt.date | None,
    rule: dates.PeriodRule,
    today: dt.date,
) -> Derived:
    """Check registration facts against the rules and derive what is stored with them.

    - The regime follows from the catalogue item and the use (:func:`effective_regime`), the cycle
      is checked by :func:`resolve_cycle`.
    - ``last_verified_on`` is a past fact: not after the enterprise's local ``today``.
    - A printed ``valid_until`` needs the verification it belongs to and may not precede it; a
      scrap-on-failure instrument has none (domain.md §1.5).

    Raises:
        RuleViolationError: naming the field that breaks a rule.
    """
    regime = effective_regime(item, legal_use)
    cycle = resolve_cycle(item, regime, cycle_months)
    if last_verified_on is not None and last_verified_on > today:
        raise RuleViolationError.for_field(
            "last_verified_on", f"{last_verified_on} is in the future (today is {today} for this enterprise)"
        )
    if printed_valid_until is not None:
        if regime is Regime.INITIAL_ONLY_SCRAP_ON_FAILURE:
            raise RuleViolationError.for_field(
                "valid_until", "this instrument is verified once and does not expire: it has no valid-until date"
            )
        if last_verified_on is None:
            raise RuleViolationError.for_field(
                "valid_until", "a printed valid-until date needs the last_verified_on of its certificate"
            )
        if printed_valid_until < last_verified_on:
            raise RuleViolationError.for_field(
                "valid_until", f"{printed_valid_until} is before last_verified_on {last_verified_on}"
            )
        # Trusted as printed, but no certificate outlasts its cycle: the latest either period rule
        # allows is the Civil Code's corresponding day.
        if cycle.months is not None and printed_valid_until > (
            limit := dates.add_months(last_verified_on, cycle.months)
        ):
            raise RuleViolationError.for_field(
                "valid_until",
                f"{printed_valid_until} is later than {limit}, the end of a {cycle.months}-month cycle from "
                f"{last_verified_on}; check the date, or the instrument's cycle_months",
            )
    found = validity(
        regime=regime,
        cycle=cycle,
        last_verified_on=last_verified_on,
        printed_valid_until=printed_valid_until,
        rule=rule,
        regulation=None,
    )
    return Derived(
        regime=regime,
        valid_until=found.valid_until,
        validity_source=ValiditySource.PRINTED if printed_valid_until is not None else ValiditySource.COMPUTED,
    )
