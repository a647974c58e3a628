"""Limits at the door: per-key and per-address rate limits (real Redis, the app's FixedClock),
failing open without Redis, body size (413) and slow bodies (408), page size, security headers on
every kind of answer, and the OpenAPI entries that document them.

Each test builds its own app with the limits it exercises and a queue name of its own, so that its
buckets (``<queue_name>:rate:…`` in Redis) never meet another test's or another run's.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import re
import socket
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis
from litestar import Litestar

from service.app import create_app
from service.auth import Role
from service.clock import FixedClock
from service.settings import Settings
from tests.conftest import (
    GAUGE,
    NOW,
    REDIS_URL,
    Api,
    Tenant,
    fields_of,
    mint,
    new_credit_code,
    problem,
    running,
)

SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
}
API_HEADERS = {
    "content-security-policy": "default-src 'none'; frame-ancestors 'none'",
    "cache-control": "no-store",
}
# What an error answer must never carry: a traceback, the driver, SQL, a source file.
LEAKS = re.compile(r"Traceback|asyncpg|SELECT|INSERT|UPDATE api|File \"|\.py\b|site-packages|/work/|/usr/", re.I)


class Served:
    """An app of the test's own, running, with clients bound to client addresses."""

    def __init__(self, app: Litestar, settings: Settings, stack: contextlib.AsyncExitStack) -> None:
        self.app = app
        self.settings = settings
        self._stack = stack

    @property
    def namespace(self) -> str:
        return f"{self.settings.queue_name}:rate"

    async def client(self, address: tuple[str, int] = ("127.0.0.1", 123)) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.app, client=address)
        client = httpx.AsyncClient(transport=transport, base_url="http://metreg.test")
        return await self._stack.enter_async_context(client)


@contextlib.asynccontextmanager
async def serving(database_url: str, clock: FixedClock | None = None, **extra: Any) -> AsyncIterator[Served]:
    base: dict[str, Any] = {
        "database_url": database_url,
        "redis_url": REDIS_URL,
        "queue_name": f"metreg-test:{uuid.uuid4().hex[:12]}",
        "db_pool_min": 1,
        "db_pool_max": 4,
        "log_level": "WARNING",
    }
    settings = Settings(**(base | extra))
    app = create_app(settings, clock=clock or FixedClock(NOW))
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(running(app))
        yield Served(app, settings, stack)


@pytest.fixture
async def redis() -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(REDIS_URL, decode_responses=True)  # type: ignore[no-untyped-call]
    try:
        yield client
    finally:
        await client.aclose()


def prefix_of(key: str) -> str:
    return key.split("_")[1]


def assert_guarded(response: httpx.Response, *, api: bool = True) -> None:
    """Security headers, a request id, no server version; error bodies without internals."""
    what = f"{response.request.method} {response.request.url.path} -> {response.status_code}"
    headers = response.headers
    for name, value in SECURITY_HEADERS.items():
        assert headers.get(name) == value, f"{what}: {name}={headers.get(name)!r}"
    assert headers.get("strict-transport-security", "").startswith("max-age="), what
    for name, value in API_HEADERS.items():
        if api:
            assert headers.get(name) == value, f"{what}: {name}={headers.get(name)!r}"
        elif name == "content-security-policy":
            assert name not in headers, f"{what}: {name} on the docs"
    assert headers.get("x-request-id"), what
    assert not re.search(r"\d", headers.get("server", "")), f"{what}: server={headers.get('server')!r}"
    assert response.status_code < 500, f"{what}: {response.text}"
    if response.status_code >= 400:
        assert not LEAKS.search(response.text), f"{what}: {response.text}"
        assert headers["content-type"].startswith("application/problem+json"), what
        assert response.json()["request_id"] == headers["x-request-id"], what


def retry_after(response: httpx.Response) -> int:
    value = response.headers["retry-after"]
    assert value.isdigit(), value
    assert int(value) >= 1
    return int(value)


def enterprise_body(code: str, size: int | None = None) -> bytes:
    """A valid enterprise as JSON, padded with whitespace to ``size`` bytes."""
    raw = json.dumps({"name": "测试企业", "credit_code": code, "region_code": "310115"}, ensure_ascii=False).encode()
    if size is not None:
        assert len(raw) <= size
        raw += b" " * (size - len(raw))
    return raw


