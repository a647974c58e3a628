"""``/v1/webhooks``: owners, validation, the secret shown once, and who may see or delete what."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import httpx
import pytest

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


# ---------------------------------------------------------------------------------------------
# One webhook per owner and URL (schema/0024)


async def test_a_second_webhook_at_a_url_its_owner_has_is_409_naming_url(
    tenant: Tenant, make_tenant: MakeTenant, admin: Api, app_client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    """It would be the same receiver getting every notice twice. Another owner may use the URL, and
    a deleted webhook frees it."""
    first = (await tenant.api.post("/v1/webhooks", json={"url": URL})).json()["webhook"]
    again = problem(await tenant.api.post("/v1/webhooks", json={"url": URL, "events": ["overdue"]}), 409)
    assert again["type"] == "urn:metreg:problem:duplicate"
    assert fields_of(again) == ["url"]
    assert first["id"] in again["errors"][0]["message"]
    by_admin = await admin.post("/v1/webhooks", json={"url": f" {URL} ", "enterprise_id": tenant.id})
    assert fields_of(problem(by_admin, 409)) == ["url"]
    assert [w["id"] for w in (await tenant.api.get("/v1/webhooks")).json()] == [first["id"]]

    other = await make_tenant()
    assert (await other.api.post("/v1/webhooks", json={"url": URL})).status_code == 201
    region = "654901"  # no enterprise of the tests is there: its webhook is called by no escalation
    regulator = Api(app_client, await mint(pool, Role.REGULATOR, region_code=region))
    assert (await regulator.post("/v1/webhooks", json={"url": URL})).status_code == 201
    assert fields_of(problem(await regulator.post("/v1/webhooks", json={"url": URL}), 409)) == ["url"]
    by_admin = await admin.post("/v1/webhooks", json={"url": URL, "region_code": region})
    assert fields_of(problem(by_admin, 409)) == ["url"]

    assert (await tenant.api.delete(f"/v1/webhooks/{first['id']}")).status_code == 204
    replaced = await tenant.api.post("/v1/webhooks", json={"url": URL})
    assert replaced.status_code == 201, replaced.text
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT active FROM webhooks WHERE enterprise_id = $1 ORDER BY created_at, active", uuid.UUID(tenant.id)
        )
    assert [r["active"] for r in rows] == [False, True]


async def test_creations_racing_for_one_url_make_one_webhook(make_tenant: MakeTenant, pool: asyncpg.Pool) -> None:
    tenant = await make_tenant()
    responses = await asyncio.gather(*(tenant.api.post("/v1/webhooks", json={"url": URL}) for _ in range(4)))
    assert sorted(r.status_code for r in responses) == [201, 409, 409, 409]
    assert all(fields_of(problem(r, 409)) == ["url"] for r in responses if r.status_code == 409)
    assert len((await tenant.api.get("/v1/webhooks")).json()) == 1


async def _blocked_by(pool: asyncpg.Pool, *, besides: set[int]) -> tuple[int, list[int]]:
    """A backend of the test database other than ``besides`` that waits for a lock, once there is
    one, and the backends it waits for."""
    async with pool.acquire() as conn:
        while (  # noqa: ASYNC110  # PostgreSQL has no event to await: its lock table is polled
            row := await conn.fetchrow(
                """SELECT pid, pg_blocking_pids(pid) AS holders FROM pg_stat_activity
                   WHERE datname = current_database() AND cardinality(pg_blocking_pids(pid)) > 0
                     AND NOT pid = ANY ($1::int[])""",
                list(besides),
            )
        ) is None:
            await asyncio.sleep(0.01)
    return row["pid"], list(row["holders"])


async def test_of_two_creations_at_once_the_second_waits_for_the_first_and_is_409(
    make_tenant: MakeTenant, pool: asyncpg.Pool
) -> None:
    """Both are in flight together: the first has inserted its webhook and not committed (its
    foreign-key check waits for a lock this test holds on the enterprise), when the second inserts
    the same URL. The second waits for the first, not for the test's lock, and once the first
    commits it is a 409 naming the first's webhook: the check is the unique index, which sees
    uncommitted rows, not a read, which would not."""
    tenant = await make_tenant()
    async with pool.acquire() as holder, holder.transaction():
        await holder.execute("SELECT 1 FROM enterprises WHERE id = $1 FOR UPDATE", uuid.UUID(tenant.id))
        holder_pid = await holder.fetchval("SELECT pg_backend_pid()")
        first = asyncio.create_task(tenant.api.post("/v1/webhooks", json={"url": URL}))
        first_pid, holders = await _blocked_by(pool, besides={holder_pid})
        assert holders == [holder_pid]
        second = asyncio.create_task(tenant.api.post("/v1/webhooks", json={"url": URL}))
        _, holders = await _blocked_by(pool, besides={holder_pid, first_pid})
        assert holders == [first_pid]
        assert not first.done()
        assert not second.done()
    created, refused = await asyncio.gather(first, second)
    assert created.status_code == 201, created.text
    body = problem(refused, 409)
    assert fields_of(body) == ["url"]
    assert created.json()["webhook"]["id"] in body["detail"]


async def test_the_index_refuses_any_write_that_gives_an_owner_two_active_webhooks_at_one_url(
    tenant: Tenant, pool: asyncpg.Pool
) -> None:
    """The API changes no webhook's URL and reactivates none; the index holds whatever writes,
    the tables' owner included."""
    ids = []
    for url in (URL, f"{URL}/other"):
        created = (await tenant.api.post("/v1/webhooks", json={"url": url})).json()["webhook"]
        ids.append(uuid.UUID(created["id"]))
    assert (await tenant.api.delete(f"/v1/webhooks/{ids[0]}")).status_code == 204
    replacement = (await tenant.api.post("/v1/webhooks", json={"url": URL})).json()["webhook"]
    async with pool.acquire() as conn:
        with pytest.raises(asyncpg.UniqueViolationError, match="webhooks_owner_url"):
            await conn.execute("UPDATE webhooks SET url = $2 WHERE id = $1", ids[1], URL)
        with pytest.raises(asyncpg.UniqueViolationError, match="webhooks_owner_url"):
            await conn.execute("UPDATE webhooks SET active = true, deleted_at = NULL WHERE id = $1", ids[0])
        active = await conn.fetch(
            "SELECT id, url FROM webhooks WHERE enterprise_id = $1 AND active ORDER BY url", uuid.UUID(tenant.id)
        )
    assert [(r["id"], r["url"]) for r in active] == [
        (uuid.UUID(replacement["id"]), URL),
        (ids[1], f"{URL}/other"),
    ]
