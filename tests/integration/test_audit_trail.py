"""The audit trail against real PostgreSQL (schema/0008_trust.sql, service/audit/).

Every write of the register through the API appends, in its own transaction, one row per changed
row: the key and role that made it, the operation id, the row before and after (secrets and
``last_used_at`` left out), the request id and the injected clock's time. Rows are hash-chained:
``metreg audit verify`` (run here as a real process, on a database of its own so that tampering
harms no other test) names the first row that was edited, removed or forged. ``GET /v1/audit``
shows each principal its own part of the trail.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg
import httpx
import pytest

from service.app import create_app
from service.audit.chain import verify
from service.auth import Role, hash_secret, parse_key
from service.clock import FixedClock
from service.db import init_connection
from tests.conftest import (
    GAUGE,
    NOW,
    Api,
    LabAccount,
    MakeTenant,
    Tenant,
    accepted_request,
    app_settings,
    fields_of,
    fresh_database,
    mint,
    new_credit_code,
    problem,
    running,
)

if TYPE_CHECKING:
    Conn = asyncpg.pool.PoolConnectionProxy[asyncpg.Record]

METREG = Path(sys.executable).with_name("metreg")
ROOT = Path(__file__).resolve().parents[2]
VERIFIED = "2026-06-01"
HOOK_URL = "https://hooks.example.com/metreg-audit"
LATER = NOW + dt.timedelta(hours=1)


def request_id(what: str) -> str:
    return f"audit-{what}-{uuid.uuid4().hex[:12]}"


def sent(rid: str) -> dict[str, str]:
    return {"X-Request-ID": rid}


async def key_id(pool: asyncpg.Pool, key: str | None) -> uuid.UUID:
    parsed = parse_key(key or "")
    assert parsed is not None
    found: uuid.UUID = await pool.fetchval("SELECT id FROM api_keys WHERE prefix = $1", parsed[0])
    return found


async def rows_of(pool: asyncpg.Pool, rid: str) -> list[dict[str, Any]]:
    """The audit rows a request wrote, in order."""
    return [dict(row) for row in await pool.fetch("SELECT * FROM audit_log WHERE request_id = $1 ORDER BY seq", rid)]


def written_by(rows: list[dict[str, Any]], rid: str, actor: uuid.UUID, role: str, action: str, at: dt.datetime) -> None:
    assert rows, f"{action} left no audit row"
    for row in rows:
        assert (row["request_id"], row["actor_key_id"], row["actor_role"], row["action"], row["at"]) == (
            rid,
            actor,
            role,
            action,
            at,
        ), row


def only(rows: list[dict[str, Any]], entity: str, operation: str) -> dict[str, Any]:
    assert [(r["entity"], r["operation"]) for r in rows] == [(entity, operation)], rows
    return rows[0]


async def last_seq(pool: asyncpg.Pool) -> int:
    return int(await pool.fetchval("SELECT coalesce(max(seq), 0) FROM audit_log"))


# ---------------------------------------------------------------------------------------------
# What each write leaves


async def test_registering_and_sealing_leave_rows_of_the_key_operation_request_and_clock(
    tenant: Tenant, pool: asyncpg.Pool, clock: FixedClock
) -> None:
    actor = await key_id(pool, tenant.api.key)
    rid = request_id("register")
    response = await tenant.api.post(
        tenant.instruments_url,
        json=GAUGE | {"name": "一般压力表", "serial_no": "AUD-1", "last_verified_on": VERIFIED},
        headers=sent(rid),
    )
    assert response.status_code == 201, response.text
    assert response.headers["x-request-id"] == rid
    instrument = response.json()
    rows = await rows_of(pool, rid)
    # The key's first use (last_used_at) is in the same transaction and leaves no row of its own.
    row = only(rows, "instruments", "insert")
    written_by(rows, rid, actor, "enterprise", "RegisterInstrument", NOW)
    assert row["entity_id"] == instrument["id"]
    assert row["enterprise_id"] == uuid.UUID(tenant.id)
    assert row["region_code"] == tenant.enterprise["region_code"]
    assert row["before"] is None
    assert row["after"]["id"] == instrument["id"]
    assert (row["after"]["name"], row["after"]["serial_no"], row["after"]["lifecycle"]) == (
        "一般压力表",
        "AUD-1",
        "in_service",
    )

    clock.set(LATER)
    rid = request_id("seal")
    response = await tenant.api.post(f"/v1/instruments/{instrument['id']}/seal", headers=sent(rid))
    assert response.status_code == 200, response.text
    rows = await rows_of(pool, rid)
    row = only(rows, "instruments", "update")
    written_by(rows, rid, actor, "enterprise", "SealInstrument", LATER)
    assert row["entity_id"] == instrument["id"]
    assert (row["before"]["lifecycle"], row["after"]["lifecycle"]) == ("in_service", "sealed")
    assert row["after"]["version"] == row["before"]["version"] + 1


async def test_updating_an_enterprise_shows_the_change(tenant: Tenant, pool: asyncpg.Pool) -> None:
    rid = request_id("update-enterprise")
    response = await tenant.api.patch(f"/v1/enterprises/{tenant.id}", json={"name": "改名后的企业"}, headers=sent(rid))
    assert response.status_code == 200, response.text
    rows = await rows_of(pool, rid)
    row = only(rows, "enterprises", "update")
    written_by(rows, rid, await key_id(pool, tenant.api.key), "enterprise", "UpdateEnterprise", NOW)
    assert (row["entity_id"], row["enterprise_id"]) == (tenant.id, uuid.UUID(tenant.id))
    assert (row["before"]["name"], row["after"]["name"]) == (tenant.enterprise["name"], "改名后的企业")
    assert {k for k in row["after"] if row["after"][k] != row["before"][k]} == {"name", "version"}


async def test_a_change_of_address_and_contact_is_audited(tenant: Tenant, admin: Api, pool: asyncpg.Pool) -> None:
    url = f"/v1/enterprises/{tenant.id}"
    rid = request_id("address")
    given = {"address": "上海市浦东新区川沙路 5588 号", "contact_phone": "021-5012 3456"}
    response = await tenant.api.patch(url, json=given, headers=sent(rid))
    assert response.status_code == 200, response.text
    rows = await rows_of(pool, rid)
    row = only(rows, "enterprises", "update")
    written_by(rows, rid, await key_id(pool, tenant.api.key), "enterprise", "UpdateEnterprise", NOW)
    assert (row["before"]["address"], row["after"]["address"]) == (None, given["address"])
    assert {k for k in row["after"] if row["after"][k] != row["before"][k]} == {"address", "contact_phone", "version"}
    # A correction by an admin, and clearing the phone, each show what was there before.
    rid = request_id("readdress")
    response = await admin.patch(
        url, json={"address": "上海市浦东新区川沙路 5589 号", "contact_phone": None}, headers=sent(rid)
    )
    assert response.status_code == 200, response.text
    row = only(await rows_of(pool, rid), "enterprises", "update")
    assert row["actor_role"] == "admin"
    assert (row["before"]["address"], row["after"]["address"]) == (given["address"], "上海市浦东新区川沙路 5589 号")
    assert (row["before"]["contact_phone"], row["after"]["contact_phone"]) == (given["contact_phone"], None)


async def test_keys_are_audited_without_their_secret_or_their_use(
    admin: Api, tenant: Tenant, app_client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    actor = await key_id(pool, admin.key)
    rid = request_id("create-key")
    response = await admin.post(
        "/v1/api-keys", json={"role": "enterprise", "name": "审计", "enterprise_id": tenant.id}, headers=sent(rid)
    )
    assert response.status_code == 201, response.text
    created = response.json()
    rows = await rows_of(pool, rid)
    row = only(rows, "api_keys", "insert")
    written_by(rows, rid, actor, "admin", "CreateApiKey", NOW)
    assert (row["entity_id"], row["enterprise_id"], row["before"]) == (created["id"], uuid.UUID(tenant.id), None)
    assert row["after"]["name"] == "审计"
    assert row["after"]["revoked_at"] is None
    assert not {"secret_sha256", "last_used_at"} & set(row["after"])

    # Using the key stamps last_used_at, and that is no change worth a row.
    rid = request_id("use-key")
    assert (
        await Api(app_client, created["key"]).get(f"/v1/enterprises/{tenant.id}", headers=sent(rid))
    ).status_code == 200
    assert await pool.fetchval("SELECT last_used_at FROM api_keys WHERE id = $1", uuid.UUID(created["id"])) == NOW
    assert await rows_of(pool, rid) == []

    rid = request_id("revoke-key")
    assert (await admin.delete(f"/v1/api-keys/{created['id']}", headers=sent(rid))).status_code == 204
    rows = await rows_of(pool, rid)
    row = only(rows, "api_keys", "update")
    written_by(rows, rid, actor, "admin", "RevokeApiKey", NOW)
    assert (row["before"]["revoked_at"], row["after"]["revoked_at"]) == (None, NOW.isoformat())
    assert not {"secret_sha256", "last_used_at"} & (set(row["before"]) | set(row["after"]))

    # Neither the key nor its hash is anywhere in the trail.
    parsed = parse_key(created["key"])
    assert parsed is not None
    for secret in (created["key"], parsed[1], hash_secret(parsed[1]).hex()):
        assert await _mentions(pool, secret) == 0
    assert (
        await pool.fetchval(
            """SELECT count(*) FROM audit_log WHERE entity = 'api_keys'
               AND (before ?| array['secret_sha256', 'last_used_at']
                    OR after ?| array['secret_sha256', 'last_used_at'])"""
        )
        == 0
    )


async def _mentions(pool: asyncpg.Pool, text: str) -> int:
    return int(
        await pool.fetchval(
            "SELECT count(*) FROM audit_log WHERE strpos(concat(before::text, after::text, request_id), $1) > 0", text
        )
    )


async def test_a_webhook_is_audited_without_its_secret(tenant: Tenant, pool: asyncpg.Pool) -> None:
    secret = f"whsec-{uuid.uuid4().hex}"
    rid = request_id("create-webhook")
    response = await tenant.api.post("/v1/webhooks", json={"url": HOOK_URL, "secret": secret}, headers=sent(rid))
    assert response.status_code == 201, response.text
    rows = await rows_of(pool, rid)
    row = only(rows, "webhooks", "insert")
    written_by(rows, rid, await key_id(pool, tenant.api.key), "enterprise", "CreateWebhook", NOW)
    assert (row["entity_id"], row["enterprise_id"]) == (response.json()["webhook"]["id"], uuid.UUID(tenant.id))
    assert row["after"]["url"] == HOOK_URL
    assert "secret" not in row["after"]
    assert await _mentions(pool, secret) == 0
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM audit_log WHERE entity = 'webhooks' AND (before ? 'secret' OR after ? 'secret')"
        )
        == 0
    )


async def test_recording_a_result_audits_every_row_it_changes(
    tenant: Tenant, lab: LabAccount, pool: asyncpg.Pool
) -> None:
    instrument = await tenant.register(**GAUGE, last_verified_on=VERIFIED)
    await accepted_request(tenant, lab, instrument["id"])
    rid = request_id("record")
    response = await lab.api.post(
        f"/v1/instruments/{instrument['id']}/certificates",
        json={
            "kind": "verification_certificate",
            "number": f"JD-{uuid.uuid4().hex[:10]}",
            "performed_on": "2026-06-10",
            "issued_on": "2026-06-12",
        },
        headers=sent(rid),
    )
    assert response.status_code == 201, response.text
    certificate = response.json()["certificate"]
    rows = await rows_of(pool, rid)
    written_by(rows, rid, await key_id(pool, lab.api.key), "lab", "RecordResult", NOW)
    assert {row["enterprise_id"] for row in rows} == {uuid.UUID(tenant.id)}
    changed = {(row["entity"], row["entity_id"], row["operation"]) for row in rows}
    assert ("certificates", certificate["id"], "insert") in changed
    assert ("instruments", instrument["id"], "update") in changed
    [governed] = [r for r in rows if r["entity"] == "instruments"]
    assert governed["before"]["current_certificate_id"] is None
    assert governed["after"]["current_certificate_id"] == certificate["id"]


async def test_a_failed_request_leaves_no_row(tenant: Tenant, pool: asyncpg.Pool) -> None:
    instrument = await tenant.register(**GAUGE, serial_no="AUD-DUP", last_verified_on=VERIFIED)
    assert (await tenant.api.post(f"/v1/instruments/{instrument['id']}/seal")).status_code == 200
    before = await last_seq(pool)
    water = {
        "catalog_code": "water_meter_dn25",
        "legal_use": "trade_settlement",
        "name": "冷水水表",
        "serial_no": "W-1",
    }
    refused = [
        # 409 on the unique serial number.
        (tenant.instruments_url, GAUGE | {"name": "一般压力表", "serial_no": "AUD-DUP"}, 409),
        # 409: a sealed instrument cannot be sealed again.
        (f"/v1/instruments/{instrument['id']}/seal", None, 409),
        # 422 from an unusable webhook address.
        ("/v1/webhooks", {"url": "http://hooks.example.com/"}, 422),
        # 422 after a write: the replacement is inserted, then refused for want of its first
        # verification; the insert's audit row must go with it.
        (f"/v1/instruments/{instrument['id']}/replace", {"replacement": water}, 422),
    ]
    for url, body, status in refused:
        rid = request_id("refused")
        response = await tenant.api.post(url, json=body, headers=sent(rid))
        problem(response, status)
        assert await rows_of(pool, rid) == [], url
    assert await last_seq(pool) == before


# ---------------------------------------------------------------------------------------------
# The chain


async def test_the_chain_of_the_test_database_verifies(tenant: Tenant, pool: asyncpg.Pool) -> None:
    await tenant.register(**GAUGE, last_verified_on=VERIFIED)
    async with pool.acquire() as conn:
        checked, broken = await verify(conn)  # type: ignore[arg-type]
    assert broken is None
    assert checked == await last_seq(pool) > 0


async def test_concurrent_writes_make_one_gap_free_chain(database_url: str, pool: asyncpg.Pool) -> None:
    settings = app_settings(database_url, db_pool_max=10)
    app = create_app(settings, clock=FixedClock(NOW))
    async with (
        running(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://metreg.test") as client,
    ):
        admin = Api(client, await mint(pool, Role.ADMIN))
        tenants = []
        for _ in range(2):
            body = {"name": "并发企业", "credit_code": new_credit_code(), "region_code": "310115"}
            created = await admin.post("/v1/enterprises", json=body)
            assert created.status_code == 201, created.text
            key = await mint(pool, Role.ENTERPRISE, enterprise_id=uuid.UUID(created.json()["id"]))
            tenants.append(Tenant(created.json(), Api(client, key)))
        rids = [request_id(f"concurrent-{i}") for i in range(20)]

        async def register(i: int) -> httpx.Response:
            tenant = tenants[i % 2]
            body = GAUGE | {"name": "一般压力表", "serial_no": f"C-{i}-{uuid.uuid4().hex[:6]}"}
            return await tenant.api.post(tenant.instruments_url, json=body, headers=sent(rids[i]))

        responses = await asyncio.gather(*(register(i) for i in range(20)))
    assert [r.status_code for r in responses] == [201] * 20, [r.text for r in responses if r.status_code != 201]
    for rid, response in zip(rids, responses, strict=True):
        assert only(await rows_of(pool, rid), "instruments", "insert")["entity_id"] == response.json()["id"]
    async with pool.acquire() as conn:
        checked, broken = await verify(conn)  # type: ignore[arg-type]
        extent = await conn.fetchrow("SELECT count(*) AS count, max(seq) AS top FROM audit_log")
    assert broken is None
    assert extent is not None
    assert checked == extent["count"] == extent["top"]


# The command line, on a database of its own.


@pytest.fixture(scope="module")
async def own_dsn() -> AsyncIterator[str]:
    async with fresh_database("metreg_audit") as dsn:
        yield dsn


@pytest.fixture(scope="module")
async def own_pool(own_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    async with asyncpg.create_pool(own_dsn, min_size=1, max_size=2, init=init_connection) as p:
        yield p


@pytest.fixture(scope="module")
async def audited(own_dsn: str, own_pool: asyncpg.Pool) -> int:
    """Some API writes on the own database; the number of audit rows they left."""
    settings = app_settings(own_dsn, db_pool_max=2)
    app = create_app(settings, clock=FixedClock(NOW))
    async with (
        running(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://metreg.test") as client,
    ):
        admin = Api(client, await mint(own_pool, Role.ADMIN))
        body = {"name": "审计企业", "credit_code": new_credit_code(), "region_code": "310115"}
        enterprise = await admin.post("/v1/enterprises", json=body)
        assert enterprise.status_code == 201, enterprise.text
        key = await mint(own_pool, Role.ENTERPRISE, enterprise_id=uuid.UUID(enterprise.json()["id"]))
        tenant = Tenant(enterprise.json(), Api(client, key))
        for _ in range(3):
            instrument = await tenant.register(**GAUGE, last_verified_on=VERIFIED)
        assert (await tenant.api.post(f"/v1/instruments/{instrument['id']}/seal")).status_code == 200
        patched = await tenant.api.patch(f"/v1/enterprises/{tenant.id}", json={"digest": True})
        assert patched.status_code == 200, patched.text
    count = int(await own_pool.fetchval("SELECT count(*) FROM audit_log"))
    assert count >= 8
    return count


async def metreg_audit_verify(dsn: str) -> tuple[int, str, str]:
    """Run ``metreg audit verify`` to its end: (exit code, stdout, stderr)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("METREG_")} | {"DATABASE_URL": dsn}
    process = await asyncio.create_subprocess_exec(
        str(METREG),
        "audit",
        "verify",
        env=env,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@contextlib.asynccontextmanager
async def append_only_off(conn: Conn) -> AsyncIterator[None]:
    """What someone who got past the database's refusal could do."""
    await conn.execute("ALTER TABLE audit_log DISABLE TRIGGER append_only")
    try:
        yield
    finally:
        await conn.execute("ALTER TABLE audit_log ENABLE TRIGGER append_only")


async def test_metreg_audit_verify_names_the_first_broken_row(
    own_dsn: str, own_pool: asyncpg.Pool, audited: int
) -> None:
    code, out, err = await metreg_audit_verify(own_dsn)
    assert (code, err) == (0, ""), err
    intact, head = out.strip().splitlines()
    assert intact == f"audit trail intact: {audited} rows"
    assert head.startswith(f"head: row {audited}, hash ")

    middle = audited // 2
    async with own_pool.acquire() as conn:
        first_instrument = int(await conn.fetchval("SELECT min(seq) FROM audit_log WHERE entity = 'instruments'"))
        last_hash = await conn.fetchval("SELECT hash FROM audit_log WHERE seq = $1", audited)
        await conn.execute("CREATE TEMP TABLE audit_copy AS SELECT * FROM audit_log")
        tampering: list[tuple[str, str, tuple[Any, ...], int, str]] = [
            (
                "an edited action",
                "UPDATE audit_log SET action = 'ListInstruments' WHERE seq = $1",
                (middle,),
                middle,
                "was changed",
            ),
            (
                "an edited after",
                """UPDATE audit_log SET after = jsonb_set(after, '{serial_no}', '"FORGED"') WHERE seq = $1""",
                (first_instrument,),
                first_instrument,
                "was changed",
            ),
            ("a deleted row", "DELETE FROM audit_log WHERE seq = $1", (middle,), middle, f"row {middle} is missing"),
            (
                "a forged row with a wrong hash",
                """INSERT INTO audit_log (seq, at, actor_role, action, entity, entity_id, operation, prev_hash, hash)
                   VALUES ($1, $2, 'admin', 'ScrapInstrument', 'instruments', $3, 'update', $4, $5)""",
                (audited + 1, NOW, str(uuid.uuid4()), last_hash, hashlib.sha256(b"forged").digest()),
                audited + 1,
                "does not match its content",
            ),
        ]
        for what, sql, args, seq, reason in tampering:
            try:
                async with append_only_off(conn):
                    await conn.execute(sql, *args)
                code, out, err = await metreg_audit_verify(own_dsn)
            finally:
                # Put the trail back as it was: it holds again.
                async with append_only_off(conn):
                    await conn.execute("DELETE FROM audit_log")
                    await conn.execute("INSERT INTO audit_log SELECT * FROM audit_copy")
            assert code == 1, f"{what}: {out}{err}"
            assert f"audit trail broken at row {seq}: " in err, f"{what}: {err}"
            assert reason in err, f"{what}: {err}"
            assert await verify(conn) == (audited, None), what  # type: ignore[arg-type]
        await conn.execute("DROP TABLE audit_copy")


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE audit_log SET action = 'Forged' WHERE seq = 1",
        "DELETE FROM audit_log WHERE seq = 1",
        "TRUNCATE audit_log",
    ],
)
async def test_even_the_superuser_may_not_change_the_trail_while_its_triggers_are_on(
    sql: str, own_pool: asyncpg.Pool, audited: int
) -> None:
    async with own_pool.acquire() as conn:
        assert await conn.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
            await conn.execute(sql)
        assert await verify(conn) == (audited, None)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# GET /v1/audit


