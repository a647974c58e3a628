"""Row-level security and the roles' grants, held by PostgreSQL itself (schema/0008_trust.sql).

Every query here runs on a connection opened the way the processes open theirs
(``service.db.create_pool``: role ``metreg_api`` or ``metreg_worker``), and makes its principal the
way the app does: the app's own authentication statement (``service.auth._AUTHENTICATE``) with a
real key, ``act_as_public`` for the public certificate check, or ``act_as_calendar`` for the read
of a calendar feed. The reads are deliberately unfiltered (``SELECT … FROM <table>``): whatever
comes back is what the policies let through.

One world per module, built through the API: enterprise A (region 530102) and B (620102), each
with instruments, a request accepted by a lab of its own (L for A, M for B), the certificate that
lab recorded and the notice it wrote, a webhook, a delivery with an attempt (inserted as the
worker would have), and a calendar feed. What a principal should see of a table is computed as
superuser from each row's owner (enterprise, instrument, lab, region), over the whole database:
other tests' rows included, so that "only its rows" means exactly that.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from typing import TYPE_CHECKING, Any

import asyncpg
import httpx
import pytest

from service.app import create_app
from service.auth import _AUTHENTICATE, Role, act_as_calendar, act_as_public, hash_secret, parse_key
from service.calendars.queries import token_sha256
from service.clock import FixedClock
from service.db import create_pool
from service.history.queries import record_event
from service.history.schemas import EventKind
from service.keys.queries import revoke_key
from service.requests.queries import attach_result
from service.settings import Settings
from tests.conftest import (
    ALL_CODES,
    GAUGE,
    NOW,
    Api,
    LabAccount,
    MakeLab,
    MakeTenant,
    Tenant,
    accepted_request,
    app_settings,
    mint,
    new_credit_code,
    running,
)

REGION_A = "530102"  # Kunming: no other test's enterprise lives there
REGION_B = "620102"  # Lanzhou
REGULATOR_OF_A = "53"
REGULATOR_OF_B = "62"
VERIFIED = "2026-06-01"
HOOK_URL = "https://hooks.example.com/metreg-rls"


if TYPE_CHECKING:
    # What a pool hands out (annotations only: the class is not subscriptable at run time).
    Conn = asyncpg.pool.PoolConnectionProxy[asyncpg.Record]


class Who(enum.StrEnum):
    ENTERPRISE_A = "enterprise_a"
    ENTERPRISE_B = "enterprise_b"
    REGULATOR_OF_A = "regulator_of_a"
    LAB_OF_A = "lab_of_a"  # lab L: a request for one of A's instruments, nothing of B
    ADMIN = "admin"
    NOBODY = "nobody"  # a transaction without a principal
    PUBLIC = "public"  # the public check of A's certificate
    CALENDAR_OF_A = "calendar_of_a"  # a read of A's calendar feed (its token, no key)


# ---------------------------------------------------------------------------------------------
# The world


@dataclasses.dataclass(frozen=True)
class World:
    keys: Mapping[Who, str]
    a: uuid.UUID
    b: uuid.UUID
    a_requested: uuid.UUID  # A's instrument in lab L's request
    a_other: uuid.UUID  # A's instrument no lab has seen
    a_request: uuid.UUID  # lab L's request for a_requested
    b_instrument: uuid.UUID
    lab_l: uuid.UUID
    lab_m: uuid.UUID
    a_certificate: uuid.UUID
    a_certificate_number: str
    b_request: uuid.UUID
    b_certificate: uuid.UUID
    a_notice: uuid.UUID
    b_notice: uuid.UUID
    b_webhook: uuid.UUID
    b_delivery: uuid.UUID
    b_attempt: int
    a_feed_token: str


def _id(body: dict[str, Any]) -> uuid.UUID:
    return uuid.UUID(body["id"])


async def _created(api: Api, url: str, body: dict[str, Any]) -> dict[str, Any]:
    response = await api.post(url, json=body)
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


async def _result_of(tenant: Tenant, lab: LabAccount, instrument_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A request of ``tenant`` to ``lab`` for the instrument, accepted, and the lab's certificate."""
    request = await _created(
        tenant.api, "/v1/verification-requests", {"lab_id": lab.id, "instrument_ids": [instrument_id]}
    )
    await lab.accept(request["id"])
    recorded = await lab.record(instrument_id)
    assert recorded.status_code == 201, recorded.text
    return request, recorded.json()["certificate"]


async def _delivery(conn: Conn, notice: uuid.UUID, webhook: dict[str, Any]) -> tuple[uuid.UUID, int]:
    """A failed delivery of ``notice`` to ``webhook`` with its one attempt, as the worker leaves them."""
    delivery: uuid.UUID = await conn.fetchval(
        """INSERT INTO deliveries (notice_id, channel, webhook_id, target, status, attempts, next_attempt_at,
                                  last_error, created_at, updated_at)
           VALUES ($1, 'webhook', $2, $3, 'failed', 1, $4, 'connection refused', $4, $4) RETURNING id""",
        notice,
        _id(webhook),
        webhook["url"],
        NOW,
    )
    attempt: int = await conn.fetchval(
        """INSERT INTO delivery_attempts (delivery_id, attempt, started_at, duration_ms, error, outcome)
           VALUES ($1, 1, $2, 12, 'connection refused', 'failed') RETURNING id""",
        delivery,
        NOW,
    )
    return delivery, attempt


async def build_world(client: httpx.AsyncClient, pool: asyncpg.Pool) -> World:
    admin = Api(client, await mint(pool, Role.ADMIN))

    async def enterprise(region_code: str) -> uuid.UUID:
        body = {"name": f"企业{region_code}", "credit_code": new_credit_code(), "region_code": region_code}
        return _id(await _created(admin, "/v1/enterprises", body))

    async def lab(name: str) -> uuid.UUID:
        body = {
            "name": name,
            "accreditation_no": f"{name}-{uuid.uuid4().hex[:6]}",
            "region_code": REGION_A,
            "scope": ALL_CODES,
        }
        return _id(await _created(admin, "/v1/labs", body))

    a, b = await enterprise(REGION_A), await enterprise(REGION_B)
    lab_l, lab_m = await lab("实验室L"), await lab("实验室M")
    keys = {
        Who.ADMIN: admin.key or "",
        Who.ENTERPRISE_A: await mint(pool, Role.ENTERPRISE, enterprise_id=a),
        Who.ENTERPRISE_B: await mint(pool, Role.ENTERPRISE, enterprise_id=b),
        Who.REGULATOR_OF_A: await mint(pool, Role.REGULATOR, region_code=REGULATOR_OF_A),
        Who.LAB_OF_A: await mint(pool, Role.LAB, lab_id=lab_l),
    }
    tenant_a = Tenant({"id": str(a)}, Api(client, keys[Who.ENTERPRISE_A]))
    tenant_b = Tenant({"id": str(b)}, Api(client, keys[Who.ENTERPRISE_B]))
    account_l = LabAccount({"id": str(lab_l)}, Api(client, keys[Who.LAB_OF_A]))
    account_m = LabAccount({"id": str(lab_m)}, Api(client, await mint(pool, Role.LAB, lab_id=lab_m)))
    regulator_of_b = Api(client, await mint(pool, Role.REGULATOR, region_code=REGULATOR_OF_B))

    a_requested = await tenant_a.register(**GAUGE, last_verified_on=VERIFIED)
    a_other = await tenant_a.register(**GAUGE, last_verified_on=VERIFIED)
    b_instrument = await tenant_b.register(**GAUGE, last_verified_on=VERIFIED)
    a_request, a_certificate = await _result_of(tenant_a, account_l, a_requested["id"])
    b_request, b_certificate = await _result_of(tenant_b, account_m, b_instrument["id"])

    a_webhook = (await _created(tenant_a.api, "/v1/webhooks", {"url": HOOK_URL}))["webhook"]
    b_webhook = (await _created(tenant_b.api, "/v1/webhooks", {"url": HOOK_URL}))["webhook"]
    # Regulators' own webhooks, one per region.
    await _created(Api(client, keys[Who.REGULATOR_OF_A]), "/v1/webhooks", {"url": HOOK_URL})
    await _created(regulator_of_b, "/v1/webhooks", {"url": HOOK_URL})

    a_feed = await _created(tenant_a.api, f"/v1/enterprises/{a}/calendar-feeds", {"name": "A 的日历"})
    await _created(tenant_b.api, f"/v1/enterprises/{b}/calendar-feeds", {"name": "B 的日历"})

    async with pool.acquire() as conn:
        notices = {
            row["enterprise_id"]: row["id"]
            for row in await conn.fetch(
                "SELECT id, enterprise_id FROM notices WHERE certificate_id = ANY($1::uuid[])",
                [_id(a_certificate), _id(b_certificate)],
            )
        }
        assert set(notices) == {a, b}, "recording a result writes the enterprise's notice"
        await _delivery(conn, notices[a], a_webhook)
        b_delivery, b_attempt = await _delivery(conn, notices[b], b_webhook)
    return World(
        keys=keys,
        a=a,
        b=b,
        a_requested=_id(a_requested),
        a_other=_id(a_other),
        a_request=_id(a_request),
        b_instrument=_id(b_instrument),
        lab_l=lab_l,
        lab_m=lab_m,
        a_certificate=_id(a_certificate),
        a_certificate_number=a_certificate["number"],
        b_request=_id(b_request),
        b_certificate=_id(b_certificate),
        a_notice=notices[a],
        b_notice=notices[b],
        b_webhook=_id(b_webhook),
        b_delivery=b_delivery,
        b_attempt=b_attempt,
        a_feed_token=a_feed["url"].rsplit("/", 1)[1].removesuffix(".ics"),
    )


def _settings(database_url: str) -> Settings:
    return app_settings(database_url, db_pool_max=2)


