"""Enterprises: creation rules, who reads them, who changes what."""

from __future__ import annotations

import re
import uuid
from typing import Any

import asyncpg
import pytest

from service.auth import Role
from service.enterprises.schemas import PHONE_PATTERN
from tests.conftest import (
    GAUGE,
    Api,
    LabAccount,
    MakeTenant,
    Tenant,
    accepted_request,
    fields_of,
    mint,
    new_credit_code,
    problem,
)

CONTACT = ("address", "contact_name", "contact_phone")


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
    assert (body["address"], body["contact_name"], body["contact_phone"]) == (None, None, None)
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


# ---------------------------------------------------------------------------------------------
# Address and contact: the filing table's title block


async def _contact_of(pool: asyncpg.Pool, enterprise_id: str) -> tuple[Any, ...]:
    row = await pool.fetchrow(
        "SELECT address, contact_name, contact_phone, version FROM enterprises WHERE id = $1",
        uuid.UUID(enterprise_id),
    )
    assert row is not None
    return tuple(row)


async def test_admin_creates_an_enterprise_with_its_address_and_contact_trimmed(admin: Api) -> None:
    body = {
        "name": "上海某某机械有限公司",
        "credit_code": new_credit_code(),
        "region_code": "310115",
        "address": " 上海市浦东新区川沙路 5588 号\n",
        "contact_name": "　陈静 ",
        "contact_phone": " +86 21 5012 3456 转 8012 ",
    }
    response = await admin.post("/v1/enterprises", json=body)
    assert response.status_code == 201, response.text
    created = response.json()
    expected = ("上海市浦东新区川沙路 5588 号", "陈静", "+86 21 5012 3456 转 8012")
    assert (created["address"], created["contact_name"], created["contact_phone"]) == expected
    read = (await admin.get(f"/v1/enterprises/{created['id']}")).json()
    assert (read["address"], read["contact_name"], read["contact_phone"]) == expected


BAD_CONTACT = [
    ({"address": ""}, "address"),
    ({"address": "  \t "}, "address"),
    ({"address": "x" * 301}, "address"),
    ({"address": "川沙路\x00号"}, "address"),
    ({"address": 5588}, "address"),
    ({"contact_name": ""}, "contact_name"),
    ({"contact_name": "　"}, "contact_name"),
    ({"contact_name": "陈" * 101}, "contact_name"),
    ({"contact_phone": ""}, "contact_phone"),
    ({"contact_phone": "   "}, "contact_phone"),
    ({"contact_phone": "call reception"}, "contact_phone"),
    ({"contact_phone": "021-5012 3456; 021-5012 3457"}, "contact_phone"),
    ({"contact_phone": "021-5012\n3456"}, "contact_phone"),
    ({"contact_phone": "++86 21 5012 3456"}, "contact_phone"),
    ({"contact_phone": "21 +86"}, "contact_phone"),
    ({"contact_phone": "转 8012"}, "contact_phone"),
    ({"contact_phone": "021-5012 3456 ext. ab"}, "contact_phone"),
    ({"contact_phone": "1" * 41}, "contact_phone"),
    ({"contact_phone": 50123456}, "contact_phone"),
]


@pytest.mark.parametrize(("change", "field"), BAD_CONTACT)
async def test_a_bad_address_or_contact_is_a_400_naming_it_and_creates_nothing(
    admin: Api, pool: asyncpg.Pool, change: dict[str, object], field: str
) -> None:
    body = {"name": "某企业", "credit_code": new_credit_code(), "region_code": "310115"} | change
    assert fields_of(problem(await admin.post("/v1/enterprises", json=body), 400)) == [field]
    assert await pool.fetchval("SELECT count(*) FROM enterprises WHERE credit_code = $1", body["credit_code"]) == 0


@pytest.mark.parametrize(("change", "field"), BAD_CONTACT)
async def test_a_bad_address_or_contact_is_a_400_naming_it_and_changes_nothing(
    tenant: Tenant, pool: asyncpg.Pool, change: dict[str, object], field: str
) -> None:
    url = f"/v1/enterprises/{tenant.id}"
    kept = {"address": "天津市和平区南京路 1 号", "contact_name": "王伟", "contact_phone": "022-2345 6789"}
    assert (await tenant.api.patch(url, json=kept)).status_code == 200
    before = await _contact_of(pool, tenant.id)
    # With a good change beside it: the whole request is refused, not just the bad field.
    body = {"name": "不应改名"} | change
    assert fields_of(problem(await tenant.api.patch(url, json=body), 400)) == [field]
    assert await _contact_of(pool, tenant.id) == before
    assert (await tenant.api.get(url)).json()["name"] == tenant.enterprise["name"]


GOOD_PHONES = [
    "021-5012 3456",
    "02150123456",
    "13812345678",
    "138 1234 5678",
    "+86 138 1234 5678",
    "+86 (21) 5012-3456",
    "(021) 5012 3456",
    "0755-2601 2345 转 66",
    "021-50123456转8012",
    "010 6201 2345 分机 301",
    "+1 (415) 555-0100 ext. 123",
    "+44 20 7946 0958 Ext 9",
    "+49 30 901820 x12",
    "400-820-8820 #2",
    "1" * 40,
]


