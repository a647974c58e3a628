"""What a recorded result does, and what a certificate's standing is (issue 3 points 2–5; domain.md §1.5, §2.3)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import uuid
from typing import Any

import msgspec
import pytest

from service.catalog.rules import CatalogRule, LegalUse, Regime
from service.certificates.rules import (
    Effect,
    Kind,
    Outcome,
    Point,
    PublicStatus,
    Standing,
    Submitted,
    canonical_content,
    content_sha256,
    decide,
    outcome_of_points,
    public_status,
)
from service.dates import PeriodRule
from service.errors import ConflictError, RuleViolationError
from service.instruments.rules import Lifecycle

D = dt.date
L = Lifecycle
INCL, CIVIL = PeriodRule.INCLUSIVE_MINUS_ONE, PeriodRule.CIVIL_CODE
TODAY = D(2026, 6, 15)

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

#: Standings by regime: the gauge of domain.md §5 (verified 2026-01-15), a water meter, a thermometer,
#: and a multimeter calibrated on the enterprise's own 12-month cycle.
STANDINGS: dict[str, dict[str, Any]] = {
    "periodic": {"item": GAUGE, "regime": Regime.PERIODIC, "own_cycle_months": None},
    "limited_life": {"item": WATER, "regime": Regime.INITIAL_ONLY_LIMITED_LIFE, "own_cycle_months": None},
    "scrap_on_failure": {
        "item": THERMOMETER,
        "regime": Regime.INITIAL_ONLY_SCRAP_ON_FAILURE,
        "own_cycle_months": None,
    },
    "not_controlled": {"item": None, "regime": Regime.NOT_CONTROLLED, "own_cycle_months": 12},
}

IN_TOL = Point(point="1.0 MPa", reference="1.000", measured="1.010", mpe="±0.016", unit="MPa")
OUT_TOL = Point(point="1.6 MPa", reference="1.600", measured="1.630", mpe="±0.016", unit="MPa")


def standing(regime: str = "periodic", **overrides: Any) -> Standing:
    values = STANDINGS[regime] | {
        "lifecycle": L.IN_SERVICE,
        "governing_on": D(2026, 1, 15),
    }
    return Standing(**(values | overrides))


def submitted(kind: Kind = Kind.VERIFICATION_CERTIFICATE, **overrides: Any) -> Submitted:
    values: dict[str, Any] = {
        "kind": kind,
        "outcome": None,
        "performed_on": D(2026, 6, 10),
        "issued_on": D(2026, 6, 12),
        "cycle_months": None,
        "valid_until": None,
        "failed_items": (),
        "as_found": (),
        "as_left": (),
    }
    if kind in (Kind.RESULT_NOTICE,):
        values["failed_items"] = ("示值误差",)
    return Submitted(**(values | overrides))


VC, RN, CC, IR = Kind.VERIFICATION_CERTIFICATE, Kind.RESULT_NOTICE, Kind.CALIBRATION_CERTIFICATE, Kind.INSPECTION_RECORD
PASS, FAIL = Outcome.PASS, Outcome.FAIL
G, V, H, N = Effect.GOVERNS, Effect.VOIDS, Effect.HISTORY, Effect.NONE

# (rule, standing, submitted, period rule, expected: effect, outcome, lifecycle, cycle, valid_until, instrument_cycle)
DECISIONS = [
    (
        "periodic pass governs: 2026-06-10 + 6 months − 1 day",
        standing(),
        submitted(),
        INCL,
        (G, PASS, None, 6, D(2026, 12, 9), None),
    ),
    (
        "periodic pass under the Civil Code: the corresponding day",
        standing(),
        submitted(),
        CIVIL,
        (G, PASS, None, 6, D(2026, 12, 10), None),
    ),
    (
        "R6 early re-verification: from its own date, never stacked on the old period",
        standing(governing_on=D(2026, 5, 1)),
        submitted(performed_on=D(2026, 5, 20), issued_on=D(2026, 5, 20)),
        INCL,
        (G, PASS, None, 6, D(2026, 11, 19), None),
    ),
    (
        "R6 the issue date after the verification date does not move D",
        standing(),
        submitted(performed_on=D(2026, 6, 1), issued_on=D(2026, 6, 15)),
        INCL,
        (G, PASS, None, 6, D(2026, 11, 30), None),
    ),
    (
        "a lab may shorten the cycle; the instrument takes it",
        standing(),
        submitted(cycle_months=3),
        INCL,
        (G, PASS, None, 3, D(2026, 9, 9), 3),
    ),
    (
        "a printed valid-until earlier than computed is accepted",
        standing(),
        submitted(valid_until=D(2026, 12, 1)),
        INCL,
        (G, PASS, None, 6, D(2026, 12, 1), None),
    ),
    (
        "a printed valid-until equal to computed is accepted",
        standing(),
        submitted(valid_until=D(2026, 12, 9)),
        INCL,
        (G, PASS, None, 6, D(2026, 12, 9), None),
    ),
    (
        "a pass returns a failed instrument to service (repair then re-verification)",
        standing(lifecycle=L.FAILED, governing_on=D(2026, 6, 1)),
        submitted(),
        INCL,
        (G, PASS, L.IN_SERVICE, 6, D(2026, 12, 9), None),
    ),
    (
        "a pass returns a pending instrument to service",
        standing(lifecycle=L.PENDING_VERIFICATION, governing_on=None),
        submitted(),
        INCL,
        (G, PASS, L.IN_SERVICE, 6, D(2026, 12, 9), None),
    ),
    (
        "a pass leaves a sealed instrument sealed",
        standing(lifecycle=L.SEALED),
        submitted(),
        INCL,
        (G, PASS, None, 6, D(2026, 12, 9), None),
    ),
    (
        "a pass on the governing date itself governs (not history)",
        standing(governing_on=D(2026, 6, 10)),
        submitted(),
        INCL,
        (G, PASS, None, 6, D(2026, 12, 9), None),
    ),
    (
        "a first pass of an unverified instrument governs",
        standing(governing_on=None),
        submitted(),
        INCL,
        (G, PASS, None, 6, D(2026, 12, 9), None),
    ),
    (
        "limited-life first verification: the use life from performed_on",
        standing("limited_life", governing_on=None),
        submitted(),
        INCL,
        (G, PASS, None, 72, D(2032, 6, 9), None),
    ),
    (
        "scrap-on-failure pass: no cycle and no valid-until",
        standing("scrap_on_failure", governing_on=None),
        submitted(),
        INCL,
        (G, PASS, None, None, None, None),
    ),
    (
        "periodic result notice voids: failed, no validity",
        standing(),
        submitted(RN),
        INCL,
        (V, FAIL, L.FAILED, None, None, None),
    ),
    (
        "limited-life result notice: failed (replace)",
        standing("limited_life"),
        submitted(RN),
        INCL,
        (V, FAIL, L.FAILED, None, None, None),
    ),
    (
        "scrap-on-failure result notice: scrapped (失准报废)",
        standing("scrap_on_failure"),
        submitted(RN),
        INCL,
        (V, FAIL, L.SCRAPPED, None, None, None),
    ),
    (
        "a failure of a sealed instrument fails it",
        standing(lifecycle=L.SEALED),
        submitted(RN),
        INCL,
        (V, FAIL, L.FAILED, None, None, None),
    ),
    (
        "a pass dated before the governing result is history; its period is still computed",
        standing(governing_on=D(2026, 6, 12)),
        submitted(),
        INCL,
        (H, PASS, None, 6, D(2026, 12, 9), None),
    ),
    (
        "a failure dated before the governing result is history",
        standing(governing_on=D(2026, 6, 12)),
        submitted(RN),
        INCL,
        (H, FAIL, None, None, None, None),
    ),
    (
        "a correction of the governing document governs whatever its date",
        standing(governing_on=D(2026, 6, 12)),
        submitted(corrects_current=True),
        INCL,
        (G, PASS, None, 6, D(2026, 12, 9), None),
    ),
    (
        "calibration of a compulsory instrument has no legal effect",
        standing(),
        submitted(CC, as_found=(IN_TOL,)),
        INCL,
        (N, PASS, None, None, None, None),
    ),
    (
        "calibration out of tolerance of a compulsory instrument still has no legal effect",
        standing(),
        submitted(CC, as_found=(OUT_TOL,)),
        INCL,
        (N, FAIL, None, None, None, None),
    ),
    (
        "calibration of a non-compulsory instrument governs on its own cycle",
        standing("not_controlled"),
        submitted(CC, as_found=(IN_TOL,)),
        INCL,
        (G, PASS, None, 12, D(2027, 6, 9), None),
    ),
    (
        "calibration found out of tolerance and adjusted within governs (outcome fail)",
        standing("not_controlled"),
        submitted(CC, as_found=(OUT_TOL,), as_left=(IN_TOL,)),
        INCL,
        (G, FAIL, None, 12, D(2027, 6, 9), None),
    ),
    (
        "calibration found out of tolerance and not adjusted voids",
        standing("not_controlled"),
        submitted(CC, as_found=(OUT_TOL,)),
        INCL,
        (V, FAIL, L.FAILED, None, None, None),
    ),
    (
        "calibration left out of tolerance voids",
        standing("not_controlled"),
        submitted(CC, as_found=(IN_TOL,), as_left=(OUT_TOL,)),
        INCL,
        (V, PASS, L.FAILED, None, None, None),
    ),
    (
        "calibration found out of tolerance, as-left data without MPE prove nothing: voids",
        standing("not_controlled"),
        submitted(CC, as_found=(OUT_TOL,), as_left=(Point(point="1.6 MPa", reference="1.600", measured="1.601"),)),
        INCL,
        (V, FAIL, L.FAILED, None, None, None),
    ),
    (
        "calibration runs on the instrument's own interval, not one the lab suggests (17025 §7.8.4.3)",
        standing("not_controlled"),
        submitted(CC, outcome=PASS, cycle_months=6),
        INCL,
        (G, PASS, None, 12, D(2027, 6, 9), None),
    ),
    (
        "a passed in-service check confirms the governing certificate",
        standing(),
        submitted(IR, outcome=PASS),
        INCL,
        (N, PASS, None, None, None, None),
    ),
    (
        "a failed in-service check voids the governing certificate",
        standing(),
        submitted(IR, outcome=FAIL, failed_items=("示值误差",)),
        INCL,
        (V, FAIL, L.FAILED, None, None, None),
    ),
    (
        "a failed in-service check of a scrap-on-failure instrument scraps it",
        standing("scrap_on_failure"),
        submitted(IR, outcome=FAIL, failed_items=("示值误差",)),
        INCL,
        (V, FAIL, L.SCRAPPED, None, None, None),
    ),
]


@pytest.mark.parametrize(("rule", "s", "r", "period_rule", "expected"), DECISIONS, ids=[d[0] for d in DECISIONS])
def test_decide(rule: str, s: Standing, r: Submitted, period_rule: PeriodRule, expected: tuple[Any, ...]) -> None:
    decision = decide(r, s, rule=period_rule, today=TODAY)
    got = (
        decision.effect,
        decision.outcome,
        decision.lifecycle,
        decision.cycle_months,
        decision.valid_until,
        decision.instrument_cycle,
    )
    assert got == expected, rule
    assert decision.governs == (decision.effect in (G, V))
    assert decision.note


def test_decide_notes_say_what_happened() -> None:
    adjusted = decide(
        submitted(CC, as_found=(OUT_TOL,), as_left=(IN_TOL,)), standing("not_controlled"), rule=INCL, today=TODAY
    )
    assert "adjusted" in adjusted.note
    none = decide(submitted(CC, as_found=(IN_TOL,)), standing(), rule=INCL, today=TODAY)
    assert "without legal effect" in none.note
    scrapped = decide(submitted(RN), standing("scrap_on_failure"), rule=INCL, today=TODAY)
    assert "scrapped" in scrapped.note
    history = decide(submitted(), standing(governing_on=D(2026, 6, 12)), rule=INCL, today=TODAY)
    assert "history" in history.note
    assert "2026-06-12" in history.note


REFUSALS = [
    (
        "issued before performed",
        standing(),
        submitted(performed_on=D(2026, 6, 12), issued_on=D(2026, 6, 10)),
        "issued_on",
    ),
    ("issued in the future", standing(), submitted(issued_on=D(2026, 6, 16)), "issued_on"),
    ("printed valid-until before performed", standing(), submitted(valid_until=D(2026, 6, 9)), "valid_until"),
    ("a verification certificate cannot fail", standing(), submitted(outcome=FAIL), "outcome"),
    ("a result notice cannot pass", standing(), submitted(RN, outcome=PASS), "outcome"),
    ("a result notice names its failed items", standing(), submitted(RN, failed_items=()), "failed_items"),
    ("a failed inspection names its failed items", standing(), submitted(IR, outcome=FAIL), "failed_items"),
    ("a passing result lists no failed items", standing(), submitted(failed_items=("外观",)), "failed_items"),
    ("a cycle above the legal maximum", standing(), submitted(cycle_months=7), "cycle_months"),
    (
        "a limited-life meter is never re-verified: it is replaced (限期使用，到期轮换)",
        standing("limited_life"),
        submitted(),
        "kind",
    ),
    ("a scrap-on-failure instrument is verified once", standing("scrap_on_failure"), submitted(), "kind"),
    (
        "a given outcome contradicting the as-found errors",
        standing("not_controlled"),
        submitted(CC, outcome=PASS, as_found=(OUT_TOL,)),
        "outcome",
    ),
    ("a printed valid-until later than computed", standing(), submitted(valid_until=D(2026, 12, 10)), "valid_until"),
    ("a result notice carries no cycle", standing(), submitted(RN, cycle_months=6), "cycle_months"),
    ("a result notice carries no valid-until", standing(), submitted(RN, valid_until=D(2026, 12, 9)), "valid_until"),
    (
        "an inspection carries no valid-until",
        standing(),
        submitted(IR, outcome=PASS, valid_until=D(2026, 12, 9)),
        "valid_until",
    ),
    (
        "scrap-on-failure has no cycle",
        standing("scrap_on_failure", governing_on=None),
        submitted(cycle_months=12),
        "cycle_months",
    ),
    (
        "scrap-on-failure has no valid-until",
        standing("scrap_on_failure", governing_on=None),
        submitted(valid_until=D(2026, 12, 9)),
        "valid_until",
    ),
    (
        "calibration with no judged point needs an outcome",
        standing("not_controlled"),
        submitted(CC, as_found=(Point(point="1 V", measured="1.0"),)),
        "outcome",
    ),
]


@pytest.mark.parametrize(("rule", "s", "r", "field"), REFUSALS, ids=[x[0] for x in REFUSALS])
def test_decide_refuses_naming_the_field(rule: str, s: Standing, r: Submitted, field: str) -> None:
    with pytest.raises(RuleViolationError) as raised:
        decide(r, s, rule=INCL, today=TODAY)
    assert [e.field for e in raised.value.errors] == [field], rule
    assert raised.value.status == 422


def test_date_errors_are_reported_together() -> None:
    r = submitted(performed_on=D(2026, 6, 20), issued_on=D(2026, 6, 18), valid_until=D(2026, 6, 19))
    with pytest.raises(RuleViolationError) as raised:
        decide(r, standing(), rule=INCL, today=TODAY)
    assert [e.field for e in raised.value.errors] == ["issued_on", "issued_on", "valid_until"]


def test_issue_date_today_is_allowed() -> None:
    assert decide(submitted(issued_on=TODAY), standing(), rule=INCL, today=TODAY).effect is G


@pytest.mark.parametrize("final", [L.SCRAPPED, L.REPLACED])
@pytest.mark.parametrize("kind", [VC, RN, CC])
def test_no_result_for_a_scrapped_or_replaced_instrument(final: Lifecycle, kind: Kind) -> None:
    with pytest.raises(ConflictError) as raised:
        decide(submitted(kind, as_found=(IN_TOL,)), standing(lifecycle=final), rule=INCL, today=TODAY)
    assert str(final) in raised.value.detail


OUTCOMES = [
    ("every point within its MPE passes", [IN_TOL, IN_TOL], PASS),
    ("one point outside fails", [IN_TOL, OUT_TOL], FAIL),
    ("|error| equal to the MPE passes (simple acceptance)", [Point(point="p", error="0.016", mpe="0.016")], PASS),
    ("a negative error beyond the MPE fails", [Point(point="p", error="-0.017", mpe="±0.016")], FAIL),
    ("a negative error within passes", [Point(point="p", error="-0.016", mpe="±0.016")], PASS),
    ("a negative MPE is read as its magnitude", [Point(point="p", error="0.01", mpe="-0.016")], PASS),
    (
        "error defaults to measured − reference",
        [Point(point="p", reference="10.00", measured="10.02", mpe="0.01")],
        FAIL,
    ),
    (
        "an explicit error wins over measured − reference",
        [Point(point="p", reference="10.00", measured="10.02", error="0.005", mpe="0.01")],
        PASS,
    ),
    (
        "unjudged points are ignored",
        [Point(point="p", measured="1"), Point(point="q", error="0.001", mpe="0.01")],
        PASS,
    ),
    ("no point with error and MPE: no outcome", [Point(point="p", error="0.1"), Point(point="q", mpe="0.1")], None),
    ("no points: no outcome", [], None),
    ("exponent notation", [Point(point="p", error="1E-3", mpe="2e-3")], PASS),
]


@pytest.mark.parametrize(("rule", "points", "expected"), OUTCOMES, ids=[o[0] for o in OUTCOMES])
def test_outcome_of_points(rule: str, points: list[Point], expected: Outcome | None) -> None:
    assert outcome_of_points(points) is expected, rule


UNTIL = D(2026, 12, 9)
STATUSES = [
    ("revoked wins over everything", True, True, G, False, D(2020, 1, 1), PublicStatus.REVOKED),
    ("revoked while current and in date", True, False, G, True, UNTIL, PublicStatus.REVOKED),
    ("corrected: superseded", False, True, G, True, UNTIL, PublicStatus.SUPERSEDED),
    ("corrected beats expired", False, True, G, True, D(2020, 1, 1), PublicStatus.SUPERSEDED),
    ("governed, no longer current: superseded", False, False, G, False, UNTIL, PublicStatus.SUPERSEDED),
    ("a void notice no longer current: superseded", False, False, V, False, None, PublicStatus.SUPERSEDED),
    ("history-only and not current: superseded", False, False, H, False, UNTIL, PublicStatus.SUPERSEDED),
    ("no legal effect is never superseded by a later one", False, False, N, False, UNTIL, PublicStatus.VALID),
    ("current and in date: valid", False, False, G, True, UNTIL, PublicStatus.VALID),
    ("current on its last valid day: valid", False, False, G, True, TODAY, PublicStatus.VALID),
    ("current, the day after valid-until: expired", False, False, G, True, D(2026, 6, 14), PublicStatus.EXPIRED),
    ("no legal effect, past its date: expired", False, False, N, False, D(2026, 6, 14), PublicStatus.EXPIRED),
    ("current without valid-until (scrap-on-failure): valid", False, False, G, True, None, PublicStatus.VALID),
]


@pytest.mark.parametrize(
    ("rule", "revoked", "corrected", "effect", "is_current", "valid_until", "expected"),
    STATUSES,
    ids=[s[0] for s in STATUSES],
)
def test_public_status(
    rule: str,
    revoked: bool,
    corrected: bool,
    effect: Effect,
    is_current: bool,
    valid_until: dt.date | None,
    expected: PublicStatus,
) -> None:
    got = public_status(
        revoked=revoked,
        corrected=corrected,
        effect=effect,
        is_current=is_current,
        valid_until=valid_until,
        today=TODAY,
    )
    assert got is expected, rule


CONTENT = {
    "kind": "verification_certificate",
    "number": "JD-2026-0001",
    "performed_on": "2026-06-10",
    "as_found": [{"point": "1.0 MPa", "measured": "1.010", "reference": "1.000"}],
    "signatories": {"verifier": "张三", "checker": "李四", "approver": "王五"},
}


def _reference_sha(content: dict[str, Any]) -> str:
    """What anyone holding the content recomputes: sorted keys, no whitespace, UTF-8."""
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def test_content_sha256_is_recomputable_from_the_canonical_json() -> None:
    digest = content_sha256(CONTENT)
    assert digest == _reference_sha(CONTENT)
    assert len(digest) == 64
    assert digest == content_sha256(CONTENT)  # stable


def test_content_sha256_is_a_known_value() -> None:
    expected = hashlib.sha256(b'{"a":1,"b":{"c":"x","d":[2,1]}}').hexdigest()
    assert content_sha256({"b": {"d": [2, 1], "c": "x"}, "a": 1}) == expected


def test_content_sha256_ignores_key_order_at_every_level() -> None:
    shuffled = {
        "signatories": {"approver": "王五", "verifier": "张三", "checker": "李四"},
        "as_found": [{"reference": "1.000", "point": "1.0 MPa", "measured": "1.010"}],
        "performed_on": "2026-06-10",
        "number": "JD-2026-0001",
        "kind": "verification_certificate",
    }
    assert content_sha256(shuffled) == content_sha256(CONTENT)


@pytest.mark.parametrize(
    "change",
    [
        {"number": "JD-2026-0002"},
        {"performed_on": "2026-06-11"},
        {"as_found": [{"point": "1.0 MPa", "measured": "1.01", "reference": "1.000"}]},
        {"signatories": {"verifier": "张三", "checker": "李四", "approver": "王六"}},
        {"extra": None},
    ],
)
def test_any_change_to_the_content_changes_the_hash(change: dict[str, Any]) -> None:
    assert content_sha256(CONTENT | change) != content_sha256(CONTENT)


def test_list_order_is_content() -> None:
    """Measurement points are an ordered record: reordering them is a different document."""
    a, b = {"point": "a"}, {"point": "b"}
    assert content_sha256({"as_found": [a, b]}) != content_sha256({"as_found": [b, a]})


def test_canonical_content_is_json_types() -> None:
    lab_id = uuid.UUID("12345678-1234-5678-1234-567812345678")
    content = canonical_content(
        lab_id=lab_id,
        performed_on=D(2026, 6, 10),
        as_found=[IN_TOL],
        cycle_months=None,
    )
    assert content["lab_id"] == "12345678-1234-5678-1234-567812345678"
    assert content["performed_on"] == "2026-06-10"
    assert content["as_found"][0]["measured"] == "1.010"
    assert content["as_found"][0]["mpe"] == "±0.016"
    assert content["cycle_months"] is None
    # JSON-round-trippable: what is hashed is what a client can rebuild.
    assert msgspec.json.decode(msgspec.json.encode(content)) == content
    assert content_sha256(content) == _reference_sha(content)