@pytest.fixture(scope="module")
async def world(database_url: str, pool: asyncpg.Pool) -> World:
    app = create_app(_settings(database_url), clock=FixedClock(NOW))
    async with (
        running(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://metreg.test") as client,
    ):
        return await build_world(client, pool)


@pytest.fixture(scope="module")
async def api_pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    """Connections exactly as the API opens them: role metreg_api."""
    db = await create_pool(_settings(database_url))
    try:
        yield db
    finally:
        await db.close()


@pytest.fixture(scope="module")
async def worker_pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    """Connections exactly as the worker opens them: role metreg_worker."""
    db = await create_pool(_settings(database_url), application_name="metreg-worker", role="metreg_worker")
    try:
        yield db
    finally:
        await db.close()


# ---------------------------------------------------------------------------------------------
# Principals


async def become(conn: Conn, world: World, who: Who) -> None:
    """Make ``who`` the principal of the current transaction, as the app does."""
    if who is Who.NOBODY:
        return
    if who is Who.PUBLIC:
        await act_as_public(conn, world.lab_l, world.a_certificate_number)  # type: ignore[arg-type]
        return
    if who is Who.CALENDAR_OF_A:
        await act_as_calendar(conn, token_sha256(world.a_feed_token), f"rls-{who}", NOW)  # type: ignore[arg-type]
        return
    parsed = parse_key(world.keys[who])
    assert parsed is not None
    row = await conn.fetchrow(_AUTHENTICATE, parsed[0], hash_secret(parsed[1]), NOW, f"rls-{who}", "RlsTest")
    assert row is not None, f"the key of {who} does not authenticate"


@contextlib.asynccontextmanager
async def acting(db: asyncpg.Pool, world: World, who: Who) -> AsyncIterator[Conn]:
    """A transaction of ``who`` on a connection of ``db``, rolled back at the end."""
    async with db.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        try:
            await become(conn, world, who)
            yield conn
        finally:
            await transaction.rollback()


# ---------------------------------------------------------------------------------------------
# Who owns each row (read as superuser)


@dataclasses.dataclass(frozen=True)
class Owner:
    key: str
    enterprise: uuid.UUID | None
    instrument: uuid.UUID | None  # the instrument the row is about, if any
    lab: uuid.UUID | None  # the lab of the request the row belongs to, if any
    region: str | None  # for webhooks and audit rows their own region_code, else the enterprise's


# Per table: the key that names a row (as the principal selects it, unfiltered) and the superuser's
# query of every row's owner.
_OWNERS: dict[str, tuple[str, str]] = {
    "enterprises": ("id::text", "SELECT id::text, id, NULL::uuid, NULL::uuid, region_code FROM enterprises"),
    "instruments": (
        "id::text",
        """SELECT i.id::text, i.enterprise_id, i.id, NULL::uuid, e.region_code
           FROM instruments i JOIN enterprises e ON e.id = i.enterprise_id""",
    ),
    "certificates": (
        "id::text",
        """SELECT c.id::text, c.enterprise_id, c.instrument_id, NULL::uuid, e.region_code
           FROM certificates c JOIN enterprises e ON e.id = c.enterprise_id""",
    ),
    "verification_requests": (
        "id::text",
        """SELECT r.id::text, r.enterprise_id, NULL::uuid, r.lab_id, e.region_code
           FROM verification_requests r JOIN enterprises e ON e.id = r.enterprise_id""",
    ),
    "request_items": (
        "request_id::text || '/' || instrument_id::text",
        """SELECT ri.request_id::text || '/' || ri.instrument_id::text, r.enterprise_id, ri.instrument_id,
                  r.lab_id, e.region_code
           FROM request_items ri JOIN verification_requests r ON r.id = ri.request_id
           JOIN enterprises e ON e.id = r.enterprise_id""",
    ),
    "instrument_events": (
        "seq::text",
        """SELECT ev.seq::text, i.enterprise_id, ev.instrument_id, NULL::uuid, e.region_code
           FROM instrument_events ev JOIN instruments i ON i.id = ev.instrument_id
           JOIN enterprises e ON e.id = i.enterprise_id""",
    ),
    "notices": (
        "id::text",
        """SELECT n.id::text, n.enterprise_id, n.instrument_id, NULL::uuid, e.region_code
           FROM notices n JOIN enterprises e ON e.id = n.enterprise_id""",
    ),
    "deliveries": (
        "id::text",
        """SELECT d.id::text, n.enterprise_id, n.instrument_id, NULL::uuid, e.region_code
           FROM deliveries d JOIN notices n ON n.id = d.notice_id JOIN enterprises e ON e.id = n.enterprise_id""",
    ),
    "delivery_attempts": (
        "id::text",
        """SELECT da.id::text, n.enterprise_id, n.instrument_id, NULL::uuid, e.region_code
           FROM delivery_attempts da JOIN deliveries d ON d.id = da.delivery_id
           JOIN notices n ON n.id = d.notice_id JOIN enterprises e ON e.id = n.enterprise_id""",
    ),
    "webhooks": ("id::text", "SELECT id::text, enterprise_id, NULL::uuid, NULL::uuid, region_code FROM webhooks"),
    # A regulator reads no enterprise's key or webhook rows of the trail: their region reads as
    # none (see _sees), which no other principal's expectation looks at.
    "audit_log": (
        "seq::text",
        """SELECT seq::text, enterprise_id, NULL::uuid, NULL::uuid,
                  CASE WHEN entity IN ('webhooks', 'api_keys', 'calendar_feeds') AND enterprise_id IS NOT NULL THEN NULL
                       ELSE region_code END
           FROM audit_log""",
    ),
    "api_keys": ("id::text", "SELECT id::text, enterprise_id, NULL::uuid, lab_id, region_code FROM api_keys"),
    # Feeds are managed like keys: no region, so that no regulator's expectation includes them.
    "calendar_feeds": ("id::text", "SELECT id::text, enterprise_id, NULL::uuid, NULL::uuid, NULL FROM calendar_feeds"),
}
TABLES = list(_OWNERS)
# The worker's policies: every row of these (it never reads the trail or calendar feeds).
WORKER_TABLES = [t for t in TABLES if t not in ("audit_log", "calendar_feeds")]


async def owners(pool: asyncpg.Pool, table: str) -> list[Owner]:
    async with pool.acquire() as conn:
        return [Owner(*row) for row in await conn.fetch(_OWNERS[table][1])]


async def unfiltered(conn: Conn, table: str) -> set[str]:
    """The keys of every row of ``table`` the connection sees, asked for without any filter."""
    return {row[0] for row in await conn.fetch(f"SELECT {_OWNERS[table][0]} FROM {table}")}


def _sees_keys(world: World, who: Who) -> Callable[[Owner], bool]:
    """Keys of the principal's own role and scope; before authenticating, any (the key check)."""
    match who:
        case Who.NOBODY:
            return lambda row: True
        case Who.REGULATOR_OF_A:
            return lambda row: row.region == REGULATOR_OF_A
        case Who.ENTERPRISE_A | Who.ENTERPRISE_B:
            mine = world.a if who is Who.ENTERPRISE_A else world.b
            return lambda row: row.enterprise == mine
        case Who.LAB_OF_A:
            return lambda row: row.lab == world.lab_l
    return lambda row: False


def _sees_as_lab(world: World, table: str) -> Callable[[Owner], bool]:
    """Lab L: A, its request, and the instrument in it."""
    if table == "enterprises":
        return lambda row: row.enterprise == world.a
    if table in ("verification_requests", "request_items"):
        return lambda row: row.lab == world.lab_l
    if table in ("webhooks", "audit_log", "deliveries", "delivery_attempts", "calendar_feeds"):
        return lambda row: False
    return lambda row: row.instrument == world.a_requested


def _sees_as_feed(world: World, table: str) -> Callable[[Owner], bool]:
    """A calendar feed's read: its enterprise and that enterprise's instruments, nothing else."""
    if table in ("enterprises", "instruments"):
        return lambda row: row.enterprise == world.a
    return lambda row: False


def _sees(world: World, who: Who, table: str) -> Callable[[Owner], bool]:
    """Which rows of ``table`` ``who`` should see (design.md §5)."""
    match who:
        case Who.ADMIN:
            return lambda row: True
        case Who.CALENDAR_OF_A:
            return _sees_as_feed(world, table)
        case _ if table == "api_keys":
            return _sees_keys(world, who)
        case Who.NOBODY:
            return lambda row: False
        case Who.ENTERPRISE_A | Who.ENTERPRISE_B:
            mine = world.a if who is Who.ENTERPRISE_A else world.b
            return lambda row: row.enterprise == mine
        case Who.REGULATOR_OF_A if table == "webhooks":
            return lambda row: row.region == REGULATOR_OF_A  # a regulator's own webhooks only
        case Who.REGULATOR_OF_A:
            return lambda row: row.region is not None and row.region.startswith(REGULATOR_OF_A)
        case Who.LAB_OF_A:
            return _sees_as_lab(world, table)
        case Who.PUBLIC:
            expected = {
                "enterprises": str(world.a),
                "instruments": str(world.a_requested),
                "certificates": str(world.a_certificate),
            }
            return lambda row: row.key == expected.get(table)
    raise AssertionError(who)


# ---------------------------------------------------------------------------------------------
# Reads


async def test_the_world_has_rows_of_both_tenants_in_every_table(world: World, pool: asyncpg.Pool) -> None:
    for table in TABLES:
        rows = await owners(pool, table)
        assert {world.a, world.b} <= {row.enterprise for row in rows}, table


async def test_the_app_pool_runs_as_metreg_api_and_the_worker_pool_as_metreg_worker(
    api_pool: asyncpg.Pool, worker_pool: asyncpg.Pool
) -> None:
    assert await api_pool.fetchval("SELECT current_user") == "metreg_api"
    assert await worker_pool.fetchval("SELECT current_user") == "metreg_worker"
    for db in (api_pool, worker_pool):
        assert not await db.fetchval("SELECT rolbypassrls OR rolsuper FROM pg_roles WHERE rolname = current_user")


@pytest.mark.parametrize("table", TABLES)
@pytest.mark.parametrize("who", list(Who), ids=str)
async def test_an_unfiltered_select_returns_only_the_principals_rows(
    who: Who, table: str, world: World, api_pool: asyncpg.Pool, pool: asyncpg.Pool
) -> None:
    sees = _sees(world, who, table)
    expected = {row.key for row in await owners(pool, table) if sees(row)}
    async with acting(api_pool, world, who) as conn:
        visible = await unfiltered(conn, table)
    unexpected, missing = sorted(visible - expected), sorted(expected - visible)
    assert not unexpected, f"{who} sees rows of {table} it should not: {unexpected[:5]}"
    assert not missing, f"{who} does not see rows of {table} it should: {missing[:5]}"


async def test_each_tenant_sees_its_world_and_nothing_of_the_other(world: World, api_pool: asyncpg.Pool) -> None:
    """The same, told by the world's own ids."""
    async with acting(api_pool, world, Who.ENTERPRISE_A) as conn:
        assert await unfiltered(conn, "enterprises") == {str(world.a)}
        instruments = await unfiltered(conn, "instruments")
        assert {str(world.a_requested), str(world.a_other)} <= instruments
        assert str(world.b_instrument) not in instruments
        assert str(world.a_certificate) in await unfiltered(conn, "certificates")
        assert str(world.b_certificate) not in await unfiltered(conn, "certificates")
        assert str(world.b_delivery) not in await unfiltered(conn, "deliveries")
        assert str(world.b_attempt) not in await unfiltered(conn, "delivery_attempts")
    async with acting(api_pool, world, Who.LAB_OF_A) as conn:
        assert await unfiltered(conn, "instruments") == {str(world.a_requested)}
        assert await unfiltered(conn, "enterprises") == {str(world.a)}
    async with acting(api_pool, world, Who.ADMIN) as conn:
        assert {str(world.a), str(world.b)} <= await unfiltered(conn, "enterprises")


async def test_the_public_check_sees_its_certificate_its_instrument_and_its_enterprise(
    world: World, api_pool: asyncpg.Pool
) -> None:
    async with acting(api_pool, world, Who.PUBLIC) as conn:
        assert await unfiltered(conn, "certificates") == {str(world.a_certificate)}
        assert await unfiltered(conn, "instruments") == {str(world.a_requested)}
        assert await unfiltered(conn, "enterprises") == {str(world.a)}
    # Another number of the same lab is another principal: it sees nothing of this one.
    async with api_pool.acquire() as conn, conn.transaction():
        await act_as_public(conn, world.lab_l, "no-such-number")  # type: ignore[arg-type]
        for table in ("certificates", "instruments", "enterprises"):
            assert await unfiltered(conn, table) == set(), table


async def test_the_public_check_sees_no_request_of_the_labs_other_clients(
    make_tenant: MakeTenant, make_lab: MakeLab, api_pool: asyncpg.Pool
) -> None:
    """Anyone may check a certificate: that principal must not read the issuing lab's work orders
    for other enterprises."""
    lab = await make_lab()
    holder, other_client = await make_tenant(), await make_tenant()
    checked = await holder.register(**GAUGE, last_verified_on=VERIFIED)
    await accepted_request(holder, lab, checked["id"])
    recorded = await lab.record(checked["id"])
    assert recorded.status_code == 201, recorded.text
    pending = await other_client.register(**GAUGE, last_verified_on=VERIFIED)
    their_request = await _created(
        other_client.api, "/v1/verification-requests", {"lab_id": lab.id, "instrument_ids": [pending["id"]]}
    )
    async with api_pool.acquire() as conn, conn.transaction():
        await act_as_public(conn, uuid.UUID(lab.id), recorded.json()["certificate"]["number"])  # type: ignore[arg-type]
        requests = await unfiltered(conn, "verification_requests")
        items = await unfiltered(conn, "request_items")
    assert their_request["id"] not in requests, "an anonymous certificate check reads another client's request"
    assert f"{their_request['id']}/{pending['id']}" not in items


# ---------------------------------------------------------------------------------------------
# Writes


async def test_updates_under_a_touch_only_as_rows(world: World, api_pool: asyncpg.Pool, pool: asyncpg.Pool) -> None:
    async with acting(api_pool, world, Who.ENTERPRISE_A) as conn:
        for sql, target in [
            ("UPDATE enterprises SET name = 'hijacked' WHERE id = $1", world.b),
            ("UPDATE instruments SET location = 'hijacked' WHERE id = $1", world.b_instrument),
            ("UPDATE verification_requests SET note = 'hijacked' WHERE id = $1", world.b_request),
            ("UPDATE notices SET last_error = 'hijacked' WHERE id = $1", world.b_notice),
            ("UPDATE deliveries SET last_error = 'hijacked' WHERE id = $1", world.b_delivery),
            ("UPDATE webhooks SET active = false WHERE id = $1", world.b_webhook),
            ("UPDATE request_items SET withdrawn_on = '2026-06-15' WHERE request_id = $1", world.b_request),
        ]:
            assert await conn.execute(sql, target) == "UPDATE 0", sql
        # Unfiltered, an update changes A's rows and only those.
        changed = await conn.fetch("UPDATE instruments SET location = 'everywhere' RETURNING id, enterprise_id")
        assert {row["enterprise_id"] for row in changed} == {world.a}
        assert {row["id"] for row in changed} == {world.a_requested, world.a_other}
    assert await pool.fetchval("SELECT location FROM instruments WHERE id = $1", world.b_instrument) is None


_REFUSED_UNDER_A: dict[str, tuple[str, Callable[[World], tuple[Any, ...]]]] = {
    "insert an instrument of B": (
        "INSERT INTO instruments (enterprise_id, name, serial_no, regime) VALUES ($1, '伪造', 'X-1', 'not_controlled')",
        lambda w: (w.b,),
    ),
    "insert a request of B": (
        """INSERT INTO verification_requests (enterprise_id, lab_id, created_at, updated_at)
           VALUES ($1, $2, $3, $3)""",
        lambda w: (w.b, w.lab_m, NOW),
    ),
    "insert a notice of B": (
        """INSERT INTO notices (enterprise_id, instrument_id, kind, audience, region_code, cycle, step, due_on,
                               next_attempt_at, created_at, updated_at)
           VALUES ($1, $2, 'due_soon', 'enterprise', '620102', '2026-11-30', 30, '2026-10-31', $3, $3, $3)""",
        lambda w: (w.b, w.b_instrument, NOW),
    ),
    "insert a webhook of B": (
        "INSERT INTO webhooks (enterprise_id, url, secret, created_at) VALUES ($1, $2, repeat('s', 32), $3)",
        lambda w: (w.b, HOOK_URL, NOW),
    ),
}


@pytest.mark.parametrize("write", list(_REFUSED_UNDER_A))
async def test_writes_under_a_into_bs_register_are_refused(write: str, world: World, api_pool: asyncpg.Pool) -> None:
    sql, args = _REFUSED_UNDER_A[write]
    async with acting(api_pool, world, Who.ENTERPRISE_A) as conn:
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="new row violates row-level security policy"):
            await conn.execute(sql, *args(world))


