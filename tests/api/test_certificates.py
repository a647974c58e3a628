"""Recording results and what they do to the instrument; corrections, revocation, inspections, reads
and the public authenticity check (issue 3, points 2–5 and 8).

Rules: domain.md §1.4–§1.5 (documents, failure), §2.2 (which cycle wins), §2.3 R1–R7 (dates),
§5 (worked examples); design.md §3–§5.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import uuid
from typing import Any

import asyncpg
import httpx
import pytest

from service.auth import Role
from service.certificates.rules import canonical_content, content_sha256
from service.clock import FixedClock
from tests.conftest import (
    GAUGE,
    Api,
    LabAccount,
    MakeLab,
    MakeTenant,
    Tenant,
    accepted_request,
    fields_of,
    mint,
    problem,
)

# The fields a certificate's content_sha256 covers (issue 3 point 4: its canonical content).
CONTENT_FIELDS = (
    "instrument_id",
    "enterprise_id",
    "lab_id",
    "issuer_region",
    "kind",
    "number",
    "outcome",
    "performed_on",
    "issued_on",
    "cycle_months",
    "valid_until",
    "failed_items",
    "as_found",
    "as_left",
    "regulation_applied",
    "standards_used",
    "signatories",
    "conclusion",
    "supersedes",
    "correction_reason",
)
PUBLIC_KEYS = {
    "lab",
    "kind",
    "number",
    "instrument",
    "performed_on",
    "valid_until",
    "outcome",
    "status",
    "content_sha256",
}
NOTICE = {"kind": "result_notice", "failed_items": ["示值误差"]}
CALIBRATED = {"catalog_code": "pressure_gauge", "legal_use": "none", "cycle_months": 12}


def _at(day: str, hour_utc: int = 4) -> dt.datetime:
    """An instant on ``day`` (12:00 in Shanghai by default)."""
    return dt.datetime.fromisoformat(day).replace(hour=hour_utc, tzinfo=dt.UTC)


def _point(point: str, reference: str, measured: str, mpe: str, **extra: Any) -> dict[str, Any]:
    return {"point": point, "reference": reference, "measured": measured, "mpe": mpe, "unit": "MPa"} | extra


def _certs_url(instrument_id: str) -> str:
    return f"/v1/instruments/{instrument_id}/certificates"


def _public_url(lab_id: str, number: str) -> str:
    return f"/v1/public/certificates/{lab_id}/{number}"


@pytest.fixture
async def regulator(pool: asyncpg.Pool, app_client: httpx.AsyncClient) -> Api:
    """A regulator of Shanghai ("31"), the region of every test enterprise (310115)."""
    return Api(app_client, await mint(pool, Role.REGULATOR, region_code="31"))


@pytest.fixture
async def far_regulator(pool: asyncpg.Pool, app_client: httpx.AsyncClient) -> Api:
    """A regulator of Guangdong ("44"): outside the test enterprises' region."""
    return Api(app_client, await mint(pool, Role.REGULATOR, region_code="44"))


async def _recorded(tenant: Tenant, lab: LabAccount, instrument_id: str, **fields: Any) -> dict[str, Any]:
    """Record a result through a fresh accepted request; the 201 body {certificate, instrument}."""
    await accepted_request(tenant, lab, instrument_id)
    response = await lab.record(instrument_id, **fields)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {"certificate", "instrument"}
    return body


async def _snapshot(pool: asyncpg.Pool, tenant: Tenant, instrument_id: str) -> tuple[int, dict[str, Any]]:
    """How many documents the instrument has, and the instrument as its owner reads it."""
    async with pool.acquire() as conn:
        count = int(
            await conn.fetchval("SELECT count(*) FROM certificates WHERE instrument_id = $1", uuid.UUID(instrument_id))
        )
    read = await tenant.api.get(f"/v1/instruments/{instrument_id}")
    assert read.status_code == 200, read.text
    return count, read.json()


