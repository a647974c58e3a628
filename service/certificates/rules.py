"""What a recorded result does to an instrument, and what a certificate's standing is.

Pure functions (no I/O, no clock). Rules and sources: domain.md §1.4–§1.5 (documents and what a
failure means), §2.2 (which cycle wins), §2.3 R6 (periods never stack), §3.3 and §4.3 (what a lab
enters); the effects are those of issue 3.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
from collections.abc import Sequence
from decimal import Decimal
from typing import Annotated, Any

import msgspec

from service import dates
from service.catalog.rules import CatalogRule, Regime
from service.errors import ConflictError, FieldError, RuleViolationError
from service.instruments.rules import Lifecycle, resolve_cycle
from service.types import Text

__all__ = (
    "Decision",
    "Effect",
    "Kind",
    "Outcome",
    "Point",
    "PublicStatus",
    "Signatories",
    "Standing",
    "Submitted",
    "canonical_content",
    "content_sha256",
    "decide",
    "gives_validity",
    "outcome_of_points",
    "public_status",
)


class Kind(enum.StrEnum):
    """The result documents (domain.md §1.5, §4.3)."""

    VERIFICATION_CERTIFICATE = "verification_certificate"  # 检定证书: pass, with 有效期至
    RESULT_NOTICE = "result_notice"  # 检定结果通知书: fail, with the failed items, no 有效期至
    CALIBRATION_CERTIFICATE = "calibration_certificate"  # 校准证书: as-found / as-left data
    INSPECTION_RECORD = "inspection_record"  # a regulator's in-service check (印证办法 Art. 7)


class Outcome(enum.StrEnum):
    PASS = "pass"  # noqa: S105 - an outcome, not a password
    FAIL = "fail"


class Effect(enum.StrEnum):
    """What recording a document did to its instrument, decided once, when it was recorded."""

    GOVERNS = "governs"  # a pass that starts a new period: the document now governs the status
    VOIDS = "voids"  # a failure: the governing certificate is void from performed_on
    HISTORY = "history"  # dated before the governing document: kept, status unchanged
    NONE = "none"  # no legal effect (calibration of a compulsory instrument, passed inspection)


class PublicStatus(enum.StrEnum):
    """Whether a document still stands, as the public authenticity check reports it."""

    VALID = "valid"
    EXPIRED = "expired"
    REVOKED = "revoked"
    SUPERSEDED = "superseded"


# Exponents of at most three digits: a measurement needs no more, and Decimal arithmetic on
# larger ones overflows.
_DECIMAL = r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]{1,3})?$"
Dec = Annotated[str, msgspec.Meta(pattern=_DECIMAL, max_length=40, description="A decimal, as a string.")]
Mpe = Annotated[
    str,
    msgspec.Meta(
        pattern=_DECIMAL.replace("^[+-]?", "^(±|[+-])?"),
        max_length=40,
        description="Maximum permissible error, as a decimal string; a leading ± is allowed.",
    ),
]


class Point(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One measurement point of as-found or as-left data (ISO/IEC 17025 §7.8.4; domain.md §4.3).

    ``error`` defaults to ``measured − reference`` when both are given.
    """

    point: Annotated[str, Text(100, min_length=1, description="What was measured, e.g. '1.0 MPa'.")]
    reference: Dec | None = None
    measured: Dec | None = None
    error: Dec | None = None
    mpe: Mpe | None = None
    uncertainty: Dec | None = None
    unit: Annotated[str, Text(20)] | None = None

    def error_value(self) -> Decimal | None:
        if self.error is not None:
            return Decimal(self.error)
        if self.measured is not None and self.reference is not None:
            return Decimal(self.measured) - Decimal(self.reference)
        return None

    def within_mpe(self) -> bool | None:
        """Whether |error| ≤ |MPE|; None when the point lacks either."""
        error = self.error_value()
        if error is None or self.mpe is None:
            return None
        return abs(error) <= abs(Decimal(self.mpe.lstrip("±")))


