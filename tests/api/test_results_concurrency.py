"""Two results for one instrument recorded at the same moment end in one state: the later
``performed_on`` governs, whichever commits first (a row lock decides, not luck)."""

from __future__ import annotations

import asyncio
import itertools

import asyncpg
import pytest

from tests.conftest import GAUGE, Api, LabAccount, Tenant


async def _waiting_on_locks(pool: asyncpg.Pool, count: int) -> None:
    """Wait until ``count`` backends are blocked on a lock (a condition, not a timing)."""
    async with pool.acquire() as conn:
        for _ in range(500):
            blocked = await conn.fetchval("SELECT count(*) FROM pg_locks WHERE NOT granted")
            if blocked >= count:
                return
            await asyncio.sleep(0.01)
    raise AssertionError(f"expected {count} backends waiting on a lock")


def _result(lab: LabAccount, performed_on: str, number: str) -> dict[str, str]:
    return {
        "kind": "verification_certificate",
        "number": number,
        "performed_on": performed_on,
        "issued_on": "2026-06-12",
        "lab_id": lab.id,
    }


async def test_two_results_blocked_on_the_row_lock_end_with_the_later_verification_governing(
    tenant: Tenant, lab: LabAccount, admin: Api, pool: asyncpg.Pool
) -> None:
    gauge = await tenant.register(**GAUGE, last_verified_on="2026-01-15")
    url = f"/v1/instruments/{gauge['id']}/certificates"
    async with pool.acquire() as holder, holder.transaction():
        # Hold the instrument's row lock so both requests queue behind it, then let them race.
        await holder.execute("SELECT 1 FROM instruments WHERE id = $1 FOR UPDATE", gauge["id"])
        early = asyncio.create_task(admin.post(url, json=_result(lab, "2026-06-01", "RACE-EARLY")))
        late = asyncio.create_task(admin.post(url, json=_result(lab, "2026-06-10", "RACE-LATE")))
        await _waiting_on_locks(pool, 2)
    responses = await asyncio.gather(early, late)
    assert [r.status_code for r in responses] == [201, 201], [r.text for r in responses]
    effects = {r.json()["certificate"]["number"]: r.json()["certificate"]["legal_effect"] for r in responses}
    # Whichever went first governed for a moment; the later verification governs in the end.
    assert effects["RACE-LATE"] == "governs"
    assert effects["RACE-EARLY"] in {"governs", "history"}
    instrument = (await tenant.api.get(f"/v1/instruments/{gauge['id']}")).json()
    assert instrument["last_verified_on"] == "2026-06-10"
    assert instrument["valid_until"] == "2026-12-09"  # R2 from the later date, not stacked
    assert instrument["current_certificate_number"] == "RACE-LATE"


@pytest.mark.parametrize("order", list(itertools.permutations(["2026-06-01", "2026-06-10"])))
async def test_either_commit_order_gives_the_same_final_state(
    tenant: Tenant, lab: LabAccount, admin: Api, order: tuple[str, str]
) -> None:
    gauge = await tenant.register(**GAUGE, last_verified_on="2026-01-15")
    url = f"/v1/instruments/{gauge['id']}/certificates"
    for n, performed_on in enumerate(order):
        response = await admin.post(url, json=_result(lab, performed_on, f"ORDER-{order[0]}-{n}-{gauge['id'][:8]}"))
        assert response.status_code == 201, response.text
    instrument = (await tenant.api.get(f"/v1/instruments/{gauge['id']}")).json()
    assert (instrument["last_verified_on"], instrument["valid_until"]) == ("2026-06-10", "2026-12-09")
    certificates = (await tenant.api.get(f"/v1/instruments/{gauge['id']}/certificates")).json()["items"]
    statuses = {c["performed_on"]: c["status"] for c in certificates}
    assert statuses == {"2026-06-10": "valid", "2026-06-01": "superseded"}
