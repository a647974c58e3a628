"""Registering instruments: the legal rules, and bad input that writes nothing."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from tests.conftest import GAUGE, Tenant, fields_of, problem


async def _count(pool: asyncpg.Pool, tenant: Tenant) -> int:
    async with pool.acquire() as conn:
        return int(await conn.fetchval("SELECT count(*) FROM instruments WHERE enterprise_id = $1", tenant.id))


async def test_the_pressure_gauge_of_domain_md(tenant: Tenant) -> None:
    """domain.md §5 and design.md §5's example: verified 2026-01-15, 6 months."""
    body = await tenant.register(
        **GAUGE,
        name="一般压力表",
        model="Y-100",
        serial_no="A123",
        manufacturer="红旗仪表",
        management_no="PG-001",
        last_verified_on="2026-01-15",
    )
    expected = {
        "catalog_code": "pressure_gauge",
        "compulsory": True,
        "regime": "periodic",
        "traceability": "verification",
        "cycle_months": 6,
        "lifecycle": "in_service",
        "last_verified_on": "2026-01-15",
        "valid_until": "2026-07-14",
        "next_due": "2026-07-15",
        "status": "due_soon",
        "days_until_due": 29,
        "required_action": "verify",
        "as_of": "2026-06-15",
        "version": 1,
    }
    assert {k: body[k] for k in expected} == expected
    assert body["basis"] == {
        "rule": "inclusive_minus_one",
        "from": "2026-01-15",
        "cycle_months": 6,
        "cycle_source": "catalog",
        "regulation": "JJG 52-2013",
        "text": "valid until = 2026-01-15 + 6 months − 1 day",
    }
    for as_of, status, days in [
        ("2026-06-14", "due_soon", 30),
        ("2026-07-14", "due_soon", 0),
        ("2026-07-15", "overdue", -1),
        ("2026-06-13", "valid", 31),
    ]:
        read = (await tenant.api.get(f"/v1/instruments/{body['id']}", params={"as_of": as_of})).json()
        assert (read["status"], read["days_until_due"], read["as_of"]) == (status, days, as_of)


async def test_a_shorter_cycle_is_allowed_a_longer_one_is_422(tenant: Tenant, pool: asyncpg.Pool) -> None:
    short = await tenant.register(**GAUGE, cycle_months=3, last_verified_on="2026-01-15")
    assert (short["cycle_months"], short["valid_until"]) == (3, "2026-04-14")
    assert short["basis"]["cycle_source"] == "instrument"
    before = await _count(pool, tenant)
    body = problem(
        await tenant.api.post(
            tenant.instruments_url, json=GAUGE | {"name": "压力表", "serial_no": "L1", "cycle_months": 12}
        ),
        422,
    )
    assert fields_of(body) == ["cycle_months"]
    assert "legal maximum of 6 months" in body["detail"]
    assert "JJG 52-2013" in body["detail"]
    assert await _count(pool, tenant) == before


async def test_non_compulsory_use_is_calibration_on_an_own_cycle(tenant: Tenant) -> None:
    body = problem(
        await tenant.api.post(
            tenant.instruments_url,
            json={"catalog_code": "pressure_gauge", "name": "压力表", "serial_no": "N1", "legal_use": "none"},
        ),
        422,
    )
    assert fields_of(body) == ["cycle_months"]
    calibrated = await tenant.register(
        catalog_code="pressure_gauge", legal_use="none", cycle_months=24, last_verified_on="2026-01-15"
    )
    assert (calibrated["compulsory"], calibrated["regime"], calibrated["traceability"]) == (
        False,
        "not_controlled",
        "calibration",
    )
    assert calibrated["valid_until"] == "2028-01-14"
    assert calibrated["basis"]["regulation"] is None


async def test_uncatalogued_equipment_needs_a_cycle(tenant: Tenant) -> None:
    problem(await tenant.api.post(tenant.instruments_url, json={"name": "数字多用表", "serial_no": "F17"}), 422)
    meter = await tenant.register(name="数字多用表", cycle_months=12, last_verified_on="2025-08-31")
    assert meter["valid_until"] == "2026-08-30"
    assert meter["catalog_code"] is None
    assert meter["compulsory"] is False


async def test_limited_life_meter_is_replaced_at_expiry(tenant: Tenant) -> None:
    meter = await tenant.register(
        catalog_code="water_meter_dn25",
        legal_use="trade_settlement",
        name="冷水水表 DN20",
        last_verified_on="2020-06-16",
    )
    assert meter["regime"] == "initial_only_limited_life"
    assert meter["valid_until"] == "2026-06-15"
    assert meter["basis"]["text"] == "valid until = 2020-06-16 + 72 months (use life) − 1 day"
    assert (meter["status"], meter["required_action"]) == ("due_soon", "replace")
    later = (await tenant.api.get(f"/v1/instruments/{meter['id']}", params={"as_of": "2026-06-16"})).json()
    assert (later["status"], later["required_action"]) == ("overdue", "replace")


async def test_scrap_on_failure_instruments_have_no_valid_until(tenant: Tenant) -> None:
    thermometer = await tenant.register(
        catalog_code="clinical_thermometer_glass", legal_use="medical", name="玻璃体温计", last_verified_on="2024-03-01"
    )
    assert (thermometer["valid_until"], thermometer["next_due"], thermometer["cycle_months"]) == (None, None, None)
    assert (thermometer["status"], thermometer["basis"]["rule"]) == ("valid", "no_expiry")
    body = problem(
        await tenant.api.post(
            tenant.instruments_url,
            json={
                "catalog_code": "clinical_thermometer_glass",
                "legal_use": "medical",
                "name": "体温计",
                "serial_no": "T2",
                "last_verified_on": "2024-03-01",
                "valid_until": "2025-03-01",
            },
        ),
        422,
    )
    assert fields_of(body) == ["valid_until"]


