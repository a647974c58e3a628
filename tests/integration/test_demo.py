"""The demo register: seeded once, in every status, with keys that keep working."""

from __future__ import annotations

import asyncpg

from service.demo import DEMO_SIZE, seed_demo
from tests.conftest import NOW, Api


async def test_demo_seeds_once_covers_every_status_and_reuses_keys(pool: asyncpg.Pool, anonymous: Api) -> None:
    async with pool.acquire() as conn, conn.transaction():
        first = await seed_demo(conn, NOW, None)
    assert first.created
    assert first.instruments == DEMO_SIZE
    member = Api(anonymous.client, first.keys.enterprise_key)
    statuses = set()
    cursor = None
    while True:
        params = {"limit": 500} | ({"cursor": cursor} if cursor else {})
        page = (await member.get(f"/v1/enterprises/{first.enterprise_id}/instruments", params=params)).json()
        statuses |= {item["status"] for item in page["items"]}
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert statuses == {
        "valid",
        "due_soon",
        "overdue",
        "failed",
        "sealed",
        "scrapped",
        "replaced",
        "pending_verification",
        "unverified",
    }
    async with pool.acquire() as conn, conn.transaction():
        again = await seed_demo(conn, NOW, first.keys)
    assert not again.created
    assert again.instruments == DEMO_SIZE
    assert again.keys == first.keys
    admin = Api(anonymous.client, again.keys.admin_key)
    assert (await admin.get("/v1/catalog")).status_code == 200
