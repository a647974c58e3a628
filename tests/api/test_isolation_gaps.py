"""Isolation cases the matrix cannot see from a static world: what a regulator sees of notices
and deliveries when an enterprise moves between regions, and of webhooks of a region below its own.

Both once leaked (``service/notices/queries.py`` matched the region stored on the notice, and any
webhook under the regulator's prefix); the queries now follow the enterprise's current region and
the webhook's owner, and row-level security holds the same line in the database.
"""

from __future__ import annotations

import uuid

import asyncpg
import httpx

from service.auth import Role
from tests.conftest import GAUGE, NOW, Api, LabAccount, MakeTenant, mint, problem


async def _result_notice(tenant_api: Api, lab: LabAccount, instrument_id: str, pool: asyncpg.Pool) -> str:
    """The notice written with a result recorded for the instrument."""
    response = await tenant_api.post(
        "/v1/verification-requests", json={"lab_id": lab.id, "instrument_ids": [instrument_id]}
    )
    assert response.status_code == 201, response.text
    await lab.accept(response.json()["id"])
    recorded = await lab.record(instrument_id)
    assert recorded.status_code == 201, recorded.text
    async with pool.acquire() as conn:
        notice_id = await conn.fetchval(
            "SELECT id FROM notices WHERE certificate_id = $1", uuid.UUID(recorded.json()["certificate"]["id"])
        )
    return str(notice_id)


async def test_a_regulator_no_longer_covering_an_enterprise_does_not_read_its_notices(
    make_tenant: MakeTenant, lab: LabAccount, admin: Api, app_client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    tenant = await make_tenant(region_code="130101")
    gauge = await tenant.register(**GAUGE, name="移走的压力表", last_verified_on="2026-06-01")
    notice_id = await _result_notice(tenant.api, lab, gauge["id"], pool)
    former = Api(app_client, await mint(pool, Role.REGULATOR, region_code="1301"))
    assert (await former.get(f"/v1/notices/{notice_id}")).status_code == 200  # while it covers the enterprise

    moved = await admin.patch(f"/v1/enterprises/{tenant.id}", json={"region_code": "150101"})
    assert moved.status_code == 200, moved.text
    problem(await former.get(f"/v1/enterprises/{tenant.id}"), 404)  # the enterprise is out of its reach
    problem(await former.get(f"/v1/instruments/{gauge['id']}"), 404)
    listed = await former.get("/v1/notices", params={"instrument_id": gauge["id"]})
    assert "移走的压力表" not in listed.text
    problem(await former.get(f"/v1/notices/{notice_id}"), 404)


async def test_a_regulator_sees_only_deliveries_to_its_own_webhooks(
    make_tenant: MakeTenant, admin: Api, app_client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    tenant = await make_tenant(region_code="140101")
    gauge = await tenant.register(**GAUGE, last_verified_on="2026-06-01")
    province = Api(app_client, await mint(pool, Role.REGULATOR, region_code="14"))
    city = Api(app_client, await mint(pool, Role.REGULATOR, region_code="1401"))
    created = await city.post("/v1/webhooks", json={"url": "https://city-regulator.example.com/secret-path"})
    assert created.status_code == 201, created.text
    webhook = created.json()["webhook"]
    assert webhook["id"] not in (await province.get("/v1/webhooks")).text  # not the province's webhook
    problem(await province.delete(f"/v1/webhooks/{webhook['id']}"), 404)
    async with pool.acquire() as conn:  # an escalation the worker has tried to deliver to the city
        notice_id = await conn.fetchval(
            """INSERT INTO notices (enterprise_id, instrument_id, kind, audience, region_code, cycle, step, due_on,
                                    status, next_attempt_at, created_at, updated_at)
               VALUES ($1, $2, 'escalation', 'regulator', '140101', '2026-05-31', 0, '2026-06-15', 'failed', $3, $3, $3)
               RETURNING id""",
            uuid.UUID(tenant.id),
            uuid.UUID(gauge["id"]),
            NOW,
        )
        delivery_id = await conn.fetchval(
            """INSERT INTO deliveries (notice_id, channel, webhook_id, target, status, attempts, next_attempt_at,
                                      created_at, updated_at)
               VALUES ($1, 'webhook', $2, $3, 'failed', 1, $4, $4, $4) RETURNING id""",
            notice_id,
            uuid.UUID(webhook["id"]),
            webhook["url"],
            NOW,
        )
    assert delivery_id is not None
    assert [d["id"] for d in (await city.get(f"/v1/notices/{notice_id}")).json()["deliveries"]] == [str(delivery_id)]
    seen = await province.get(f"/v1/notices/{notice_id}")
    assert seen.status_code == 200, seen.text
    assert "secret-path" not in seen.text
    problem(await province.post(f"/v1/deliveries/{delivery_id}/retry"), 404)
