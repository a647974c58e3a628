"""``Idempotency-Key`` on the API's writes (design.md §5, service/idempotency.py).

A retry with the same key replays the first answer and does nothing again; another request with
the key is a 422; another API key's same key string is its own; refusals (4xx) are kept, server
errors are not; a key held by a running request makes the next one wait for it (driven here by a
row lock a test connection holds, not by timing) or, past the wait, answer 409; an expired key is
new again and the worker's purge deletes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest

from jobs.worker import worker_options
from service import db, idempotency
from service.app import create_app
from service.auth import Role, parse_key
from service.clock import FixedClock
from service.db import create_pool
from service.idempotency import purge_expired
from service.settings import Settings
from tests.conftest import (
    GAUGE,
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
from tests.ledger_files import csv_bytes

REPLAYED = "idempotent-replayed"
WATER = {"catalog_code": "water_meter_dn25", "legal_use": "trade_settlement"}


def _key() -> dict[str, str]:
    return {"Idempotency-Key": f"test-{uuid.uuid4()}"}


def _gauge(**fields: Any) -> dict[str, Any]:
    return GAUGE | {"name": "一般压力表", "serial_no": uuid.uuid4().hex[:10], "last_verified_on": "2026-06-01"} | fields


async def _instruments(pool: asyncpg.Pool, tenant: Tenant, serial_no: str | None = None) -> int:
    async with pool.acquire() as conn:
        count: int = await conn.fetchval(
            "SELECT count(*) FROM instruments WHERE enterprise_id = $1 AND ($2::text IS NULL OR serial_no = $2)",
            uuid.UUID(tenant.id),
            serial_no,
        )
    return count


async def _records(pool: asyncpg.Pool, header: dict[str, str]) -> list[asyncpg.Record]:
    async with pool.acquire() as conn:
        return await conn.fetch(
            "SELECT key_id, status, body FROM idempotency_keys WHERE idempotency_key = $1",
            header["Idempotency-Key"],
        )


async def _key_id(pool: asyncpg.Pool, key: str) -> uuid.UUID:
    parsed = parse_key(key)
    assert parsed is not None
    async with pool.acquire() as conn:
        found: uuid.UUID = await conn.fetchval("SELECT id FROM api_keys WHERE prefix = $1", parsed[0])
    return found


def _same_answer(first: httpx.Response, again: httpx.Response) -> None:
    assert again.headers[REPLAYED] == "true"
    assert REPLAYED not in first.headers
    assert (again.status_code, again.content) == (first.status_code, first.content)
    assert again.headers["content-type"] == first.headers["content-type"]


# ---------------------------------------------------------------------------------------------
# Replay


async def test_a_retry_replays_the_registration_and_registers_nothing_twice(tenant: Tenant, pool: asyncpg.Pool) -> None:
    key, body = _key(), _gauge()
    first = await tenant.api.post(tenant.instruments_url, json=body, headers=key)
    assert first.status_code == 201, first.text
    again = await tenant.api.post(tenant.instruments_url, json=body, headers=key)
    _same_answer(first, again)
    assert again.headers["etag"] == first.headers["etag"]
    assert again.headers["x-request-id"] != first.headers["x-request-id"]  # a new exchange, the old answer
    assert await _instruments(pool, tenant, body["serial_no"]) == 1


async def test_without_the_header_nothing_changes(tenant: Tenant, pool: asyncpg.Pool) -> None:
    body = _gauge()
    assert (await tenant.api.post(tenant.instruments_url, json=body)).status_code == 201
    again = await tenant.api.post(tenant.instruments_url, json=body)
    assert problem(again, 409)["type"] == "urn:metreg:problem:duplicate"
    assert REPLAYED not in again.headers


async def test_a_patch_replays_its_answer_where_the_version_has_moved_on(tenant: Tenant) -> None:
    """Without the key the retry would be a 409 (version 1 is stale once the first PATCH landed)."""
    gauge = await tenant.register(**_gauge())
    key, url = _key(), f"/v1/instruments/{gauge['id']}"
    first = await tenant.api.patch(url, json={"location": "泵房", "version": 1}, headers=key)
    assert (first.status_code, first.json()["version"]) == (200, 2)
    _same_answer(first, await tenant.api.patch(url, json={"location": "泵房", "version": 1}, headers=key))
    assert (await tenant.api.get(url)).json()["version"] == 2


async def test_if_match_is_part_of_the_request(tenant: Tenant) -> None:
    gauge = await tenant.register(**_gauge())
    key, url = _key(), f"/v1/instruments/{gauge['id']}"
    first = await tenant.api.patch(url, json={"location": "泵房"}, headers=key | {"If-Match": '"1"'})
    assert first.status_code == 200, first.text
    other = await tenant.api.patch(url, json={"location": "泵房"}, headers=key | {"If-Match": '"2"'})
    assert fields_of(problem(other, 422)) == ["Idempotency-Key"]


async def test_a_created_resource_keeps_its_location(tenant: Tenant, pool: asyncpg.Pool) -> None:
    key = _key()
    data = csv_bytes(
        [
            ["计量器具名称", "强检目录项", "出厂编号", "强检用途", "上次检定日期"],
            ["一般压力表", "压力表", f"IMP-{uuid.uuid4().hex[:8]}", "安全防护", "2026-01-15"],
        ]
    )
    url = f"/v1/enterprises/{tenant.id}/instruments/import"
    headers = key | {"Content-Type": "text/csv"}
    first = await tenant.api.post(url, content=data, headers=headers)
    assert first.status_code == 201, first.text
    again = await tenant.api.post(url, content=data, headers=headers)
    _same_answer(first, again)
    assert again.headers["location"] == first.headers["location"] == f"/v1/imports/{first.json()['import_id']}"
    async with pool.acquire() as conn:
        imports = await conn.fetchval(
            "SELECT count(*) FROM instrument_imports WHERE enterprise_id = $1", uuid.UUID(tenant.id)
        )
    assert imports == 1
    other_file = await tenant.api.post(url, content=data + b"\r\n", headers=headers)
    assert fields_of(problem(other_file, 422)) == ["Idempotency-Key"]


# ---------------------------------------------------------------------------------------------
# The same key for something else, or from someone else


async def test_the_same_key_for_another_body_is_a_422_naming_the_header(tenant: Tenant, pool: asyncpg.Pool) -> None:
    key = _key()
    first = await tenant.api.post(tenant.instruments_url, json=_gauge(), headers=key)
    assert first.status_code == 201
    other = _gauge()
    refused = problem(await tenant.api.post(tenant.instruments_url, json=other, headers=key), 422)
    assert refused["type"] == "urn:metreg:problem:idempotency-key-reused"
    assert fields_of(refused) == ["Idempotency-Key"]
    assert f"POST /v1/enterprises/{tenant.id}/instruments" in refused["detail"]
    assert await _instruments(pool, tenant, other["serial_no"]) == 0


async def test_a_write_that_takes_no_body_ignores_one_with_a_key_as_without(
    tenant: Tenant, lab: LabAccount, database_url: str
) -> None:
    """Accepting a request takes no body: one sent anyway, even over ``METREG_MAX_BODY_BYTES``, is
    not read (a key once had it read for the fingerprint: a 413, and a 408 if it stalled), and a
    retry with another body or none is the same request, replayed. Every write is driven with such
    bodies in tests/api/test_idempotency_document.py."""
    gauge = await tenant.register(**_gauge())
    created = await tenant.api.post(
        "/v1/verification-requests", json={"lab_id": lab.id, "instrument_ids": [gauge["id"]]}
    )
    assert created.status_code == 201, created.text
    url, key = f"/v1/verification-requests/{created.json()['id']}/accept", _key()
    oversized = {"padding": "x" * app_settings(database_url).max_body_bytes}
    first = await lab.api.post(url, json=oversized, headers=key)
    assert (first.status_code, first.json()["status"]) == (200, "accepted"), first.text
    _same_answer(first, await lab.api.post(url, json={"note": "another body"}, headers=key))
    _same_answer(first, await lab.api.post(url, headers=key))


async def test_the_same_key_on_another_path_or_query_is_a_422(tenant: Tenant) -> None:
    key = _key()
    gauge = await tenant.register(**_gauge())
    assert (await tenant.api.post(f"/v1/instruments/{gauge['id']}/seal", headers=key)).status_code == 200
    for url in (f"/v1/instruments/{gauge['id']}/unseal", f"/v1/instruments/{gauge['id']}/seal?x=1"):
        assert fields_of(problem(await tenant.api.post(url, headers=key), 422)) == ["Idempotency-Key"]


async def test_another_api_keys_same_key_string_is_its_own(
    tenant: Tenant, pool: asyncpg.Pool, app_client: httpx.AsyncClient
) -> None:
    """Other keys of the same enterprise, even: a key string belongs to the API key that sent it."""
    key, body = _key(), _gauge()
    second, third = [
        Api(app_client, await mint(pool, Role.ENTERPRISE, enterprise_id=uuid.UUID(tenant.id))) for _ in range(2)
    ]
    assert (await tenant.api.post(tenant.instruments_url, json=body, headers=key)).status_code == 201
    # Another request with the string: not a reuse of the first key's.
    other = await second.post(tenant.instruments_url, json=_gauge(), headers=key)
    assert (other.status_code, REPLAYED in other.headers) == (201, False)
    # The same request: not the first key's answer replayed but done again (refused: the serial is taken).
    same = await third.post(tenant.instruments_url, json=body, headers=key)
    assert problem(same, 409)["type"] == "urn:metreg:problem:duplicate"
    assert REPLAYED not in same.headers
    records = await _records(pool, key)
    assert sorted(r["status"] for r in records) == [201, 201, 409]
    assert {r["key_id"] for r in records} == {await _key_id(pool, api.key or "") for api in (tenant.api, second, third)}


async def test_another_tenant_replays_nothing_of_a_tenants_key(make_tenant: MakeTenant) -> None:
    a, b = await make_tenant(), await make_tenant()
    key, body = _key(), _gauge()
    assert (await a.api.post(a.instruments_url, json=body, headers=key)).status_code == 201
    refused = await b.api.post(a.instruments_url, json=body, headers=key)
    assert problem(refused, 404)["detail"] == f"enterprise {a.id} not found"
    assert REPLAYED not in refused.headers


# ---------------------------------------------------------------------------------------------
# Refusals are kept, server errors are not


async def test_a_refusal_is_the_keys_answer_even_once_the_request_would_succeed(tenant: Tenant) -> None:
    """The draft and Stripe keep 4xx answers: a key names one request and its one outcome."""
    taken = await tenant.register(**_gauge(management_no="PG-IDEM-1"))
    key, body = _key(), _gauge(management_no="PG-IDEM-1")
    first = await tenant.api.post(tenant.instruments_url, json=body, headers=key)
    assert problem(first, 409)["type"] == "urn:metreg:problem:duplicate"
    moved = await tenant.api.patch(
        f"/v1/instruments/{taken['id']}", json={"management_no": "PG-IDEM-2", "version": taken["version"]}
    )
    assert moved.status_code == 200, moved.text
    _same_answer(first, await tenant.api.post(tenant.instruments_url, json=body, headers=key))
    assert (await tenant.api.post(tenant.instruments_url, json=body, headers=_key())).status_code == 201


async def test_a_refusal_after_writing_keeps_the_answer_and_undoes_the_writes(
    tenant: Tenant, pool: asyncpg.Pool
) -> None:
    """Replace registers the successor before it finds it lacks its initial verification (422)."""
    old = await tenant.register(**WATER, name="冷水水表 DN20", last_verified_on="2020-06-16")
    key, serial = _key(), f"W-{uuid.uuid4().hex[:8]}"
    body = {"replacement": WATER | {"name": "冷水水表 DN20", "serial_no": serial}}
    url = f"/v1/instruments/{old['id']}/replace"
    first = await tenant.api.post(url, json=body, headers=key)
    assert fields_of(problem(first, 422)) == ["replacement.last_verified_on"]
    assert await _instruments(pool, tenant, serial) == 0
    assert (await tenant.api.get(f"/v1/instruments/{old['id']}")).json()["lifecycle"] == "in_service"
    _same_answer(first, await tenant.api.post(url, json=body, headers=key))
    [record] = await _records(pool, key)
    assert (record["status"], record["body"]) == (422, first.content)


async def test_a_body_that_fails_validation_keeps_nothing(tenant: Tenant, pool: asyncpg.Pool) -> None:
    """No handler ran (as at Stripe): the corrected request may use the same key."""
    key = _key()
    assert problem(await tenant.api.post(tenant.instruments_url, json={"name": 3}, headers=key), 400)
    assert await _records(pool, key) == []
    assert (await tenant.api.post(tenant.instruments_url, json=_gauge(), headers=key)).status_code == 201


async def test_an_admin_only_routes_403_is_not_kept_and_frees_the_key_at_once(
    tenant: Tenant, pool: asyncpg.Pool
) -> None:
    """The admin check follows the claim; its refusal rolls the claim back with everything else."""
    key, body = _key(), {"name": "某实验室", "accreditation_no": "CNAS L0001", "region_code": "310115", "scope": []}
    for _ in range(2):  # the second finds the key free: a 403 again, not a wait for the first
        assert problem(await tenant.api.post("/v1/labs", json=body, headers=key), 403)
    assert await _records(pool, key) == []


async def test_a_server_error_keeps_nothing_and_its_retry_runs_again(
    tenant: Tenant, pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The handler fails after its write: the write and the claim roll back together."""
    from service.instruments import routes

    real = routes.to_instrument
    failures = iter([RuntimeError("the disk caught fire")])

    def failing_once(*args: Any, **kwargs: Any) -> Any:
        if (failure := next(failures, None)) is not None:
            raise failure
        return real(*args, **kwargs)

    monkeypatch.setattr(routes, "to_instrument", failing_once)
    key, body = _key(), _gauge()
    assert problem(await tenant.api.post(tenant.instruments_url, json=body, headers=key), 500)
    assert await _instruments(pool, tenant, body["serial_no"]) == 0
    assert await _records(pool, key) == []
    retried = await tenant.api.post(tenant.instruments_url, json=body, headers=key)
    assert (retried.status_code, REPLAYED in retried.headers) == (201, False)
    assert await _instruments(pool, tenant, body["serial_no"]) == 1