async def stored_codes(pool: asyncpg.Pool, *codes: str) -> set[str]:
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT credit_code FROM enterprises WHERE credit_code = ANY($1)", list(codes))
    return {r["credit_code"] for r in rows}


JSON = {"content-type": "application/json"}


# ---------------------------------------------------------------------------------------------
# Per-key rate limits


@pytest.mark.parametrize("rate", [1.0, 0.25])
async def test_each_key_has_a_bucket_of_its_own(
    database_url: str, pool: asyncpg.Pool, redis: aioredis.Redis, rate: float
) -> None:
    clock = FixedClock(NOW)
    async with serving(database_url, clock, rate_limit=rate, rate_burst=3) as served:
        client = await served.client()
        a_key, b_key = await mint(pool, Role.ADMIN), await mint(pool, Role.ADMIN)
        a, b = Api(client, a_key), Api(client, b_key)
        for _ in range(3):
            assert (await a.get("/v1/catalog")).status_code == 200

        refused = await a.get("/v1/catalog", headers={"X-Request-ID": "flood-1"})
        body = problem(refused, 429)
        assert body["request_id"] == "flood-1"
        assert body["type"] == "urn:metreg:problem:too-many-requests"
        wait = retry_after(refused)
        assert wait == round(1 / rate)  # one token at `rate` a second
        assert str(wait) in body["detail"]
        assert_guarded(refused)
        # Writes are refused as well, before anything is read or written.
        code = new_credit_code()
        problem(await a.post("/v1/enterprises", content=enterprise_body(code), headers=JSON), 429)
        assert await stored_codes(pool, code) == set()

        # Another key is unaffected.
        for _ in range(3):
            assert (await b.get("/v1/catalog")).status_code == 200

        # Requests without a well-formed key are not counted: still 401, and no bucket for them.
        for header in (None, "Bearer", "Basic dXNlcjpwYXNz", "Bearer not-a-key", f"Bearer mr_{prefix_of(a_key)}_"):
            problem(await client.get("/v1/catalog", headers={"Authorization": header} if header else {}), 401)
        # A key behind a malformed first header neither authenticates nor escapes its bucket.
        hidden = await client.get(
            "/v1/catalog", headers=[("authorization", "Bearer junk"), ("authorization", f"Bearer {a_key}")]
        )
        problem(hidden, 401)
        # A wrong secret for a key's prefix is that key's bucket: a flood of guesses is limited too.
        problem(await Api(client, f"mr_{prefix_of(a_key)}_{'A' * 43}").get("/v1/catalog"), 429)

        buckets = sorted([k async for k in redis.scan_iter(match=f"{served.namespace}:*")])
        assert buckets == sorted(f"{served.namespace}:key:{prefix_of(k)}" for k in (a_key, b_key))
        state = await redis.hgetall(f"{served.namespace}:key:{prefix_of(a_key)}")
        assert float(state["tokens"]) < 1
        assert int(state["at"]) == int(NOW.timestamp() * 1000)
        assert await redis.pttl(f"{served.namespace}:key:{prefix_of(a_key)}") > 0

        # Not a second too early: short of Retry-After it is still refused.
        if wait > 1:
            clock.set(NOW + dt.timedelta(seconds=wait - 1))
            problem(await a.get("/v1/catalog"), 429)
        # After Retry-After, one more goes through, and then the bucket is empty again.
        clock.set(NOW + dt.timedelta(seconds=wait))
        assert (await a.get("/v1/catalog")).status_code == 200
        problem(await a.get("/v1/catalog"), 429)


