"""``/v1/webhooks``: owners, validation, the secret shown once, and who may see or delete what."""

from __future__ import annotations

import uuid

import asyncpg
import httpx

from service.auth import Role
from tests.conftest import Api, LabAccount, MakeTenant, Tenant, fields_of, mint, problem

URL = "https://hooks.example.com/metreg"


async def test_an_enterprise_registers_a_webhook_and_sees_its_secret_once(tenant: Tenant, pool: asyncpg.Pool) -> None:
    response = await tenant.api.post("/v1/webhooks", json={"url": URL, "events": ["overdue", "due_soon", "overdue"]})
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["secret"].startswith("whsec_")
    assert created["webhook"]["enterprise_id"] == tenant.id
    assert created["webhook"]["events"] == ["due_soon", "overdue"]
    listed = (await tenant.api.get("/v1/webhooks")).json()
    assert [w["id"] for w in listed] == [created["webhook"]["id"]]
    assert "secret" not in listed[0]


async def test_a_given_secret_is_kept(tenant: Tenant, pool: asyncpg.Pool) -> None:
    secret = "s" * 24
    created = (await tenant.api.post("/v1/webhooks", json={"url": URL, "secret": secret})).json()
    async with pool.acquire() as conn:
        stored = await conn.fetchval("SELECT secret FROM webhooks WHERE id = $1", uuid.UUID(created["webhook"]["id"]))
    assert stored == secret == created["secret"]


async def test_a_regulator_registers_for_its_region(app_client: httpx.AsyncClient, pool: asyncpg.Pool) -> None:
    regulator = Api(app_client, await mint(pool, Role.REGULATOR, region_code="3101"))
    created = (await regulator.post("/v1/webhooks", json={"url": URL})).json()["webhook"]
    assert (created["region_code"], created["enterprise_id"]) == ("3101", None)


async def test_bad_webhooks_are_refused_naming_the_field(tenant: Tenant) -> None:
    cases = [
        ({"url": "http://hooks.example.com/"}, 422, "url"),
        ({"url": "https://127.0.0.1/hook"}, 422, "url"),
        ({"url": "https://169.254.169.254/"}, 422, "url"),
        ({"url": URL, "events": ["birthday"]}, 400, "events[0]"),
        ({"url": URL, "secret": "short"}, 400, "secret"),
        ({"url": URL, "enterprise_id": str(uuid.uuid4())}, 400, "enterprise_id"),
        ({"url": ""}, 400, "url"),
    ]
    for body, status, field in cases:
        assert fields_of(problem(await tenant.api.post("/v1/webhooks", json=body), status)) == [field], body
    assert (await tenant.api.get("/v1/webhooks")).json() == []


async def test_admins_name_exactly_one_owner(admin: Api, tenant: Tenant) -> None:
    assert fields_of(problem(await admin.post("/v1/webhooks", json={"url": URL}), 400)) == ["enterprise_id"]
    both = {"url": URL, "enterprise_id": tenant.id, "region_code": "31"}
    assert fields_of(problem(await admin.post("/v1/webhooks", json=both), 400)) == ["enterprise_id"]
    missing = {"url": URL, "enterprise_id": str(uuid.uuid4())}
    problem(await admin.post("/v1/webhooks", json=missing), 404)
    created = await admin.post("/v1/webhooks", json={"url": URL, "enterprise_id": tenant.id})
    assert created.status_code == 201
    assert [w["url"] for w in (await tenant.api.get("/v1/webhooks")).json()] == [URL]


async def test_labs_have_no_webhooks(lab: LabAccount) -> None:
    problem(await lab.api.post("/v1/webhooks", json={"url": URL}), 403)
    problem(await lab.api.get("/v1/webhooks"), 403)
    problem(await lab.api.delete(f"/v1/webhooks/{uuid.uuid4()}"), 403)


async def test_no_key_is_401(anonymous: Api) -> None:
    problem(await anonymous.post("/v1/webhooks", json={"url": URL}), 401)
    problem(await anonymous.get("/v1/webhooks"), 401)


async def test_one_owner_never_sees_or_deletes_anothers_webhook(make_tenant: MakeTenant) -> None:
    owner, stranger = await make_tenant(), await make_tenant()
    created = (await owner.api.post("/v1/webhooks", json={"url": URL})).json()["webhook"]
    assert (await stranger.api.get("/v1/webhooks")).json() == []
    problem(await stranger.api.delete(f"/v1/webhooks/{created['id']}"), 404)
    assert len((await owner.api.get("/v1/webhooks")).json()) == 1
    assert (await owner.api.delete(f"/v1/webhooks/{created['id']}")).status_code == 204
    assert (await owner.api.get("/v1/webhooks")).json() == []
    problem(await owner.api.delete(f"/v1/webhooks/{created['id']}"), 404)