async def test_a_conflict_that_says_retry_is_not_kept(tenant: Tenant, pool: asyncpg.Pool) -> None:
    """A deadlock or serialization failure answers 409 'retry': a retry with the key must run again."""
    gauge = await tenant.register(**_gauge())
    key, url = _key(), f"/v1/instruments/{gauge['id']}/seal"
    # PostgreSQL reports a deadlock on this instrument's next update (and on no other row).
    trigger = f"refuse_{uuid.uuid4().hex[:8]}"
    async with pool.acquire() as conn:
        await conn.execute(
            f"""CREATE FUNCTION {trigger}() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN
                    IF NEW.id = '{gauge["id"]}' THEN
                        RAISE EXCEPTION 'deadlock detected' USING ERRCODE = 'deadlock_detected';
                    END IF;
                    RETURN NEW;
                END $$;
                CREATE TRIGGER {trigger} BEFORE UPDATE ON instruments FOR EACH ROW EXECUTE FUNCTION {trigger}()"""
        )
    try:
        assert problem(await tenant.api.post(url, headers=key), 409)["type"] == "urn:metreg:problem:conflict"
    finally:
        async with pool.acquire() as conn:
            await conn.execute(f"DROP TRIGGER {trigger} ON instruments; DROP FUNCTION {trigger}()")
    assert await _records(pool, key) == []
    sealed = await tenant.api.post(url, headers=key)
    assert (sealed.status_code, sealed.json()["lifecycle"]) == (200, "sealed")