async def test_a_limited_key_touches_no_row(database_url: str, pool: asyncpg.Pool) -> None:
    """A refused request costs no database round trip: not even the key's use is recorded."""
    clock = FixedClock(NOW)
    # One token per 1000 s: two minutes later the bucket is still short of one.
    async with serving(database_url, clock, rate_limit=0.001, rate_burst=1) as served:
        api = Api(await served.client(), await mint(pool, Role.ADMIN))
        assert (await api.get("/v1/catalog")).status_code == 200
        clock.set(NOW + dt.timedelta(minutes=2))  # authentication would now record a use
        refused = await api.get("/v1/catalog")
        problem(refused, 429)
        assert retry_after(refused) in (880, 881)  # 0.88 of a token missing at 0.001 a second (float rounding)
        async with pool.acquire() as conn:
            used = await conn.fetchval("SELECT last_used_at FROM api_keys WHERE prefix = $1", prefix_of(api.key or ""))
        assert used == NOW


# ---------------------------------------------------------------------------------------------
# The public check, per client address


async def test_the_public_check_is_limited_per_client_address(
    database_url: str, pool: asyncpg.Pool, redis: aioredis.Redis
) -> None:
    async with serving(database_url, public_rate_limit=1, public_rate_burst=2) as served:
        first = await served.client(("1.2.3.4", 123))
        second = await served.client(("5.6.7.8", 123))
        same_host = await served.client(("1.2.3.4", 4567))
        url = f"/v1/public/certificates/{uuid.uuid4()}/JD-0001"
        for _ in range(2):
            problem(await first.get(url), 404)
        refused = await first.get(url)
        problem(refused, 429)
        retry_after(refused)
        assert_guarded(refused)
        # Per address, not per URL or per connection.
        problem(await first.get(f"/v1/public/certificates/{uuid.uuid4()}/other"), 429)
        problem(await same_host.get(url), 429)
        # Routing reads // as /: so do the limits.
        for doubled in ("/v1//public/", "/v1/public//"):
            problem(await first.get(url.replace("/v1/public/", doubled)), 429)
        # Headers a client writes itself do not name another address (proxies are uvicorn's to trust).
        spoofed = {"X-Forwarded-For": "9.9.9.9", "X-Real-IP": "9.9.9.9", "Forwarded": "for=9.9.9.9"}
        problem(await first.get(url, headers=spoofed), 429)
        # Another address is unaffected.
        for _ in range(2):
            problem(await second.get(url), 404)
        # A key does not lift the public limit; and public checks do not use up the key's bucket.
        key = await mint(pool, Role.ADMIN)
        problem(await first.get(url, headers={"Authorization": f"Bearer {key}"}), 429)
        assert (await Api(first, key).get("/v1/catalog")).status_code == 200

        buckets = {k async for k in redis.scan_iter(match=f"{served.namespace}:address:*")}
        assert buckets == {f"{served.namespace}:address:1.2.3.4", f"{served.namespace}:address:5.6.7.8"}


# ---------------------------------------------------------------------------------------------
# Without Redis


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_without_redis_requests_pass(
    database_url: str, pool: asyncpg.Pool, caplog: pytest.LogCaptureFixture
) -> None:
    async with serving(
        database_url,
        redis_url=f"redis://127.0.0.1:{_closed_port()}/0",
        rate_limit=1,
        rate_burst=1,
        public_rate_limit=1,
        public_rate_burst=1,
    ) as served:
        logging.getLogger().addHandler(caplog.handler)  # create_app replaced the root handlers
        client = await served.client()
        api = Api(client, await mint(pool, Role.ADMIN))
        for _ in range(4):
            assert (await api.get("/v1/catalog")).status_code == 200
        code = new_credit_code()
        assert (await api.post("/v1/enterprises", content=enterprise_body(code), headers=JSON)).status_code == 201
        for _ in range(3):
            problem(await client.get(f"/v1/public/certificates/{uuid.uuid4()}/JD-1"), 404)
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["status"] == "unavailable"
        assert ready.json()["checks"]["postgresql"] == "ok"
        assert ready.json()["checks"]["redis"].startswith("unavailable")
    warnings = [r.getMessage() for r in caplog.records if r.name == "metreg.limits"]
    assert warnings
    assert all("rate limits are not applied" in w for w in warnings)
    assert len(warnings) == 1  # paced: once, not once a request


# ---------------------------------------------------------------------------------------------
# Request bodies


async def _chunks(body: bytes, size: int = 512) -> AsyncIterator[bytes]:
    for start in range(0, len(body), size):
        await asyncio.sleep(0)
        yield body[start : start + size]


