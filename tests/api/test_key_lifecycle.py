"""API key lifecycle: expiry, rotation with a grace period, revocation, listing, use tracking, the
audit trail, and key material that never shows up in answers or logs.

The clock is the app's ``FixedClock`` (the ``clock`` fixture): moving it with ``clock.set`` is how
a key reaches its end or leaves its grace period.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest

from service.app import create_app
from service.auth import Role
from service.clock import FixedClock
from service.logs import JsonFormatter
from tests.conftest import (
    NOW,
    Api,
    LabAccount,
    MakeTenant,
    Tenant,
    app_settings,
    fields_of,
    mint,
    problem,
    running,
)

HOUR = dt.timedelta(hours=1)
DAY = dt.timedelta(days=1)


def iso(instant: dt.datetime) -> str:
    return instant.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def instant(text: str | None) -> dt.datetime | None:
    return None if text is None else dt.datetime.fromisoformat(text)


def secret_of(key: str) -> str:
    return key.split("_", 2)[2]


async def id_of(pool: asyncpg.Pool, key: str) -> str:
    """The id of a key minted outside the API (the prefix is its public part)."""
    async with pool.acquire() as conn:
        found = await conn.fetchval("SELECT id FROM api_keys WHERE prefix = $1", key.split("_")[1])
    assert found is not None
    return str(found)


async def row_of(pool: asyncpg.Pool, key_id: str) -> asyncpg.Record:
    async with pool.acquire() as conn:
        row = await conn.fetchrow("SELECT * FROM api_keys WHERE id = $1", uuid.UUID(key_id))
    assert row is not None
    return row


async def create(admin: Api, **body: Any) -> dict[str, Any]:
    response = await admin.post("/v1/api-keys", json={"role": "admin", "name": "lifecycle"} | body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def enterprise_key(admin: Api, tenant: Tenant, **body: Any) -> dict[str, Any]:
    return await create(admin, role="enterprise", name="ledger clerk", enterprise_id=tenant.id, **body)


async def rotate(api: Api, key_id: str, body: dict[str, Any] | None = None) -> httpx.Response:
    if body is None:
        return await api.post(f"/v1/api-keys/{key_id}/rotate")
    return await api.post(f"/v1/api-keys/{key_id}/rotate", json=body)


async def works(api: Api, url: str = "/v1/catalog") -> bool:
    """Whether ``api``'s key authenticates: 200, or 401 (anything else fails the test)."""
    response = await api.get(url)
    assert response.status_code in (200, 401), response.text
    if response.status_code == 401:
        problem(response, 401)
    return response.status_code == 200


# ---------------------------------------------------------------------------------------------
# Expiry


@pytest.mark.parametrize(
    ("expires_at", "statuses"),
    [
        (iso(NOW - DAY), {422}),
        (iso(NOW), {422}),  # "in the future": the present instant is already too late
        ("2026-07-01T00:00:00", {400, 422}),  # naive: no offset
        ("next tuesday", {400}),
    ],
)
async def test_expires_at_must_be_an_aware_future_instant(admin: Api, expires_at: str, statuses: set[int]) -> None:
    response = await admin.post("/v1/api-keys", json={"role": "admin", "name": "x", "expires_at": expires_at})
    assert response.status_code in statuses, response.text
    body = problem(response, response.status_code)
    assert fields_of(body) == ["expires_at"]
    assert "expires_at" in body["detail"]


async def test_a_key_works_until_expires_at_and_not_from_that_instant_on(
    admin: Api, tenant: Tenant, clock: FixedClock
) -> None:
    end = NOW + HOUR
    shanghai = dt.timezone(dt.timedelta(hours=8))
    created = await enterprise_key(admin, tenant, expires_at=end.astimezone(shanghai).isoformat())
    assert instant(created["expires_at"]) == end  # stored as the same instant, shown in UTC
    member = Api(admin.client, created["key"])
    assert await works(member, tenant.instruments_url)
    clock.set(end - dt.timedelta(microseconds=1))
    assert await works(member, tenant.instruments_url)
    clock.set(end)
    assert not await works(member, tenant.instruments_url)
    clock.set(end + DAY)
    assert not await works(member, tenant.instruments_url)
    # It shows as ended, and active=true leaves it out.
    listed = (await admin.get("/v1/api-keys", params={"enterprise_id": tenant.id, "active": "true"})).json()
    assert created["id"] not in {k["id"] for k in listed["items"]}