# ---------------------------------------------------------------------------------------------
# Answers holding a secret shown once


async def test_a_new_api_keys_answer_is_not_kept_but_the_key_is_made_once(admin: Api, pool: asyncpg.Pool) -> None:
    key, name = _key(), f"idem {uuid.uuid4().hex[:8]}"
    body = {"role": "admin", "name": name}
    first = await admin.post("/v1/api-keys", json=body, headers=key)
    assert first.status_code == 201, first.text
    withheld = problem(await admin.post("/v1/api-keys", json=body, headers=key), 409)
    assert withheld["type"] == "urn:metreg:problem:idempotent-answer-withheld"
    assert "answered 201" in withheld["detail"]
    assert fields_of(withheld) == ["Idempotency-Key"]
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM api_keys WHERE name = $1", name) == 1
        secret = first.json()["key"]
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM idempotency_keys WHERE position($1::bytea IN body) > 0", secret.encode()
            )
            == 0
        )
    [record] = await _records(pool, key)
    assert (record["status"], record["body"]) == (201, None)


async def test_a_calendar_feeds_url_is_not_kept(tenant: Tenant, pool: asyncpg.Pool) -> None:
    key, url = _key(), f"/v1/enterprises/{tenant.id}/calendar-feeds"
    assert (await tenant.api.post(url, json={"name": "设备科"}, headers=key)).status_code == 201
    assert problem(await tenant.api.post(url, json={"name": "设备科"}, headers=key), 409)
    [record] = await _records(pool, key)
    assert (record["status"], record["body"]) == (201, None)
    async with pool.acquire() as conn:
        assert (
            await conn.fetchval("SELECT count(*) FROM calendar_feeds WHERE enterprise_id = $1", uuid.UUID(tenant.id))
            == 1
        )