async def test_oversized_bodies_are_413_and_nothing_is_written(database_url: str, pool: asyncpg.Pool) -> None:
    async with serving(database_url, max_body_bytes=2048) as served:
        api = Api(await served.client(), await mint(pool, Role.ADMIN))
        at_limit, streamed_at_limit, announced, streamed = (new_credit_code() for _ in range(4))

        # Up to the limit is accepted, announced or streamed.
        response = await api.post("/v1/enterprises", content=enterprise_body(at_limit, 2048), headers=JSON)
        assert response.status_code == 201, response.text
        response = await api.post(
            "/v1/enterprises", content=_chunks(enterprise_body(streamed_at_limit, 2048)), headers=JSON
        )
        assert response.status_code == 201, response.text

        # One byte more, with Content-Length.
        response = await api.post("/v1/enterprises", content=enterprise_body(announced, 2049), headers=JSON)
        assert response.request.headers["content-length"] == "2049"
        assert_guarded(response)
        problem(response, 413)
        # Without Content-Length (chunked): counted as it arrives.
        response = await api.post("/v1/enterprises", content=_chunks(enterprise_body(streamed, 8192)), headers=JSON)
        assert "content-length" not in response.request.headers
        assert response.request.headers["transfer-encoding"] == "chunked"
        assert_guarded(response)
        problem(response, 413)

        assert await stored_codes(pool, at_limit, streamed_at_limit, announced, streamed) == {
            at_limit,
            streamed_at_limit,
        }


async def test_a_413_names_the_limit(database_url: str, pool: asyncpg.Pool) -> None:
    async with serving(database_url, max_body_bytes=2048) as served:
        api = Api(await served.client(), await mint(pool, Role.ADMIN))
        for content in (enterprise_body(new_credit_code(), 4096), _chunks(enterprise_body(new_credit_code(), 4096))):
            body = problem(await api.post("/v1/enterprises", content=content, headers=JSON), 413)
            assert "2048" in body["detail"], body["detail"]


async def test_a_slow_body_is_408_and_nothing_is_written(database_url: str, pool: asyncpg.Pool) -> None:
    async with serving(database_url, client_timeout_s=0.2) as served:
        api = Api(await served.client(), await mint(pool, Role.ADMIN))
        late, stalled, prompt = new_credit_code(), new_credit_code(), new_credit_code()

        async def stalls_midway(body: bytes) -> AsyncIterator[bytes]:
            yield body[:20]
            await asyncio.sleep(3)  # far beyond client_timeout_s: cancelled by the 408
            yield body[20:]

        async def stalls_first(body: bytes) -> AsyncIterator[bytes]:
            await asyncio.sleep(3)
            yield body

        for code, stream in ((late, stalls_midway), (stalled, stalls_first)):
            response = await api.post("/v1/enterprises", content=stream(enterprise_body(code)), headers=JSON)
            body = problem(response, 408)
            assert body["type"] == "urn:metreg:problem:request-timeout"
            assert body["detail"] == "the request body did not arrive in time"
            assert_guarded(response)

        # Parts that follow each other promptly are fine, however many.
        response = await api.post("/v1/enterprises", content=_chunks(enterprise_body(prompt), 7), headers=JSON)
        assert response.status_code == 201, response.text
        assert await stored_codes(pool, late, stalled, prompt) == {prompt}


# ---------------------------------------------------------------------------------------------
# Page size


async def test_pages_hold_at_most_500(admin: Api, tenant: Tenant) -> None:
    instrument = await tenant.register(**GAUGE)
    for url in (
        "/v1/api-keys",
        "/v1/audit",
        "/v1/verification-requests",
        "/v1/notices",
        tenant.instruments_url,
        f"/v1/instruments/{instrument['id']}/history",
        f"/v1/instruments/{instrument['id']}/certificates",
    ):
        response = await admin.get(url, params={"limit": 500})
        assert response.status_code == 200, f"{url}: {response.text}"
        body = problem(await admin.get(url, params={"limit": 501}), 400)
        assert fields_of(body) == ["limit"], url
        assert "limit" in body["detail"], url


# ---------------------------------------------------------------------------------------------
# Headers and error bodies


