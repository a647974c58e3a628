"""Shared fixtures: one real PostgreSQL database per test process, the app on the test's own event loop.

The database is created with a unique name, migrated once, and dropped at the end (`make test`
runs two processes, pytest-xdist's workers, each with its own). Tests do not
truncate: each builds its own enterprises (unique credit codes), so they never see each other's
rows. The app runs in the same loop as the tests (httpx ASGITransport + the app's lifespan), so a
test can read the database the app just wrote.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import httpx
import pytest
from litestar import Litestar

from service import migrate
from service.app import create_app
from service.auth import Role
from service.clock import FixedClock
from service.db import init_connection
from service.enterprises.rules import credit_code_check_char
from service.keys.queries import create_key
from service.keys.schemas import ApiKeyCreate
from service.settings import Settings

BASE_DSN = os.environ.get("METREG_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("METREG_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
# A compulsory pressure gauge (JJG 52-2013: 6 months at most), the register's most common instrument.
GAUGE = {"catalog_code": "pressure_gauge", "legal_use": "safety_protection"}
# A fixed instant: 12:00 in Shanghai on 2026-06-15.
NOW = dt.datetime(2026, 6, 15, 4, 0, tzinfo=dt.UTC)


@pytest.fixture(autouse=True)
def _clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests build Settings explicitly; stray METREG_* variables must not leak in."""
    for name in list(os.environ):
        if name.startswith("METREG_") and not name.startswith("METREG_TEST_"):
            monkeypatch.delenv(name)


@contextlib.asynccontextmanager
async def fresh_database(prefix: str, migrated_at: dt.datetime = NOW) -> AsyncIterator[str]:
    """A migrated database of a unique name, dropped on the way out (even with sessions left in it)."""
    dsn = f"{BASE_DSN.rsplit('/', 1)[0]}/{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    await migrate.create_database(dsn)
    try:
        await migrate.migrate(dsn, migrated_at)
        yield dsn
    finally:
        await migrate.drop_database(dsn)


@pytest.fixture(scope="session")
async def database_url() -> AsyncIterator[str]:
    async with fresh_database("metreg_test") as dsn:
        yield dsn


def worker_settings(database_url: str, **extra: object) -> Settings:
    """Worker settings with a queue of the test's own on the test Redis, private webhooks allowed."""
    base: dict[str, object] = {
        "database_url": database_url,
        "redis_url": REDIS_URL,
        "queue_name": f"metreg-test:{uuid.uuid4().hex[:12]}",
        "allow_private_webhooks": True,
        "db_pool_min": 1,
        "db_pool_max": 4,
        "send_timeout_s": 2.0,
        "log_level": "WARNING",
    }
    return Settings(**(base | extra))  # type: ignore[arg-type]


@pytest.fixture(scope="session")
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    """A pool of the tests' own, for arranging and inspecting rows directly."""
    async with asyncpg.create_pool(database_url, min_size=1, max_size=4, init=init_connection) as p:
        yield p


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(NOW)


def app_settings(database_url: str, **extra: object) -> Settings:
    """Settings of an app on the test database: a small pool, quiet logs, and rate limits off (the
    clock stands still, so buckets would never refill; their own tests turn them on)."""
    base: dict[str, object] = {
        "database_url": database_url,
        "redis_url": REDIS_URL,
        "db_pool_min": 1,
        "db_pool_max": 4,
        "log_level": "WARNING",
        "rate_limit": 0,
        "public_rate_limit": 0,
    }
    return Settings(**(base | extra))  # type: ignore[arg-type]


@pytest.fixture
async def app_client(database_url: str, clock: FixedClock) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(app_settings(database_url), clock=clock)
    async with running(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://metreg.test") as client:
            yield client


@contextlib.asynccontextmanager
async def running(app: Litestar) -> AsyncIterator[None]:
    """Run the app's lifespan in a task of its own.

    anyio's cancel scopes must be left by the task that entered them, and pytest-asyncio may tear a
    fixture down in another task than the one that set it up.
    """
    started, stop = asyncio.Event(), asyncio.Event()

    async def hold() -> None:
        async with app.lifespan():
            started.set()
            await stop.wait()

    task = asyncio.create_task(hold())
    waiter = asyncio.create_task(started.wait())
    await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        waiter.cancel()
        task.result()  # raises what broke start-up
    try:
        yield
    finally:
        stop.set()
        await task


class Api:
    """A test client bound to a key: ``await api.get(...)`` sends ``Authorization: Bearer``."""

    def __init__(self, client: httpx.AsyncClient, key: str | None) -> None:
        self.client = client
        self.key = key

    def _headers(self, extra: dict[str, str] | None) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.key}"} if self.key else {}
        return headers | (extra or {})

    async def request(self, method: str, url: str, headers: dict[str, str] | None = None, **kw: Any) -> httpx.Response:
        return await self.client.request(method, url, headers=self._headers(headers), **kw)

    async def get(self, url: str, **kw: Any) -> httpx.Response:
        return await self.request("GET", url, **kw)

    async def post(self, url: str, **kw: Any) -> httpx.Response:
        return await self.request("POST", url, **kw)

    async def patch(self, url: str, **kw: Any) -> httpx.Response:
        return await self.request("PATCH", url, **kw)

    async def delete(self, url: str, **kw: Any) -> httpx.Response:
        return await self.request("DELETE", url, **kw)