# ---------------------------------------------------------------------------------------------
# A row never changes owner (schema/0017_owners_fixed.sql)
#
# The policies' check of a written row is their USING expression, which lets a lab through to the
# instrument of its request and an admin through to everything: what holds a row to its owner
# there is a trigger, which binds every role.


@dataclasses.dataclass(frozen=True)
class Move:
    sql: str
    args: Callable[[World], tuple[Any, ...]]
    refusal: type[Exception] = asyncpg.InsufficientPrivilegeError
    match: str = "never changes: a row stays with its owner"


# What lab L sees of A's register: the instrument of its request and what hangs on it.
_MOVES_OF_WHAT_THE_LAB_SEES: dict[str, Move] = {
    "instrument to B": Move("UPDATE instruments SET enterprise_id = $1 WHERE id = $2", lambda w: (w.b, w.a_requested)),
    "request to B": Move(
        "UPDATE verification_requests SET enterprise_id = $1 WHERE id = $2", lambda w: (w.b, w.a_request)
    ),
    "request to lab M": Move(
        "UPDATE verification_requests SET lab_id = $1 WHERE id = $2", lambda w: (w.lab_m, w.a_request)
    ),
    "request item to B's instrument": Move(
        "UPDATE request_items SET instrument_id = $1 WHERE request_id = $2", lambda w: (w.b_instrument, w.a_request)
    ),
    "request item to B's request": Move(
        "UPDATE request_items SET request_id = $1 WHERE request_id = $2", lambda w: (w.b_request, w.a_request)
    ),
    "event to B's instrument": Move(
        "UPDATE instrument_events SET instrument_id = $1 WHERE instrument_id = $2",
        lambda w: (w.b_instrument, w.a_requested),
    ),
    "notice to B": Move(
        "UPDATE notices SET enterprise_id = $1, instrument_id = $2 WHERE id = $3",
        lambda w: (w.b, w.b_instrument, w.a_notice),
    ),
    # Immutable since schema/0005 but for a one-time revocation: no trigger of 0017's needed.
    "certificate to B": Move(
        "UPDATE certificates SET enterprise_id = $1 WHERE id = $2",
        lambda w: (w.b, w.a_certificate),
        refusal=asyncpg.RestrictViolationError,
        match="only a one-time revocation may be added",
    ),
}
# The rest of A's own rows, which A and the admin see.
_MOVES_OF_AS_OTHER_ROWS: dict[str, Move] = {
    "unseen instrument to B": Move(
        "UPDATE instruments SET enterprise_id = $1 WHERE id = $2", lambda w: (w.b, w.a_other)
    ),
    "delivery to B's notice": Move(
        "UPDATE deliveries SET notice_id = $1 WHERE notice_id = $2", lambda w: (w.b_notice, w.a_notice)
    ),
    "webhook to B": Move("UPDATE webhooks SET enterprise_id = $1 WHERE enterprise_id = $2", lambda w: (w.b, w.a)),
    "webhook to a region": Move(
        "UPDATE webhooks SET enterprise_id = NULL, region_code = $1 WHERE enterprise_id = $2",
        lambda w: (REGULATOR_OF_B, w.a),
    ),
    "calendar feed to B": Move(
        "UPDATE calendar_feeds SET enterprise_id = $1 WHERE enterprise_id = $2", lambda w: (w.b, w.a)
    ),
    "key to B": Move("UPDATE api_keys SET enterprise_id = $1 WHERE enterprise_id = $2", lambda w: (w.b, w.a)),
    "key made an admin's": Move(
        "UPDATE api_keys SET role = 'admin', enterprise_id = NULL WHERE enterprise_id = $1", lambda w: (w.a,)
    ),
}
_MOVES_ONLY_AN_ADMIN_SEES: dict[str, Move] = {
    "lab key to lab M": Move("UPDATE api_keys SET lab_id = $1 WHERE lab_id = $2", lambda w: (w.lab_m, w.lab_l)),
    "regulator's webhook to another region": Move(
        "UPDATE webhooks SET region_code = $1 WHERE region_code = $2", lambda w: (REGULATOR_OF_B, REGULATOR_OF_A)
    ),
}
MOVES = _MOVES_OF_WHAT_THE_LAB_SEES | _MOVES_OF_AS_OTHER_ROWS | _MOVES_ONLY_AN_ADMIN_SEES
# Since schema/0028 (tested with the signers below) the API updates no event at all, and an
# enterprise no request item that has its result (lab L's item of A's request has): the trigger is
# left to refuse those moves to the principals that still write the rows, the owner among them.
_DONE_ITEM_MOVES = ["request item to B's instrument", "request item to B's request"]
_API_MOVES = [
    (who, move)
    for who, move in (
        [(Who.LAB_OF_A, move) for move in _MOVES_OF_WHAT_THE_LAB_SEES]
        + [(Who.ENTERPRISE_A, move) for move in _MOVES_OF_WHAT_THE_LAB_SEES | _MOVES_OF_AS_OTHER_ROWS]
        + [(Who.ADMIN, move) for move in MOVES]
    )
    if move != "event to B's instrument" and not (who is Who.ENTERPRISE_A and move in _DONE_ITEM_MOVES)
]
# The worker writes notices, deliveries and attempts of every tenant.
_WORKER_MOVES: dict[str, Move] = {
    "notice to B": MOVES["notice to B"],
    "delivery to B's notice": MOVES["delivery to B's notice"],
    "attempt to A's delivery": Move(
        "UPDATE delivery_attempts SET delivery_id = (SELECT id FROM deliveries WHERE notice_id = $1) WHERE id = $2",
        lambda w: (w.a_notice, w.b_attempt),
    ),
}


@pytest.mark.parametrize(("who", "move"), _API_MOVES, ids=[f"{who}-{move}" for who, move in _API_MOVES])
async def test_no_principal_moves_a_row_it_sees_to_another_owner(
    who: Who, move: str, world: World, api_pool: asyncpg.Pool
) -> None:
    sql, args, refusal, match = dataclasses.astuple(MOVES[move])
    async with acting(api_pool, world, who) as conn:
        with pytest.raises(refusal, match=match):
            await conn.execute(sql, *args(world))


@pytest.mark.parametrize("move", list(_WORKER_MOVES))
async def test_the_worker_moves_no_row_to_another_owner(move: str, world: World, worker_pool: asyncpg.Pool) -> None:
    sql, args, refusal, match = dataclasses.astuple(_WORKER_MOVES[move])
    async with worker_pool.acquire() as conn, conn.transaction():
        with pytest.raises(refusal, match=match):
            await conn.execute(sql, *args(world))


@pytest.mark.parametrize("move", list(MOVES))
async def test_not_even_the_tables_owner_moves_a_row_to_another_owner(
    move: str, world: World, pool: asyncpg.Pool
) -> None:
    sql, args, refusal, match = dataclasses.astuple(MOVES[move])
    async with pool.acquire() as conn, conn.transaction():
        assert await conn.fetchval("SELECT tableowner = current_user FROM pg_tables WHERE tablename = 'instruments'")
        with pytest.raises(refusal, match=match):
            await conn.execute(sql, *args(world))


_ORDINARY_UPDATES: dict[Who, list[tuple[str, Callable[[World], tuple[Any, ...]]]]] = {
    Who.LAB_OF_A: [
        # Naming the owner column is no move while its value stays.
        (
            "UPDATE instruments SET location = 'bench 3', enterprise_id = enterprise_id WHERE id = $1",
            lambda w: (w.a_requested,),
        ),
        (
            "UPDATE verification_requests SET note = 'on the bench', lab_id = $2 WHERE id = $1",
            lambda w: (w.a_request, w.lab_l),
        ),
        ("UPDATE request_items SET withdrawn_on = NULL WHERE request_id = $1", lambda w: (w.a_request,)),
        ("UPDATE notices SET last_error = 'rechecked' WHERE id = $1", lambda w: (w.a_notice,)),
    ],
    Who.ADMIN: [
        ("UPDATE instruments SET location = 'store', enterprise_id = $2 WHERE id = $1", lambda w: (w.a_other, w.a)),
        ("UPDATE deliveries SET last_error = 'rechecked' WHERE notice_id = $1", lambda w: (w.a_notice,)),
        ("UPDATE webhooks SET events = '{}' WHERE enterprise_id = $1", lambda w: (w.a,)),
        ("UPDATE calendar_feeds SET name = 'renamed' WHERE enterprise_id = $1", lambda w: (w.a,)),
        ("UPDATE api_keys SET name = 'renamed' WHERE enterprise_id = $1", lambda w: (w.a,)),
    ],
}


@pytest.mark.parametrize("who", list(_ORDINARY_UPDATES), ids=str)
async def test_an_update_that_keeps_the_owner_still_works(who: Who, world: World, api_pool: asyncpg.Pool) -> None:
    async with acting(api_pool, world, who) as conn:
        for sql, args in _ORDINARY_UPDATES[who]:
            updated = await conn.execute(sql, *args(world))
            assert int(updated.removeprefix("UPDATE ")) >= 1, sql


async def test_without_its_trigger_the_policy_alone_let_a_lab_move_a_request(world: World, pool: asyncpg.Pool) -> None:
    """What schema/0017 closed: lab L's update passes the policy's check on lab_id alone. A request
    of A's to lab L without items yet stands for it: one with items is also held by their keys
    since schema/0026 (an item's enterprise is its request's), which refuse the move on their own."""
    async with pool.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        try:
            await conn.execute("ALTER TABLE verification_requests DISABLE TRIGGER owner_fixed")
            empty = await conn.fetchval(
                """INSERT INTO verification_requests (enterprise_id, lab_id, created_at, updated_at)
                   VALUES ($1, $2, $3, $3) RETURNING id""",
                world.a,
                world.lab_l,
                NOW,
            )
            await conn.execute("SET LOCAL ROLE metreg_api")
            await become(conn, world, Who.LAB_OF_A)
            move = "UPDATE verification_requests SET enterprise_id = $1 WHERE id = $2 RETURNING enterprise_id"
            assert await conn.fetchval(move, world.b, empty) == world.b
            with pytest.raises(asyncpg.ForeignKeyViolationError, match='"request_items_request_fkey"'):
                await conn.fetchval(move, world.b, world.a_request)
        finally:
            await transaction.rollback()
    assert (
        await pool.fetchval("SELECT enterprise_id FROM verification_requests WHERE id = $1", world.a_request) == world.a
    )


# ---------------------------------------------------------------------------------------------
# References the worker follows stay with their row's owner (schema/0020_references_fixed.sql)
#
# The worker reads every tenant's rows, so what a row of A names is what the worker acts on for
# A: a delivery's webhook (whose secret signs it) and target (where it is posted), an instrument's
# current certificate (whose number its notices carry), the instruments it replaces or is
# replaced by, and a result notice's certificate (which its payload names,
# schema/0021_notice_certificates_fixed.sql). The policies check A's row, not the row it names.
# Nor does a request item or a history event give another instrument's certificate as its
# instrument's result (schema/0023_item_and_event_certificates_fixed.sql). Nor, last, does a
# request item name another tenant's instrument, which lab L would then have read with its
# certificates, nor a certificate another tenant's instrument, request or document, nor an event
# another tenant's instrument as its related one (schema/0026_remaining_references_fixed.sql).

ATTACKER_HOOK = "https://attacker.example/hook"
_MISPOINTED = "violates foreign key constraint"
# A result's notice as service.notices.queries.insert_event_notice writes it: enterprise,
# instrument, certificate. verification_failed, which no notice of the world's certificates is,
# so that notices_event (one per certificate and kind) has nothing to say first.
_RESULT_NOTICE = f"""
    INSERT INTO notices (enterprise_id, instrument_id, kind, audience, region_code, cycle, step, certificate_id,
                         due_on, next_attempt_at, created_at, updated_at)
    VALUES ($1, $2, 'verification_failed', 'enterprise', '{REGION_A}', '{VERIFIED}', 0, $3, '{VERIFIED}', now(),
            now(), now())"""
# A result's event as service.history.queries.record_event writes it, and an item of lab L's
# request for A's other instrument, its result already given.
_RESULT_EVENT = f"""
    INSERT INTO instrument_events (instrument_id, kind, effective_on, certificate_id, occurred_at)
    VALUES ($1, 'result_recorded', '{VERIFIED}', $2, now())"""
_DONE_ITEM = """
    INSERT INTO request_items (request_id, enterprise_id, instrument_id, position, certificate_id)
    VALUES ($1, $2, $3, 2, $4)"""