@pytest.mark.parametrize("phone", GOOD_PHONES)
async def test_phone_numbers_as_people_write_them_are_kept_as_written(
    tenant: Tenant, pool: asyncpg.Pool, phone: str
) -> None:
    response = await tenant.api.patch(f"/v1/enterprises/{tenant.id}", json={"contact_phone": phone})
    assert response.status_code == 200, response.text
    assert response.json()["contact_phone"] == phone
    assert (await _contact_of(pool, tenant.id))[2] == phone


async def test_the_database_checks_the_phone_with_the_apis_own_pattern(tenant: Tenant, pool: asyncpg.Pool) -> None:
    definition = await pool.fetchval(
        """SELECT pg_get_constraintdef(oid) FROM pg_constraint
           WHERE conrelid = 'enterprises'::regclass AND pg_get_constraintdef(oid) LIKE '%contact_phone ~%'"""
    )
    assert PHONE_PATTERN in definition
    # Whatever writes the row (the API trims and checks first), PostgreSQL judges as Python does.
    bad = [c["contact_phone"] for c, _ in BAD_CONTACT if isinstance(c.get("contact_phone"), str)]
    for phone in [*GOOD_PHONES, *bad]:
        accepted = re.search(PHONE_PATTERN, phone) is not None and 1 <= len(phone) <= 40
        async with pool.acquire() as conn:
            # Rolled back whatever happens: the write is only there to be judged.
            transaction = conn.transaction()
            await transaction.start()
            try:
                await conn.execute(
                    "UPDATE enterprises SET contact_phone = $2 WHERE id = $1", uuid.UUID(tenant.id), phone
                )
                stored = True
            except asyncpg.CheckViolationError:
                stored = False
            finally:
                await transaction.rollback()
        assert stored == accepted, phone


async def test_patch_sets_keeps_and_clears_the_address_and_contact(tenant: Tenant, pool: asyncpg.Pool) -> None:
    url = f"/v1/enterprises/{tenant.id}"
    given = {"address": "上海市徐汇区漕宝路 88 号", "contact_name": "李娜", "contact_phone": "021-6480 1234"}
    response = await tenant.api.patch(url, json=given)
    assert response.status_code == 200, response.text
    assert {f: response.json()[f] for f in CONTACT} == given
    assert response.json()["version"] == 2
    # Absent fields stay as they are.
    response = await tenant.api.patch(url, json={"digest": True, "version": 2})
    assert {f: response.json()[f] for f in CONTACT} == given
    # null clears one; the others stay.
    response = await tenant.api.patch(url, json={"contact_phone": None})
    assert response.status_code == 200, response.text
    assert {f: response.json()[f] for f in CONTACT} == given | {"contact_phone": None}
    assert await _contact_of(pool, tenant.id) == (given["address"], given["contact_name"], None, 4)
    response = await tenant.api.patch(url, json={"address": None, "contact_name": None})
    assert {f: response.json()[f] for f in CONTACT} == dict.fromkeys(CONTACT)
    assert await _contact_of(pool, tenant.id) == (None, None, None, 5)
    read = (await tenant.api.get(url)).json()
    assert {f: read[f] for f in CONTACT} == dict.fromkeys(CONTACT)


async def test_who_reads_and_changes_the_address_and_contact(
    make_tenant: MakeTenant, admin: Api, pool: asyncpg.Pool, lab: LabAccount
) -> None:
    given = {"address": "上海市浦东新区金科路 2966 号", "contact_name": "张伟", "contact_phone": "021-5080 1234"}
    pudong = await make_tenant(region_code="310115", **given)
    other = await make_tenant(region_code="440305")
    url = f"/v1/enterprises/{pudong.id}"
    before = await _contact_of(pool, pudong.id)
    # Its readers see them: itself, an admin, a regulator of its region.
    shanghai = Api(admin.client, await mint(pool, Role.REGULATOR, region_code="31"))
    for reader in (pudong.api, admin, shanghai):
        body = (await reader.get(url)).json()
        assert {f: body[f] for f in CONTACT} == given
    # Nobody else: another tenant, a regulator elsewhere, and a lab, even one that holds the
    # enterprise's request (labs never read an enterprise).
    instrument = await pudong.register(**GAUGE, last_verified_on="2026-01-15")
    await accepted_request(pudong, lab, instrument["id"])
    shenzhen = Api(admin.client, await mint(pool, Role.REGULATOR, region_code="4403"))
    for stranger in (other.api, shenzhen, lab.api):
        refused = problem(await stranger.get(url), 404)
        assert given["address"] not in str(refused)
    # Only the enterprise and an admin change them: a regulator may not, strangers find nothing.
    problem(await shanghai.patch(url, json={"address": "别处"}), 403)
    for stranger in (other.api, shenzhen, lab.api):
        assert (await stranger.patch(url, json={"contact_phone": None})).status_code in (403, 404)
    assert await _contact_of(pool, pudong.id) == before
    changed = await admin.patch(url, json={"contact_name": "张伟（设备科）"})
    assert changed.json()["contact_name"] == "张伟（设备科）"
