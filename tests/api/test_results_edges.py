"""Edges of recording results and lifecycle actions found in review, each pinned by the rule it breaks."""

from __future__ import annotations

import uuid

import httpx

from tests.conftest import GAUGE, Api, LabAccount, MakeLab, Tenant, accepted_request, fields_of, problem

WATER = {"catalog_code": "water_meter_dn25", "legal_use": "trade_settlement", "name": "水表"}


async def test_a_limited_life_meter_is_replaced_not_reverified(tenant: Tenant, lab: LabAccount) -> None:
    """限期使用，到期轮换 [S-1991]: a pass after the initial verification would grant a new use life."""
    meter = await tenant.register(**WATER, last_verified_on="2020-01-01")
    await accepted_request(tenant, lab, meter["id"])
    body = problem(await lab.record(meter["id"]), 422)
    assert fields_of(body) == ["kind"]
    assert (await tenant.api.get(f"/v1/instruments/{meter['id']}")).json()["valid_until"] == "2025-12-31"


async def test_the_initial_verification_of_a_new_meter_starts_its_use_life(tenant: Tenant, lab: LabAccount) -> None:
    meter = await tenant.register(**WATER)
    await accepted_request(tenant, lab, meter["id"])
    response = await lab.record(meter["id"])
    assert response.status_code == 201, response.text
    assert response.json()["instrument"]["valid_until"] == "2032-06-09"  # 72 months − 1 day


async def test_becoming_compulsory_on_a_calibration_leaves_the_instrument_unverified(
    tenant: Tenant, lab: LabAccount
) -> None:
    """A calibration certificate does not satisfy compulsory verification ([S-360TABLE])."""
    gauge = await tenant.register(catalog_code="pressure_gauge", legal_use="none", cycle_months=12)
    await accepted_request(tenant, lab, gauge["id"])
    recorded = await lab.record(gauge["id"], kind="calibration_certificate", outcome="pass")
    assert recorded.json()["instrument"]["status"] == "valid"
    response = await tenant.api.patch(
        f"/v1/instruments/{gauge['id']}", json={"legal_use": "safety_protection", "cycle_months": None, "version": 2}
    )
    assert response.status_code == 200, response.text
    instrument = response.json()
    assert (instrument["compulsory"], instrument["status"], instrument["valid_until"]) == (True, "unverified", None)
    assert instrument["required_action"] == "verify"


async def test_a_decimal_too_large_to_compute_with_is_a_400_naming_it(tenant: Tenant, lab: LabAccount) -> None:
    gauge = await tenant.register(legal_use="none", cycle_months=12)
    await accepted_request(tenant, lab, gauge["id"])
    points = [{"point": "1", "error": "1e1000000", "mpe": "1"}]
    body = problem(await lab.record(gauge["id"], kind="calibration_certificate", as_found=points), 400)
    assert fields_of(body) == ["as_found[0].error"]


async def test_scrapping_withdraws_the_item_so_the_request_completes(tenant: Tenant, lab: LabAccount) -> None:
    first, second = await tenant.register(**GAUGE), await tenant.register(**GAUGE)
    request = await accepted_request(tenant, lab, first["id"], second["id"])
    assert (await lab.record(first["id"])).status_code == 201
    assert (await tenant.api.post(f"/v1/instruments/{second['id']}/scrap")).status_code == 200
    read = (await tenant.api.get(f"/v1/verification-requests/{request['id']}")).json()
    assert read["status"] == "completed"
    assert (read["items_done"], read["items_withdrawn"]) == (1, 1)
    assert [item["status"] for item in read["items"]] == ["done", "withdrawn"]


async def test_replacing_the_only_instrument_of_a_submitted_request_cancels_it(tenant: Tenant, lab: LabAccount) -> None:
    meter = await tenant.register(**WATER, last_verified_on="2020-01-01")
    created = await tenant.api.post(
        "/v1/verification-requests", json={"lab_id": lab.id, "instrument_ids": [meter["id"]]}
    )
    request_id = created.json()["id"]
    replacement = {"name": "水表", "serial_no": uuid.uuid4().hex[:8], "last_verified_on": "2026-06-01"} | WATER
    response = await tenant.api.post(f"/v1/instruments/{meter['id']}/replace", json={"replacement": replacement})
    assert response.status_code == 201, response.text
    read = (await tenant.api.get(f"/v1/verification-requests/{request_id}")).json()
    assert read["status"] == "cancelled"
    assert "withdrawn" in read["reason"]


async def test_a_verification_outside_the_labs_scope_is_refused_at_recording(
    tenant: Tenant, make_lab: MakeLab, admin: Api
) -> None:
    """The scope is the lab's authorisation: checked when the result is recorded, not only requested."""
    calibration_lab = await make_lab(scope=[])
    gauge = await tenant.register(**GAUGE)
    response = await admin.post(
        f"/v1/instruments/{gauge['id']}/certificates",
        json={
            "kind": "verification_certificate",
            "number": "OUT-OF-SCOPE",
            "performed_on": "2026-06-10",
            "issued_on": "2026-06-10",
            "lab_id": calibration_lab.id,
        },
    )
    assert fields_of(problem(response, 422)) == ["lab_id"]


async def test_the_issuing_lab_sees_and_revokes_what_an_admin_recorded_for_it(
    tenant: Tenant, lab: LabAccount, admin: Api
) -> None:
    gauge = await tenant.register(**GAUGE)
    recorded = await admin.post(
        f"/v1/instruments/{gauge['id']}/certificates",
        json={
            "kind": "verification_certificate",
            "number": f"ADM-{uuid.uuid4().hex[:6]}",
            "performed_on": "2026-06-10",
            "issued_on": "2026-06-10",
            "lab_id": lab.id,
        },
    )
    certificate_id = recorded.json()["certificate"]["id"]
    assert (await lab.api.get(f"/v1/certificates/{certificate_id}")).status_code == 200
    revoked = await lab.api.post(f"/v1/certificates/{certificate_id}/revoke", json={"reason": "wrong standard used"})
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["instrument"]["status"] == "failed"


async def test_a_number_with_slashes_is_checked_publicly(tenant: Tenant, lab: LabAccount, anonymous: Api) -> None:
    gauge = await tenant.register(**GAUGE)
    await accepted_request(tenant, lab, gauge["id"])
    number = f"沪计检/{uuid.uuid4().hex[:6]}/001"
    assert (await lab.record(gauge["id"], number=number)).status_code == 201
    for path in (number, number.replace("/", "%2F")):
        response = await anonymous.get(f"/v1/public/certificates/{lab.id}/{path}")
        assert response.status_code == 200, response.text
        assert response.json()["number"] == number


async def test_the_replace_operation_documents_its_201(app_client: httpx.AsyncClient) -> None:
    spec = (await app_client.get("/docs/openapi.json")).json()
    responses = spec["paths"]["/v1/instruments/{instrument_id}/replace"]["post"]["responses"]
    assert "201" in responses
    assert "200" not in responses