# An item as service.requests.queries.insert_request writes it: request, its enterprise, instrument.
_ITEM = "INSERT INTO request_items (request_id, enterprise_id, instrument_id, position) VALUES ($1, $2, $3, 3)"
# A replacement's event as service.history.queries.record_event writes it: the instrument, the one
# that replaced it, and the instrument's enterprise.
_RELATED_EVENT = """
    INSERT INTO instrument_events (instrument_id, kind, related_instrument_id, related_enterprise_id, occurred_at)
    VALUES ($1, 'replaced', $2, $3, now())"""
# A document in a lab's name as service.certificates.routes.record_result writes it: its instrument
# and enterprise, the lab, the request it answers and the document it corrects (either may be NULL),
# recorded by the transaction's principal (the tables' owner, which has none, as a lab).
_DOCUMENT = f"""
    INSERT INTO certificates (instrument_id, enterprise_id, lab_id, request_id, supersedes, correction_reason, kind,
                              number, outcome, performed_on, issued_on, legal_effect, effect_note, content_sha256,
                              recorded_by_key, recorded_by_role, recorded_at)
    VALUES ($1, $2, $3, $4, $5, CASE WHEN $5::uuid IS NOT NULL THEN 'corrected' END, 'verification_certificate',
            'RLS-' || gen_random_uuid(), 'pass', '{VERIFIED}', '{VERIFIED}', 'history', 'x', repeat('0', 64),
            principal_key(), coalesce(principal_role(), 'lab'), now())"""

_REPOINTS: dict[str, Move] = {
    "A's delivery to B's webhook and elsewhere": Move(
        f"UPDATE deliveries SET webhook_id = $1, target = '{ATTACKER_HOOK}' WHERE notice_id = $2",
        lambda w: (w.b_webhook, w.a_notice),
    ),
    "A's delivery to B's webhook": Move(
        "UPDATE deliveries SET webhook_id = $1 WHERE notice_id = $2", lambda w: (w.b_webhook, w.a_notice)
    ),
    "A's delivery elsewhere": Move(
        f"UPDATE deliveries SET target = '{ATTACKER_HOOK}' WHERE notice_id = $1", lambda w: (w.a_notice,)
    ),
    "A's delivery to no webhook": Move(
        "UPDATE deliveries SET webhook_id = NULL WHERE notice_id = $1", lambda w: (w.a_notice,)
    ),
    "A's instrument to B's certificate": Move(
        "UPDATE instruments SET current_certificate_id = $1 WHERE id = $2",
        lambda w: (w.b_certificate, w.a_requested),
        refusal=asyncpg.ForeignKeyViolationError,
        match=f'{_MISPOINTED} "instruments_current_certificate_id_fkey"',
    ),
    # A's own certificate, but another instrument's: its number is no document of this one.
    "A's instrument to its neighbour's certificate": Move(
        "UPDATE instruments SET current_certificate_id = $1 WHERE id = $2",
        lambda w: (w.a_certificate, w.a_other),
        refusal=asyncpg.ForeignKeyViolationError,
        match=f'{_MISPOINTED} "instruments_current_certificate_id_fkey"',
    ),
    "A's instrument replacing B's": Move(
        "UPDATE instruments SET replaces = $1 WHERE id = $2",
        lambda w: (w.b_instrument, w.a_other),
        refusal=asyncpg.ForeignKeyViolationError,
        match=f'{_MISPOINTED} "instruments_replaces_fkey"',
    ),
    "A's instrument replaced by B's": Move(
        "UPDATE instruments SET replaced_by = $1 WHERE id = $2",
        lambda w: (w.b_instrument, w.a_other),
        refusal=asyncpg.ForeignKeyViolationError,
        match=f'{_MISPOINTED} "instruments_replaced_by_fkey"',
    ),
    # Of the other kind: B's own notice of its certificate holds that one (notices_event).
    "A's notice to B's certificate": Move(
        "UPDATE notices SET certificate_id = $1, kind = 'verification_failed' WHERE id = $2",
        lambda w: (w.b_certificate, w.a_notice),
        refusal=asyncpg.ForeignKeyViolationError,
        match=f'{_MISPOINTED} "notices_certificate_fkey"',
    ),
    "A's new notice naming B's certificate": Move(
        _RESULT_NOTICE,
        lambda w: (w.a, w.a_requested, w.b_certificate),
        refusal=asyncpg.ForeignKeyViolationError,
        match=f'{_MISPOINTED} "notices_certificate_fkey"',
    ),
    # A's own certificate, but another instrument's: the notice would give it as this one's result.
    "A's new notice naming its neighbour's certificate": Move(
        _RESULT_NOTICE,
        lambda w: (w.a, w.a_other, w.a_certificate),
        refusal=asyncpg.ForeignKeyViolationError,
        match=f'{_MISPOINTED} "notices_certificate_fkey"',
    ),
    # The item of lab L's request, done with B's result instead of its own.
    "A's request item to B's certificate": Move(
        "UPDATE request_items SET certificate_id = $1 WHERE request_id = $2",
        lambda w: (w.b_certificate, w.a_request),
        refusal=asyncpg.ForeignKeyViolationError,
        match=f'{_MISPOINTED} "request_items_certificate_fkey"',
    ),
    "A's new request item naming B's certificate": Move(
        _DONE_ITEM,
        lambda w: (w.a_request, w.a, w.a_other, w.b_certificate),
        refusal=asyncpg.ForeignKeyViolationError,
        match=f'{_MISPOINTED} "request_items_certificate_fkey"',
    ),
    # A's own certificate, but another instrument's: the item would be done without its result.
    "A's new request item naming its neighbour's certificate": Move(
        _DONE_ITEM,
        lambda w: (w.a_request, w.a, w.a_other, w.a_certificate),
        refusal=asyncpg.ForeignKeyViolationError,
        match=f'{_MISPOINTED} "request_items_certificate_fkey"',
    ),
    "A's event to B's certificate": Move(
        "UPDATE instrument_events SET certificate_id = $1 WHERE instrument_id = $2 AND kind = 'result_recorded'",
        lambda w: (w.b_certificate, w.a_requested),
        refusal=asyncpg.ForeignKeyViolationError,
        match=f'{_MISPOINTED} "instrument_events_certificate_fkey"',
    ),
    "A's event to its neighbour's certificate": Move(
        "UPDATE instrument_events SET certificate_id = $1 WHERE instrument_id = $2",
        lambda w: (w.a_certificate, w.a_other),
        refusal=asyncpg.ForeignKeyViolationError,
        match=f'{_MISPOINTED} "instrument_events_certificate_fkey"',
    ),
    "A's new event naming B's certificate": Move(
        _RESULT_EVENT,
        lambda w: (w.a_requested, w.b_certificate),
        refusal=asyncpg.ForeignKeyViolationError,
        match=f'{_MISPOINTED} "instrument_events_certificate_fkey"',
    ),
    "A's new event naming its neighbour's certificate": Move(
        _RESULT_EVENT,
        lambda w: (w.a_other, w.a_certificate),
        refusal=asyncpg.ForeignKeyViolationError,
        match=f'{_MISPOINTED} "instrument_events_certificate_fkey"',
    ),
}
# schema/0026_remaining_references_fixed.sql
_REPOINTS |= {
    # An item of lab L's request naming B's instrument: lab L would see it, and B's certificates.
    "A's new request item naming B's instrument": Move(
        _ITEM,
        lambda w: (w.a_request, w.a, w.b_instrument),
        refusal=asyncpg.ForeignKeyViolationError,
        match=f'{_MISPOINTED} "request_items_instrument_fkey"',
    ),
    "A's new request item naming B's instrument as B's": Move(
        _ITEM,
        lambda w: (w.a_request, w.b, w.b_instrument),
        refusal=asyncpg.ForeignKeyViolationError,
        match=f'{_MISPOINTED} "request_items_request_fkey"',
    ),
    "A's new request item without its enterprise": Move(
        _ITEM,
        lambda w: (w.a_request, None, w.a_other),
        refusal=asyncpg.NotNullViolationError,
        match='null value in column "enterprise_id" of relation "request_items"',
    ),
    # Neither its request nor its instrument is B's: both keys object, whichever runs first.
    "A's request item to B": Move(
        "UPDATE request_items SET enterprise_id = $1 WHERE request_id = $2",
        lambda w: (w.b, w.a_request),
        refusal=asyncpg.ForeignKeyViolationError,
        match=f'{_MISPOINTED} "request_items_(request|instrument)_fkey"',
    ),
    "A's new event naming B's instrument": Move(
        _RELATED_EVENT,
        lambda w: (w.a_requested, w.b_instrument, w.a),
        refusal=asyncpg.ForeignKeyViolationError,
        match=f'{_MISPOINTED} "instrument_events_related_fkey"',
    ),
    "A's new event naming B's instrument as B's": Move(
        _RELATED_EVENT,
        lambda w: (w.a_requested, w.b_instrument, w.b),
        refusal=asyncpg.ForeignKeyViolationError,
        match=f'{_MISPOINTED} "instrument_events_related_owner_fkey"',
    ),
    "A's new event naming B's instrument without an enterprise": Move(
        _RELATED_EVENT,
        lambda w: (w.a_requested, w.b_instrument, None),
        refusal=asyncpg.CheckViolationError,
        match='violates check constraint "instrument_events_related_enterprise"',
    ),
    "A's event to B's instrument": Move(
        "UPDATE instrument_events SET related_instrument_id = $1, related_enterprise_id = $2 WHERE instrument_id = $3",
        lambda w: (w.b_instrument, w.a, w.a_requested),
        refusal=asyncpg.ForeignKeyViolationError,
        match=f'{_MISPOINTED} "instrument_events_related_fkey"',
    ),
    # A certificate of A's naming B's instrument in lab L's name: lab L would see that instrument.
    "A's new certificate of B's instrument": Move(
        _DOCUMENT,
        lambda w: (w.b_instrument, w.a, w.lab_l, None, None),
        refusal=asyncpg.ForeignKeyViolationError,
        match=f'{_MISPOINTED} "certificates_instrument_fkey"',
    ),
    # The same pair the other way round, which a lab may write: it sees A's instrument, not B.
    "A's instrument's new certificate given to B": Move(
        _DOCUMENT,
        lambda w: (w.a_requested, w.b, w.lab_l, None, None),
        refusal=asyncpg.ForeignKeyViolationError,
        match=f'{_MISPOINTED} "certificates_instrument_fkey"',
    ),
    "A's new certificate correcting B's": Move(
        _DOCUMENT,
        lambda w: (w.a_requested, w.a, w.lab_l, None, w.b_certificate),
        refusal=asyncpg.ForeignKeyViolationError,
        match=f'{_MISPOINTED} "certificates_superseded_fkey"',
    ),
    "A's new certificate correcting its neighbour's": Move(
        _DOCUMENT,
        lambda w: (w.a_other, w.a, w.lab_l, None, w.a_certificate),
        refusal=asyncpg.ForeignKeyViolationError,
        match=f'{_MISPOINTED} "certificates_superseded_fkey"',
    ),
    "A's new certificate answering B's request": Move(
        _DOCUMENT,
        lambda w: (w.a_requested, w.a, w.lab_m, w.b_request, None),
        refusal=asyncpg.ForeignKeyViolationError,
        match=f'{_MISPOINTED} "certificates_request_fkey"',
    ),
    # Lab L's request holds no item for A's other instrument.
    "A's new certificate answering a request without it": Move(
        _DOCUMENT,
        lambda w: (w.a_other, w.a, w.lab_l, w.a_request, None),
        refusal=asyncpg.ForeignKeyViolationError,
        match=f'{_MISPOINTED} "certificates_request_fkey"',
    ),
}
# The worker writes deliveries and notices. Lab L writes those notices, events and certificates of
# the instrument of its request, and the items of its request, but sees nothing of A's other
# instrument nor writes anything of B; regulator of A writes the notices, items and events of its
# region; A writes nothing of B.
#
# Some writes are refused to some principals before any key is checked (schema/0028, tested with
# the signers below): the API updates no event; only a lab (in its own name) or an admin records a
# lab's document, and a document answering B's request is lab M's; only a lab or an admin gives a
# request item its result or touches one that has it (lab L's item of A's request has); an
# enterprise writes no result into its instruments' history. Since schema/0029 (tested there too)
# only an enterprise or an admin adds a request item at all: a lab's or a regulator's is refused
# before its keys are looked at.
_WORKER_REPOINTS = [name for name in _REPOINTS if name.startswith(("A's delivery", "A's notice", "A's new notice"))]
_NOTICE_REPOINTS = [name for name in _REPOINTS if "notice" in name]
_EVENT_UPDATES = [name for name in _REPOINTS if name.startswith("A's event")]
_RESULT_EVENTS = ["A's new event naming B's certificate", "A's new event naming its neighbour's certificate"]
_EVENT_REPOINTS = [name for name in _REPOINTS if "event" in name and name not in _EVENT_UPDATES]
_ITEM_RESULTS = [
    "A's request item to B's certificate",
    "A's new request item naming B's certificate",
    "A's new request item naming its neighbour's certificate",
    "A's request item to B",
]
_ITEM_REPOINTS = [name for name in _REPOINTS if "request item" in name]
_ITEM_UPDATES = [name for name in _ITEM_REPOINTS if "new request item" not in name]
_GIVEN_TO_B = "A's instrument's new certificate given to B"
_CERTIFICATE_REPOINTS = [name for name in _REPOINTS if "new certificate" in name and name != _GIVEN_TO_B]
_LAB_REPOINTS = [
    "A's notice to B's certificate",
    "A's new notice naming B's certificate",
    *_ITEM_UPDATES,
    "A's new event naming B's certificate",
    "A's new event naming B's instrument",
    "A's new event naming B's instrument as B's",
    "A's new event naming B's instrument without an enterprise",
    _GIVEN_TO_B,
    "A's new certificate correcting B's",
]
_API_REPOINTS = (
    [
        (Who.ENTERPRISE_A, name)
        for name in _REPOINTS
        if name not in [_GIVEN_TO_B, *_CERTIFICATE_REPOINTS, *_ITEM_RESULTS, *_EVENT_UPDATES, *_RESULT_EVENTS]
    ]
    + [(Who.ADMIN, name) for name in _REPOINTS if name not in _EVENT_UPDATES]
    + [(Who.LAB_OF_A, name) for name in _LAB_REPOINTS]
    + [
        (Who.REGULATOR_OF_A, name)
        for name in _NOTICE_REPOINTS + [n for n in _ITEM_UPDATES if n not in _ITEM_RESULTS] + _EVENT_REPOINTS
    ]
)