async def test_a_printed_valid_until_is_trusted(tenant: Tenant) -> None:
    body = await tenant.register(**GAUGE, last_verified_on="2026-01-15", valid_until="2026-07-15")
    assert body["valid_until"] == "2026-07-15"
    assert body["basis"]["rule"] == "printed"


async def test_registration_without_verification_is_unverified(tenant: Tenant) -> None:
    body = await tenant.register(**GAUGE)
    assert (body["status"], body["required_action"], body["valid_until"]) == ("unverified", "verify", None)


async def test_initial_lifecycle_may_be_recorded_but_not_replaced(tenant: Tenant) -> None:
    sealed = await tenant.register(**GAUGE, lifecycle="sealed", last_verified_on="2026-01-15")
    assert (sealed["status"], sealed["valid_until"]) == ("sealed", "2026-07-14")
    body = problem(
        await tenant.api.post(
            tenant.instruments_url, json=GAUGE | {"name": "x", "serial_no": "R1", "lifecycle": "replaced"}
        ),
        422,
    )
    assert fields_of(body) == ["lifecycle"]


async def test_duplicates_are_409_naming_the_field(tenant: Tenant, pool: asyncpg.Pool) -> None:
    await tenant.register(**GAUGE, manufacturer="红旗", model="Y-100", serial_no="DUP-1", management_no="M-1")
    before = await _count(pool, tenant)
    same_serial = GAUGE | {"name": "x", "manufacturer": "红旗", "model": "Y-100", "serial_no": " DUP-1 "}
    assert fields_of(problem(await tenant.api.post(tenant.instruments_url, json=same_serial), 409)) == ["serial_no"]
    same_number = GAUGE | {"name": "x", "serial_no": "OTHER", "management_no": "M-1"}
    assert fields_of(problem(await tenant.api.post(tenant.instruments_url, json=same_number), 409)) == ["management_no"]
    assert await _count(pool, tenant) == before
    # The same serial from another manufacturer is another instrument.
    await tenant.register(**GAUGE, manufacturer="上仪", model="Y-100", serial_no="DUP-1")


BAD_INPUT: list[tuple[str, Any, int, list[str]]] = [
    ("unknown field", {"colour": "red"}, 400, ["colour"]),
    ("missing name", {"name": None}, 400, ["name"]),
    ("blank serial", {"serial_no": "   "}, 400, ["serial_no"]),
    ("wrong type", {"cycle_months": "six"}, 400, ["cycle_months"]),
    ("impossible date", {"last_verified_on": "2026-02-30"}, 400, ["last_verified_on"]),
    ("not a date", {"last_verified_on": "15/01/2026"}, 400, ["last_verified_on"]),
    ("date outside the supported years", {"last_verified_on": "1066-10-14"}, 400, ["last_verified_on"]),
    ("cycle out of range", {"cycle_months": 0}, 400, ["cycle_months"]),
    ("cycle far out of range", {"cycle_months": 100000}, 400, ["cycle_months"]),
    ("unknown use", {"legal_use": "fun"}, 400, ["legal_use"]),
    ("unknown lifecycle", {"lifecycle": "lost"}, 400, ["lifecycle"]),
    ("name too long", {"name": "x" * 201}, 400, ["name"]),
    ("unknown catalogue code", {"catalog_code": "flux_capacitor"}, 422, ["catalog_code"]),
    ("verification in the future", {"last_verified_on": "2026-06-16"}, 422, ["last_verified_on"]),
    (
        "printed date before the verification",
        {"last_verified_on": "2026-01-15", "valid_until": "2026-01-14"},
        422,
        ["valid_until"],
    ),
    ("printed date without verification", {"valid_until": "2026-07-14"}, 422, ["valid_until"]),
]


@pytest.mark.parametrize(("why", "change", "status", "fields"), BAD_INPUT, ids=[b[0] for b in BAD_INPUT])
async def test_bad_input_is_a_4xx_naming_the_field_and_writes_nothing(
    tenant: Tenant, pool: asyncpg.Pool, why: str, change: dict[str, Any], status: int, fields: list[str]
) -> None:
    body = {"name": "一般压力表", "serial_no": "BAD-1"} | GAUGE | change
    body = {k: v for k, v in body.items() if v is not None}
    before = await _count(pool, tenant)
    found = problem(await tenant.api.post(tenant.instruments_url, json=body), status)
    assert fields_of(found) == fields, why
    assert await _count(pool, tenant) == before


async def test_malformed_json_and_wrong_shapes_are_400(tenant: Tenant) -> None:
    malformed = await tenant.api.post(
        tenant.instruments_url, content=b'{"name": "x",', headers={"content-type": "application/json"}
    )
    assert "not valid JSON" in problem(malformed, 400)["detail"]
    problem(await tenant.api.post(tenant.instruments_url, json=[{"name": "x"}]), 400)


async def test_oversized_bodies_are_413(tenant: Tenant, pool: asyncpg.Pool) -> None:
    before = await _count(pool, tenant)
    huge = {"name": "x", "serial_no": "BIG", "location": "y" * 2_000_000}
    problem(await tenant.api.post(tenant.instruments_url, json=huge), 413)
    assert await _count(pool, tenant) == before


async def test_non_uuid_ids_are_400_naming_the_parameter(tenant: Tenant) -> None:
    assert fields_of(problem(await tenant.api.get("/v1/instruments/123"), 400)) == ["instrument_id"]
    body = {"name": "x", "serial_no": "U1"}
    assert fields_of(problem(await tenant.api.post("/v1/enterprises/abc/instruments", json=body), 400)) == [
        "enterprise_id"
    ]
