"""Writes that race end in one consistent state, decided by locks rather than luck."""

from __future__ import annotations

import asyncio

import asyncpg

from tests.conftest import GAUGE as BASE_GAUGE
from tests.conftest import Tenant

GAUGE = BASE_GAUGE | {"last_verified_on": "2025-08-31"}


async def test_registrations_racing_a_period_rule_change_all_follow_the_final_rule(
    tenant: Tenant, pool: asyncpg.Pool
) -> None:
    """Registration reads the period rule under FOR SHARE; the change takes FOR UPDATE and recomputes."""

    async def register(n: int) -> int:
        response = await tenant.api.post(tenant.instruments_url, json=GAUGE | {"name": "压力表", "serial_no": f"C{n}"})
        return response.status_code

    change = tenant.api.patch(f"/v1/enterprises/{tenant.id}", json={"period_rule": "civil_code"})
    results = await asyncio.gather(*(register(n) for n in range(8)), change)
    assert results[:8] == [201] * 8
    assert results[8].status_code == 200
    async with pool.acquire() as conn:
        dates = {
            r["valid_until"].isoformat()
            for r in await conn.fetch(
                "SELECT valid_until FROM instruments WHERE enterprise_id = $1", tenant.enterprise["id"]
            )
        }
    assert dates == {"2026-02-28"}  # civil_code: 2025-08-31 + 6 months, no − 1


async def test_concurrent_updates_with_the_same_version_let_exactly_one_win(tenant: Tenant) -> None:
    gauge = await tenant.register(**GAUGE)
    url = f"/v1/instruments/{gauge['id']}"
    responses = await asyncio.gather(
        *(tenant.api.patch(url, json={"location": f"place {n}", "version": 1}) for n in range(5))
    )
    assert sorted(r.status_code for r in responses) == [200, 409, 409, 409, 409]
    final = (await tenant.api.get(url)).json()
    winner = next(r.json() for r in responses if r.status_code == 200)
    assert (final["version"], final["location"]) == (2, winner["location"])