@pytest.mark.parametrize(("who", "repoint"), _API_REPOINTS, ids=[f"{who}-{name}" for who, name in _API_REPOINTS])
async def test_no_principal_points_a_reference_at_another_tenants_row(
    who: Who, repoint: str, world: World, api_pool: asyncpg.Pool
) -> None:
    sql, args, refusal, match = dataclasses.astuple(_REPOINTS[repoint])
    async with acting(api_pool, world, who) as conn:
        with pytest.raises(refusal, match=match):
            await conn.execute(sql, *args(world))


@pytest.mark.parametrize("repoint", _WORKER_REPOINTS)
async def test_the_worker_points_no_delivery_or_notice_elsewhere(
    repoint: str, world: World, worker_pool: asyncpg.Pool
) -> None:
    sql, args, refusal, match = dataclasses.astuple(_REPOINTS[repoint])
    async with worker_pool.acquire() as conn, conn.transaction():
        with pytest.raises(refusal, match=match):
            await conn.execute(sql, *args(world))


@pytest.mark.parametrize("repoint", list(_REPOINTS))
async def test_not_even_the_tables_owner_points_a_reference_elsewhere(
    repoint: str, world: World, pool: asyncpg.Pool
) -> None:
    sql, args, refusal, match = dataclasses.astuple(_REPOINTS[repoint])
    async with pool.acquire() as conn, conn.transaction():
        with pytest.raises(refusal, match=match):
            await conn.execute(sql, *args(world))


async def test_the_api_writes_no_delivery_even_for_its_own_notice(world: World, api_pool: asyncpg.Pool) -> None:
    """Deliveries are the worker's: one inserted by A would have sent A's notice through B's webhook."""
    for who in (Who.ENTERPRISE_A, Who.ADMIN):
        async with acting(api_pool, world, who) as conn:
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied for table deliveries"):
                await conn.execute(
                    """INSERT INTO deliveries (notice_id, channel, webhook_id, target, next_attempt_at, created_at,
                                              updated_at)
                       VALUES ($1, 'webhook', $2, $3, $4, $4, $4)""",
                    world.a_notice,
                    world.b_webhook,
                    ATTACKER_HOOK,
                    NOW,
                )


async def test_references_within_the_owner_still_work(world: World, api_pool: asyncpg.Pool) -> None:
    """The keys refuse only what points away: an instrument's own certificate, a replacement of
    the same enterprise, a delivery update that leaves its webhook and target alone, a notice
    naming its own instrument's certificate (the notice a recorded result writes, which building
    the world did through the API for A's and B's certificates), an item of A's request for A's
    own instrument, an event naming A's other instrument, and a certificate of the instrument of
    lab L's request answering that request and correcting the instrument's own certificate (which
    lab L writes: schema/0028)."""
    async with acting(api_pool, world, Who.LAB_OF_A) as conn:
        inserted = await conn.execute(
            _DOCUMENT, world.a_requested, world.a, world.lab_l, world.a_request, world.a_certificate
        )
        assert inserted == "INSERT 0 1"
    async with acting(api_pool, world, Who.ENTERPRISE_A) as conn:
        for sql, args in [
            (_RESULT_NOTICE, (world.a, world.a_requested, world.a_certificate)),
            (_ITEM, (world.a_request, world.a, world.a_other)),
            (_RELATED_EVENT, (world.a_other, world.a_requested, world.a)),
            (
                "UPDATE instruments SET current_certificate_id = $1 WHERE id = $2",
                (world.a_certificate, world.a_requested),
            ),
            ("UPDATE instruments SET replaces = $1 WHERE id = $2", (world.a_requested, world.a_other)),
            ("UPDATE instruments SET replaced_by = $1 WHERE id = $2", (world.a_other, world.a_requested)),
            (
                "UPDATE deliveries SET last_error = 'rechecked', webhook_id = webhook_id, target = target "
                "WHERE notice_id = $1",
                (world.a_notice,),
            ),
        ]:
            assert await conn.execute(sql, *args) in ("INSERT 0 1", "UPDATE 1"), sql


async def test_a_recorded_result_names_its_certificate_in_the_item_and_the_history(
    world: World, pool: asyncpg.Pool
) -> None:
    """What building the world did through the API (lab L's result for A, lab M's for B):
    record_result's item and event name the certificate under the new keys."""
    for request, instrument, certificate in [
        (world.a_request, world.a_requested, world.a_certificate),
        (world.b_request, world.b_instrument, world.b_certificate),
    ]:
        item = await pool.fetchval(
            "SELECT certificate_id FROM request_items WHERE request_id = $1 AND instrument_id = $2", request, instrument
        )
        assert item == certificate
        events = await pool.fetch(
            """SELECT kind, certificate_id FROM instrument_events
               WHERE instrument_id = $1 AND certificate_id IS NOT NULL ORDER BY seq""",
            instrument,
        )
        assert [tuple(e) for e in events] == [("result_recorded", certificate)]


@pytest.mark.parametrize("who", [Who.LAB_OF_A, Who.ADMIN])
async def test_the_result_paths_still_name_the_instruments_own_certificate(
    who: Who, world: World, api_pool: asyncpg.Pool
) -> None:
    """The statements a result and a revocation write, run again as who records them: the item's
    result (attach_result), and the result's and the revocation's events (record_event)."""
    async with acting(api_pool, world, who) as conn:
        await conn.execute("UPDATE request_items SET certificate_id = NULL WHERE request_id = $1", world.a_request)
        await attach_result(conn, world.a_request, world.a_requested, world.a_certificate, NOW)  # type: ignore[arg-type]
        for kind in (EventKind.RESULT_RECORDED, EventKind.CERTIFICATE_REVOKED):
            await record_event(
                conn,  # type: ignore[arg-type]
                instrument_id=world.a_requested,
                kind=kind,
                actor=None,
                now=NOW,
                certificate_id=world.a_certificate,
            )
        item = await conn.fetchval("SELECT certificate_id FROM request_items WHERE request_id = $1", world.a_request)
        assert item == world.a_certificate
        events = await conn.fetch(
            "SELECT kind FROM instrument_events WHERE instrument_id = $1 AND certificate_id = $2 ORDER BY seq",
            world.a_requested,
            world.a_certificate,
        )
        assert [e["kind"] for e in events] == ["result_recorded", "result_recorded", "certificate_revoked"]


async def test_the_api_paths_write_items_certificates_and_events_of_one_enterprise(
    make_tenant: MakeTenant, lab: LabAccount, admin: Api, pool: asyncpg.Pool
) -> None:
    """What the new keys of schema/0026 hold, written through the API: the items of a request an
    enterprise and an admin make carry its enterprise; a result answers its request's item of that
    instrument; a correction supersedes that instrument's document; a replacement's two events
    name each other's instrument with their enterprise."""
    tenant = await make_tenant()
    first = await tenant.register(**GAUGE, last_verified_on=VERIFIED)
    second = await tenant.register(**GAUGE, last_verified_on=VERIFIED)
    own = await _created(tenant.api, "/v1/verification-requests", {"lab_id": lab.id, "instrument_ids": [first["id"]]})
    body = {"lab_id": lab.id, "instrument_ids": [second["id"]], "enterprise_id": tenant.id}
    admins = await _created(admin, "/v1/verification-requests", body)
    for request in (own, admins):
        await lab.accept(request["id"])
    results = {}
    for instrument in (first, second):
        recorded = await lab.record(instrument["id"])
        assert recorded.status_code == 201, recorded.text
        results[instrument["id"]] = recorded.json()["certificate"]
    corrected = results[first["id"]]
    correction = await lab.record(first["id"], supersedes=corrected["id"], correction_reason="结论笔误")
    assert correction.status_code == 201, correction.text
    replaced = await tenant.api.post(
        f"/v1/instruments/{second['id']}/replace",
        json={"replacement": GAUGE | {"name": "新压力表", "serial_no": uuid.uuid4().hex[:10]}},
    )
    assert replaced.status_code == 201, replaced.text
    successor = replaced.json()["replacement"]["id"]

    enterprise = uuid.UUID(tenant.id)
    items = await pool.fetch(
        "SELECT request_id, instrument_id, enterprise_id FROM request_items WHERE request_id = ANY($1::uuid[])",
        [uuid.UUID(own["id"]), uuid.UUID(admins["id"])],
    )
    assert {(str(i["request_id"]), str(i["instrument_id"]), i["enterprise_id"]) for i in items} == {
        (own["id"], first["id"], enterprise),
        (admins["id"], second["id"], enterprise),
    }
    documents = await pool.fetch(
        "SELECT id, instrument_id, request_id, supersedes FROM certificates WHERE enterprise_id = $1", enterprise
    )
    assert {(str(d["instrument_id"]), str(d["request_id"]), str(d["supersedes"])) for d in documents} == {
        (first["id"], own["id"], "None"),
        (second["id"], admins["id"], "None"),
        (first["id"], "None", corrected["id"]),
    }
    related = await pool.fetch(
        """SELECT instrument_id, kind, related_instrument_id, related_enterprise_id FROM instrument_events
           WHERE instrument_id = ANY($1::uuid[]) AND related_instrument_id IS NOT NULL""",
        [uuid.UUID(second["id"]), uuid.UUID(successor)],
    )
    assert {
        (str(e["instrument_id"]), e["kind"], str(e["related_instrument_id"]), e["related_enterprise_id"])
        for e in related
    } == {
        (second["id"], "replaced", successor, enterprise),
        (successor, "registered", second["id"], enterprise),
    }


# ---------------------------------------------------------------------------------------------
# Who signs a document, gives a request item its result or writes one into the history, and whose
# key a rotation names (schema/0028_signers_and_successors.sql)
#
# What record_result and the revocation let each principal do (service/certificates/routes.py): a
# lab records under its own name and answers its own requests, a regulator records in-service
# inspections in its region's name, an admin either; the recorder or revoker a document names is
# the principal. The permissive policies let a principal write what it sees; the restrictive ones
# of 0028 take the rest away and name themselves when they refuse.

# An in-service inspection record as record_result writes it: instrument, enterprise, issuing region.
_INSPECTION = f"""
    INSERT INTO certificates (instrument_id, enterprise_id, issuer_region, kind, number, outcome, performed_on,
                              issued_on, legal_effect, effect_note, content_sha256, recorded_by_key,
                              recorded_by_role, recorded_at)
    VALUES ($1, $2, $3, 'inspection_record', 'RLS-' || gen_random_uuid(), 'pass', '{VERIFIED}', '{VERIFIED}', 'none',
            'x', repeat('0', 64), principal_key(), principal_role(), now())"""
# A lab's document with the recorder given: instrument, enterprise, lab, request, recording key and role.
_RECORDED_AS = f"""
    INSERT INTO certificates (instrument_id, enterprise_id, lab_id, request_id, kind, number, outcome, performed_on,
                              issued_on, legal_effect, effect_note, content_sha256, recorded_by_key,
                              recorded_by_role, recorded_at)
    VALUES ($1, $2, $3, $4, 'verification_certificate', 'RLS-' || gen_random_uuid(), 'pass', '{VERIFIED}',
            '{VERIFIED}', 'history', 'x', repeat('0', 64), $5, $6, now())"""
# The one-time revocation as revoke_certificate writes it, by the principal or by the key and role given.
_REVOCATION = """
    UPDATE certificates SET revoked_on = performed_on, revoked_reason = 'rls', revoked_at = now(),
                            revoked_by_key = principal_key(), revoked_by_role = principal_role()
    WHERE id = $1"""
_REVOKED_AS = """
    UPDATE certificates SET revoked_on = performed_on, revoked_reason = 'rls', revoked_at = now(),
                            revoked_by_key = $2, revoked_by_role = $3
    WHERE id = $1"""
