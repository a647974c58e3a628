"""Plan, dispatch and deliver end to end: a real worker, a local webhook receiver and SMTP server."""

from __future__ import annotations

import datetime as dt
import uuid

import asyncpg
import pytest

from jobs.plan import plan
from jobs.worker import run_burst
from service.clock import FixedClock
from service.webhooks.signing import verify
from tests.conftest import Tenant, worker_settings
from tests.receivers import WebhookReceiver, smtp_server

NOW = dt.datetime(2026, 6, 15, 4, 0, tzinfo=dt.UTC)


async def add_webhook(pool: asyncpg.Pool, enterprise_id: str, url: str, events: list[str] | None = None) -> str:
    secret = f"whsec_{uuid.uuid4().hex}"
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO webhooks (enterprise_id, url, secret, events, created_at) VALUES ($1, $2, $3, $4, $5)",
            uuid.UUID(enterprise_id),
            url,
            secret,
            events or [],
            NOW,
        )
    return secret


@pytest.mark.timeout(60)
async def test_an_overdue_gauge_reaches_webhook_and_mail(tenant: Tenant, pool: asyncpg.Pool, database_url: str) -> None:
    gauge = await tenant.register(
        catalog_code="pressure_gauge", legal_use="safety_protection", last_verified_on="2025-12-01"
    )
    with WebhookReceiver().running() as receiver, smtp_server() as (smtp_url, inbox):
        secret = await add_webhook(pool, tenant.id, receiver.url)
        patch = await tenant.api.patch(f"/v1/enterprises/{tenant.id}", json={"notify_emails": ["ops@example.com"]})
        assert patch.status_code == 200, patch.text
        async with pool.acquire() as conn:
            await plan(conn, NOW)  # plans every enterprise of the test database; this one has one notice
        settings = worker_settings(database_url, smtp_url=smtp_url)
        burst = await run_burst(settings, FixedClock(NOW))
        assert burst.dispatched >= 1
        assert len(receiver.requests) == 1
        got = receiver.requests[0]
        assert got.json()["instrument"]["id"] == gauge["id"]
        assert got.json()["kind"] == "overdue"
        assert got.headers["metreg-event"] == "overdue"
        assert verify(secret, got.headers["metreg-signature"], got.body, now=int(NOW.timestamp()))
        assert len(inbox) == 1
        assert "已超过检定有效期" in inbox[0].get_content()
        notices = (await tenant.api.get("/v1/notices")).json()["items"]
        assert [n["status"] for n in notices] == ["delivered"]
        detail = (await tenant.api.get(f"/v1/notices/{notices[0]['id']}")).json()
        assert sorted(d["channel"] for d in detail["deliveries"]) == ["email", "webhook"]
        assert all(d["status"] == "delivered" and len(d["history"]) == 1 for d in detail["deliveries"])
        await run_burst(settings, FixedClock(NOW))
        assert len(receiver.requests) == 1


async def test_the_cron_ticks_plan_dispatch_and_send_digests(
    tenant: Tenant, pool: asyncpg.Pool, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The worker's own cron functions, called as arq calls them (a ctx holding the runtime)."""
    from jobs.runtime import Runtime
    from jobs.worker import digest_tick, dispatch_tick, plan_tick

    await tenant.register(catalog_code="pressure_gauge", legal_use="safety_protection", last_verified_on="2025-12-01")
    settings = worker_settings(database_url)
    runtime = await Runtime.open(settings, FixedClock(NOW))
    try:
        ctx = {"runtime": runtime}
        with caplog.at_level("INFO", logger="metreg.worker"):
            await plan_tick(ctx)
        planned = [r for r in caplog.records if r.getMessage() == "planned notices"]
        assert planned
        assert planned[0].notices_created.get("overdue", 0) >= 1  # type: ignore[attr-defined]
        await dispatch_tick(ctx)
        async with pool.acquire() as conn:
            status = await conn.fetchval(
                "SELECT status FROM notices WHERE enterprise_id = $1 AND kind = 'overdue'", uuid.UUID(tenant.id)
            )
        assert status == "dispatched"
        assert await runtime.queue.zcard(settings.queue_name) >= 1
        await digest_tick(ctx)  # nothing held: sends nothing, fails nothing
    finally:
        await runtime.close()
    await run_burst(settings, FixedClock(NOW))  # drains the queue: no job is left behind in Redis
    assert (await tenant.api.get("/v1/notices")).json()["items"][0]["status"] == "failed"  # no target