# ---------------------------------------------------------------------------------------------
# Rotation


async def test_admin_rotation_answers_a_successor_and_the_old_key_lasts_its_grace(
    admin: Api, tenant: Tenant, clock: FixedClock, pool: asyncpg.Pool
) -> None:
    old = await enterprise_key(admin, tenant)
    response = await rotate(admin, old["id"], {"grace_seconds": 600})
    assert response.status_code == 201, response.text
    new = response.json()
    assert new["key"].startswith(f"mr_{new['prefix']}_")
    assert new["key"] != old["key"]
    assert new["prefix"] != old["prefix"]
    assert new["id"] != old["id"]
    for field in ("role", "name", "enterprise_id", "lab_id", "region_code"):
        assert new[field] == old[field], field
    assert new["expires_at"] is None
    assert new["rotated_to"] is None
    assert new["revoked_at"] is None
    shown = (await admin.get(f"/v1/api-keys/{old['id']}")).json()
    assert shown["rotated_to"] == new["id"]
    assert instant(shown["expires_at"]) == NOW + dt.timedelta(seconds=600)
    # The successor's secret is stored only as a hash.
    assert secret_of(new["key"]) not in repr(dict(await row_of(pool, new["id"])))

    before, after = Api(admin.client, old["key"]), Api(admin.client, new["key"])
    assert await works(before, tenant.instruments_url)
    assert await works(after, tenant.instruments_url)
    clock.set(NOW + dt.timedelta(seconds=599))
    assert await works(before, tenant.instruments_url)
    clock.set(NOW + dt.timedelta(seconds=600))
    assert not await works(before, tenant.instruments_url)
    assert await works(after, tenant.instruments_url)


async def test_rotation_without_a_body_gives_a_day_of_grace(admin: Api, tenant: Tenant, clock: FixedClock) -> None:
    old = await enterprise_key(admin, tenant)
    assert (await rotate(admin, old["id"])).status_code == 201
    before = Api(admin.client, old["key"])
    clock.set(NOW + DAY - dt.timedelta(seconds=1))
    assert await works(before)
    clock.set(NOW + DAY)
    assert not await works(before)


async def test_grace_zero_ends_the_old_key_at_once(admin: Api, tenant: Tenant) -> None:
    old = await enterprise_key(admin, tenant)
    new = (await rotate(admin, old["id"], {"grace_seconds": 0})).json()
    assert not await works(Api(admin.client, old["key"]))
    assert await works(Api(admin.client, new["key"]))


async def test_grace_never_extends_the_old_keys_life(admin: Api, tenant: Tenant, clock: FixedClock) -> None:
    old = await enterprise_key(admin, tenant, expires_at=iso(NOW + HOUR))
    new = (await rotate(admin, old["id"], {"grace_seconds": 86400})).json()
    assert instant((await admin.get(f"/v1/api-keys/{old['id']}")).json()["expires_at"]) == NOW + HOUR
    assert instant(new["expires_at"]) == NOW + HOUR  # inherited
    clock.set(NOW + HOUR)
    assert not await works(Api(admin.client, old["key"]))


@pytest.mark.parametrize("grace", [-1, 30 * 86400 + 1, "soon"])
async def test_grace_seconds_out_of_range_is_400(admin: Api, tenant: Tenant, grace: object) -> None:
    old = await enterprise_key(admin, tenant)
    assert fields_of(problem(await rotate(admin, old["id"], {"grace_seconds": grace}), 400)) == ["grace_seconds"]
    # Nothing was rotated.
    assert (await admin.get(f"/v1/api-keys/{old['id']}")).json()["rotated_to"] is None


async def test_a_key_rotates_itself_but_not_its_siblings(
    admin: Api, tenant: Tenant, pool: asyncpg.Pool, clock: FixedClock
) -> None:
    own_id = await id_of(pool, tenant.api.key or "")
    response = await rotate(tenant.api, own_id, {"grace_seconds": 60})
    assert response.status_code == 201, response.text
    successor = response.json()
    assert successor["role"] == "enterprise"
    assert successor["enterprise_id"] == tenant.id
    assert successor["name"] == "test enterprise"
    renewed = Api(admin.client, successor["key"])
    assert await works(renewed, tenant.instruments_url)
    # During the grace the old key still reads its scope, the successor included...
    assert (await tenant.api.get(f"/v1/api-keys/{successor['id']}")).status_code == 200
    # ...but neither it nor a sibling may rotate the successor: a leaked key must not take it over.
    sibling = Api(admin.client, await mint(pool, Role.ENTERPRISE, enterprise_id=uuid.UUID(tenant.id)))
    for other in (tenant.api, sibling):
        problem(await rotate(other, successor["id"], {"grace_seconds": 0}), 404)
    assert await works(renewed)
    clock.set(NOW + dt.timedelta(seconds=60))
    assert not await works(tenant.api)
    assert await works(renewed)