_REVOCATION_EVENT = f"""
    INSERT INTO instrument_events (instrument_id, kind, effective_on, certificate_id, occurred_at)
    VALUES ($1, 'certificate_revoked', '{VERIFIED}', $2, now())"""
# A work order as service.requests.queries.insert_request writes it: enterprise, lab.
_REQUEST = """
    INSERT INTO verification_requests (enterprise_id, lab_id, created_at, updated_at) VALUES ($1, $2, now(), now())"""
_SEALED_EVENT = """
    INSERT INTO instrument_events (instrument_id, kind, from_lifecycle, to_lifecycle, occurred_at)
    VALUES ($1, 'sealed', 'in_service', 'sealed', now())"""

KeyIds = Mapping[Who, uuid.UUID]


@dataclasses.dataclass(frozen=True)
class Signing:
    who: Who
    sql: str
    args: Callable[[World, KeyIds], tuple[Any, ...]]
    refused_by: str | None  # the restrictive policy that refuses it; None: it is written


_SIGNINGS: dict[str, Signing] = {
    # Certificates: the owner, a regulator and a lab for another lab are refused; the public check
    # sees the certificate it checks, and so passes the permissive policy with a correction of it.
    "enterprise: its document in its lab's name": Signing(
        Who.ENTERPRISE_A, _DOCUMENT, lambda w, k: (w.a_requested, w.a, w.lab_l, w.a_request, None), "issuer"
    ),
    "enterprise: a document in a lab's name without a request": Signing(
        Who.ENTERPRISE_A, _DOCUMENT, lambda w, k: (w.a_other, w.a, w.lab_l, None, None), "issuer"
    ),
    "enterprise: an inspection record in its regulator's name": Signing(
        Who.ENTERPRISE_A, _INSPECTION, lambda w, k: (w.a_other, w.a, REGULATOR_OF_A), "issuer"
    ),
    "regulator: a document in a lab's name": Signing(
        Who.REGULATOR_OF_A, _DOCUMENT, lambda w, k: (w.a_requested, w.a, w.lab_l, w.a_request, None), "issuer"
    ),
    "regulator: an inspection record in another region's name": Signing(
        Who.REGULATOR_OF_A, _INSPECTION, lambda w, k: (w.a_other, w.a, REGULATOR_OF_B), "issuer"
    ),
    "regulator: an inspection record in a district's name": Signing(
        Who.REGULATOR_OF_A, _INSPECTION, lambda w, k: (w.a_other, w.a, REGION_A), "issuer"
    ),
    "lab: a document in another lab's name": Signing(
        Who.LAB_OF_A, _DOCUMENT, lambda w, k: (w.a_requested, w.a, w.lab_m, None, None), "issuer"
    ),
    "lab: its document answering another lab's request": Signing(
        Who.LAB_OF_A, _DOCUMENT, lambda w, k: (w.a_requested, w.a, w.lab_l, w.b_request, None), "issuer"
    ),
    "lab: an inspection record": Signing(
        Who.LAB_OF_A, _INSPECTION, lambda w, k: (w.a_requested, w.a, REGULATOR_OF_A), "issuer"
    ),
    "lab: its document recorded as an admin's": Signing(
        Who.LAB_OF_A,
        _RECORDED_AS,
        lambda w, k: (w.a_requested, w.a, w.lab_l, w.a_request, k[Who.ADMIN], "admin"),
        "issuer",
    ),
    "lab: its document recorded by another key": Signing(
        Who.LAB_OF_A,
        _RECORDED_AS,
        lambda w, k: (w.a_requested, w.a, w.lab_l, w.a_request, k[Who.ENTERPRISE_A], "lab"),
        "issuer",
    ),
    "admin: a document recorded as the lab's": Signing(
        Who.ADMIN,
        _RECORDED_AS,
        lambda w, k: (w.a_requested, w.a, w.lab_l, w.a_request, k[Who.LAB_OF_A], "lab"),
        "issuer",
    ),
    "admin: a lab's document answering another lab's request": Signing(
        Who.ADMIN, _DOCUMENT, lambda w, k: (w.a_requested, w.a, w.lab_l, w.b_request, None), "issuer"
    ),
    "public: a correction of the certificate it checks": Signing(
        Who.PUBLIC, _DOCUMENT, lambda w, k: (w.a_requested, w.a, w.lab_l, None, w.a_certificate), "issuer"
    ),
    "lab: its own document answering its request": Signing(
        Who.LAB_OF_A, _DOCUMENT, lambda w, k: (w.a_requested, w.a, w.lab_l, w.a_request, None), None
    ),
    "admin: a lab's document": Signing(Who.ADMIN, _DOCUMENT, lambda w, k: (w.a_other, w.a, w.lab_m, None, None), None),
    "admin: an inspection record in the enterprise's region's name": Signing(
        Who.ADMIN, _INSPECTION, lambda w, k: (w.a_other, w.a, REGION_A), None
    ),
    "regulator: an inspection record in its own name": Signing(
        Who.REGULATOR_OF_A, _INSPECTION, lambda w, k: (w.a_other, w.a, REGULATOR_OF_A), None
    ),
    # Revocations: never the owner nor the public check; the revoker is the principal.
    "enterprise: revokes its certificate": Signing(
        Who.ENTERPRISE_A, _REVOCATION, lambda w, k: (w.a_certificate,), "revoker"
    ),
    "public: revokes the certificate it checks": Signing(
        Who.PUBLIC, _REVOCATION, lambda w, k: (w.a_certificate,), "revoker"
    ),
    "lab: revokes as an admin": Signing(
        Who.LAB_OF_A, _REVOKED_AS, lambda w, k: (w.a_certificate, k[Who.ADMIN], "admin"), "revoker"
    ),
    "admin: revokes as the lab": Signing(
        Who.ADMIN, _REVOKED_AS, lambda w, k: (w.a_certificate, k[Who.LAB_OF_A], "lab"), "revoker"
    ),
    "lab: revokes its certificate": Signing(Who.LAB_OF_A, _REVOCATION, lambda w, k: (w.a_certificate,), None),
    "regulator: revokes a certificate of its region": Signing(
        Who.REGULATOR_OF_A, _REVOCATION, lambda w, k: (w.a_certificate,), None
    ),
    "admin: revokes a certificate": Signing(Who.ADMIN, _REVOCATION, lambda w, k: (w.a_certificate,), None),
    # Request items: a result is given by a lab or an admin (the lab's own requests: the permissive policy).
    "enterprise: an item of its request with a result": Signing(
        Who.ENTERPRISE_A, _DONE_ITEM, lambda w, k: (w.a_request, w.a, w.a_other, w.a_certificate), "result_giver"
    ),
    "regulator: an item of a request of its region with a result": Signing(
        Who.REGULATOR_OF_A, _DONE_ITEM, lambda w, k: (w.a_request, w.a, w.a_other, w.a_certificate), "requester"
    ),
    "enterprise: an item of its request waiting for its result": Signing(
        Who.ENTERPRISE_A, _ITEM, lambda w, k: (w.a_request, w.a, w.a_other), None
    ),
    # Work orders (schema/0029): only an enterprise (its own: the permissive policy) or an admin
    # opens one or adds an item to one. A lab's request in its own name would make it one that
    # holds a request of that enterprise, and an item of it one that sees the instrument named.
    "lab: a work order of another enterprise for itself": Signing(
        Who.LAB_OF_A, _REQUEST, lambda w, k: (w.b, w.lab_l), "requester"
    ),
    "lab: a work order of its client for itself": Signing(
        Who.LAB_OF_A, _REQUEST, lambda w, k: (w.a, w.lab_l), "requester"
    ),
    "lab: an item of its own request": Signing(
        Who.LAB_OF_A, _ITEM, lambda w, k: (w.a_request, w.a, w.a_other), "requester"
    ),
    "regulator: a work order of an enterprise of its region": Signing(
        Who.REGULATOR_OF_A, _REQUEST, lambda w, k: (w.a, w.lab_l), "requester"
    ),
    "regulator: an item of a request of its region": Signing(
        Who.REGULATOR_OF_A, _ITEM, lambda w, k: (w.a_request, w.a, w.a_other), "requester"
    ),
    "enterprise: its own work order": Signing(Who.ENTERPRISE_A, _REQUEST, lambda w, k: (w.a, w.lab_m), None),
    "admin: a work order of an enterprise": Signing(Who.ADMIN, _REQUEST, lambda w, k: (w.b, w.lab_l), None),
    "admin: an item of a request": Signing(Who.ADMIN, _ITEM, lambda w, k: (w.a_request, w.a, w.a_other), None),
    # History: results and revocations by those who record and revoke documents.
    "enterprise: a result in its instrument's history": Signing(
        Who.ENTERPRISE_A, _RESULT_EVENT, lambda w, k: (w.a_requested, w.a_certificate), "result_writer"
    ),
    "enterprise: a revocation in its instrument's history": Signing(
        Who.ENTERPRISE_A, _REVOCATION_EVENT, lambda w, k: (w.a_requested, w.a_certificate), "result_writer"
    ),
    "enterprise: a seal in its instrument's history": Signing(
        Who.ENTERPRISE_A, _SEALED_EVENT, lambda w, k: (w.a_requested,), None
    ),
    "regulator: a result in the history of an instrument of its region": Signing(
        Who.REGULATOR_OF_A, _RESULT_EVENT, lambda w, k: (w.a_requested, w.a_certificate), None
    ),
    "regulator: a revocation in the history of an instrument of its region": Signing(
        Who.REGULATOR_OF_A, _REVOCATION_EVENT, lambda w, k: (w.a_requested, w.a_certificate), None
    ),
}


@pytest.fixture(scope="module")
async def key_ids(world: World, pool: asyncpg.Pool) -> KeyIds:
    return await _key_ids(world, pool, Who.ENTERPRISE_A, Who.ENTERPRISE_B, Who.REGULATOR_OF_A, Who.LAB_OF_A, Who.ADMIN)


@pytest.mark.parametrize("signing", list(_SIGNINGS))
async def test_only_the_issuer_signs_and_only_who_records_results_writes_them(
    signing: str, world: World, key_ids: KeyIds, api_pool: asyncpg.Pool
) -> None:
    who, sql, args, refused_by = dataclasses.astuple(_SIGNINGS[signing])
    async with acting(api_pool, world, who) as conn:
        if refused_by is None:
            assert await conn.execute(sql, *args(world, key_ids)) in ("INSERT 0 1", "UPDATE 1")
        else:
            with pytest.raises(
                asyncpg.InsufficientPrivilegeError, match=f'violates row-level security policy "{refused_by}"'
            ):
                await conn.execute(sql, *args(world, key_ids))


async def test_who_sees_nothing_of_an_instrument_signs_nothing_for_it(world: World, api_pool: asyncpg.Pool) -> None:
    """The permissive policy still comes first: regulator of A records nothing for B's instrument
    (region 62), in its own name or B's region's."""
    for region in (REGULATOR_OF_A, REGULATOR_OF_B):
        async with acting(api_pool, world, Who.REGULATOR_OF_A) as conn:
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="violates row-level security policy for"):
                await conn.execute(_INSPECTION, world.b_instrument, world.b, region)


@pytest.mark.parametrize("who", [Who.ENTERPRISE_A, Who.REGULATOR_OF_A])
async def test_an_enterprise_or_a_regulator_neither_gives_an_item_its_result_nor_takes_it_away(
    who: Who, world: World, api_pool: asyncpg.Pool
) -> None:
    """Lab L's item of A's request has its result: neither A nor its regulator may undo it or touch
    it (the item is not there for them to update), nor give a waiting item one (which A adds: only an
    enterprise or an admin adds items, schema/0029)."""
    async with acting(api_pool, world, Who.ENTERPRISE_A) as conn:
        assert await conn.execute(_ITEM, world.a_request, world.a, world.a_other) == "INSERT 0 1"
        if who is not Who.ENTERPRISE_A:
            await conn.execute(_FORGET_PRINCIPAL)
            await become(conn, world, who)
        for sql in (
            "UPDATE request_items SET certificate_id = NULL WHERE request_id = $1 AND instrument_id = $2",
            "UPDATE request_items SET withdrawn_on = '2026-06-15' WHERE request_id = $1 AND instrument_id = $2",
        ):
            assert await conn.execute(sql, world.a_request, world.a_requested) == "UPDATE 0", sql
        done = "SELECT certificate_id, withdrawn_on FROM request_items WHERE request_id = $1 AND instrument_id = $2"
        assert tuple(await conn.fetchrow(done, world.a_request, world.a_requested)) == (world.a_certificate, None)
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match='row-level security policy "result_keeper"'):
            await conn.execute(
                "UPDATE request_items SET certificate_id = $1 WHERE request_id = $2 AND instrument_id = $3",
                world.a_certificate,
                world.a_request,
                world.a_other,
            )


# Clears the principal of the transaction, so that another key may authenticate in it (the key
# check finds a key only before a principal is set, or as its own scope).
_FORGET_PRINCIPAL = """
    SELECT set_config(name, '', true)
    FROM unnest(ARRAY['metreg.role', 'metreg.key_id', 'metreg.enterprise_id', 'metreg.lab_id',
                      'metreg.region_code']) AS name"""