async def mint(pool: asyncpg.Pool, role: Role, **scope: Any) -> str:
    async with pool.acquire() as conn:
        created = await create_key(conn, ApiKeyCreate(role=role, name=f"test {role}", **scope), NOW)
    return created.key


def new_credit_code(rng: random.Random | None = None) -> str:
    rng = rng or random.Random()
    charset = "0123456789ABCDEFGHJKLMNPQRTUWXY"
    first17 = "91" + "310115" + "".join(rng.choice(charset) for _ in range(9))
    return first17 + credit_code_check_char(first17)


@pytest.fixture
async def admin(app_client: httpx.AsyncClient, pool: asyncpg.Pool) -> Api:
    return Api(app_client, await mint(pool, Role.ADMIN))


@pytest.fixture
def anonymous(app_client: httpx.AsyncClient) -> Api:
    return Api(app_client, None)


class Tenant:
    """An enterprise created through the API, with a key of its own."""

    def __init__(self, enterprise: dict[str, Any], api: Api) -> None:
        self.enterprise = enterprise
        self.id: str = enterprise["id"]
        self.api = api

    @property
    def instruments_url(self) -> str:
        return f"/v1/enterprises/{self.id}/instruments"

    async def register(self, **fields: Any) -> dict[str, Any]:
        body = {"name": "一般压力表", "serial_no": uuid.uuid4().hex[:10]} | fields
        response = await self.api.post(self.instruments_url, json=body)
        assert response.status_code == 201, response.text
        return response.json()


MakeTenant = Callable[..., Awaitable[Tenant]]


@pytest.fixture
def make_tenant(admin: Api, app_client: httpx.AsyncClient, pool: asyncpg.Pool) -> MakeTenant:
    async def make(**fields: Any) -> Tenant:
        body = {"name": "测试企业", "credit_code": new_credit_code(), "region_code": "310115"} | fields
        response = await admin.post("/v1/enterprises", json=body)
        assert response.status_code == 201, response.text
        enterprise = response.json()
        key = await mint(pool, Role.ENTERPRISE, enterprise_id=uuid.UUID(enterprise["id"]))
        return Tenant(enterprise, Api(app_client, key))

    return make


@pytest.fixture
async def tenant(make_tenant: MakeTenant) -> Tenant:
    return await make_tenant()


def problem(response: httpx.Response, status: int) -> dict[str, Any]:
    """Assert ``response`` is a problem+json with ``status`` and return its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json"), response.headers
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["type"].startswith("urn:metreg:problem:")
    assert body["request_id"] == response.headers["x-request-id"]
    return body


def fields_of(body: dict[str, Any]) -> list[str]:
    return [e["field"] for e in body.get("errors", [])]


ALL_CODES = [
    "pressure_gauge",
    "fuel_dispenser",
    "price_scale",
    "electronic_balance",
    "weights",
    "taximeter",
    "sphygmomanometer",
    "bp_monitor_automated",
    "clinical_thermometer_glass",
    "water_meter_dn25",
    "water_meter_dn50",
    "water_meter_large",
    "gas_meter_household",
    "electricity_meter_household",
    "breath_alcohol_analyser",
    "speed_radar",
    "sound_level_meter",
    "combustible_gas_detector",
    "co_detector",
]


class LabAccount:
    """A lab created through the API, with a key of its own."""

    def __init__(self, lab: dict[str, Any], api: Api) -> None:
        self.lab = lab
        self.id: str = lab["id"]
        self.api = api

    async def accept(self, request_id: str) -> dict[str, Any]:
        response = await self.api.post(f"/v1/verification-requests/{request_id}/accept")
        assert response.status_code == 200, response.text
        return response.json()

    async def record(self, instrument_id: str, **fields: Any) -> httpx.Response:
        body = {
            "kind": "verification_certificate",
            "number": f"JD-{uuid.uuid4().hex[:10]}",
            "performed_on": "2026-06-10",
            "issued_on": "2026-06-12",
        } | fields
        return await self.api.post(f"/v1/instruments/{instrument_id}/certificates", json=body)


MakeLab = Callable[..., Awaitable[LabAccount]]


@pytest.fixture
def make_lab(admin: Api, app_client: httpx.AsyncClient, pool: asyncpg.Pool) -> MakeLab:
    async def make(**fields: Any) -> LabAccount:
        body = {
            "name": "上海市计量测试技术研究院",
            "accreditation_no": f"(2026)国量标沪证字第{random.randint(100, 999)}号",
            "region_code": "310115",
            "scope": ALL_CODES,
        } | fields
        response = await admin.post("/v1/labs", json=body)
        assert response.status_code == 201, response.text
        lab = response.json()
        key = await mint(pool, Role.LAB, lab_id=uuid.UUID(lab["id"]))
        return LabAccount(lab, Api(app_client, key))

    return make


@pytest.fixture
async def lab(make_lab: MakeLab) -> LabAccount:
    return await make_lab()


async def accepted_request(tenant: Tenant, lab: LabAccount, *instrument_ids: str) -> dict[str, Any]:
    """A request of ``tenant`` to ``lab`` for the instruments, accepted by the lab."""
    response = await tenant.api.post(
        "/v1/verification-requests", json={"lab_id": lab.id, "instrument_ids": list(instrument_ids)}
    )
    assert response.status_code == 201, response.text
    return await lab.accept(response.json()["id"])
