"""Enterprises: creation rules, who reads them, who changes what."""

from __future__ import annotations

import asyncpg
import pytest

from service.auth import Role
from tests.conftest import Api, MakeTenant, Tenant, fields_of, mint, new_credit_code, problem


async def test_admin_creates_an_enterprise_with_defaults(admin: Api) -> None:
    code = new_credit_code()
    response = await admin.post(
        "/v1/enterprises", json={"name": " 上海某某机械有限公司 ", "credit_code": code.lower(), "region_code": "310115"}
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["name"] == "上海某某机械有限公司"
    assert body["credit_code"] == code
    assert body["timezone"] == "Asia/Shanghai"
    assert body["period_rule"] == "inclusive_minus_one"
    assert body["reminder_days"] == [30, 7]
    assert body["rotation_reminder_days"] == [90, 30]
    assert body["version"] == 1
    assert body["created_at"] == "2026-06-15T04:00:00Z"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"credit_code": "91350100M000100Y44"}, "credit_code"),
        ({"credit_code": "12345"}, "credit_code"),
        ({"region_code": "31011"}, "region_code"),
        ({"region_code": 310115}, "region_code"),
        ({"timezone": "Asia/Beijing"}, "timezone"),
        ({"period_rule": "whenever"}, "period_rule"),
        ({"period_rule": "end_of_year"}, "period_rule"),
        ({"reminder_days": [7, 30]}, "reminder_days"),
        ({"reminder_days": [30, -7]}, "reminder_days"),
        ({"name": "   "}, "name"),
        ({"name": ""}, "name"),
        ({"color": "red"}, "color"),
    ],
)
async def test_bad_enterprise_input_is_400_naming_the_field(
    admin: Api, pool: asyncpg.Pool, change: dict[str, object], field: str
) -> None:
    body = {"name": "某企业", "credit_code": new_credit_code(), "region_code": "310115"} | change
    async with pool.acquire() as conn:
        before = await conn.fetchval("SELECT count(*) FROM enterprises")
    assert fields_of(problem(await admin.post("/v1/enterprises", json=body), 400)) == [field]
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM enterprises") == before


async def test_credit_codes_are_unique(admin: Api, tenant: Tenant) -> None:
    body = {"name": "冒名企业", "credit_code": tenant.enterprise["credit_code"], "region_code": "310115"}
    assert fields_of(problem(await admin.post("/v1/enterprises", json=body), 409)) == ["credit_code"]


async def test_only_admins_create_enterprises(tenant: Tenant) -> None:
    body = {"name": "x", "credit_code": new_credit_code(), "region_code": "310115"}
    problem(await tenant.api.post("/v1/enterprises", json=body), 403)


async def test_who_reads_an_enterprise(
    admin: Api, make_tenant: MakeTenant, pool: asyncpg.Pool, app_client: object
) -> None:
    pudong = await make_tenant(region_code="310115")
    other = await make_tenant(region_code="440305")
    url = f"/v1/enterprises/{pudong.id}"
    assert (await admin.get(url)).status_code == 200
    assert (await pudong.api.get(url)).json()["id"] == pudong.id
    problem(await other.api.get(url), 404)
    shanghai = Api(admin.client, await mint(pool, Role.REGULATOR, region_code="31"))
    shenzhen = Api(admin.client, await mint(pool, Role.REGULATOR, region_code="4403"))
    assert (await shanghai.get(url)).status_code == 200
    problem(await shenzhen.get(url), 404)
    problem(await admin.get("/v1/enterprises/6b0f7a5e-0000-4000-8000-000000000000"), 404)
    assert fields_of(problem(await admin.get("/v1/enterprises/not-a-uuid"), 400)) == ["enterprise_id"]


async def test_owner_changes_settings_but_not_region(tenant: Tenant, admin: Api) -> None:
    url = f"/v1/enterprises/{tenant.id}"
    response = await tenant.api.patch(url, json={"timezone": "Europe/Berlin", "reminder_days": [45, 14, 3]})
    assert response.status_code == 200, response.text
    assert response.json()["timezone"] == "Europe/Berlin"
    assert response.json()["reminder_days"] == [45, 14, 3]
    assert response.json()["version"] == 2
    problem(await tenant.api.patch(url, json={"region_code": "110101"}), 403)
    moved = await admin.patch(url, json={"region_code": "110101"})
    assert moved.json()["region_code"] == "110101"


async def test_settings_changes_check_version_when_given(tenant: Tenant) -> None:
    url = f"/v1/enterprises/{tenant.id}"
    problem(await tenant.api.patch(url, json={"name": "新名称", "version": 99}), 409)
    assert (await tenant.api.patch(url, json={"name": "新名称", "version": 1})).status_code == 200


async def test_regulators_and_strangers_cannot_change_an_enterprise(
    tenant: Tenant, make_tenant: MakeTenant, admin: Api, pool: asyncpg.Pool
) -> None:
    url = f"/v1/enterprises/{tenant.id}"
    regulator = Api(admin.client, await mint(pool, Role.REGULATOR, region_code="31"))
    problem(await regulator.patch(url, json={"name": "x"}), 403)
    stranger = await make_tenant()
    problem(await stranger.api.patch(url, json={"name": "x"}), 404)


async def test_changing_the_period_rule_recomputes_computed_dates_only(tenant: Tenant) -> None:
    computed = await tenant.register(
        catalog_code="pressure_gauge", legal_use="safety_protection", last_verified_on="2026-01-15"
    )
    printed = await tenant.register(
        catalog_code="pressure_gauge",
        legal_use="safety_protection",
        last_verified_on="2026-01-15",
        valid_until="2026-07-10",
    )
    assert computed["valid_until"] == "2026-07-14"
    response = await tenant.api.patch(f"/v1/enterprises/{tenant.id}", json={"period_rule": "civil_code"})
    assert response.status_code == 200
    after = (await tenant.api.get(f"/v1/instruments/{computed['id']}")).json()
    assert after["valid_until"] == "2026-07-15"
    assert after["basis"]["rule"] == "civil_code"
    assert after["version"] == computed["version"] + 1
    kept = (await tenant.api.get(f"/v1/instruments/{printed['id']}")).json()
    assert kept["valid_until"] == "2026-07-10"
    assert kept["version"] == printed["version"]