_API_PRINCIPALS = [Who.ENTERPRISE_A, Who.REGULATOR_OF_A, Who.LAB_OF_A, Who.ADMIN]


@pytest.mark.parametrize("who", _API_PRINCIPALS, ids=str)
async def test_no_api_principal_rewrites_a_history_event(who: Who, world: World, api_pool: asyncpg.Pool) -> None:
    async with acting(api_pool, world, who) as conn:
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied for table instrument_events"):
            await conn.execute(
                "UPDATE instrument_events SET reason = 'rewritten' WHERE instrument_id = $1", world.a_requested
            )


@pytest.mark.parametrize("who", _API_PRINCIPALS, ids=str)
async def test_no_api_principal_deletes_or_alters_a_certificate(who: Who, world: World, api_pool: asyncpg.Pool) -> None:
    """Whoever may revoke it: the revocation is the one change (schema/0005), deletion none."""
    async with acting(api_pool, world, who) as conn:
        with pytest.raises(asyncpg.RestrictViolationError, match="only a one-time revocation may be added"):
            await conn.execute("UPDATE certificates SET number = number || 'X' WHERE id = $1", world.a_certificate)
    async with acting(api_pool, world, who) as conn:
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied for table certificates"):
            await conn.execute("DELETE FROM certificates WHERE id = $1", world.a_certificate)


# A key's successor: (successor, key). A key of another role or scope, as each principal could
# once name one for a key of its own scope, and an admin for any.
_KEY_SUCCESSORS: dict[str, tuple[Who, Callable[[KeyIds], tuple[uuid.UUID, uuid.UUID]]]] = {
    "A's key to B's": (Who.ENTERPRISE_A, lambda k: (k[Who.ENTERPRISE_B], k[Who.ENTERPRISE_A])),
    "A's key to the admin's": (Who.ENTERPRISE_A, lambda k: (k[Who.ADMIN], k[Who.ENTERPRISE_A])),
    "lab L's key to A's": (Who.LAB_OF_A, lambda k: (k[Who.ENTERPRISE_A], k[Who.LAB_OF_A])),
    "the regulator's key to B's": (Who.REGULATOR_OF_A, lambda k: (k[Who.ENTERPRISE_B], k[Who.REGULATOR_OF_A])),
    "A's key to B's, by an admin": (Who.ADMIN, lambda k: (k[Who.ENTERPRISE_B], k[Who.ENTERPRISE_A])),
    "lab L's key to the regulator's, by an admin": (Who.ADMIN, lambda k: (k[Who.REGULATOR_OF_A], k[Who.LAB_OF_A])),
}
_SUCCESSOR = "UPDATE api_keys SET rotated_to = $1 WHERE id = $2"
_NOT_A_SUCCESSOR = 'violates foreign key constraint "api_keys_successor_(role|enterprise|lab|region)_fkey"'
# A key of A's scope, as rotate_key inserts a successor (its secret's hash aside), rotated to $2.
_NEW_KEY = """
    INSERT INTO api_keys (prefix, secret_sha256, role, name, enterprise_id, created_at, rotated_to)
    VALUES (substr(md5(gen_random_uuid()::text), 1, 12), sha256('rls'::bytea), 'enterprise', 'rls', $1, now(), $2)
    RETURNING id"""


@pytest.mark.parametrize("link", list(_KEY_SUCCESSORS))
async def test_no_key_is_rotated_to_a_key_of_another_role_or_scope(
    link: str, world: World, key_ids: KeyIds, api_pool: asyncpg.Pool, pool: asyncpg.Pool
) -> None:
    who, keys = _KEY_SUCCESSORS[link]
    async with acting(api_pool, world, who) as conn:
        with pytest.raises(asyncpg.ForeignKeyViolationError, match=_NOT_A_SUCCESSOR):
            await conn.execute(_SUCCESSOR, *keys(key_ids))
    async with pool.acquire() as conn, conn.transaction():  # the tables' owner
        with pytest.raises(asyncpg.ForeignKeyViolationError, match=_NOT_A_SUCCESSOR):
            await conn.execute(_SUCCESSOR, *keys(key_ids))


async def test_a_key_is_rotated_to_a_key_of_its_own_scope_only(
    world: World, key_ids: KeyIds, api_pool: asyncpg.Pool
) -> None:
    """As rotate_key does it: a new key of the same scope, and the old key pointed at it. A new key
    pointed at another tenant's is refused as an old one is."""
    async with acting(api_pool, world, Who.ENTERPRISE_A) as conn:
        successor = await conn.fetchval(_NEW_KEY, world.a, None)
        assert await conn.execute(_SUCCESSOR, successor, key_ids[Who.ENTERPRISE_A]) == "UPDATE 1"
    async with acting(api_pool, world, Who.ENTERPRISE_A) as conn:
        with pytest.raises(asyncpg.ForeignKeyViolationError, match=_NOT_A_SUCCESSOR):
            await conn.fetchval(_NEW_KEY, world.a, key_ids[Who.ENTERPRISE_B])


async def test_revoking_a_key_stops_at_a_link_into_another_scope(
    world: World, key_ids: KeyIds, pool: asyncpg.Pool
) -> None:
    """revoke_key's own guard, for a link the keys now refuse: with them dropped (and restored by
    the rollback), the revocation of A's key pointed at B's leaves B's working."""
    a_key, b_key = key_ids[Who.ENTERPRISE_A], key_ids[Who.ENTERPRISE_B]
    async with pool.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        try:
            for scope in ("role", "enterprise", "lab", "region"):
                await conn.execute(f"ALTER TABLE api_keys DROP CONSTRAINT api_keys_successor_{scope}_fkey")
            await conn.execute(_SUCCESSOR, b_key, a_key)
            revoked = await revoke_key(conn, a_key, NOW)  # type: ignore[arg-type]
            assert revoked is not None
            assert revoked.revoked_at == NOW
            assert await conn.fetchval("SELECT revoked_at FROM api_keys WHERE id = $1", b_key) is None
        finally:
            await transaction.rollback()


async def test_the_api_still_records_revokes_rotates_and_revokes_keys_as_each_signer(
    make_tenant: MakeTenant, make_lab: MakeLab, admin: Api, pool: asyncpg.Pool
) -> None:
    """Under the policies of schema/0028, through the API: lab L's result and lab M's failure, which
    voids lab L's certificate (a lab revoking another lab's document); an admin's result in lab L's
    name; a regulator's inspection; each document naming its recorder and revoker. Then a key
    rotated by itself and revoked by an admin takes its successor along and no other tenant's key."""
    tenant, bystander = await make_tenant(), await make_tenant()
    lab_l, lab_m = await make_lab(), await make_lab()
    regulator = Api(admin.client, await mint(pool, Role.REGULATOR, region_code="31"))

    async def key_id(api: Api) -> uuid.UUID:
        parsed = parse_key(api.key or "")
        assert parsed is not None
        found: uuid.UUID = await pool.fetchval("SELECT id FROM api_keys WHERE prefix = $1", parsed[0])
        return found

    gauge = await tenant.register(**GAUGE, last_verified_on=VERIFIED)
    other = await tenant.register(**GAUGE, last_verified_on=VERIFIED)
    await accepted_request(tenant, lab_l, gauge["id"])
    passed = await lab_l.record(gauge["id"])
    assert passed.status_code == 201, passed.text
    await accepted_request(tenant, lab_m, gauge["id"])
    failed = await lab_m.record(gauge["id"], kind="result_notice", outcome="fail", failed_items=["示值误差"])
    assert failed.status_code == 201, failed.text
    assert failed.json()["certificate"]["legal_effect"] == "voids"
    on_behalf = await admin.post(
        f"/v1/instruments/{other['id']}/certificates",
        json={
            "kind": "verification_certificate",
            "number": f"AD-{uuid.uuid4().hex[:8]}",
            "lab_id": lab_l.id,
            "performed_on": "2026-06-10",
            "issued_on": "2026-06-12",
        },
    )
    assert on_behalf.status_code == 201, on_behalf.text
    inspected = await regulator.post(
        f"/v1/instruments/{other['id']}/certificates",
        json={
            "kind": "inspection_record",
            "number": f"XJ-{uuid.uuid4().hex[:8]}",
            "outcome": "pass",
            "performed_on": "2026-06-11",
            "issued_on": "2026-06-11",
        },
    )
    assert inspected.status_code == 201, inspected.text

    documents = {
        row["id"]: tuple(row)[1:]
        for row in await pool.fetch(
            """SELECT id, lab_id, issuer_region, recorded_by_key, recorded_by_role, revoked_by_key, revoked_by_role
               FROM certificates WHERE enterprise_id = $1""",
            uuid.UUID(tenant.id),
        )
    }
    l_key, m_key = await key_id(lab_l.api), await key_id(lab_m.api)
    assert documents == {
        _id(passed.json()["certificate"]): (uuid.UUID(lab_l.id), None, l_key, "lab", m_key, "lab"),
        _id(failed.json()["certificate"]): (uuid.UUID(lab_m.id), None, m_key, "lab", None, None),
        _id(on_behalf.json()["certificate"]): (uuid.UUID(lab_l.id), None, await key_id(admin), "admin", None, None),
        _id(inspected.json()["certificate"]): (None, "31", await key_id(regulator), "regulator", None, None),
    }

    old = str(await key_id(tenant.api))
    rotated = await tenant.api.post(f"/v1/api-keys/{old}/rotate", json={"grace_seconds": 600})
    assert rotated.status_code == 201, rotated.text
    assert (await admin.delete(f"/v1/api-keys/{old}")).status_code == 204
    revoked = await pool.fetch(
        "SELECT id FROM api_keys WHERE revoked_at IS NOT NULL AND (enterprise_id = $1 OR enterprise_id = $2)",
        uuid.UUID(tenant.id),
        uuid.UUID(bystander.id),
    )
    assert {str(row["id"]) for row in revoked} == {old, rotated.json()["id"]}
    assert (await bystander.api.get(f"/v1/enterprises/{bystander.id}")).status_code == 200


# ---------------------------------------------------------------------------------------------
# Nothing outlives its transaction


async def test_the_principal_does_not_outlive_its_transaction_on_a_pooled_connection(
    world: World, database_url: str
) -> None:
    single = await create_pool(Settings(database_url=database_url, db_pool_min=1, db_pool_max=1, log_level="WARNING"))
    try:
        async with single.acquire() as conn:
            pid = conn.get_server_pid()
            for end in ("commit", "rollback"):
                transaction = conn.transaction()
                await transaction.start()
                await become(conn, world, Who.ENTERPRISE_A)
                assert await unfiltered(conn, "enterprises") == {str(world.a)}
                await (transaction.commit() if end == "commit" else transaction.rollback())
                # The same connection, after the transaction: no principal, no rows.
                assert await conn.fetchval("SELECT coalesce(current_setting('metreg.role', true), '')") == "", end
                assert await conn.fetchval("SELECT coalesce(current_setting('metreg.key_id', true), '')") == "", end
                assert await unfiltered(conn, "instruments") == set(), end
                async with conn.transaction():
                    assert await unfiltered(conn, "enterprises") == set(), end
        # Back in the pool and out again: the very same session, still nobody.
        async with single.acquire() as conn:
            assert conn.get_server_pid() == pid
            for table in TABLES:
                if table != "api_keys":  # which the key check must read before there is a principal
                    assert await unfiltered(conn, table) == set(), table
        # A principal set outside a transaction lasts only its own statement.
        async with single.acquire() as conn:
            await become(conn, world, Who.ADMIN)
            assert await unfiltered(conn, "enterprises") == set()
    finally:
        await single.close()


# ---------------------------------------------------------------------------------------------
# The worker's role


@pytest.mark.parametrize("table", WORKER_TABLES)
async def test_the_worker_sees_every_tenants_rows(
    table: str, world: World, worker_pool: asyncpg.Pool, pool: asyncpg.Pool
) -> None:
    expected = {row.key for row in await owners(pool, table)}
    async with worker_pool.acquire() as conn:
        visible = await unfiltered(conn, table)
    assert visible == expected
    assert {world.a, world.b} <= {row.enterprise for row in await owners(pool, table) if row.key in visible}