async def test_every_kind_of_answer_is_guarded(database_url: str, pool: asyncpg.Pool) -> None:
    async with serving(database_url, rate_limit=1, rate_burst=3, max_body_bytes=2048, client_timeout_s=0.2) as served:
        client = await served.client()

        async def admin() -> Api:
            return Api(client, await mint(pool, Role.ADMIN))  # a bucket of its own for each answer

        regulator = Api(client, await mint(pool, Role.REGULATOR, region_code="31"))
        code = new_credit_code()
        created = await (await admin()).post("/v1/enterprises", content=enterprise_body(code), headers=JSON)
        assert created.status_code == 201

        async def never_finishes() -> AsyncIterator[bytes]:
            yield b'{"name": '
            await asyncio.sleep(3)
            yield b'"x"}'

        flooded = await admin()
        for _ in range(3):
            await flooded.get("/v1/catalog")
        answers: dict[str, httpx.Response] = {
            "200": await (await admin()).get("/v1/catalog"),
            "200 health": await client.get("/healthz"),
            "200 ready": await client.get("/readyz"),
            "400 bad json": await (await admin()).post("/v1/enterprises", content=b'{"name": "x",', headers=JSON),
            "400 bad uuid": await (await admin()).get("/v1/api-keys/not-a-uuid"),
            "400 bad field": await (await admin()).post("/v1/api-keys", json={"role": "owner", "name": "x"}),
            "401": await client.get("/v1/catalog"),
            "403": await regulator.post("/v1/api-keys", json={"role": "admin", "name": "x"}),
            "404 resource": await (await admin()).get(f"/v1/api-keys/{uuid.uuid4()}"),
            "404 route": await (await admin()).get("/v1/no-such-thing"),
            "404 route outside /v1": await client.get("/no-such-thing"),
            "404 public": await client.get(f"/v1/public/certificates/{uuid.uuid4()}/JD-1"),
            "405": await (await admin()).delete("/v1/catalog"),
            "408": await (await admin()).post("/v1/enterprises", content=never_finishes(), headers=JSON),
            "409": await (await admin()).post("/v1/enterprises", content=enterprise_body(code), headers=JSON),
            "413": await (await admin()).post("/v1/enterprises", content=b"[" + b" " * 4096 + b"]", headers=JSON),
            "422": await (await admin()).post(
                "/v1/api-keys", json={"role": "admin", "name": "x", "expires_at": "2020-01-01T00:00:00Z"}
            ),
            "429": await flooded.get("/v1/catalog"),
        }
        for label, response in answers.items():
            assert response.status_code == int(label.split()[0]), f"{label}: {response.status_code} {response.text}"
            assert_guarded(response)
        assert "allow" in {k.lower() for k in answers["405"].headers}

        for path in ("/docs", "/docs/openapi.json"):
            docs = await client.get(path)
            assert docs.status_code == 200, path
            assert_guarded(docs, api=False)


# ---------------------------------------------------------------------------------------------
# OpenAPI


def test_openapi_documents_429_and_503_everywhere_and_408_with_every_body() -> None:
    app = create_app(Settings(database_url="postgresql://unused/unused"))
    paths = app.openapi_schema.to_schema()["paths"]
    missing: list[str] = []
    operations = 0
    for path, item in paths.items():
        if not path.startswith("/v1/"):
            continue  # /healthz, /readyz: not rate limited
        for method, op in item.items():
            if not isinstance(op, dict) or "operationId" not in op:
                continue
            operations += 1
            responses = op.get("responses", {})
            wanted = ["429", "503"] + (["408", "413"] if "requestBody" in op else [])
            for status in wanted:
                entry = responses.get(status)
                if entry is None:
                    missing.append(f"{op['operationId']} ({method.upper()} {path}) lacks {status}")
                elif "application/problem+json" not in entry.get("content", {}):
                    missing.append(f"{op['operationId']} ({method.upper()} {path}): {status} is not a problem")
            for param in op.get("parameters", []):
                if param["name"] == "limit":
                    assert param["schema"]["maximum"] == 500, op["operationId"]
    assert operations > 30
    assert not missing, "\n".join(missing)
