"""The demo register: seeded once, in every status, with keys that keep working."""

from __future__ import annotations

import io

import asyncpg
from python_calamine import CalamineWorkbook

from service.demo import DEMO_ADDRESS, DEMO_CONTACT_NAME, DEMO_CONTACT_PHONE, DEMO_SIZE, DemoKeys, seed_demo
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
    assert again.lab_id == first.lab_id
    some = (await member.get(f"/v1/enterprises/{first.enterprise_id}/instruments", params={"limit": 1})).json()
    history = (await member.get(f"/v1/instruments/{some['items'][0]['id']}/history")).json()["items"]
    assert [event["kind"] for event in history] == ["registered"]
    assert first.keys.lab_key is not None
    lab = Api(anonymous.client, first.keys.lab_key)
    own = (await lab.get(f"/v1/labs/{first.lab_id}")).json()
    assert len(own["scope"]) == await _catalog_size(pool)
    # Its filing table's title block is complete: nothing is left to fill in by hand.
    filing = await member.get(f"/v1/enterprises/{first.enterprise_id}/filing")
    assert filing.status_code == 200, filing.text
    grid = CalamineWorkbook.from_filelike(io.BytesIO(filing.content)).get_sheet_by_index(0).to_python()
    assert [row[0] for row in grid[3:5]] == [
        f"单位地址：{DEMO_ADDRESS}",
        f"联系人：{DEMO_CONTACT_NAME}　　　　联系电话：{DEMO_CONTACT_PHONE}",
    ]


async def test_keys_kept_from_before_the_demo_lab_are_replaced_by_a_full_set(
    pool: asyncpg.Pool, anonymous: Api
) -> None:
    async with pool.acquire() as conn, conn.transaction():
        first = await seed_demo(conn, NOW, None)
        older = DemoKeys(admin_key=first.keys.admin_key, enterprise_key=first.keys.enterprise_key)
        again = await seed_demo(conn, NOW, older)
    assert again.keys.lab_key is not None
    assert again.keys != older


async def _catalog_size(pool: asyncpg.Pool) -> int:
    async with pool.acquire() as conn:
        count: int = await conn.fetchval("SELECT count(*) FROM catalog_items")
    return count