async def test_keys_outside_the_scope_are_told_the_key_does_not_exist(
    admin: Api, make_tenant: MakeTenant, lab: LabAccount, pool: asyncpg.Pool
) -> None:
    a, b = await make_tenant(), await make_tenant()
    target = await enterprise_key(admin, a)
    regulator = Api(admin.client, await mint(pool, Role.REGULATOR, region_code="31"))
    missing = str(uuid.uuid4())
    for stranger in (b.api, lab.api, regulator):
        absent = problem(await rotate(stranger, missing, {}), 404)
        refused = problem(await rotate(stranger, target["id"], {}), 404)
        # Indistinguishable from a key that does not exist.
        assert refused["detail"].replace(target["id"], missing) == absent["detail"]
        assert refused["type"] == absent["type"]
        problem(await stranger.get(f"/v1/api-keys/{target['id']}"), 404)
    # A lab key on the enterprise's own minted key, too.
    problem(await rotate(lab.api, await id_of(pool, a.api.key or ""), {}), 404)
    # Nothing was rotated.
    assert (await admin.get(f"/v1/api-keys/{target['id']}")).json()["rotated_to"] is None
    assert await works(Api(admin.client, target["key"]))


async def test_rotating_twice_is_409(admin: Api, tenant: Tenant, pool: asyncpg.Pool) -> None:
    own_id = await id_of(pool, tenant.api.key or "")
    first = await rotate(tenant.api, own_id, {"grace_seconds": 3600})
    assert first.status_code == 201, first.text
    # Still working during its grace, but already replaced: rotate the successor instead.
    assert "rotate that one" in problem(await rotate(tenant.api, own_id, {}), 409)["detail"]
    problem(await rotate(admin, own_id, {}), 409)
    assert (await rotate(admin, first.json()["id"], {})).status_code == 201


async def test_concurrent_rotations_of_one_key_let_one_through(admin: Api, tenant: Tenant) -> None:
    old = await enterprise_key(admin, tenant)
    member = Api(admin.client, old["key"])
    answers = await asyncio.gather(rotate(admin, old["id"], {}), rotate(member, old["id"], {}))
    assert sorted(r.status_code for r in answers) == [201, 409], [r.text for r in answers]
    (winner,) = [r.json() for r in answers if r.status_code == 201]
    assert (await admin.get(f"/v1/api-keys/{old['id']}")).json()["rotated_to"] == winner["id"]
    listed = (await admin.get("/v1/api-keys", params={"enterprise_id": tenant.id})).json()["items"]
    assert sum(k["id"] == winner["id"] for k in listed) == 1
    assert len(listed) == 3  # the tenant's own key, the old one and one successor


async def test_rotating_a_revoked_or_expired_key_is_409(admin: Api, tenant: Tenant, clock: FixedClock) -> None:
    revoked = await enterprise_key(admin, tenant)
    assert (await admin.delete(f"/v1/api-keys/{revoked['id']}")).status_code == 204
    problem(await rotate(admin, revoked["id"], {}), 409)
    expiring = await enterprise_key(admin, tenant, expires_at=iso(NOW + HOUR))
    clock.set(NOW + HOUR)
    problem(await rotate(admin, expiring["id"], {}), 409)
    # A key that ended through a grace-0 rotation is both replaced and ended: still 409.
    clock.set(NOW + 2 * HOUR)
    ended = await enterprise_key(admin, tenant)
    assert (await rotate(admin, ended["id"], {"grace_seconds": 0})).status_code == 201
    problem(await rotate(admin, ended["id"], {}), 409)