async def listed(api: Api, **params: str) -> list[dict[str, Any]]:
    """Every entry of ``GET /v1/audit?params``, page after page."""
    items: list[dict[str, Any]] = []
    cursor = None
    for _ in range(1000):
        response = await api.get("/v1/audit", params=params | ({"cursor": cursor} if cursor else {}))
        assert response.status_code == 200, response.text
        page = response.json()
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items
    raise AssertionError("the pages never end")


def seqs(items: list[dict[str, Any]]) -> list[int]:
    return [item["seq"] for item in items]


async def db_seqs(pool: asyncpg.Pool, where: str, *args: Any) -> list[int]:
    return [r[0] for r in await pool.fetch(f"SELECT seq FROM audit_log WHERE {where} ORDER BY seq DESC", *args)]


@pytest.fixture
async def two_tenants(make_tenant: MakeTenant) -> tuple[Tenant, Tenant]:
    """A in region 540102 (Lhasa: no other test's), B in 310115; each with an instrument."""
    a, b = await make_tenant(region_code="540102"), await make_tenant()
    for tenant in (a, b):
        await tenant.register(**GAUGE, last_verified_on=VERIFIED)
    return a, b


async def test_an_admin_sees_the_whole_trail(
    admin: Api, two_tenants: tuple[Tenant, Tenant], pool: asyncpg.Pool
) -> None:
    a, b = two_tenants
    response = await admin.get("/v1/audit", params={"limit": "30"})
    assert response.status_code == 200, response.text
    assert seqs(response.json()["items"]) == (await db_seqs(pool, "true"))[:30]
    for tenant in (a, b):
        assert seqs(await listed(admin, enterprise_id=tenant.id)) == await db_seqs(
            pool, "enterprise_id = $1", uuid.UUID(tenant.id)
        )