async def test_a_webhooks_signing_secret_is_not_kept(tenant: Tenant, pool: asyncpg.Pool) -> None:
    key, body = _key(), {"url": f"https://hooks.example.com/{uuid.uuid4().hex[:8]}"}
    first = await tenant.api.post("/v1/webhooks", json=body, headers=key)
    assert first.status_code == 201, first.text
    withheld = problem(await tenant.api.post("/v1/webhooks", json=body, headers=key), 409)
    assert withheld["type"] == "urn:metreg:problem:idempotent-answer-withheld"
    [record] = await _records(pool, key)
    assert (record["status"], record["body"]) == (201, None)
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM webhooks WHERE url = $1", body["url"]) == 1


# ---------------------------------------------------------------------------------------------
# Malformed keys


@pytest.mark.parametrize(
    "value",
    ["x" * 256, "clé".encode("latin-1"), " padded", "tab\there"],
    ids=["too-long", "not-ascii", "leading-space", "control-character"],
)
async def test_a_malformed_key_is_a_400_naming_the_header(
    tenant: Tenant, pool: asyncpg.Pool, value: str | bytes
) -> None:
    body = _gauge()
    refused = problem(
        await tenant.api.client.post(
            tenant.instruments_url,
            json=body,
            headers=[("Authorization", f"Bearer {tenant.api.key}"), ("Idempotency-Key", value)],
        ),
        400,
    )
    assert fields_of(refused) == ["Idempotency-Key"]
    assert await _instruments(pool, tenant, body["serial_no"]) == 0