class Signatories(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """检定员 / 核验员 / 批准人: who performed, checked and approved the result."""

    verifier: Annotated[str, Text(100)] | None = None
    checker: Annotated[str, Text(100)] | None = None
    approver: Annotated[str, Text(100)] | None = None


def outcome_of_points(points: Sequence[Point]) -> Outcome | None:
    """Fail when any point is outside its MPE, pass when every judged point is within; None when no
    point carries both an error and an MPE.

    Simple acceptance (|error| ≤ MPE, measurement uncertainty not deducted): the decision rule of
    ILAC-G8 shared risk, the usual one for verification in China.
    """
    judged = [p.within_mpe() for p in points]
    verdicts = [v for v in judged if v is not None]
    if not verdicts:
        return None
    return Outcome.PASS if all(verdicts) else Outcome.FAIL


class Standing(msgspec.Struct, frozen=True, kw_only=True):
    """What the decision reads about the instrument, under its row lock."""

    item: CatalogRule | None
    regime: Regime
    lifecycle: Lifecycle
    own_cycle_months: int | None
    #: performed_on of the governing document, or the registered last verification date.
    governing_on: dt.date | None


class Submitted(msgspec.Struct, frozen=True, kw_only=True):
    """The result as the lab or regulator entered it."""

    kind: Kind
    outcome: Outcome | None
    performed_on: dt.date
    issued_on: dt.date
    cycle_months: int | None
    valid_until: dt.date | None
    failed_items: Sequence[str]
    as_found: Sequence[Point]
    as_left: Sequence[Point]
    #: A correction of the governing document replaces it, whatever its dates.
    corrects_current: bool = False


class Decision(msgspec.Struct, frozen=True, kw_only=True):
    """The recorded outcome, the document's effect, and what changes on the instrument.

    ``lifecycle`` and ``instrument_cycle`` are None when they stay as they are; ``governs`` says the
    document becomes the instrument's current one, with ``valid_until`` as its validity.
    """

    outcome: Outcome
    effect: Effect
    note: str
    cycle_months: int | None
    valid_until: dt.date | None
    lifecycle: Lifecycle | None = None
    instrument_cycle: int | None = None

    @property
    def governs(self) -> bool:
        return self.effect in (Effect.GOVERNS, Effect.VOIDS)


_VERIFIED_ONCE = (Regime.INITIAL_ONLY_LIMITED_LIFE, Regime.INITIAL_ONLY_SCRAP_ON_FAILURE)


def _fail(field: str, message: str) -> RuleViolationError:
    return RuleViolationError.for_field(field, message)


def _check_dates(r: Submitted, today: dt.date) -> None:
    """performed_on ≤ issued_on ≤ today: the issue date may follow the verification, never precede it
    (R6: it does not move the verification date), and no document is dated in the future."""
    problems = []
    if r.issued_on < r.performed_on:
        problems.append(FieldError(field="issued_on", message=f"{r.issued_on} is before performed_on {r.performed_on}"))
    if r.issued_on > today:
        problems.append(FieldError(field="issued_on", message=f"{r.issued_on} is in the future (today is {today})"))
    if r.valid_until is not None and r.valid_until < r.performed_on:
        problems.append(FieldError(field="valid_until", message=f"{r.valid_until} is before performed_on"))
    if problems:
        raise RuleViolationError.for_fields(problems)


def _outcome(r: Submitted) -> Outcome:
    """The outcome as given, or as the document's kind and its as-found data imply."""
    if r.kind is Kind.VERIFICATION_CERTIFICATE:
        if r.outcome is Outcome.FAIL:
            raise _fail("outcome", "a failed verification is recorded as a result_notice (检定结果通知书)")
        outcome = Outcome.PASS
    elif r.kind is Kind.RESULT_NOTICE:
        if r.outcome is Outcome.PASS:
            raise _fail("outcome", "a result notice records a failure; a pass is a verification_certificate")
        outcome = Outcome.FAIL
    else:
        judged = outcome_of_points(r.as_found)
        if r.outcome is not None and judged is not None and r.outcome is not judged:
            raise _fail("outcome", f"is {r.outcome} but the as_found errors against their MPE say {judged}")
        found = r.outcome or judged
        if found is None:
            raise _fail("outcome", "is required when no as_found point carries both an error and an mpe")
        outcome = found
    if outcome is Outcome.FAIL and not r.failed_items and r.kind is not Kind.CALIBRATION_CERTIFICATE:
        raise _fail("failed_items", "must list what failed: a failing result names its failed items")
    if outcome is Outcome.PASS and r.failed_items:
        raise _fail("failed_items", "a passing result lists no failed items")
    return outcome


def _no_validity(r: Submitted, why: str) -> None:
    if r.cycle_months is not None:
        raise _fail("cycle_months", why)
    if r.valid_until is not None:
        raise _fail("valid_until", why)


def _period(r: Submitted, s: Standing, rule: dates.PeriodRule) -> tuple[int | None, dt.date | None]:
    """The cycle and last valid day of a passing result (R2/R4 from its own performed_on, R6).

    A lab may shorten a compulsory cycle, never exceed the legal maximum (domain.md §2.2); a printed
    valid-until is accepted when it is not later than the computed one.
    """
    # A calibration runs on the instrument's own interval: a calibration certificate carries no
    # interval unless agreed with the customer (ISO/IEC 17025 §7.8.4.3, domain.md §0 fact 9).
    lab_sets_cycle = r.kind is not Kind.CALIBRATION_CERTIFICATE and r.cycle_months is not None
    requested = r.cycle_months if lab_sets_cycle else s.own_cycle_months
    if s.regime is Regime.INITIAL_ONLY_SCRAP_ON_FAILURE:
        _no_validity(r, f"{s.item.code if s.item else 'this item'} is verified once and does not expire")
        return None, None
    cycle = resolve_cycle(s.item, s.regime, requested)
    assert cycle.months is not None  # resolve_cycle refuses a missing cycle outside scrap-on-failure
    computed = dates.valid_until(r.performed_on, cycle.months, rule)
    if r.valid_until is not None and r.valid_until > computed:
        raise _fail(
            "valid_until",
            f"{r.valid_until} is later than {computed}, the end of a {cycle.months}-month cycle from "
            f"{r.performed_on} under the enterprise's {rule} rule",
        )
    return cycle.months, r.valid_until or computed


def _fit_for_use(r: Submitted, outcome: Outcome) -> bool:
    """A calibrated instrument is fit when its as-left data are within MPE (or, without as-left
    data that can be judged, when it was found within); any other document is fit when it passed."""
    if r.kind is Kind.CALIBRATION_CERTIFICATE and (left := outcome_of_points(r.as_left)) is not None:
        return left is Outcome.PASS
    return outcome is Outcome.PASS


def decide(r: Submitted, s: Standing, *, rule: dates.PeriodRule, today: dt.date) -> Decision:
    """What recording ``r`` means for an instrument standing as ``s`` (issue 3, point 2).

    - A passing verification (or a fit calibration of an instrument outside compulsory
      verification) starts a new period from its own ``performed_on`` — never stacked on the old one
      (R6) — returns a failed or pending instrument to service and governs from now on.
    - A failing one (result notice, failed inspection, calibration left out of tolerance) voids the
      governing certificate from ``performed_on``: the instrument is ``failed`` (计量法 §9: it may not
      be used), or ``scrapped`` under scrap-on-failure (失准报废, [S-1991]).
    - A calibration certificate of a compulsory instrument is kept but has no legal effect: only a
      verification certificate satisfies compulsory verification ([S-360TABLE]). A passed inspection
      confirms the governing certificate and changes nothing.
    - A result dated before the governing document is kept as history; it changes nothing.

    Raises:
        RuleViolationError: naming the field that breaks a rule.
        ConflictError: the instrument is scrapped or replaced.
    """
    _check_dates(r, today)
    if s.lifecycle in (Lifecycle.SCRAPPED, Lifecycle.REPLACED):
        raise ConflictError(f"the instrument is {s.lifecycle}: no result can be recorded for it any more")
    outcome = _outcome(r)
    compulsory = s.regime is not Regime.NOT_CONTROLLED
    if r.kind is Kind.CALIBRATION_CERTIFICATE and compulsory:
        if r.valid_until is not None and not _fit_for_use(r, outcome):
            raise _fail("valid_until", "a calibration that leaves the instrument out of tolerance has no valid-until")
        return Decision(
            outcome=outcome,
            effect=Effect.NONE,
            note="recorded without legal effect: an instrument under compulsory verification needs a "
            "verification certificate (检定证书); a calibration certificate does not satisfy it",
            cycle_months=r.cycle_months,
            valid_until=r.valid_until,
        )
    if r.kind in (Kind.RESULT_NOTICE, Kind.INSPECTION_RECORD):
        _no_validity(r, f"a {r.kind} carries no cycle and no valid-until date")
    if r.kind is Kind.INSPECTION_RECORD and outcome is Outcome.PASS:
        return Decision(
            outcome=outcome,
            effect=Effect.NONE,
            note="in-service check passed: the governing certificate stands",
            cycle_months=None,
            valid_until=None,
        )
    fit = _fit_for_use(r, outcome)
    reverified = s.governing_on is not None and r.performed_on > s.governing_on
    if fit and s.regime in _VERIFIED_ONCE and reverified and not r.corrects_current:
        raise _fail(
            "kind",
            f"a {s.regime} instrument is verified once: at the end of its use life it is replaced "
            "(限期使用，到期轮换), and when it fails it is scrapped; it is never re-verified",
        )
    cycle, valid_until = _period(r, s, rule) if fit else (None, None)
    if not r.corrects_current and s.governing_on is not None and r.performed_on < s.governing_on:
        return Decision(
            outcome=outcome,
            effect=Effect.HISTORY,
            note=f"performed on {r.performed_on}, before the governing result of {s.governing_on}: kept as "
            "history, the status is unchanged",
            cycle_months=cycle,
            valid_until=valid_until,
        )
    if fit:
        adjusted = (
            "; found out of tolerance and adjusted: assess the measurements made since the last calibration"
            if outcome is Outcome.FAIL
            else ""
        )
        until = f"valid until {valid_until}" if valid_until else "initial verification, no valid-until date"
        return Decision(
            outcome=outcome,
            effect=Effect.GOVERNS,
            note=f"governs from {r.performed_on}: {until}{adjusted}",
            cycle_months=cycle,
            valid_until=valid_until,
            lifecycle=Lifecycle.IN_SERVICE
            if s.lifecycle in (Lifecycle.FAILED, Lifecycle.PENDING_VERIFICATION)
            else None,
            instrument_cycle=r.cycle_months if r.kind is not Kind.CALIBRATION_CERTIFICATE else None,
        )
    scrap = s.regime is Regime.INITIAL_ONLY_SCRAP_ON_FAILURE
    return Decision(
        outcome=outcome,
        effect=Effect.VOIDS,
        note=f"failed on {r.performed_on}: the governing certificate is void from that day and the "
        + ("instrument is scrapped (verified once, scrapped on failure)" if scrap else "instrument may not be used"),
        cycle_months=None,
        valid_until=None,
        lifecycle=Lifecycle.SCRAPPED if scrap else Lifecycle.FAILED,
    )


def gives_validity(kind: Kind, outcome: Outcome, valid_until: dt.date | None) -> bool:
    """Whether a document lets its instrument be used: a pass, or a calibration that adjusted it
    back within tolerance (it has a valid-until). Only such documents are revoked or voided."""
    if kind not in (Kind.VERIFICATION_CERTIFICATE, Kind.CALIBRATION_CERTIFICATE):
        return False
    return outcome is Outcome.PASS or valid_until is not None


def public_status(
    *,
    revoked: bool,
    corrected: bool,
    effect: Effect,
    is_current: bool,
    valid_until: dt.date | None,
    today: dt.date,
) -> PublicStatus:
    """Whether a document still stands on the local date ``today``.

    Revoked (by its lab, a regulator, or voided by a later failure) wins; then superseded (by a
    correction, or because a later document governs its instrument); then expired after its
    valid-until date.
    """
    if revoked:
        return PublicStatus.REVOKED
    if corrected or (effect is not Effect.NONE and not is_current):
        return PublicStatus.SUPERSEDED
    if valid_until is not None and today > valid_until:
        return PublicStatus.EXPIRED
    return PublicStatus.VALID


def content_sha256(content: dict[str, Any]) -> str:
    """SHA-256 (hex) over the canonical JSON of a document's content.

    Canonical: the content fields as stored (dates ``YYYY-MM-DD``, ids as strings, decimals as the
    strings entered), keys sorted at every level, no whitespace, UTF-8. Anyone holding the content
    can recompute it; any change to it changes the hash.
    """
    return hashlib.sha256(msgspec.json.encode(content, order="sorted")).hexdigest()


def canonical_content(**fields: Any) -> dict[str, Any]:
    """The content that :func:`content_sha256` covers, in JSON types."""
    converted: dict[str, Any] = msgspec.to_builtins(fields)
    return converted
