"""Edge cases: characters PostgreSQL cannot store, blank search, odd zones, dates beyond a cycle,
crashes as problem+json, and a settings change racing instrument edits."""

from __future__ import annotations

import asyncio
import logging

import asyncpg
import pytest

import service.catalog.routes
from tests.conftest import GAUGE, Api, Tenant, fields_of, new_credit_code, problem


@pytest.mark.parametrize("field", ["name", "serial_no", "catalog_code", "manufacturer", "location"])
async def test_nul_characters_in_instrument_text_are_400(tenant: Tenant, field: str) -> None:
    body = {"name": "压力表", "serial_no": "NUL-1"} | GAUGE | {field: "a\x00b"}
    assert fields_of(problem(await tenant.api.post(tenant.instruments_url, json=body), 400)) == [field]


async def test_nul_characters_elsewhere_are_400(tenant: Tenant, admin: Api) -> None:
    for params, field in [({"q": "a\x00b"}, "q"), ({"catalog_code": "a\x00b"}, "catalog_code")]:
        assert fields_of(problem(await tenant.api.get(tenant.instruments_url, params=params), 400)) == [field]
    assert fields_of(problem(await tenant.api.patch(f"/v1/enterprises/{tenant.id}", json={"name": "a\x00"}), 400)) == [
        "name"
    ]
    lab = {"name": "L", "accreditation_no": "A", "region_code": "310000", "scope": ["pressure_gauge", "x\x00"]}
    assert fields_of(problem(await admin.post("/v1/labs", json=lab), 400)) == ["scope[1]"]


async def test_a_blank_search_is_400_not_everything(tenant: Tenant) -> None:
    assert fields_of(problem(await tenant.api.get(tenant.instruments_url, params={"q": "   "}), 400)) == ["q"]


@pytest.mark.parametrize("zone", ["localtime", "Factory", "posixrules", "Asia/Beijing"])
async def test_only_real_places_are_time_zones(admin: Api, zone: str) -> None:
    body = {"name": "x", "credit_code": new_credit_code(), "region_code": "310115", "timezone": zone}
    assert fields_of(problem(await admin.post("/v1/enterprises", json=body), 400)) == ["timezone"]


async def test_a_printed_date_may_not_outlast_the_cycle(tenant: Tenant) -> None:
    """Trusted as printed, up to the Civil Code end of the cycle (the later of the two rules)."""
    at_limit = await tenant.register(**GAUGE, last_verified_on="2026-01-15", valid_until="2026-07-15")
    assert at_limit["valid_until"] == "2026-07-15"
    body = GAUGE | {"name": "x", "serial_no": "LONG", "last_verified_on": "2026-01-15", "valid_until": "2036-01-14"}
    found = problem(await tenant.api.post(tenant.instruments_url, json=body), 422)
    assert fields_of(found) == ["valid_until"]
    assert "2026-07-15" in found["detail"]


async def test_becoming_scrap_on_failure_drops_an_old_printed_date(tenant: Tenant) -> None:
    thermometer = await tenant.register(
        catalog_code="clinical_thermometer_glass",
        legal_use="none",
        cycle_months=12,
        last_verified_on="2026-01-10",
        valid_until="2027-01-09",
    )
    url = f"/v1/instruments/{thermometer['id']}"
    response = await tenant.api.patch(url, json={"legal_use": "medical", "cycle_months": None, "version": 1})
    assert response.status_code == 200, response.text
    assert (response.json()["valid_until"], response.json()["status"]) == (None, "valid")


async def test_a_crash_is_a_problem_json_500_that_reveals_nothing(
    admin: Api, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(db: object) -> None:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(service.catalog.routes, "select_catalog", broken)
    with caplog.at_level(logging.ERROR, logger="metreg.errors"):
        body = problem(await admin.get("/v1/catalog"), 500)
    assert "secret" not in body["detail"]
    assert any("secret internals" in (r.exc_text or str(r.exc_info)) for r in caplog.records)


async def test_settings_change_racing_instrument_edits_never_deadlocks(tenant: Tenant) -> None:
    gauges = [await tenant.register(**GAUGE, last_verified_on="2026-01-15") for _ in range(4)]
    for round_ in range(6):
        rule = "civil_code" if round_ % 2 == 0 else "inclusive_minus_one"
        versions = [(await tenant.api.get(f"/v1/instruments/{g['id']}")).json()["version"] for g in gauges]
        edits = [
            tenant.api.patch(f"/v1/instruments/{g['id']}", json={"location": f"r{round_}", "version": v})
            for g, v in zip(gauges, versions, strict=True)
        ]
        change = tenant.api.patch(f"/v1/enterprises/{tenant.id}", json={"period_rule": rule})
        results = await asyncio.gather(change, *edits)
        assert results[0].status_code == 200
        # An edit either lands or loses the race to the settings change (which bumps versions): 409.
        assert {r.status_code for r in results[1:]} <= {200, 409}, [r.text for r in results]
    final = {(await tenant.api.get(f"/v1/instruments/{g['id']}")).json()["valid_until"] for g in gauges}
    assert final == {"2026-07-14"}  # the last round set inclusive_minus_one


async def test_a_lost_database_connection_is_a_503(admin: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    async def gone(db: object) -> None:
        raise asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation")

    monkeypatch.setattr(service.catalog.routes, "select_catalog", gone)
    body = problem(await admin.get("/v1/catalog"), 503)
    assert "try again" in body["detail"]