async def test_an_enterprise_sees_only_its_own_rows(two_tenants: tuple[Tenant, Tenant], pool: asyncpg.Pool) -> None:
    a, b = two_tenants
    mine = await listed(a.api)
    assert seqs(mine) == await db_seqs(pool, "enterprise_id = $1", uuid.UUID(a.id))
    assert {item["enterprise_id"] for item in mine} == {a.id}
    # Naming another tenant does not open its rows.
    response = await a.api.get("/v1/audit", params={"enterprise_id": b.id})
    assert response.status_code in (200, 403, 404), response.text
    if response.status_code == 200:
        assert response.json()["items"] == []


async def test_a_regulator_sees_its_region_only(
    two_tenants: tuple[Tenant, Tenant], app_client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    a, b = two_tenants
    regulator = Api(app_client, await mint(pool, Role.REGULATOR, region_code="54"))
    seen = await listed(regulator)
    # Its region's register, but not its enterprises' keys and webhooks.
    assert seqs(seen) == await db_seqs(
        pool,
        "starts_with(region_code, '54') AND (entity NOT IN ('webhooks', 'api_keys') "
        "OR enterprise_id IS NULL AND region_code = '54')",
    )
    assert not {item["entity"] for item in seen if item["enterprise_id"]} & {"webhooks", "api_keys"}
    enterprises = {item["enterprise_id"] for item in seen}
    assert a.id in enterprises
    assert b.id not in enterprises
    assert all(item["region_code"].startswith("54") for item in seen)


async def test_a_lab_may_not_read_the_trail(lab: LabAccount) -> None:
    problem(await lab.api.get("/v1/audit"), 403)


async def test_the_filters(admin: Api, tenant: Tenant, pool: asyncpg.Pool, clock: FixedClock) -> None:
    times = [NOW + dt.timedelta(hours=h) for h in (1, 2, 3)]
    clock.set(times[0])
    first = await tenant.register(**GAUGE, last_verified_on=VERIFIED)
    clock.set(times[1])
    second = await tenant.register(**GAUGE, last_verified_on=VERIFIED)
    clock.set(times[2])
    assert (await tenant.api.post(f"/v1/instruments/{first['id']}/seal")).status_code == 200
    enterprise = uuid.UUID(tenant.id)
    actor = await key_id(pool, tenant.api.key)

    of_first = await listed(admin, entity="instruments", entity_id=first["id"])
    assert [(i["action"], i["operation"]) for i in of_first] == [
        ("SealInstrument", "update"),
        ("RegisterInstrument", "insert"),
    ]
    assert seqs(of_first) == await db_seqs(pool, "entity = 'instruments' AND entity_id = $1", first["id"])

    [sealed] = await listed(admin, action="SealInstrument", enterprise_id=tenant.id)
    assert (sealed["entity_id"], dt.datetime.fromisoformat(sealed["at"])) == (first["id"], times[2])

    by_key = await listed(admin, actor_key_id=str(actor))
    assert seqs(by_key) == await db_seqs(pool, "actor_key_id = $1", actor)
    assert {i["entity_id"] for i in by_key} == {first["id"], second["id"]}

    assert seqs(await listed(admin, enterprise_id=tenant.id)) == await db_seqs(pool, "enterprise_id = $1", enterprise)

    # Key rows minted as superuser carry the database's own time: keep to the instruments.
    window = {"enterprise_id": tenant.id, "entity": "instruments"}
    since = await listed(admin, **window, since="2026-06-15T06:00:00Z")
    assert seqs(since) == await db_seqs(
        pool, "enterprise_id = $1 AND entity = 'instruments' AND at >= $2", enterprise, times[1]
    )
    assert [(i["entity_id"], i["action"]) for i in since] == [
        (first["id"], "SealInstrument"),
        (second["id"], "RegisterInstrument"),
    ]
    until = await listed(admin, **window, since="2026-06-15T05:00:00+00:00", until="2026-06-15T06:00:00Z")
    assert [(i["entity_id"], i["action"]) for i in until] == [(first["id"], "RegisterInstrument")]
    assert [(i["entity_id"], i["action"]) for i in await listed(admin, **window, until="2026-06-15T05:00:00Z")] == []

    for name in ("since", "until"):
        body = problem(await admin.get("/v1/audit", params={name: "2026-06-15T06:00:00"}), 400)
        assert fields_of(body) == [name]


async def test_a_write_whose_time_is_behind_the_trail_is_found_by_its_time(
    admin: Api, tenant: Tenant, pool: asyncpg.Pool, clock: FixedClock
) -> None:
    """A transaction that began before another committed appends its rows after the other's with
    an earlier `at`: the trail's clock (schema/0027) takes the lag, and a time span, read as a
    range of seq within that lag, still finds the row."""
    latest = await pool.fetchval("SELECT high FROM audit_clock")
    clock.set(latest + dt.timedelta(days=1))
    await tenant.register(**GAUGE, last_verified_on=VERIFIED)
    clock.set(latest)
    late = await tenant.register(**GAUGE, last_verified_on=VERIFIED)
    row = await pool.fetchrow("SELECT high, lag FROM audit_clock")
    assert row is not None
    # `high` is the latest `at` rounded up to the next minute, `latest` already one such.
    assert row["high"] == latest + dt.timedelta(days=1, minutes=1)
    assert row["lag"] >= dt.timedelta(days=1)
    assert tuple(await pool.fetchrow("SELECT high, lag FROM audit_clock_recount()")) == tuple(row)

    window = {"since": latest.isoformat(), "until": (latest + dt.timedelta(seconds=1)).isoformat()}
    found = await listed(admin, enterprise_id=tenant.id, **window)
    assert [i["entity_id"] for i in found if i["entity"] == "instruments"] == [late["id"]]
    assert seqs(await listed(admin, **window)) == await db_seqs(
        pool, "at >= $1 AND at < $2", latest, latest + dt.timedelta(seconds=1)
    )


async def test_paging_is_complete_and_without_duplicates(admin: Api, tenant: Tenant, pool: asyncpg.Pool) -> None:
    for _ in range(4):
        await tenant.register(**GAUGE, last_verified_on=VERIFIED)
    expected = await db_seqs(pool, "enterprise_id = $1", uuid.UUID(tenant.id))
    assert len(expected) >= 6
    pages: list[list[int]] = []
    cursor: str | None = None
    while True:
        params = {"enterprise_id": tenant.id, "limit": "2"} | ({"cursor": cursor} if cursor else {})
        response = await tenant.api.get("/v1/audit", params=params)
        assert response.status_code == 200, response.text
        pages.append(seqs(response.json()["items"]))
        cursor = response.json()["next_cursor"]
        if cursor is None:
            break
        assert len(pages) <= len(expected), "the pages never end"
    flat = [seq for page in pages for seq in page]
    assert flat == expected
    assert len(set(flat)) == len(flat)
    assert all(1 <= len(page) <= 2 for page in pages)


@pytest.mark.parametrize("cursor", ["not-a-cursor!", "eyJzZXEiOiJ4In0", "WyJ4Il0"])
async def test_an_invalid_cursor_is_a_400_naming_it(admin: Api, cursor: str) -> None:
    body = problem(await admin.get("/v1/audit", params={"cursor": cursor}), 400)
    assert fields_of(body) == ["cursor"]