async def test_the_successor_inherits_the_end_and_only_an_admin_may_extend_it(
    admin: Api, tenant: Tenant, pool: asyncpg.Pool, clock: FixedClock
) -> None:
    end = NOW + 10 * DAY

    async def self_service() -> tuple[dict[str, Any], Api]:
        created = await enterprise_key(admin, tenant, expires_at=iso(end))
        return created, Api(admin.client, created["key"])

    # Inherited.
    old, member = await self_service()
    new = (await rotate(member, old["id"], {})).json()
    assert instant(new["expires_at"]) == end

    # Later than the old key's end: refused to the key itself, nothing rotated.
    old, member = await self_service()
    body = problem(await rotate(member, old["id"], {"expires_at": iso(end + DAY)}), 422)
    assert fields_of(body) == ["expires_at"]
    assert (await admin.get(f"/v1/api-keys/{old['id']}")).json()["rotated_to"] is None
    # Earlier is fine.
    new = (await rotate(member, old["id"], {"expires_at": iso(end - DAY)})).json()
    assert instant(new["expires_at"]) == end - DAY

    # An admin may extend it.
    old, _ = await self_service()
    response = await rotate(admin, old["id"], {"expires_at": iso(end + 30 * DAY)})
    assert response.status_code == 201, response.text
    assert instant(response.json()["expires_at"]) == end + 30 * DAY

    # A new end in the past is refused to anyone.
    old, member = await self_service()
    for caller in (member, admin):
        body = problem(await rotate(caller, old["id"], {"expires_at": iso(NOW - HOUR)}), 422)
        assert fields_of(body) == ["expires_at"]

    # A key without an end may give its successor one; the successor then may not outlive it.
    own_id = await id_of(pool, tenant.api.key or "")
    new = (await rotate(tenant.api, own_id, {"expires_at": iso(NOW + DAY)})).json()
    assert instant(new["expires_at"]) == NOW + DAY
    clock.set(NOW + DAY)
    assert not await works(Api(admin.client, new["key"]))


@pytest.mark.parametrize("caller", ["self", "admin"])
@pytest.mark.parametrize("old_end", [None, NOW + 10 * DAY], ids=["old-without-end", "old-with-end"])
async def test_a_successor_end_without_an_offset_is_refused(
    admin: Api, tenant: Tenant, caller: str, old_end: dt.datetime | None
) -> None:
    old = await enterprise_key(admin, tenant, **({"expires_at": iso(old_end)} if old_end else {}))
    api = admin if caller == "admin" else Api(admin.client, old["key"])
    response = await rotate(api, old["id"], {"expires_at": "2026-07-01T00:00:00"})
    assert response.status_code in (400, 422), response.text
    assert fields_of(problem(response, response.status_code)) == ["expires_at"]
    assert (await admin.get(f"/v1/api-keys/{old['id']}")).json()["rotated_to"] is None


async def test_revocation_ends_a_key_at_once_even_in_its_grace(admin: Api, tenant: Tenant) -> None:
    old = await enterprise_key(admin, tenant)
    new = (await rotate(admin, old["id"], {"grace_seconds": 3600})).json()
    before, after = Api(admin.client, old["key"]), Api(admin.client, new["key"])
    assert await works(before)
    # Revoking the successor ends it alone.
    assert (await admin.delete(f"/v1/api-keys/{new['id']}")).status_code == 204
    assert not await works(after)
    assert await works(before)
    # Revoking a key ends it and what it was rotated to: whoever leaked it may have rotated it.
    newer = (await rotate(admin, (await enterprise_key(admin, tenant))["id"], {"grace_seconds": 3600})).json()
    assert (await admin.delete(f"/v1/api-keys/{old['id']}")).status_code == 204
    assert not await works(before)
    shown = (await admin.get(f"/v1/api-keys/{old['id']}")).json()
    assert instant(shown["revoked_at"]) == NOW
    assert shown["rotated_to"] == new["id"]
    assert await works(Api(admin.client, newer["key"]))  # another chain is untouched
    chained = Api(admin.client, (await rotate(admin, newer["id"], {})).json()["key"])
    assert await works(chained)
    assert (await admin.delete(f"/v1/api-keys/{newer['id']}")).status_code == 204
    assert not await works(chained)


# ---------------------------------------------------------------------------------------------
# Reading keys