async def test_two_keys_are_a_400(tenant: Tenant) -> None:
    refused = await tenant.api.client.post(
        tenant.instruments_url,
        json=_gauge(),
        headers=[("Authorization", f"Bearer {tenant.api.key}"), ("Idempotency-Key", "a"), ("Idempotency-Key", "b")],
    )
    assert fields_of(problem(refused, 400)) == ["Idempotency-Key"]


async def test_the_longest_key_and_any_printable_character_are_taken(tenant: Tenant) -> None:
    for value in ("k" * 255, 'a b!~"{}', "z"):
        response = await tenant.api.post(tenant.instruments_url, json=_gauge(), headers={"Idempotency-Key": value})
        assert response.status_code == 201, response.text


async def test_reads_ignore_the_header(tenant: Tenant) -> None:
    answer = await tenant.api.get(tenant.instruments_url, headers={"Idempotency-Key": "x" * 300})
    assert answer.status_code == 200


# ---------------------------------------------------------------------------------------------
# A key another request holds


@pytest.fixture
async def waiting_client(database_url: str, clock: FixedClock) -> AsyncIterator[httpx.AsyncClient]:
    """An app whose second request with a held key waits a tenth of a second before its 409."""
    app = create_app(app_settings(database_url, idempotency_wait_s=0.1), clock=clock)
    async with (
        running(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://metreg.test") as client,
    ):
        yield client


async def _waiting_on(pool: asyncpg.Pool, holder: int) -> int:
    """The backend that waits for a lock ``holder`` holds, once there is one (the request's)."""
    async with pool.acquire() as conn:
        while (  # noqa: ASYNC110  # PostgreSQL has no event to await: its lock table is polled
            pid := await conn.fetchval(
                "SELECT pid FROM pg_stat_activity WHERE $1 = ANY (pg_blocking_pids(pid))", holder
            )
        ) is None:
            await asyncio.sleep(0.01)
    found: int = pid
    return found


@contextlib.asynccontextmanager
async def _enterprise_locked(pool: asyncpg.Pool, tenant: Tenant) -> AsyncIterator[tuple[asyncpg.Connection, int]]:
    """A transaction holding the tenant's enterprise FOR UPDATE (a registration waits behind it) and its pid."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT 1 FROM enterprises WHERE id = $1 FOR UPDATE", uuid.UUID(tenant.id))
        yield conn, await conn.fetchval("SELECT pg_backend_pid()")


async def test_a_second_request_waits_for_the_first_and_replays_its_answer(tenant: Tenant, pool: asyncpg.Pool) -> None:
    key, body = _key(), _gauge()
    async with _enterprise_locked(pool, tenant) as (_, lock_pid):
        first = asyncio.create_task(tenant.api.post(tenant.instruments_url, json=body, headers=key))
        first_pid = await _waiting_on(pool, lock_pid)  # holds the key, waits for the enterprise
        second = asyncio.create_task(tenant.api.post(tenant.instruments_url, json=body, headers=key))
        await _waiting_on(pool, first_pid)  # waits for the first's key
        assert not first.done()
        assert not second.done()
    answers = await asyncio.gather(first, second)
    _same_answer(*answers)
    assert answers[0].status_code == 201
    assert await _instruments(pool, tenant, body["serial_no"]) == 1


async def test_a_second_request_past_the_wait_is_a_409_and_the_first_still_lands(
    tenant: Tenant, pool: asyncpg.Pool, waiting_client: httpx.AsyncClient
) -> None:
    api = Api(waiting_client, tenant.api.key)
    key, body = _key(), _gauge()
    async with _enterprise_locked(pool, tenant) as (_, lock_pid):
        first = asyncio.create_task(api.post(tenant.instruments_url, json=body, headers=key))
        await _waiting_on(pool, lock_pid)
        busy = problem(await api.post(tenant.instruments_url, json=body, headers=key), 409)
        assert busy["type"] == "urn:metreg:problem:idempotency-key-busy"
        assert fields_of(busy) == ["Idempotency-Key"]
        assert not first.done()
    assert (await first).status_code == 201
    assert await _instruments(pool, tenant, body["serial_no"]) == 1


async def test_a_new_key_does_not_wait_for_another_request_of_the_same_api_key(
    tenant: Tenant, pool: asyncpg.Pool, waiting_client: httpx.AsyncClient
) -> None:
    # The first request of a minute records the API key's use, locking its row until it commits;
    # a key's claim must not wait for that (it did: its foreign key's share lock conflicted, and the
    # second request answered 409 after the wait).
    api = Api(waiting_client, tenant.api.key)
    key_id = await _key_id(pool, tenant.api.key)
    await pool.execute("UPDATE api_keys SET last_used_at = NULL WHERE id = $1", key_id)
    async with pool.acquire() as conn, conn.transaction():
        # Registration reads the enterprise FOR SHARE and waits; a foreign key's check does not.
        await conn.execute("SELECT 1 FROM enterprises WHERE id = $1 FOR NO KEY UPDATE", uuid.UUID(tenant.id))
        first = asyncio.create_task(api.post(tenant.instruments_url, json=_gauge()))
        await _waiting_on(pool, await conn.fetchval("SELECT pg_backend_pid()"))  # it has recorded the key's use
        hook = {"url": f"https://hooks.example.com/{uuid.uuid4().hex[:8]}"}
        second = await api.post("/v1/webhooks", json=hook, headers=_key())
        assert second.status_code == 201, second.text
        assert not first.done()
    assert (await first).status_code == 201


async def test_a_wait_longer_than_the_pools_command_timeout_still_ends_in_a_409(
    tenant: Tenant, pool: asyncpg.Pool, database_url: str, clock: FixedClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db, "COMMAND_TIMEOUT_S", 0.2)
    app = create_app(app_settings(database_url, idempotency_wait_s=0.5), clock=clock)
    key = _key()
    async with (
        running(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://metreg.test") as client,
        pool.acquire() as holder,
    ):
        # A request of the same API key holds the key, claimed and not yet answered (rolled back after).
        transaction = holder.transaction()
        await transaction.start()
        try:
            await holder.execute(
                "SELECT set_config('metreg.key_id', $1, true)", str(await _key_id(pool, tenant.api.key))
            )
            await holder.execute(
                "SELECT * FROM idempotency_claim($1, 'POST /elsewhere', $2, $3, '1 day', 1000)",
                key["Idempotency-Key"],
                hashlib.sha256(b"another request").digest(),
                NOW,
            )
            api = Api(client, tenant.api.key)
            busy = problem(await api.post(tenant.instruments_url, json=_gauge(), headers=key), 409)
        finally:
            await transaction.rollback()
    assert busy["type"] == "urn:metreg:problem:idempotency-key-busy"


async def test_a_key_whose_request_rolled_back_is_free_for_the_waiting_retry(
    tenant: Tenant, pool: asyncpg.Pool
) -> None:
    """A test connection claims the key as a request would, then rolls back: the waiting request runs."""
    key, body = _key(), _gauge()
    key_id = await _key_id(pool, tenant.api.key or "")
    async with pool.acquire() as holder:
        transaction = holder.transaction()
        await transaction.start()
        await holder.execute(
            """INSERT INTO idempotency_keys (key_id, idempotency_key, request, fingerprint, created_at, expires_at)
               VALUES ($1, $2, 'POST /elsewhere', $3, $4::timestamptz, $4::timestamptz + interval '1 day')""",
            key_id,
            key["Idempotency-Key"],
            hashlib.sha256(b"another request").digest(),
            NOW,
        )
        holder_pid = await holder.fetchval("SELECT pg_backend_pid()")
        waiting = asyncio.create_task(tenant.api.post(tenant.instruments_url, json=body, headers=key))
        await _waiting_on(pool, holder_pid)
        await transaction.rollback()
    done = await waiting
    assert (done.status_code, REPLAYED in done.headers) == (201, False)


# ---------------------------------------------------------------------------------------------
# Expiry


async def test_an_expired_key_is_new_again(tenant: Tenant, clock: FixedClock) -> None:
    key = _key()
    assert (await tenant.api.post(tenant.instruments_url, json=_gauge(), headers=key)).status_code == 201
    clock.set(NOW + dt.timedelta(hours=23, minutes=59))
    assert problem(await tenant.api.post(tenant.instruments_url, json=_gauge(), headers=key), 422)
    clock.set(NOW + dt.timedelta(days=1))
    again = await tenant.api.post(tenant.instruments_url, json=_gauge(), headers=key)
    assert (again.status_code, REPLAYED in again.headers) == (201, False)


async def test_the_worker_purges_expired_keys(tenant: Tenant, pool: asyncpg.Pool, database_url: str) -> None:
    kept, expired = _key(), _key()
    clock_then = NOW - dt.timedelta(days=2)
    assert (await tenant.api.post(tenant.instruments_url, json=_gauge(), headers=kept)).status_code == 201
    key_id = await _key_id(pool, tenant.api.key or "")
    async with pool.acquire() as conn:
        await conn.execute(
            """INSERT INTO idempotency_keys (key_id, idempotency_key, request, fingerprint, created_at, expires_at,
                                             status, media_type, body)
               VALUES ($1, $2, 'POST /v1/x', $3, $4::timestamptz, $4::timestamptz + interval '1 day',
                       201, 'application/json', '{}')""",
            key_id,
            expired["Idempotency-Key"],
            hashlib.sha256(b"x").digest(),
            clock_then,
        )
    worker = await create_pool(
        Settings(database_url=database_url), application_name="metreg-worker", role="metreg_worker"
    )
    try:
        async with worker.acquire() as conn:
            assert await purge_expired(conn, NOW) >= 1
    finally:
        await worker.close()
    assert await _records(pool, expired) == []
    assert len(await _records(pool, kept)) == 1


def test_the_worker_runs_the_purge_on_a_cron() -> None:
    options = worker_options(Settings(database_url="postgresql://unused/unused"), FixedClock(NOW))
    assert "metreg:queue:idempotency-purge" in {job.name for job in options["cron_jobs"]}


# ---------------------------------------------------------------------------------------------
# The OpenAPI document


async def test_the_header_is_documented_on_every_write_and_no_read(app_client: httpx.AsyncClient) -> None:
    paths = (await app_client.get("/docs/openapi.json")).json()["paths"]
    writes = reads = 0
    for item in paths.values():
        for method, operation in item.items():
            if method not in ("get", "post", "patch", "delete"):
                continue
            headers = [
                p for p in operation.get("parameters", []) if p["in"] == "header" and p["name"] == idempotency.HEADER
            ]
            if method in ("post", "patch"):
                writes += 1
                assert len(headers) == 1, operation["operationId"]
                assert headers[0]["required"] is False
                assert headers[0]["schema"]["maxLength"] == 255
                responses = operation["responses"]
                assert "Idempotency-Key" in responses["409"]["description"], operation["operationId"]
                assert "Idempotency-Key" in responses["422"]["description"], operation["operationId"]
            else:
                reads += 1
                assert headers == [], operation["operationId"]
    assert writes >= 18
    assert reads >= 20
    operations = {op["operationId"]: op for item in paths.values() for op in item.values() if isinstance(op, dict)}
    for shown_once in ("CreateApiKey", "RotateApiKey", "CreateCalendarFeed"):
        assert "secret shown once" in operations[shown_once]["responses"]["409"]["description"], shown_once
    assert "secret" not in operations["RegisterInstrument"]["responses"]["409"]["description"]


# Idempotent-Replayed on each answer of the document: tests/api/test_idempotency_document.py, which
# drives every write's answers and compares.


async def test_a_replayed_answer_carries_the_header_its_operation_documents(
    tenant: Tenant, app_client: httpx.AsyncClient
) -> None:
    body, headers = _gauge(), _key()
    first = await tenant.api.post(tenant.instruments_url, json=body, headers=headers)
    again = await tenant.api.post(tenant.instruments_url, json=body, headers=headers)
    spec = (await app_client.get("/docs/openapi.json")).json()
    documented = spec["paths"]["/v1/enterprises/{enterprise_id}/instruments"]["post"]["responses"]["201"]["headers"]
    assert (first.status_code, again.status_code) == (201, 201)
    assert REPLAYED not in first.headers
    assert again.headers[REPLAYED] == "true"
    assert idempotency.REPLAYED_HEADER in documented