async def test_the_worker_writes_notices_deliveries_and_attempts_of_any_tenant(
    world: World, worker_pool: asyncpg.Pool
) -> None:
    async with worker_pool.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        try:
            notice = await conn.fetchval(
                """INSERT INTO notices (enterprise_id, instrument_id, kind, audience, region_code, cycle, step,
                                       due_on, next_attempt_at, created_at, updated_at)
                   VALUES ($1, $2, 'due_soon', 'enterprise', $3, '2026-11-30', 30, '2026-10-31', $4, $4, $4)
                   RETURNING id""",
                world.a,
                world.a_other,
                REGION_A,
                NOW,
            )
            assert (
                await conn.execute(
                    "UPDATE notices SET status = 'dispatched', dispatched_at = $2 WHERE id = $1", world.b_notice, NOW
                )
                == "UPDATE 1"
            )
            delivery = await conn.fetchval(
                """INSERT INTO deliveries (notice_id, channel, target, next_attempt_at, created_at, updated_at)
                   VALUES ($1, 'email', 'ops@example.com', $2, $2, $2) RETURNING id""",
                notice,
                NOW,
            )
            assert (
                await conn.execute(
                    "UPDATE deliveries SET attempts = 2, last_error = 'timeout' WHERE id = $1", world.b_delivery
                )
                == "UPDATE 1"
            )
            await conn.execute(
                """INSERT INTO delivery_attempts (delivery_id, attempt, started_at, duration_ms, outcome)
                   VALUES ($1, 1, $2, 5, 'delivered')""",
                delivery,
                NOW,
            )
            assert (
                await conn.execute("UPDATE delivery_attempts SET error = 'reset' WHERE id = $1", world.b_attempt)
                == "UPDATE 1"
            )
        finally:
            await transaction.rollback()


_FORGED_AUDIT_ROW = """
    INSERT INTO audit_log (seq, at, actor_role, action, entity, entity_id, operation, prev_hash, hash)
    VALUES (999999999, $1, 'admin', 'Forged', 'instruments', 'x', 'insert', decode(repeat('00', 32), 'hex'),
            decode(repeat('00', 32), 'hex'))"""

_AUDIT_WRITES: dict[str, tuple[str, Callable[[World], tuple[Any, ...]]]] = {
    "insert audit_log": (_FORGED_AUDIT_ROW, lambda w: (NOW,)),
    "update audit_log": ("UPDATE audit_log SET action = 'Forged'", lambda w: ()),
    "delete audit_log": ("DELETE FROM audit_log", lambda w: ()),
    "truncate audit_log": ("TRUNCATE audit_log", lambda w: ()),
}

_WORKER_REFUSED: dict[str, tuple[str, Callable[[World], tuple[Any, ...]]]] = {
    "rename an instrument": ("UPDATE instruments SET name = 'x' WHERE id = $1", lambda w: (w.a_requested,)),
    "insert an instrument": (
        "INSERT INTO instruments (enterprise_id, name, serial_no, regime) VALUES ($1, 'x', 'X-2', 'not_controlled')",
        lambda w: (w.a,),
    ),
    "update a certificate": ("UPDATE certificates SET conclusion = 'x' WHERE id = $1", lambda w: (w.a_certificate,)),
    "update an enterprise": ("UPDATE enterprises SET name = 'x' WHERE id = $1", lambda w: (w.a,)),
    "update an api key": ("UPDATE api_keys SET name = 'x'", lambda w: ()),
    "update a webhook": ("UPDATE webhooks SET active = false WHERE id = $1", lambda w: (w.b_webhook,)),
    # Nor, so, does it name any certificate in a request item or an event (schema/0023).
    "update a request item": (
        "UPDATE request_items SET certificate_id = $1 WHERE request_id = $2",
        lambda w: (w.b_certificate, w.a_request),
    ),
    "insert an event": (_RESULT_EVENT, lambda w: (w.a_requested, w.b_certificate)),
    # Nor an item or a certificate naming B's instrument (schema/0026).
    "insert a request item": (_ITEM, lambda w: (w.a_request, w.a, w.b_instrument)),
    "insert a certificate": (_DOCUMENT, lambda w: (w.b_instrument, w.a, w.lab_l, None, None)),
} | _AUDIT_WRITES

_API_REFUSED: dict[str, tuple[str, Callable[[World], tuple[Any, ...]]]] = {
    "delete an instrument": ("DELETE FROM instruments WHERE id = $1", lambda w: (w.a_other,)),
} | _AUDIT_WRITES


@pytest.mark.parametrize("write", list(_WORKER_REFUSED))
async def test_the_worker_is_refused(write: str, world: World, worker_pool: asyncpg.Pool) -> None:
    sql, args = _WORKER_REFUSED[write]
    async with worker_pool.acquire() as conn, conn.transaction():
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
            await conn.execute(sql, *args(world))


@pytest.mark.parametrize("write", list(_API_REFUSED))
async def test_the_api_is_refused_even_as_admin(write: str, world: World, api_pool: asyncpg.Pool) -> None:
    sql, args = _API_REFUSED[write]
    async with acting(api_pool, world, Who.ADMIN) as conn:
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
            await conn.execute(sql, *args(world))


# ---------------------------------------------------------------------------------------------
# Idempotency-Key answers: each API key's own, admins included (schema/0015_idempotency_keys.sql)


async def _key_ids(world: World, pool: asyncpg.Pool, *whos: Who) -> dict[Who, uuid.UUID]:
    found = {}
    for who in whos:
        parsed = parse_key(world.keys[who])
        assert parsed is not None
        found[who] = await pool.fetchval("SELECT id FROM api_keys WHERE prefix = $1", parsed[0])
    return found


@pytest.fixture(scope="module")
async def idempotency_rows(world: World, pool: asyncpg.Pool) -> dict[Who, uuid.UUID]:
    """An answered Idempotency-Key of A's, B's and the admin's key, the same string for each."""
    ids = await _key_ids(world, pool, Who.ENTERPRISE_A, Who.ENTERPRISE_B, Who.ADMIN)
    for key_id in ids.values():
        await pool.execute(
            """INSERT INTO idempotency_keys (key_id, idempotency_key, request, fingerprint, created_at, expires_at,
                                             status, media_type, body)
               VALUES ($1, 'rls-shared', 'POST /v1/x', $2, $3::timestamptz, $3::timestamptz + interval '1 day',
                       201, 'application/json', '{}')""",
            key_id,
            bytes(32),
            NOW,
        )
    return ids


@pytest.mark.parametrize("who", list(Who), ids=str)
async def test_a_key_sees_only_its_own_idempotency_answers(
    who: Who, idempotency_rows: dict[Who, uuid.UUID], world: World, api_pool: asyncpg.Pool
) -> None:
    async with acting(api_pool, world, who) as conn:
        seen = {row["key_id"] for row in await conn.fetch("SELECT key_id FROM idempotency_keys")}
    assert seen == ({idempotency_rows[who]} if who in idempotency_rows else set())


async def test_a_key_cannot_write_another_keys_idempotency_answers(
    idempotency_rows: dict[Who, uuid.UUID], world: World, api_pool: asyncpg.Pool
) -> None:
    async with acting(api_pool, world, Who.ADMIN) as conn:
        updated = await conn.execute(
            "UPDATE idempotency_keys SET status = 200 WHERE key_id = $1", idempotency_rows[Who.ENTERPRISE_A]
        )
        assert updated == "UPDATE 0"
    async with acting(api_pool, world, Who.ENTERPRISE_A) as conn:
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="new row violates row-level security policy"):
            await conn.execute(
                """INSERT INTO idempotency_keys (key_id, idempotency_key, request, fingerprint, created_at, expires_at)
                   VALUES ($1, 'forged', 'POST /v1/x', $2, $3::timestamptz, $3::timestamptz + interval '1 day')""",
                idempotency_rows[Who.ENTERPRISE_B],
                bytes(32),
                NOW,
            )
    async with acting(api_pool, world, Who.ENTERPRISE_A) as conn:
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
            await conn.execute("DELETE FROM idempotency_keys")


async def test_the_worker_sees_and_deletes_every_keys_idempotency_answers_and_changes_none(
    idempotency_rows: dict[Who, uuid.UUID], worker_pool: asyncpg.Pool
) -> None:
    async with worker_pool.acquire() as conn:
        for statement, refusal in [
            ("DELETE FROM idempotency_keys WHERE idempotency_key = 'rls-shared'", None),
            ("UPDATE idempotency_keys SET status = 200", "permission denied"),
        ]:
            transaction = conn.transaction()
            await transaction.start()
            try:
                if refusal is None:
                    assert await conn.execute(statement) == f"DELETE {len(idempotency_rows)}"
                else:
                    with pytest.raises(asyncpg.InsufficientPrivilegeError, match=refusal):
                        await conn.execute(statement)
            finally:
                await transaction.rollback()


async def test_a_claimed_key_cannot_commit_without_its_answer(world: World, pool: asyncpg.Pool) -> None:
    [key_id] = (await _key_ids(world, pool, Who.ENTERPRISE_A)).values()
    with pytest.raises(asyncpg.IntegrityConstraintViolationError, match="claimed but not answered"):
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(
                """INSERT INTO idempotency_keys (key_id, idempotency_key, request, fingerprint, created_at, expires_at)
                   VALUES ($1, 'unanswered', 'POST /v1/x', $2, $3::timestamptz, $3::timestamptz + interval '1 day')""",
                key_id,
                bytes(32),
                NOW,
            )
    assert await pool.fetchval("SELECT count(*) FROM idempotency_keys WHERE idempotency_key = 'unanswered'") == 0


# ---------------------------------------------------------------------------------------------
# A correction supersedes a document of its own issuer only (schema/0029_requesters_and_correctors.sql)

# An in-service inspection record correcting a document: instrument, enterprise, issuing region, the
# document it supersedes.
_INSPECTION_CORRECTION = f"""
    INSERT INTO certificates (instrument_id, enterprise_id, issuer_region, supersedes, correction_reason, kind,
                              number, outcome, performed_on, issued_on, legal_effect, effect_note, content_sha256,
                              recorded_by_key, recorded_by_role, recorded_at)
    VALUES ($1, $2, $3, $4, 'corrected', 'inspection_record', 'RLS-' || gen_random_uuid(), 'pass', '{VERIFIED}',
            '{VERIFIED}', 'none', 'x', repeat('0', 64), principal_key(), coalesce(principal_role(), 'regulator'),
            now())"""
# Lab L's certificate of A's instrument, corrected in lab M's name, or by an inspection record.
_CORRECTIONS_OF_ANOTHER_ISSUER: list[tuple[Who | None, str, Callable[[World], tuple[Any, ...]], str]] = [
    (who, _DOCUMENT, lambda w: (w.a_requested, w.a, w.lab_m, None, w.a_certificate), "certificates_corrected_lab_fkey")
    for who in (Who.ADMIN, None)
] + [
    (who, _INSPECTION_CORRECTION, lambda w: (w.a_requested, w.a, REGULATOR_OF_A, w.a_certificate),
     "certificates_corrected_region_fkey")
    for who in (Who.REGULATOR_OF_A, Who.ADMIN, None)
]  # fmt: skip


@pytest.mark.parametrize(
    ("who", "sql", "args", "key"),
    _CORRECTIONS_OF_ANOTHER_ISSUER,
    ids=[f"{who or 'owner'}-{key}" for who, _, _, key in _CORRECTIONS_OF_ANOTHER_ISSUER],
)
async def test_no_one_corrects_another_issuers_document(
    who: Who | None,
    sql: str,
    args: Callable[[World], tuple[Any, ...]],
    key: str,
    world: World,
    api_pool: asyncpg.Pool,
    pool: asyncpg.Pool,
) -> None:
    """The signers' policies let an admin record in any lab's or region's name and a regulator in
    its own: the document superseded must still be of that issuer (the tables' owner too)."""
    context = acting(api_pool, world, who) if who is not None else pool.acquire()
    async with context as conn:
        with pytest.raises(asyncpg.ForeignKeyViolationError, match=f'{_MISPOINTED} "{key}"'):
            async with conn.transaction():
                await conn.execute(sql, *args(world))


async def test_a_lab_corrects_its_own_documents_and_no_other_labs(
    make_tenant: MakeTenant, make_lab: MakeLab, api_pool: asyncpg.Pool
) -> None:
    """Lab 2 holds an accepted request for the instrument lab 1 issued a certificate for: the API
    refuses its correction of lab 1's certificate, and so does the database when lab 2 writes it
    itself; lab 1's own correction goes through the API."""
    first, second = await make_lab(), await make_lab()
    tenant = await make_tenant()
    instrument = await tenant.register(**GAUGE, last_verified_on=VERIFIED)
    await accepted_request(tenant, first, instrument["id"])
    recorded = await first.record(instrument["id"])
    assert recorded.status_code == 201, recorded.text
    certificate = recorded.json()["certificate"]["id"]
    await accepted_request(tenant, second, instrument["id"])

    refused = await second.record(instrument["id"], supersedes=certificate, correction_reason="结论笔误")
    assert refused.status_code == 403, refused.text
    parsed = parse_key(second.api.key or "")
    assert parsed is not None
    async with api_pool.acquire() as conn, conn.transaction():
        assert await conn.fetchrow(_AUTHENTICATE, parsed[0], hash_secret(parsed[1]), NOW, "rls-lab-2", "RlsTest")
        with pytest.raises(asyncpg.ForeignKeyViolationError, match=f'{_MISPOINTED} "certificates_corrected_lab_fkey"'):
            await conn.execute(
                _DOCUMENT, uuid.UUID(instrument["id"]), uuid.UUID(tenant.id), uuid.UUID(second.id), None,
                uuid.UUID(certificate),
            )  # fmt: skip

    corrected = await first.record(instrument["id"], supersedes=certificate, correction_reason="结论笔误")
    assert corrected.status_code == 201, corrected.text
    assert corrected.json()["certificate"]["supersedes"] == certificate