async def test_only_admins_list_keys(tenant: Tenant, lab: LabAccount, admin: Api, pool: asyncpg.Pool) -> None:
    regulator = Api(admin.client, await mint(pool, Role.REGULATOR, region_code="31"))
    for caller in (tenant.api, lab.api, regulator):
        problem(await caller.get("/v1/api-keys"), 403)
        problem(await caller.get("/v1/api-keys", params={"enterprise_id": tenant.id}), 403)
    for params in ({"role": "owner"}, {"active": "perhaps"}, {"enterprise_id": "42"}, {"limit": 0}):
        assert fields_of(problem(await admin.get("/v1/api-keys", params=params), 400)) == list(params)


async def test_listing_filters_and_pages(
    admin: Api, make_tenant: MakeTenant, lab: LabAccount, clock: FixedClock, pool: asyncpg.Pool
) -> None:
    tenant = await make_tenant()
    minted_id = await id_of(pool, tenant.api.key or "")
    ids = [minted_id]
    for i, extra in enumerate([{}, {"expires_at": iso(NOW + HOUR)}, {}, {}], start=1):
        clock.set(NOW + dt.timedelta(seconds=i))
        ids.append((await enterprise_key(admin, tenant, **extra))["id"])
    revoked = ids[3]
    assert (await admin.delete(f"/v1/api-keys/{revoked}")).status_code == 204
    clock.set(NOW + 2 * HOUR)  # ids[2] has ended

    everything = (await admin.get("/v1/api-keys", params={"enterprise_id": tenant.id})).json()
    assert [k["id"] for k in everything["items"]] == ids[::-1]  # newest first
    assert everything["next_cursor"] is None
    assert all("key" not in k and "secret_sha256" not in k for k in everything["items"])

    active = (await admin.get("/v1/api-keys", params={"enterprise_id": tenant.id, "active": "true"})).json()
    assert [k["id"] for k in active["items"]] == [ids[4], ids[1], ids[0]]
    same = (await admin.get("/v1/api-keys", params={"enterprise_id": tenant.id, "active": "false"})).json()
    assert [k["id"] for k in same["items"]] == ids[::-1]

    by_role = await admin.get("/v1/api-keys", params={"enterprise_id": tenant.id, "role": "enterprise"})
    assert [k["id"] for k in by_role.json()["items"]] == ids[::-1]
    other_role = await admin.get("/v1/api-keys", params={"enterprise_id": tenant.id, "role": "lab"})
    assert other_role.json() == {"items": [], "next_cursor": None}
    labs = (await admin.get("/v1/api-keys", params={"lab_id": lab.id})).json()["items"]
    assert [k["id"] for k in labs] == [await id_of(pool, lab.api.key or "")]
    admins = (await admin.get("/v1/api-keys", params={"role": "admin", "limit": 500})).json()["items"]
    assert admins
    assert all(k["role"] == "admin" for k in admins)

    # Pages of two: every key once, in order, and the last page says so.
    seen: list[str] = []
    cursor = None
    for _ in range(5):
        params: dict[str, Any] = {"enterprise_id": tenant.id, "limit": 2} | ({"cursor": cursor} if cursor else {})
        page = (await admin.get("/v1/api-keys", params=params)).json()
        seen += [k["id"] for k in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids[::-1]
    assert fields_of(problem(await admin.get("/v1/api-keys", params={"cursor": "not-a-cursor"}), 400)) == ["cursor"]


async def test_reading_one_key(admin: Api, tenant: Tenant, make_tenant: MakeTenant, pool: asyncpg.Pool) -> None:
    own_id = await id_of(pool, tenant.api.key or "")
    for caller in (admin, tenant.api):
        response = await caller.get(f"/v1/api-keys/{own_id}")
        assert response.status_code == 200, response.text
        shown = response.json()
        assert shown["id"] == own_id
        assert shown["prefix"] == (tenant.api.key or "").split("_")[1]
        assert "key" not in shown
        assert secret_of(tenant.api.key or "") not in response.text
    other = await make_tenant()
    problem(await other.api.get(f"/v1/api-keys/{own_id}"), 404)
    problem(await admin.get(f"/v1/api-keys/{uuid.uuid4()}"), 404)
    assert fields_of(problem(await admin.get("/v1/api-keys/42"), 400)) == ["key_id"]


async def test_last_used_at_is_recorded_at_most_once_a_minute(
    admin: Api, tenant: Tenant, clock: FixedClock, pool: asyncpg.Pool
) -> None:
    created = await enterprise_key(admin, tenant)
    member = Api(admin.client, created["key"])
    assert (await row_of(pool, created["id"]))["last_used_at"] is None

    async with pool.acquire() as conn:
        audited = await conn.fetchval("SELECT count(*) FROM audit_log WHERE entity_id = $1", created["id"])

    # A wrong secret for its prefix is not a use.
    forged = Api(admin.client, f"mr_{created['prefix']}_{'A' * 43}")
    problem(await forged.get(tenant.instruments_url), 401)
    assert (await row_of(pool, created["id"]))["last_used_at"] is None

    assert await works(member, tenant.instruments_url)
    assert (await row_of(pool, created["id"]))["last_used_at"] == NOW
    for seconds in (1, 30, 59):
        clock.set(NOW + dt.timedelta(seconds=seconds))
        assert await works(member, tenant.instruments_url)
        assert (await row_of(pool, created["id"]))["last_used_at"] == NOW
    clock.set(NOW + dt.timedelta(seconds=61))
    assert await works(member, tenant.instruments_url)
    assert (await row_of(pool, created["id"]))["last_used_at"] == NOW + dt.timedelta(seconds=61)
    shown = (await admin.get(f"/v1/api-keys/{created['id']}")).json()
    assert instant(shown["last_used_at"]) == NOW + dt.timedelta(seconds=61)

    # Bookkeeping leaves no audit row.
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM audit_log WHERE entity_id = $1", created["id"]) == audited


async def test_the_audit_trail_shows_rotation_and_revocation_without_key_material(
    admin: Api, tenant: Tenant, pool: asyncpg.Pool
) -> None:
    admin_id = await id_of(pool, admin.key or "")
    old = await enterprise_key(admin, tenant)
    new = (await rotate(admin, old["id"], {"grace_seconds": 600})).json()
    assert (await admin.delete(f"/v1/api-keys/{old['id']}")).status_code == 204

    response = await admin.get("/v1/audit", params={"entity": "api_keys", "entity_id": old["id"]})
    assert response.status_code == 200, response.text
    entries = response.json()["items"]
    assert [(e["operation"], e["action"]) for e in entries] == [
        ("update", "RevokeApiKey"),
        ("update", "RotateApiKey"),
        ("insert", "CreateApiKey"),
    ]
    revoke, rotation, _ = entries
    assert rotation["before"]["rotated_to"] is None
    assert rotation["after"]["rotated_to"] == new["id"]
    assert instant(rotation["after"]["expires_at"]) == NOW + dt.timedelta(seconds=600)
    assert revoke["before"]["revoked_at"] is None
    assert instant(revoke["after"]["revoked_at"]) == NOW
    assert all(e["actor_key_id"] == admin_id and e["actor_role"] == "admin" for e in entries)
    assert all(e["enterprise_id"] == tenant.id for e in entries)

    successor = await admin.get("/v1/audit", params={"entity": "api_keys", "entity_id": new["id"]})
    revoked_too, inserted = successor.json()["items"]  # revoking the old key revoked its successor
    assert (revoked_too["operation"], revoked_too["action"]) == ("update", "RevokeApiKey")
    assert (inserted["operation"], inserted["action"]) == ("insert", "RotateApiKey")
    assert inserted["after"]["prefix"] == new["prefix"]

    for text in (response.text, successor.text):
        for key in (old["key"], new["key"], admin.key or ""):
            assert key not in text
            assert secret_of(key) not in text
        assert "secret_sha256" not in text
        assert "last_used_at" not in text
    # A self-service rotation names the key that did it.
    own_id = await id_of(pool, tenant.api.key or "")
    assert (await rotate(tenant.api, own_id, {})).status_code == 201
    mine = (await admin.get("/v1/audit", params={"entity": "api_keys", "entity_id": own_id})).json()["items"]
    assert (mine[0]["action"], mine[0]["actor_key_id"], mine[0]["actor_role"]) == ("RotateApiKey", own_id, "enterprise")


# ---------------------------------------------------------------------------------------------
# Key material never leaks


class Logged:
    def __init__(self, client: httpx.AsyncClient, output: io.StringIO, clock: FixedClock) -> None:
        self.client = client
        self.output = output
        self.clock = clock


@pytest.fixture
async def logged(database_url: str) -> AsyncIterator[Logged]:
    """An app logging everything at DEBUG, as JSON, into a buffer of the test's own (and to caplog)."""
    root = logging.getLogger()
    level = root.level
    settings = app_settings(database_url, db_pool_max=2, log_level="DEBUG", log_format="json")
    clock = FixedClock(NOW)
    app = create_app(settings, clock=clock)  # replaces the root handlers: add ours after it
    output = io.StringIO()
    handler = logging.StreamHandler(output)
    handler.setFormatter(JsonFormatter())
    handler.setLevel(logging.DEBUG)
    root.addHandler(handler)
    try:
        async with (
            running(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://metreg.test") as client,
        ):
            yield Logged(client, output, clock)
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def _record_text(record: logging.LogRecord) -> str:
    parts = [record.getMessage(), repr(record.args), repr(vars(record))]
    if record.exc_info and record.exc_info[1] is not None:
        parts.append(repr(record.exc_info[1]))
    return "\n".join(parts)


async def test_keys_never_appear_in_answers_or_logs(
    logged: Logged, pool: asyncpg.Pool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    valid = await mint(pool, Role.ADMIN)
    doomed = await mint(pool, Role.ADMIN)
    admin = Api(logged.client, valid)
    expiring = (
        await admin.post("/v1/api-keys", json={"role": "admin", "name": "short", "expires_at": iso(NOW + HOUR)})
    ).json()["key"]
    assert (await Api(logged.client, expiring).get("/v1/api-keys")).status_code == 200
    assert (await admin.delete(f"/v1/api-keys/{await id_of(pool, doomed)}")).status_code == 204
    logged.clock.set(NOW + 2 * HOUR)

    prefix, secret = valid.split("_")[1], secret_of(valid)
    forged_secret = "Zz9" + secret[3:]  # differs from the real one, of the same shape
    headers: list[dict[str, str]] = [
        {"Authorization": f"Bearer mr_{prefix}_{forged_secret}"},  # wrong secret
        {"Authorization": f"Bearer {expiring}"},  # expired
        {"Authorization": f"Bearer {doomed}"},  # revoked
        {"Authorization": f"Bearer mr_{prefix}_"},  # malformed: no secret
        {"Authorization": f"Bearer mr_{prefix[:6]}_{secret}"},  # malformed: short prefix
        {"Authorization": f"Bearer mr{prefix}{secret}"},  # malformed: no separators
        {"Authorization": f"Bearer {valid}{'x' * 200}"},  # malformed: too long
        {"Authorization": f"Bearer {valid} extra"},  # malformed: trailing words
        {"Authorization": f"Basic {valid}"},  # wrong schemes
        {"Authorization": f"Token {valid}"},
        {"Authorization": valid},
        {"Authorization": f"Bearer{valid}"},
        {"X-API-Key": valid},
    ]
    responses = []
    for extra in headers:
        for method, url, body in (
            ("GET", "/v1/api-keys", None),
            ("POST", "/v1/api-keys", {"role": "admin", "name": "escalate"}),
            ("POST", f"/v1/api-keys/{uuid.uuid4()}/rotate", {"grace_seconds": 0}),
            ("GET", "/v1/no-such-route", None),
        ):
            response = await logged.client.request(method, url, headers=extra, json=body)
            if url != "/v1/no-such-route":
                problem(response, 401)
            responses.append(response)
    # The valid key still works (and its request is logged too).
    responses.append(await admin.get("/v1/api-keys", params={"limit": 1}))
    assert responses[-1].status_code == 200

    material = {
        "valid key": valid,
        "valid secret": secret,
        "forged secret": forged_secret,
        "expired key": expiring,
        "expired secret": secret_of(expiring),
        "revoked key": doomed,
        "revoked secret": secret_of(doomed),
    }
    answers = [
        (f"{r.request.method} {r.request.url.path} -> {r.status_code}", r.text + repr(r.headers.multi_items()))
        for r in responses
    ]
    log_records = [(f"record {r.name}: {r.getMessage()}", _record_text(r)) for r in caplog.records]
    json_lines = [(f"json log line {i}", line) for i, line in enumerate(logged.output.getvalue().splitlines())]
    leaks = [
        f"{what} in {where}"
        for where, text in [*answers, *log_records, *json_lines]
        for what, value in material.items()
        if value in text
    ]
    assert not leaks, "\n".join(leaks[:20])

    # The capture did see the traffic: an access line per request, as records and as JSON.
    access = [r for r in caplog.records if r.name == "metreg.access"]
    assert len(access) >= len(responses)
    assert sum('"logger":"metreg.access"' in line for _, line in json_lines) >= len(responses)