async def _certificate(api: Api, certificate_id: str) -> dict[str, Any]:
    response = await api.get(f"/v1/certificates/{certificate_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


# --- passing verification: a new period from its own date (R1, R2, R4, R6) -------------------------


async def test_early_reverification_starts_from_its_own_date_and_the_issue_date_does_not_move_it(
    tenant: Tenant, lab: LabAccount
) -> None:
    """R2 + R6: valid until = performed_on + 6 months − 1 day, never stacked on the old period
    (2026-07-14), and the later issue date (2026-06-12) does not move it."""
    gauge = await tenant.register(**GAUGE, last_verified_on="2026-01-15")
    assert gauge["valid_until"] == "2026-07-14"
    body = await _recorded(
        tenant, lab, gauge["id"], number="JD-EARLY-1", performed_on="2026-06-01", issued_on="2026-06-12"
    )
    certificate, instrument = body["certificate"], body["instrument"]
    assert {
        k: certificate[k]
        for k in (
            "instrument_id",
            "enterprise_id",
            "lab_id",
            "kind",
            "number",
            "outcome",
            "performed_on",
            "issued_on",
            "cycle_months",
            "valid_until",
            "legal_effect",
            "status",
            "supersedes",
            "superseded_by",
            "revoked_on",
            "recorded_by_role",
        )
    } == {
        "instrument_id": gauge["id"],
        "enterprise_id": tenant.id,
        "lab_id": lab.id,
        "kind": "verification_certificate",
        "number": "JD-EARLY-1",
        "outcome": "pass",
        "performed_on": "2026-06-01",
        "issued_on": "2026-06-12",
        "cycle_months": 6,
        "valid_until": "2026-11-30",
        "legal_effect": "governs",
        "status": "valid",
        "supersedes": None,
        "superseded_by": None,
        "revoked_on": None,
        "recorded_by_role": "lab",
    }
    assert certificate["request_id"] is not None
    assert {
        k: instrument[k]
        for k in (
            "last_verified_on",
            "valid_until",
            "next_due",
            "current_certificate_id",
            "current_certificate_number",
            "lifecycle",
            "status",
            "required_action",
        )
    } == {
        "last_verified_on": "2026-06-01",
        "valid_until": "2026-11-30",
        "next_due": "2026-12-01",
        "current_certificate_id": certificate["id"],
        "current_certificate_number": "JD-EARLY-1",
        "lifecycle": "in_service",
        "status": "valid",
        "required_action": "none",
    }
    assert instrument["basis"]["rule"] == "certificate"
    assert instrument["basis"]["from"] == "2026-06-01"
    assert instrument["version"] > gauge["version"]
    # The response is the instrument as it now stands: a fresh read agrees.
    assert (await tenant.api.get(f"/v1/instruments/{gauge['id']}")).json() == instrument


DATE_CASES = [
    # (why, period rule, catalogue code, performed_on, valid_until)
    ("R2: 6 months − 1 day", "inclusive_minus_one", "pressure_gauge", "2026-06-10", "2026-12-09"),
    ("R4: civil code, no − 1", "civil_code", "pressure_gauge", "2026-06-10", "2026-12-10"),
    ("R1: month end clamps (domain.md §5)", "inclusive_minus_one", "pressure_gauge", "2025-08-31", "2026-02-27"),
    ("R1 + R4: month end clamps, civil code", "civil_code", "pressure_gauge", "2025-08-31", "2026-02-28"),
    ("R1: leap day + 12 months", "inclusive_minus_one", "price_scale", "2024-02-29", "2025-02-27"),
    ("R1 + R4: leap day + 12 months, civil code", "civil_code", "price_scale", "2024-02-29", "2025-02-28"),
    ("R2: into the next year", "inclusive_minus_one", "price_scale", "2026-01-01", "2026-12-31"),
    ("limited life: 72 months of use life", "inclusive_minus_one", "water_meter_dn25", "2026-06-10", "2032-06-09"),
]


async def test_valid_until_follows_the_enterprise_period_rule(make_tenant: MakeTenant, lab: LabAccount) -> None:
    """R1/R2/R4: the certificate's valid_until runs from its own performed_on by the enterprise's rule."""
    tenants = {rule: await make_tenant(period_rule=rule) for rule in ("inclusive_minus_one", "civil_code")}
    for why, rule, code, performed_on, valid_until in DATE_CASES:
        tenant = tenants[rule]
        use = "safety_protection" if code == "pressure_gauge" else "trade_settlement"
        instrument = await tenant.register(catalog_code=code, legal_use=use)
        body = await _recorded(tenant, lab, instrument["id"], performed_on=performed_on, issued_on=performed_on)
        assert body["certificate"]["valid_until"] == valid_until, why
        found = (body["instrument"]["valid_until"], body["instrument"]["last_verified_on"])
        assert found == (valid_until, performed_on), why


async def test_a_pass_returns_a_pending_instrument_to_service(tenant: Tenant, lab: LabAccount) -> None:
    """Issue 3: a passing verification returns a failed or pending instrument to service."""
    gauge = await tenant.register(**GAUGE, lifecycle="pending_verification")
    assert gauge["status"] == "pending_verification"
    body = await _recorded(tenant, lab, gauge["id"])
    assert (body["instrument"]["lifecycle"], body["instrument"]["status"]) == ("in_service", "valid")
    assert body["instrument"]["valid_until"] == "2026-12-09"


async def test_a_lab_may_shorten_the_cycle_never_exceed_the_legal_maximum(
    tenant: Tenant, lab: LabAccount, pool: asyncpg.Pool
) -> None:
    """domain.md §2.2: the institution may shorten a compulsory cycle (stored on the instrument too),
    never lengthen it (422 naming cycle_months, nothing written)."""
    gauge = await tenant.register(**GAUGE)
    await accepted_request(tenant, lab, gauge["id"])
    before = await _snapshot(pool, tenant, gauge["id"])
    body = problem(await lab.record(gauge["id"], cycle_months=7), 422)
    assert fields_of(body) == ["cycle_months"]
    assert "legal maximum of 6 months" in body["detail"]
    assert await _snapshot(pool, tenant, gauge["id"]) == before
    # The request item still awaits its result: the refused POST consumed nothing.
    response = await lab.record(gauge["id"], cycle_months=3)
    assert response.status_code == 201, response.text
    certificate, instrument = response.json()["certificate"], response.json()["instrument"]
    assert (certificate["cycle_months"], certificate["valid_until"]) == (3, "2026-09-09")
    assert (instrument["cycle_months"], instrument["valid_until"]) == (3, "2026-09-09")
    assert instrument["basis"]["cycle_source"] == "instrument"


async def test_a_printed_valid_until_is_accepted_when_not_later_than_computed(
    tenant: Tenant, lab: LabAccount, pool: asyncpg.Pool
) -> None:
    """Issue 3 point 2: a printed valid_until is accepted if ≤ the computed 2026-12-09; later → 422."""
    gauge = await tenant.register(**GAUGE)
    await accepted_request(tenant, lab, gauge["id"])
    before = await _snapshot(pool, tenant, gauge["id"])
    for late in ("2026-12-10", "2027-06-09"):
        assert fields_of(problem(await lab.record(gauge["id"], valid_until=late), 422)) == ["valid_until"]
    assert fields_of(problem(await lab.record(gauge["id"], valid_until="2026-06-09"), 422)) == ["valid_until"]
    assert await _snapshot(pool, tenant, gauge["id"]) == before
    exact = await lab.record(gauge["id"], valid_until="2026-12-09")
    assert exact.status_code == 201, exact.text
    assert exact.json()["certificate"]["valid_until"] == "2026-12-09"
    other = await tenant.register(**GAUGE)
    body = await _recorded(tenant, lab, other["id"], valid_until="2026-11-30")
    assert body["certificate"]["valid_until"] == "2026-11-30"
    assert (body["instrument"]["valid_until"], body["instrument"]["next_due"]) == ("2026-11-30", "2026-12-01")


async def test_scrap_on_failure_instruments_pass_without_a_valid_until(tenant: Tenant, lab: LabAccount) -> None:
    """domain.md §1.5: a glass clinical thermometer is verified once and never expires; no cycle."""
    thermometer = await tenant.register(catalog_code="clinical_thermometer_glass", legal_use="medical", name="体温计")
    await accepted_request(tenant, lab, thermometer["id"])
    assert fields_of(problem(await lab.record(thermometer["id"], cycle_months=12), 422)) == ["cycle_months"]
    assert fields_of(problem(await lab.record(thermometer["id"], valid_until="2027-01-01"), 422)) == ["valid_until"]
    response = await lab.record(thermometer["id"])
    assert response.status_code == 201, response.text
    certificate, instrument = response.json()["certificate"], response.json()["instrument"]
    assert (certificate["valid_until"], certificate["cycle_months"], certificate["legal_effect"]) == (
        None,
        None,
        "governs",
    )
    assert (instrument["status"], instrument["valid_until"], instrument["last_verified_on"]) == (
        "valid",
        None,
        "2026-06-10",
    )


# --- failure: a result notice voids the governing certificate ---------------------------------------


async def test_a_result_notice_needs_its_failed_items(tenant: Tenant, lab: LabAccount, pool: asyncpg.Pool) -> None:
    """domain.md §1.5: a 检定结果通知书 names the failed items (422 naming failed_items, nothing written)."""
    gauge = await tenant.register(**GAUGE, last_verified_on="2026-01-15")
    await accepted_request(tenant, lab, gauge["id"])
    before = await _snapshot(pool, tenant, gauge["id"])
    for fields in ({}, {"failed_items": []}):
        assert fields_of(problem(await lab.record(gauge["id"], kind="result_notice", **fields), 422)) == [
            "failed_items"
        ], fields
    # The kind implies the outcome: a notice is a failure, a verification certificate a pass.
    mismatch = await lab.record(gauge["id"], **NOTICE, outcome="pass")
    assert fields_of(problem(mismatch, 422)) == ["outcome"]
    assert fields_of(problem(await lab.record(gauge["id"], outcome="fail"), 422)) == ["outcome"]
    # A notice has no 有效期至 and no cycle.
    assert fields_of(problem(await lab.record(gauge["id"], **NOTICE, valid_until="2026-12-01"), 422)) == ["valid_until"]
    assert fields_of(problem(await lab.record(gauge["id"], **NOTICE, cycle_months=3), 422)) == ["cycle_months"]
    assert await _snapshot(pool, tenant, gauge["id"]) == before


async def test_a_blank_failed_item_is_refused(tenant: Tenant, lab: LabAccount, pool: asyncpg.Pool) -> None:
    """A failed item of only spaces names nothing: a 4xx naming failed_items, never a notice stored with
    failed_items [""] (domain.md §1.5: the notice names what failed)."""
    gauge = await tenant.register(**GAUGE, last_verified_on="2026-01-15")
    await accepted_request(tenant, lab, gauge["id"])
    before = await _snapshot(pool, tenant, gauge["id"])
    blank = await lab.record(gauge["id"], kind="result_notice", failed_items=["   "])
    assert blank.status_code in (400, 422), blank.text
    assert [f.split("[")[0] for f in fields_of(problem(blank, blank.status_code))] == ["failed_items"]
    assert await _snapshot(pool, tenant, gauge["id"]) == before


async def test_a_result_notice_voids_the_governing_certificate_from_its_date(
    tenant: Tenant, lab: LabAccount, pool: asyncpg.Pool
) -> None:
    """印证办法 Art. 6, 计量法 §9: the failure voids the certificate from performed_on; failed, no validity."""
    gauge = await tenant.register(**GAUGE)
    passed = (await _recorded(tenant, lab, gauge["id"], performed_on="2026-06-01", issued_on="2026-06-01"))[
        "certificate"
    ]
    body = await _recorded(
        tenant, lab, gauge["id"], **NOTICE, number="TZ-1", performed_on="2026-06-10", issued_on="2026-06-11"
    )
    notice, instrument = body["certificate"], body["instrument"]
    assert (notice["kind"], notice["outcome"], notice["legal_effect"], notice["valid_until"]) == (
        "result_notice",
        "fail",
        "voids",
        None,
    )
    assert notice["failed_items"] == ["示值误差"]
    assert {k: instrument[k] for k in ("lifecycle", "status", "valid_until", "next_due", "required_action")} == {
        "lifecycle": "failed",
        "status": "failed",
        "valid_until": None,
        "next_due": None,
        "required_action": "repair_or_scrap",
    }
    assert instrument["current_certificate_id"] == notice["id"]
    voided = await _certificate(lab.api, passed["id"])
    assert (voided["revoked_on"], voided["status"]) == ("2026-06-10", "revoked")
    assert voided["revoked_reason"]
    public = await Api(lab.api.client, None).get(_public_url(lab.id, passed["number"]))
    assert public.json()["status"] == "revoked"


async def test_domain_md_failed_verification_example(tenant: Tenant, lab: LabAccount, clock: FixedClock) -> None:
    """domain.md §5: a price scale valid until 2026-05-19 fails on 2026-05-06 (failed, no valid-until);
    repaired and re-verified on 2026-05-12 → valid until 2027-05-11, back in service."""
    clock.set(_at("2026-05-13"))
    scale = await tenant.register(
        catalog_code="price_scale", legal_use="trade_settlement", last_verified_on="2025-05-20"
    )
    assert scale["valid_until"] == "2026-05-19"
    failed = await _recorded(
        tenant, lab, scale["id"], **NOTICE, performed_on="2026-05-06", issued_on="2026-05-06", number="TZ-0506"
    )
    assert failed["certificate"]["legal_effect"] == "voids"
    assert (failed["instrument"]["status"], failed["instrument"]["valid_until"]) == ("failed", None)
    assert failed["instrument"]["required_action"] == "repair_or_scrap"
    repaired = await _recorded(tenant, lab, scale["id"], performed_on="2026-05-12", issued_on="2026-05-13")
    assert repaired["certificate"]["valid_until"] == "2027-05-11"
    assert {k: repaired["instrument"][k] for k in ("lifecycle", "status", "valid_until", "last_verified_on")} == {
        "lifecycle": "in_service",
        "status": "valid",
        "valid_until": "2027-05-11",
        "last_verified_on": "2026-05-12",
    }
    # The notice no longer governs: a later pass superseded it.
    assert (await _certificate(tenant.api, failed["certificate"]["id"]))["status"] == "superseded"


async def test_failed_verification_voids_a_recorded_certificate_then_repair_restores(
    tenant: Tenant, lab: LabAccount, clock: FixedClock
) -> None:
    """domain.md §5 with the old certificate recorded in metreg: it is void from 2026-05-06."""
    clock.set(_at("2026-05-13"))
    scale = await tenant.register(catalog_code="price_scale", legal_use="trade_settlement")
    old = (await _recorded(tenant, lab, scale["id"], performed_on="2025-05-20", issued_on="2025-05-21"))["certificate"]
    assert old["valid_until"] == "2026-05-19"
    await _recorded(tenant, lab, scale["id"], **NOTICE, performed_on="2026-05-06", issued_on="2026-05-06")
    void = await _certificate(tenant.api, old["id"])
    assert (void["status"], void["revoked_on"]) == ("revoked", "2026-05-06")
    repaired = await _recorded(tenant, lab, scale["id"], performed_on="2026-05-12", issued_on="2026-05-12")
    assert (repaired["instrument"]["status"], repaired["instrument"]["valid_until"]) == ("valid", "2027-05-11")
    # The void stands: a later pass does not bring the old certificate back.
    assert (await _certificate(tenant.api, old["id"]))["status"] == "revoked"


async def test_a_scrap_on_failure_instrument_is_scrapped_when_it_fails(
    tenant: Tenant, lab: LabAccount, admin: Api, pool: asyncpg.Pool
) -> None:
    """1991 有关规定: 失准报废 — a failed glass clinical thermometer is scrapped; no result after that."""
    thermometer = await tenant.register(
        catalog_code="clinical_thermometer_glass", legal_use="medical", name="体温计", last_verified_on="2024-03-01"
    )
    body = await _recorded(tenant, lab, thermometer["id"], **NOTICE)
    assert body["certificate"]["legal_effect"] == "voids"
    assert (body["instrument"]["lifecycle"], body["instrument"]["status"]) == ("scrapped", "scrapped")
    # Scrapped is final: even an admin recording on the lab's behalf is refused (409).
    before = await _snapshot(pool, tenant, thermometer["id"])
    later = await admin.post(
        _certs_url(thermometer["id"]),
        json={"kind": "verification_certificate", "number": "JD-AFTER", "lab_id": lab.id}
        | {"performed_on": "2026-06-12", "issued_on": "2026-06-12"},
    )
    problem(later, 409)
    assert await _snapshot(pool, tenant, thermometer["id"]) == before


# --- calibration certificates -------------------------------------------------------------------------


async def test_a_calibration_of_a_compulsory_instrument_has_no_legal_effect(tenant: Tenant, lab: LabAccount) -> None:
    """domain.md §1.4 [S-360TABLE]: a calibration certificate does not satisfy compulsory verification."""
    gauge = await tenant.register(**GAUGE, last_verified_on="2026-01-15")
    body = await _recorded(
        tenant,
        lab,
        gauge["id"],
        kind="calibration_certificate",
        as_found=[_point("1.0 MPa", "1.000", "1.005", "±0.016")],
    )
    certificate, instrument = body["certificate"], body["instrument"]
    assert (certificate["legal_effect"], certificate["outcome"], certificate["kind"]) == (
        "none",
        "pass",
        "calibration_certificate",
    )
    assert "verification certificate" in certificate["effect_note"]
    assert {k: instrument[k] for k in ("valid_until", "last_verified_on", "current_certificate_id", "status")} == {
        "valid_until": "2026-07-14",
        "last_verified_on": "2026-01-15",
        "current_certificate_id": None,
        "status": "due_soon",
    }
    assert instrument["basis"]["rule"] == "inclusive_minus_one"
    assert instrument["version"] == gauge["version"]


async def test_a_failing_calibration_of_a_compulsory_instrument_carries_no_valid_until(
    tenant: Tenant, lab: LabAccount, pool: asyncpg.Pool
) -> None:
    """A failing result has no 有效期至 (domain.md §1.5): a printed valid_until on a failing calibration
    is a 422 naming valid_until (never a 500), and nothing is written."""
    gauge = await tenant.register(**GAUGE, last_verified_on="2026-01-15")
    await accepted_request(tenant, lab, gauge["id"])
    before = await _snapshot(pool, tenant, gauge["id"])
    out = [_point("1.0 MPa", "1.000", "1.050", "±0.016")]
    response = await lab.record(gauge["id"], kind="calibration_certificate", as_found=out, valid_until="2026-12-09")
    assert fields_of(problem(response, 422)) == ["valid_until"]
    assert await _snapshot(pool, tenant, gauge["id"]) == before


async def test_a_calibration_of_a_non_compulsory_instrument_starts_a_period_on_its_own_cycle(
    tenant: Tenant, lab: LabAccount
) -> None:
    """design.md §4: non-compulsory instruments are calibrated on the enterprise's cycle (12 months);
    the outcome comes from the as-found errors against the MPE (± allowed; error = measured − reference)."""
    gauge = await tenant.register(**CALIBRATED)
    as_found = [
        _point("0.2 MPa", "0.200", "0.210", "±0.016"),
        _point("1.0 MPa", "1.000", "0.984", "0.016", uncertainty="0.002"),  # |−0.016| ≤ 0.016: on the limit
    ]
    body = await _recorded(
        tenant, lab, gauge["id"], kind="calibration_certificate", as_found=as_found, performed_on="2026-06-10"
    )
    certificate, instrument = body["certificate"], body["instrument"]
    assert (certificate["outcome"], certificate["legal_effect"], certificate["cycle_months"]) == ("pass", "governs", 12)
    assert certificate["valid_until"] == "2027-06-09"
    assert certificate["as_found"][1] == {
        "point": "1.0 MPa",
        "reference": "1.000",
        "measured": "0.984",
        "error": None,
        "mpe": "0.016",
        "uncertainty": "0.002",
        "unit": "MPa",
    }
    assert (instrument["valid_until"], instrument["status"], instrument["traceability"]) == (
        "2027-06-09",
        "valid",
        "calibration",
    )


async def test_an_explicit_error_is_judged_instead_of_measured_minus_reference(tenant: Tenant, lab: LabAccount) -> None:
    """Point.error defaults to measured − reference only when not given: a given error (0.01) is judged."""
    gauge = await tenant.register(**CALIBRATED)
    point = _point("1.0 MPa", "1.000", "1.500", "±0.016", error="0.010")
    body = await _recorded(tenant, lab, gauge["id"], kind="calibration_certificate", as_found=[point])
    assert body["certificate"]["outcome"] == "pass"
    other = await tenant.register(**CALIBRATED)
    point = _point("1.0 MPa", "1.000", "1.000", "±0.016", error="-0.020")
    body = await _recorded(tenant, lab, other["id"], kind="calibration_certificate", as_found=[point])
    assert body["certificate"]["outcome"] == "fail"


async def test_found_out_of_tolerance_but_adjusted_within_governs_with_outcome_fail(
    tenant: Tenant, lab: LabAccount
) -> None:
    """ISO/IEC 17025 §7.8.4.2: as-found out of tolerance, as-left within → usable, the certificate governs,
    the recorded outcome stays fail (the as-found verdict)."""
    gauge = await tenant.register(**CALIBRATED, last_verified_on="2026-01-15")
    body = await _recorded(
        tenant,
        lab,
        gauge["id"],
        kind="calibration_certificate",
        as_found=[_point("1.0 MPa", "1.000", "1.030", "±0.016")],
        as_left=[_point("1.0 MPa", "1.000", "1.004", "±0.016")],
    )
    certificate, instrument = body["certificate"], body["instrument"]
    assert (certificate["outcome"], certificate["legal_effect"], certificate["valid_until"]) == (
        "fail",
        "governs",
        "2027-06-09",
    )
    assert (instrument["lifecycle"], instrument["status"], instrument["valid_until"]) == (
        "in_service",
        "valid",
        "2027-06-09",
    )


async def test_found_out_of_tolerance_and_not_adjusted_fails_the_instrument(tenant: Tenant, lab: LabAccount) -> None:
    """A calibration out of tolerance with no as-left data: the instrument may not be used."""
    gauge = await tenant.register(**CALIBRATED, last_verified_on="2026-01-15")
    body = await _recorded(
        tenant,
        lab,
        gauge["id"],
        kind="calibration_certificate",
        as_found=[_point("1.0 MPa", "1.000", "0.950", "±0.016"), _point("0.2 MPa", "0.2", "0.2", "0.016")],
    )
    certificate, instrument = body["certificate"], body["instrument"]
    assert (certificate["outcome"], certificate["legal_effect"], certificate["valid_until"]) == ("fail", "voids", None)
    assert (instrument["lifecycle"], instrument["status"], instrument["valid_until"]) == ("failed", "failed", None)


async def test_a_calibration_without_outcome_or_judgeable_points_is_422(
    tenant: Tenant, lab: LabAccount, pool: asyncpg.Pool
) -> None:
    """The outcome is given, or derived from as-found points with an error and an MPE; else 422."""
    gauge = await tenant.register(**CALIBRATED)
    await accepted_request(tenant, lab, gauge["id"])
    before = await _snapshot(pool, tenant, gauge["id"])
    no_mpe = [{"point": "1.0 MPa", "reference": "1.000", "measured": "1.001"}]
    no_error = [{"point": "1.0 MPa", "measured": "1.001", "mpe": "0.016"}]
    for as_found in ([], no_mpe, no_error):
        body = problem(await lab.record(gauge["id"], kind="calibration_certificate", as_found=as_found), 422)
        assert fields_of(body) == ["outcome"]
    assert await _snapshot(pool, tenant, gauge["id"]) == before
    given = await lab.record(gauge["id"], kind="calibration_certificate", outcome="pass", as_found=no_mpe)
    assert given.status_code == 201, given.text
    assert given.json()["certificate"]["outcome"] == "pass"


MALFORMED_POINTS = [
    ("comma", {"point": "1 MPa", "measured": "1,001"}, "as_found[0].measured"),
    ("letters", {"point": "1 MPa", "reference": "abc"}, "as_found[0].reference"),
    ("plus-minus", {"point": "1 MPa", "mpe": "+-0.1"}, "as_found[0].mpe"),
    ("number, not string", {"point": "1 MPa", "measured": 1.001}, "as_found[0].measured"),
    ("blank point", {"point": ""}, "as_found[0].point"),
    ("unknown field", {"point": "1 MPa", "colour": "red"}, "as_found[0].colour"),
]


async def test_a_malformed_measurement_point_is_400(tenant: Tenant, lab: LabAccount, pool: asyncpg.Pool) -> None:
    """design.md §5: malformed input is 400 naming the field (decimals are strings); nothing written."""
    gauge = await tenant.register(**CALIBRATED)
    await accepted_request(tenant, lab, gauge["id"])
    before = await _snapshot(pool, tenant, gauge["id"])
    for why, point, field in MALFORMED_POINTS:
        body = problem(
            await lab.record(gauge["id"], kind="calibration_certificate", outcome="pass", as_found=[point]), 400
        )
        assert fields_of(body) == [field], why
    assert await _snapshot(pool, tenant, gauge["id"]) == before


# --- history: a result dated before the governing document -------------------------------------------


async def test_a_result_dated_before_the_governing_certificate_is_history(tenant: Tenant, lab: LabAccount) -> None:
    """Issue 3: a result performed before the governing document is stored without changing the status."""
    gauge = await tenant.register(**GAUGE)
    governing = await _recorded(tenant, lab, gauge["id"], performed_on="2026-06-10", issued_on="2026-06-10")
    late = await _recorded(tenant, lab, gauge["id"], performed_on="2026-06-01", issued_on="2026-06-14")
    assert late["certificate"]["legal_effect"] == "history"
    assert late["certificate"]["valid_until"] == "2026-11-30"
    instrument = late["instrument"]
    assert instrument["current_certificate_id"] == governing["certificate"]["id"]
    assert (instrument["valid_until"], instrument["last_verified_on"]) == ("2026-12-09", "2026-06-10")
    assert instrument["version"] == governing["instrument"]["version"]
    # A failure dated before the governing certificate does not fail the instrument either.
    old_notice = await _recorded(tenant, lab, gauge["id"], **NOTICE, performed_on="2026-06-05", issued_on="2026-06-05")
    assert old_notice["certificate"]["legal_effect"] == "history"
    assert (old_notice["instrument"]["lifecycle"], old_notice["instrument"]["status"]) == ("in_service", "valid")
    assert (await _certificate(tenant.api, governing["certificate"]["id"]))["status"] == "valid"


async def test_a_failure_before_the_registered_verification_is_history(tenant: Tenant, lab: LabAccount) -> None:
    """The registered last_verified_on governs until a result is recorded: an older failure is history."""
    gauge = await tenant.register(**GAUGE, last_verified_on="2026-06-05")
    body = await _recorded(tenant, lab, gauge["id"], **NOTICE, performed_on="2026-06-01", issued_on="2026-06-02")
    assert body["certificate"]["legal_effect"] == "history"
    assert {k: body["instrument"][k] for k in ("lifecycle", "valid_until", "status")} == {
        "lifecycle": "in_service",
        "valid_until": "2026-12-04",
        "status": "valid",
    }


# --- dates --------------------------------------------------------------------------------------------

BAD_DATES: list[tuple[str, dict[str, Any], int, list[str]]] = [
    ("issued before performed", {"performed_on": "2026-06-10", "issued_on": "2026-06-09"}, 422, ["issued_on"]),
    ("issued tomorrow", {"performed_on": "2026-06-10", "issued_on": "2026-06-16"}, 422, ["issued_on"]),
    ("performed tomorrow", {"performed_on": "2026-06-16", "issued_on": "2026-06-16"}, 422, ["issued_on"]),
    ("performed in 1800", {"performed_on": "1800-01-01", "issued_on": "2026-06-10"}, 400, ["performed_on"]),
    ("issued in 1800", {"performed_on": "2026-06-10", "issued_on": "1800-01-01"}, 400, ["issued_on"]),
    ("printed valid-until in 1800", {"valid_until": "1800-01-01"}, 400, ["valid_until"]),
    ("impossible date", {"performed_on": "2026-02-30"}, 400, ["performed_on"]),
    ("not a date", {"issued_on": "12/06/2026"}, 400, ["issued_on"]),
    ("missing performed_on", {"performed_on": None}, 400, ["performed_on"]),
]


async def test_dates_out_of_order_in_the_future_or_out_of_range_are_refused(
    tenant: Tenant, lab: LabAccount, pool: asyncpg.Pool
) -> None:
    """Issue 3: performed_on ≤ issued_on ≤ today (local); dates outside 1900–2999 are malformed (400).
    Nothing is written, and the request item still awaits its result."""
    gauge = await tenant.register(**GAUGE, last_verified_on="2026-01-15")
    await accepted_request(tenant, lab, gauge["id"])
    before = await _snapshot(pool, tenant, gauge["id"])
    base = {"kind": "verification_certificate", "number": "JD-DATES", "performed_on": "2026-06-10"}
    for why, change, status, fields in BAD_DATES:
        body = {k: v for k, v in (base | {"issued_on": "2026-06-12"} | change).items() if v is not None}
        found = problem(await lab.api.post(_certs_url(gauge["id"]), json=body), status)
        assert fields_of(found) == fields, why
    assert await _snapshot(pool, tenant, gauge["id"]) == before
    response = await lab.api.post(_certs_url(gauge["id"]), json=base | {"issued_on": "2026-06-15"})
    assert response.status_code == 201, response.text


async def test_today_is_the_enterprise_local_date(tenant: Tenant, lab: LabAccount, clock: FixedClock) -> None:
    """R7: at 2026-06-15T17:30Z it is already 2026-06-16 in Shanghai, so that issue date is not future."""
    gauge = await tenant.register(**GAUGE)
    await accepted_request(tenant, lab, gauge["id"])
    clock.set(dt.datetime(2026, 6, 15, 15, 59, tzinfo=dt.UTC))  # 23:59 on the 15th in Shanghai
    problem(await lab.record(gauge["id"], performed_on="2026-06-16", issued_on="2026-06-16"), 422)
    clock.set(dt.datetime(2026, 6, 15, 17, 30, tzinfo=dt.UTC))  # 01:30 on the 16th in Shanghai
    response = await lab.record(gauge["id"], performed_on="2026-06-16", issued_on="2026-06-16")
    assert response.status_code == 201, response.text
    assert response.json()["instrument"]["valid_until"] == "2026-12-15"


async def test_today_follows_the_enterprise_time_zone(make_tenant: MakeTenant, lab: LabAccount) -> None:
    """R7: at 2026-06-15T04:00Z it is still 2026-06-14 in Los Angeles: an issue date of the 15th is future."""
    tenant = await make_tenant(timezone="America/Los_Angeles")
    gauge = await tenant.register(**GAUGE)
    await accepted_request(tenant, lab, gauge["id"])
    future = problem(await lab.record(gauge["id"], performed_on="2026-06-14", issued_on="2026-06-15"), 422)
    assert fields_of(future) == ["issued_on"]
    assert (await lab.record(gauge["id"], performed_on="2026-06-14", issued_on="2026-06-14")).status_code == 201


# --- who may record, and uniqueness -------------------------------------------------------------------


async def test_a_number_is_unique_per_lab(
    tenant: Tenant, lab: LabAccount, make_lab: MakeLab, pool: asyncpg.Pool
) -> None:
    """design.md §3: (lab, number) is unique → 409 naming number, nothing written; another lab may
    use the same number."""
    first, second = await tenant.register(**GAUGE), await tenant.register(**GAUGE)
    await _recorded(tenant, lab, first["id"], number="JD-2026-0001")
    await accepted_request(tenant, lab, second["id"])
    before = await _snapshot(pool, tenant, second["id"])
    for number in ("JD-2026-0001", "  JD-2026-0001 "):
        assert fields_of(problem(await lab.record(second["id"], number=number), 409)) == ["number"]
    assert await _snapshot(pool, tenant, second["id"]) == before
    assert (await lab.record(second["id"], number="JD-2026-0002")).status_code == 201
    other = await make_lab()
    third = await tenant.register(**GAUGE)
    body = await _recorded(tenant, other, third["id"], number="JD-2026-0001")
    assert body["certificate"]["lab_id"] == other.id


async def test_a_blank_number_is_400_naming_number(tenant: Tenant, lab: LabAccount, pool: asyncpg.Pool) -> None:
    """design.md §5: malformed input is 400 naming the field (as a blank serial_no is at registration);
    a number of only spaces is no number, and must not reach the database (500)."""
    gauge = await tenant.register(**GAUGE)
    await accepted_request(tenant, lab, gauge["id"])
    before = await _snapshot(pool, tenant, gauge["id"])
    assert fields_of(problem(await lab.record(gauge["id"], number="   "), 400)) == ["number"]
    assert await _snapshot(pool, tenant, gauge["id"]) == before


async def test_a_lab_without_an_accepted_request_is_refused(
    tenant: Tenant, lab: LabAccount, make_lab: MakeLab, pool: asyncpg.Pool
) -> None:
    """Issue 3 point 2 + 8: a lab needs an accepted request awaiting a result. A lab that can see the
    instrument (earlier or unaccepted request) gets 403; one that never had a request, 404."""
    gauge = await tenant.register(**GAUGE)
    await _recorded(tenant, lab, gauge["id"])  # consumes the only item
    before = await _snapshot(pool, tenant, gauge["id"])
    assert "accepted verification request" in problem(await lab.record(gauge["id"]), 403)["detail"]
    stranger = await make_lab()
    problem(await stranger.record(gauge["id"]), 404)
    pending = await make_lab()
    submitted = await tenant.api.post(
        "/v1/verification-requests", json={"lab_id": pending.id, "instrument_ids": [gauge["id"]]}
    )
    assert submitted.status_code == 201, submitted.text
    problem(await pending.record(gauge["id"]), 403)
    assert await _snapshot(pool, tenant, gauge["id"]) == before


async def test_enterprises_and_regulators_do_not_record_verification_results(
    tenant: Tenant, make_tenant: MakeTenant, lab: LabAccount, regulator: Api, pool: asyncpg.Pool
) -> None:
    """Results are recorded by the lab (regulators record only inspections): 403; others' keys 404; no key 401."""
    gauge = await tenant.register(**GAUGE, last_verified_on="2026-01-15")
    await accepted_request(tenant, lab, gauge["id"])
    before = await _snapshot(pool, tenant, gauge["id"])
    body = {
        "kind": "verification_certificate",
        "number": "X-1",
        "performed_on": "2026-06-10",
        "issued_on": "2026-06-10",
    }
    url = _certs_url(gauge["id"])
    problem(await tenant.api.post(url, json=body), 403)
    problem(await regulator.post(url, json=body), 403)
    problem(await regulator.post(url, json=body | NOTICE), 403)
    other = await make_tenant()
    problem(await other.api.post(url, json=body), 404)
    problem(await Api(tenant.api.client, None).post(url, json=body), 401)
    problem(await lab.api.post(_certs_url(str(uuid.uuid4())), json=body), 404)
    # A lab does not record under another lab's name, nor an inspection.
    problem(await lab.record(gauge["id"], lab_id=str(uuid.uuid4())), 403)
    problem(await lab.record(gauge["id"], kind="inspection_record", outcome="pass"), 403)
    assert await _snapshot(pool, tenant, gauge["id"]) == before


async def test_an_admin_records_on_a_lab_behalf_naming_the_lab(
    tenant: Tenant, lab: LabAccount, admin: Api, pool: asyncpg.Pool
) -> None:
    """An admin must name lab_id (422 naming lab_id otherwise); the result is the lab's and answers
    the lab's open request."""
    gauge = await tenant.register(**GAUGE)
    await accepted_request(tenant, lab, gauge["id"])
    before = await _snapshot(pool, tenant, gauge["id"])
    body = {
        "kind": "verification_certificate",
        "number": "ADM-1",
        "performed_on": "2026-06-10",
        "issued_on": "2026-06-10",
    }
    url = _certs_url(gauge["id"])
    assert fields_of(problem(await admin.post(url, json=body), 422)) == ["lab_id"]
    assert fields_of(problem(await admin.post(url, json=body | {"lab_id": str(uuid.uuid4())}), 422)) == ["lab_id"]
    assert await _snapshot(pool, tenant, gauge["id"]) == before
    response = await admin.post(url, json=body | {"lab_id": lab.id})
    assert response.status_code == 201, response.text
    certificate = response.json()["certificate"]
    assert (certificate["lab_id"], certificate["recorded_by_role"], certificate["lab_name"]) == (
        lab.id,
        "admin",
        lab.lab["name"],
    )
    assert certificate["request_id"] is not None
    # The admin's result consumed the lab's item: the lab itself now has none.
    problem(await lab.record(gauge["id"]), 403)


# --- corrections --------------------------------------------------------------------------------------


async def test_a_correction_of_the_governing_certificate_replaces_it(tenant: Tenant, lab: LabAccount) -> None:
    """Issue 3 point 4: a certificate is never edited; a correction from the same lab supersedes it and,
    correcting the governing one, governs even with an earlier performed_on."""
    gauge = await tenant.register(**GAUGE)
    old = (await _recorded(tenant, lab, gauge["id"], number="JD-C-1", performed_on="2026-06-10"))["certificate"]
    response = await lab.record(
        gauge["id"],
        number="JD-C-1A",
        performed_on="2026-06-09",
        issued_on="2026-06-12",
        supersedes=old["id"],
        correction_reason="  检定日期录入错误 ",
    )
    assert response.status_code == 201, response.text  # no new request needed for a correction
    new, instrument = response.json()["certificate"], response.json()["instrument"]
    assert (new["supersedes"], new["correction_reason"], new["legal_effect"]) == (
        old["id"],
        "检定日期录入错误",
        "governs",
    )
    assert new["valid_until"] == "2026-12-08"
    assert (instrument["current_certificate_id"], instrument["valid_until"], instrument["last_verified_on"]) == (
        new["id"],
        "2026-12-08",
        "2026-06-09",
    )
    before = await _certificate(lab.api, old["id"])
    assert (before["superseded_by"], before["status"], before["revoked_on"]) == (new["id"], "superseded", None)
    # The old document itself is unchanged: its content hash still matches.
    assert before["content_sha256"] == old["content_sha256"]
    public = await Api(lab.api.client, None).get(_public_url(lab.id, "JD-C-1"))
    assert public.json()["status"] == "superseded"
    assert (await Api(lab.api.client, None).get(_public_url(lab.id, "JD-C-1A"))).json()["status"] == "valid"


async def test_corrections_that_break_the_rules_are_refused_and_write_nothing(
    tenant: Tenant, lab: LabAccount, make_lab: MakeLab, pool: asyncpg.Pool
) -> None:
    """Once only (409), with a reason that goes with supersedes (422), by the issuer (403), same kind (422)."""
    gauge = await tenant.register(**GAUGE)
    old = (await _recorded(tenant, lab, gauge["id"], number="JD-K-1"))["certificate"]
    fixed = await lab.record(gauge["id"], number="JD-K-1A", supersedes=old["id"], correction_reason="序号有误")
    assert fixed.status_code == 201, fixed.text
    other = await make_lab()
    await accepted_request(tenant, other, gauge["id"])  # the other lab can see the instrument
    before = await _snapshot(pool, tenant, gauge["id"])
    correction = {"supersedes": old["id"], "correction_reason": "再次更正"}
    assert fields_of(problem(await lab.record(gauge["id"], **correction), 409)) == ["supersedes"]
    latest = fixed.json()["certificate"]["id"]
    assert fields_of(problem(await lab.record(gauge["id"], correction_reason="无所更正"), 422)) == ["correction_reason"]
    assert fields_of(problem(await lab.record(gauge["id"], supersedes=latest), 422)) == ["correction_reason"]
    problem(await other.record(gauge["id"], supersedes=latest, correction_reason="他人更正"), 403)
    kind = problem(await lab.record(gauge["id"], **NOTICE, supersedes=latest, correction_reason="改为不合格"), 422)
    assert fields_of(kind) == ["kind"]
    unknown = problem(await lab.record(gauge["id"], supersedes=str(uuid.uuid4()), correction_reason="x"), 422)
    assert fields_of(unknown) == ["supersedes"]
    assert await _snapshot(pool, tenant, gauge["id"]) == before
    # A superseded document is not revoked (409): its correction is what stands.
    problem(await lab.api.post(f"/v1/certificates/{old['id']}/revoke", json={"reason": "撤销"}), 409)
    assert await _snapshot(pool, tenant, gauge["id"]) == before
    # A correction may itself be corrected, once.
    again = await lab.record(gauge["id"], number="JD-K-1B", supersedes=latest, correction_reason="再次更正")
    assert again.status_code == 201, again.text
    assert (await _certificate(lab.api, latest))["status"] == "superseded"


# --- revocation ---------------------------------------------------------------------------------------


async def test_the_issuing_lab_revokes_its_governing_certificate_and_the_instrument_fails(
    tenant: Tenant, lab: LabAccount
) -> None:
    """Issue 3 point 3: a revoked governing certificate makes the instrument failed."""
    gauge = await tenant.register(**GAUGE)
    certificate = (await _recorded(tenant, lab, gauge["id"], number="JD-R-1"))["certificate"]
    response = await lab.api.post(
        f"/v1/certificates/{certificate['id']}/revoke", json={"reason": "标准器溯源失效", "effective_on": "2026-06-14"}
    )
    assert response.status_code == 200, response.text
    revoked, instrument = response.json()["certificate"], response.json()["instrument"]
    assert (revoked["revoked_on"], revoked["revoked_reason"], revoked["status"]) == (
        "2026-06-14",
        "标准器溯源失效",
        "revoked",
    )
    assert revoked["revoked_at"] is not None
    assert revoked["content_sha256"] == certificate["content_sha256"]
    assert {k: instrument[k] for k in ("lifecycle", "status", "valid_until", "required_action")} == {
        "lifecycle": "failed",
        "status": "failed",
        "valid_until": None,
        "required_action": "repair_or_scrap",
    }
    assert (await tenant.api.get(f"/v1/instruments/{gauge['id']}")).json()["status"] == "failed"
    public = await Api(lab.api.client, None).get(_public_url(lab.id, "JD-R-1"))
    assert public.json()["status"] == "revoked"


async def test_a_regulator_of_the_region_and_an_admin_may_revoke(
    tenant: Tenant, lab: LabAccount, regulator: Api, admin: Api
) -> None:
    """Issue 3 point 3: a regulator of the enterprise's region ("31" for 310115) or an admin revokes;
    effective_on defaults to the local today."""
    gauge, other = await tenant.register(**GAUGE), await tenant.register(**GAUGE)
    first = (await _recorded(tenant, lab, gauge["id"]))["certificate"]
    second = (await _recorded(tenant, lab, other["id"]))["certificate"]
    by_regulator = await regulator.post(f"/v1/certificates/{first['id']}/revoke", json={"reason": "使用中检查不合格"})
    assert by_regulator.status_code == 200, by_regulator.text
    assert by_regulator.json()["certificate"]["revoked_on"] == "2026-06-15"
    assert by_regulator.json()["instrument"]["lifecycle"] == "failed"
    by_admin = await admin.post(
        f"/v1/certificates/{second['id']}/revoke", json={"reason": "撤销", "effective_on": "2026-06-10"}
    )
    assert by_admin.status_code == 200, by_admin.text
    assert by_admin.json()["certificate"]["revoked_on"] == "2026-06-10"


async def test_who_may_not_revoke(
    tenant: Tenant,
    lab: LabAccount,
    make_lab: MakeLab,
    make_tenant: MakeTenant,
    far_regulator: Api,
    pool: asyncpg.Pool,
) -> None:
    """The enterprise 403; a lab that can see the instrument but did not issue 403; a lab or regulator
    that cannot see it 404; no key 401 — and the certificate and instrument are unchanged."""
    gauge = await tenant.register(**GAUGE)
    certificate = (await _recorded(tenant, lab, gauge["id"]))["certificate"]
    url = f"/v1/certificates/{certificate['id']}/revoke"
    seeing = await make_lab()
    await accepted_request(tenant, seeing, gauge["id"])
    stranger = await make_lab()
    other = await make_tenant()
    before = await _snapshot(pool, tenant, gauge["id"])
    reason = {"reason": "无权撤销"}
    problem(await tenant.api.post(url, json=reason), 403)
    problem(await seeing.api.post(url, json=reason), 403)
    problem(await stranger.api.post(url, json=reason), 404)
    problem(await far_regulator.post(url, json=reason), 404)
    problem(await other.api.post(url, json=reason), 404)
    problem(await Api(lab.api.client, None).post(url, json=reason), 401)
    problem(await lab.api.post(f"/v1/certificates/{uuid.uuid4()}/revoke", json=reason), 404)
    assert await _snapshot(pool, tenant, gauge["id"]) == before
    assert (await _certificate(lab.api, certificate["id"]))["status"] == "valid"


async def test_revocations_that_break_the_rules_are_refused(
    tenant: Tenant, lab: LabAccount, pool: asyncpg.Pool
) -> None:
    """effective_on not in the future nor before the verification (422); a result notice is not revoked
    (422); revoking twice is 409; a blank reason is refused."""
    gauge = await tenant.register(**GAUGE)
    certificate = (await _recorded(tenant, lab, gauge["id"], performed_on="2026-06-10"))["certificate"]
    url = f"/v1/certificates/{certificate['id']}/revoke"
    before = await _snapshot(pool, tenant, gauge["id"])
    future = problem(await lab.api.post(url, json={"reason": "x", "effective_on": "2026-06-16"}), 422)
    assert fields_of(future) == ["effective_on"]
    early = problem(await lab.api.post(url, json={"reason": "x", "effective_on": "2026-06-09"}), 422)
    assert fields_of(early) == ["effective_on"]
    problem(await lab.api.post(url, json={"reason": "x", "effective_on": "1800-01-01"}), 400)
    assert fields_of(problem(await lab.api.post(url, json={"reason": "   "}), 400)) == ["reason"]
    problem(await lab.api.post(url, json={}), 400)
    assert await _snapshot(pool, tenant, gauge["id"]) == before
    first = await lab.api.post(url, json={"reason": "撤销", "effective_on": "2026-06-10"})
    assert first.status_code == 200, first.text
    after = await _snapshot(pool, tenant, gauge["id"])
    problem(await lab.api.post(url, json={"reason": "再次撤销"}), 409)
    assert await _snapshot(pool, tenant, gauge["id"]) == after
    # A revoked document is not corrected either (409 naming supersedes): record a new result.
    corrected = await lab.record(gauge["id"], supersedes=certificate["id"], correction_reason="更正")
    assert fields_of(problem(corrected, 409)) == ["supersedes"]
    assert await _snapshot(pool, tenant, gauge["id"]) == after
    # A result notice records a failure: there is nothing to revoke (422), it is corrected instead.
    notice = await _recorded(tenant, lab, gauge["id"], **NOTICE, performed_on="2026-06-12")
    failed = await _snapshot(pool, tenant, gauge["id"])
    problem(await lab.api.post(f"/v1/certificates/{notice['certificate']['id']}/revoke", json={"reason": "x"}), 422)
    assert await _snapshot(pool, tenant, gauge["id"]) == failed
    assert (await _certificate(lab.api, notice["certificate"]["id"]))["revoked_on"] is None


async def test_revoking_a_certificate_that_no_longer_governs_leaves_the_instrument_alone(
    tenant: Tenant, lab: LabAccount
) -> None:
    """Only the governing certificate's revocation fails the instrument."""
    gauge = await tenant.register(**GAUGE)
    older = (await _recorded(tenant, lab, gauge["id"], performed_on="2026-06-01"))["certificate"]
    newer = await _recorded(tenant, lab, gauge["id"], performed_on="2026-06-10")
    response = await lab.api.post(f"/v1/certificates/{older['id']}/revoke", json={"reason": "撤销旧证"})
    assert response.status_code == 200, response.text
    assert response.json()["certificate"]["status"] == "revoked"
    instrument = response.json()["instrument"]
    assert (instrument["lifecycle"], instrument["valid_until"], instrument["version"]) == (
        "in_service",
        "2026-12-09",
        newer["instrument"]["version"],
    )


# --- in-service inspections by the regulator ----------------------------------------------------------


async def test_a_passed_inspection_has_no_legal_effect(tenant: Tenant, lab: LabAccount, regulator: Api) -> None:
    """印证办法 Art. 7: a passed in-service check confirms the governing certificate; nothing changes."""
    gauge = await tenant.register(**GAUGE)
    governing = await _recorded(tenant, lab, gauge["id"])
    response = await regulator.post(
        _certs_url(gauge["id"]),
        json={
            "kind": "inspection_record",
            "number": f"JC-{uuid.uuid4().hex[:8]}",
            "performed_on": "2026-06-14",
            "issued_on": "2026-06-14",
        }
        | {"as_found": [_point("1.0 MPa", "1.000", "1.010", "±0.016")]},
    )
    assert response.status_code == 201, response.text
    record, instrument = response.json()["certificate"], response.json()["instrument"]
    assert (record["kind"], record["outcome"], record["legal_effect"]) == ("inspection_record", "pass", "none")
    assert (record["lab_id"], record["issuer_region"], record["recorded_by_role"]) == (None, "31", "regulator")
    assert instrument == governing["instrument"] | {"as_of": instrument["as_of"]}


async def test_a_failed_inspection_revokes_the_governing_certificate(
    tenant: Tenant, lab: LabAccount, regulator: Api, pool: asyncpg.Pool
) -> None:
    """印证办法 Art. 7: a failed in-period check cancels the certificate: the instrument is failed.
    The outcome is required (given or from as-found) and a failure names its failed items."""
    gauge = await tenant.register(**GAUGE)
    governing = (await _recorded(tenant, lab, gauge["id"], performed_on="2026-06-01"))["certificate"]
    url = _certs_url(gauge["id"])
    base = {
        "kind": "inspection_record",
        "number": f"JC-{uuid.uuid4().hex[:8]}",
        "performed_on": "2026-06-14",
        "issued_on": "2026-06-15",
    }
    before = await _snapshot(pool, tenant, gauge["id"])
    assert fields_of(problem(await regulator.post(url, json=base), 422)) == ["outcome"]
    out = {"as_found": [_point("1.0 MPa", "1.000", "1.050", "±0.016")]}
    assert fields_of(problem(await regulator.post(url, json=base | out), 422)) == ["failed_items"]
    assert fields_of(problem(await regulator.post(url, json=base | {"outcome": "fail"}), 422)) == ["failed_items"]
    assert await _snapshot(pool, tenant, gauge["id"]) == before
    response = await regulator.post(url, json=base | out | {"failed_items": ["示值误差超差"]})
    assert response.status_code == 201, response.text
    record, instrument = response.json()["certificate"], response.json()["instrument"]
    assert (record["outcome"], record["legal_effect"]) == ("fail", "voids")
    assert {k: instrument[k] for k in ("lifecycle", "status", "valid_until", "last_verified_on")} == {
        "lifecycle": "failed",
        "status": "failed",
        "valid_until": None,
        "last_verified_on": "2026-06-01",  # an inspection is not a verification
    }
    voided = await _certificate(regulator, governing["id"])
    assert (voided["status"], voided["revoked_on"]) == ("revoked", "2026-06-14")
    # An inspection number is unique for its issuing region, as a lab's number is for the lab.
    again = await regulator.post(url, json=base | {"outcome": "pass"})
    assert fields_of(problem(again, 409)) == ["number"]


async def test_inspections_are_the_regulator_of_the_region_only(
    tenant: Tenant, lab: LabAccount, far_regulator: Api, pool: asyncpg.Pool
) -> None:
    """A regulator outside the region does not see the instrument (404)."""
    gauge = await tenant.register(**GAUGE, last_verified_on="2026-01-15")
    before = await _snapshot(pool, tenant, gauge["id"])
    body = {
        "kind": "inspection_record",
        "number": f"JC-{uuid.uuid4().hex[:8]}",
        "performed_on": "2026-06-14",
        "issued_on": "2026-06-14",
    }
    problem(await far_regulator.post(_certs_url(gauge["id"]), json=body | {"outcome": "pass"}), 404)
    assert await _snapshot(pool, tenant, gauge["id"]) == before


# --- reads and visibility -----------------------------------------------------------------------------


async def test_certificates_are_visible_to_whoever_may_read_the_instrument(
    tenant: Tenant,
    make_tenant: MakeTenant,
    lab: LabAccount,
    make_lab: MakeLab,
    regulator: Api,
    far_regulator: Api,
    admin: Api,
    anonymous: Api,
) -> None:
    """Issue 3 point 8 / design.md §5: owner, its labs, regulator of the region, admin 200; others 404;
    no key 401 — for one certificate and for the instrument's list."""
    gauge = await tenant.register(**GAUGE)
    certificate = (await _recorded(tenant, lab, gauge["id"]))["certificate"]
    other_tenant, other_lab = await make_tenant(), await make_lab()
    one, many = f"/v1/certificates/{certificate['id']}", _certs_url(gauge["id"])
    for who, api, status in [
        ("owner", tenant.api, 200),
        ("lab with a request", lab.api, 200),
        ("regulator of the region", regulator, 200),
        ("admin", admin, 200),
        ("other enterprise", other_tenant.api, 404),
        ("other lab", other_lab.api, 404),
        ("regulator elsewhere", far_regulator, 404),
        ("no key", anonymous, 401),
    ]:
        read, listed = await api.get(one), await api.get(many)
        if status == 200:
            assert read.status_code == 200, (who, read.text)
            assert read.json() == certificate, who
            assert listed.status_code == 200, (who, listed.text)
            assert [c["id"] for c in listed.json()["items"]] == [certificate["id"]], who
        else:
            problem(read, status)
            problem(listed, status)
    problem(await tenant.api.get(f"/v1/certificates/{uuid.uuid4()}"), 404)
    assert fields_of(problem(await tenant.api.get("/v1/certificates/not-a-uuid"), 400)) == ["certificate_id"]


async def test_the_list_is_newest_verification_first_and_pages(tenant: Tenant, lab: LabAccount) -> None:
    """GET /v1/instruments/{id}/certificates: newest performed_on first, keyset pages."""
    gauge = await tenant.register(**GAUGE)
    ids = {}
    for day in ("2026-06-05", "2026-06-01", "2026-06-10"):
        ids[day] = (await _recorded(tenant, lab, gauge["id"], performed_on=day, issued_on="2026-06-12"))["certificate"][
            "id"
        ]
    listed = (await tenant.api.get(_certs_url(gauge["id"]))).json()
    assert [c["id"] for c in listed["items"]] == [ids["2026-06-10"], ids["2026-06-05"], ids["2026-06-01"]]
    assert [c["legal_effect"] for c in listed["items"]] == ["governs", "governs", "history"]
    assert [c["status"] for c in listed["items"]] == ["valid", "superseded", "superseded"]
    assert listed["next_cursor"] is None
    seen, cursor = [], None
    while True:
        params: dict[str, Any] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = (await tenant.api.get(_certs_url(gauge["id"]), params=params)).json()
        seen += [c["id"] for c in page["items"]]
        if not (cursor := page["next_cursor"]):
            break
    assert seen == [c["id"] for c in listed["items"]]


# --- the public check and the content hash ------------------------------------------------------------


async def test_the_public_check_shows_only_what_a_label_needs(tenant: Tenant, lab: LabAccount, anonymous: Api) -> None:
    """Issue 3 point 5: no key; lab name and accreditation no., kind, number, instrument name/model/serial,
    dates, outcome, status, content_sha256 — and nothing about the enterprise."""
    gauge = await tenant.register(**GAUGE, name="一般压力表", model="Y-100", serial_no="PUB-7", management_no="PG-9")
    certificate = (await _recorded(tenant, lab, gauge["id"], number="沪检2026第0001号"))["certificate"]
    response = await anonymous.get(_public_url(lab.id, "沪检2026第0001号"))
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == PUBLIC_KEYS
    assert body == {
        "lab": {"name": lab.lab["name"], "accreditation_no": lab.lab["accreditation_no"]},
        "kind": "verification_certificate",
        "number": "沪检2026第0001号",
        "instrument": {"name": "一般压力表", "model": "Y-100", "serial_no": "PUB-7"},
        "performed_on": "2026-06-10",
        "valid_until": "2026-12-09",
        "outcome": "pass",
        "status": "valid",
        "content_sha256": certificate["content_sha256"],
    }
    text = response.text
    for secret in (tenant.id, tenant.enterprise["name"], tenant.enterprise["credit_code"], gauge["id"], "PG-9"):
        assert secret not in text
    problem(await anonymous.get(_public_url(lab.id, "沪检2026第0002号")), 404)
    problem(await anonymous.get(_public_url(str(uuid.uuid4()), "沪检2026第0001号")), 404)
    problem(await anonymous.get(_public_url("not-a-lab", "沪检2026第0001号")), 400)


async def test_the_public_status_expires_after_valid_until_and_is_superseded_by_a_later_pass(
    tenant: Tenant, lab: LabAccount, anonymous: Api, clock: FixedClock
) -> None:
    """R3 + R7: expired from the local day after valid_until; superseded once a later pass governs."""
    gauge = await tenant.register(**GAUGE)
    await _recorded(tenant, lab, gauge["id"], number="PUB-EXP", cycle_months=1)  # valid until 2026-07-09
    url = _public_url(lab.id, "PUB-EXP")
    clock.set(dt.datetime(2026, 7, 9, 15, 59, tzinfo=dt.UTC))  # 23:59 on 2026-07-09 in Shanghai
    assert (await anonymous.get(url)).json()["status"] == "valid"
    clock.set(dt.datetime(2026, 7, 9, 16, 0, tzinfo=dt.UTC))  # 00:00 on 2026-07-10 in Shanghai
    assert (await anonymous.get(url)).json()["status"] == "expired"
    listed = (await tenant.api.get(_certs_url(gauge["id"]))).json()["items"]
    assert [c["status"] for c in listed] == ["expired"]
    assert (await tenant.api.get(f"/v1/instruments/{gauge['id']}")).json()["status"] == "overdue"
    renewed = await _recorded(
        tenant, lab, gauge["id"], number="PUB-NEW", performed_on="2026-07-10", issued_on="2026-07-10"
    )
    # The lab's shorter cycle was stored on the instrument: the renewal runs on it too.
    assert (renewed["instrument"]["valid_until"], renewed["instrument"]["cycle_months"]) == ("2026-08-09", 1)
    assert renewed["instrument"]["status"] == "due_soon"
    assert (await anonymous.get(url)).json()["status"] == "superseded"
    assert (await anonymous.get(_public_url(lab.id, "PUB-NEW"))).json()["status"] == "valid"


async def test_content_sha256_is_the_hash_of_the_canonical_content(
    tenant: Tenant, lab: LabAccount, pool: asyncpg.Pool, anonymous: Api
) -> None:
    """Issue 3 point 4: content_sha256 = sha256 of the sorted-key canonical JSON of the content;
    anyone holding the content can recompute it, and any change to it changes the hash."""
    gauge = await tenant.register(**GAUGE)
    body = await _recorded(
        tenant,
        lab,
        gauge["id"],
        number="JZ-HASH-1",
        cycle_months=3,
        as_found=[_point("1.0 MPa", "1.000", "1.030", "±0.016", uncertainty="0.002")],
        as_left=[_point("1.0 MPa", "1.000", "1.004", "±0.016", error="0.004")],
        regulation_applied="JJG 52-2013",
        standards_used=["精密压力表 0.25级 证书号 YL-2026-001"],
        signatories={"verifier": "张三", "checker": "李四", "approver": "王五"},
        conclusion="合格",
    )
    certificate = await _certificate(tenant.api, body["certificate"]["id"])
    content = {k: certificate[k] for k in CONTENT_FIELDS}
    expected = content_sha256(canonical_content(**content))
    assert certificate["content_sha256"] == expected
    assert body["certificate"]["content_sha256"] == expected
    async with pool.acquire() as conn:
        stored = await conn.fetchval(
            "SELECT content_sha256 FROM certificates WHERE id = $1", uuid.UUID(certificate["id"])
        )
    assert stored == expected
    assert (await anonymous.get(_public_url(lab.id, "JZ-HASH-1"))).json()["content_sha256"] == expected
    # Anyone can recompute it without metreg's code: sorted keys, no whitespace, UTF-8.
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    assert hashlib.sha256(canonical).hexdigest() == expected
    # Any change to the content changes the hash.
    assert content_sha256(canonical_content(**(content | {"conclusion": "不合格"}))) != expected
    # Keys are sorted at every level: the order the content comes in does not matter.
    assert content_sha256(canonical_content(**dict(reversed(content.items())))) == expected
