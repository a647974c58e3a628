"""``POST /v1/deliveries/{id}/retry`` and ``POST /v1/webhooks/{id}/ping`` through the API.

Retries are arranged end to end: a webhook on a local receiver, the planner and a burst of the real
worker (``run_burst``) at the app's instant NOW, so a delivery has really failed before it is tried
again. Webhooks on loopback need an app with ``allow_private_webhooks``: ``private`` is such an app
on the same database (keys minted by the conftest fixtures work on both).

The planner and the burst work on the whole test database; each test looks only at its own
enterprise's notices. An escalation goes to every regulator webhook whose region covers the
enterprise, so the escalation tests put their enterprises in regions (65xxxx) no other test uses.
"""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import msgspec
import pytest

from jobs.plan import plan
from jobs.worker import run_burst
from service.app import create_app
from service.auth import Role
from service.clock import FixedClock
from service.webhooks.schemas import PingResult
from service.webhooks.signing import verify
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
    worker_settings,
)
from tests.receivers import Received, WebhookReceiver

NOW_ISO = "2026-06-15T04:00:00Z"
# Verified 2025-12-01, a gauge is valid until 2026-05-31: on NOW it is 14 days overdue (one overdue
# notice, no escalation yet). Verified 2025-10-01 it is 75 days overdue: an escalation as well.
OVERDUE = "2025-12-01"
LONG_OVERDUE = "2025-10-01"


@pytest.fixture
async def private(database_url: str, clock: FixedClock) -> AsyncIterator[httpx.AsyncClient]:
    """The app on the test database, accepting webhooks on loopback and plain http."""
    settings = app_settings(database_url, allow_private_webhooks=True, send_timeout_s=1.0)
    app = create_app(settings, clock=clock)
    async with running(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://metreg.test") as client:
            yield client


def on(client: httpx.AsyncClient, api: Api) -> Api:
    """The same key on another app."""
    return Api(client, api.key)


async def create_webhook(api: Api, url: str, **fields: Any) -> tuple[str, str]:
    """(webhook id, secret)."""
    response = await api.post("/v1/webhooks", json={"url": url} | fields)
    assert response.status_code == 201, response.text
    created = response.json()
    return created["webhook"]["id"], created["secret"]


async def plan_and_burst(pool: asyncpg.Pool, database_url: str) -> None:
    async with pool.acquire() as conn:
        assert (await plan(conn, NOW)).ran
    await run_burst(worker_settings(database_url), FixedClock(NOW))


async def burst(database_url: str) -> None:
    await run_burst(worker_settings(database_url), FixedClock(NOW))


async def notice_of(api: Api, instrument_id: str, kind: str = "overdue") -> dict[str, Any]:
    """The instrument's one notice of ``kind``, read by id with its deliveries."""
    response = await api.get("/v1/notices", params={"instrument_id": instrument_id, "kind": kind})
    assert response.status_code == 200, response.text
    (listed,) = response.json()["items"]
    detail = await api.get(f"/v1/notices/{listed['id']}")
    assert detail.status_code == 200, detail.text
    return detail.json()  # type: ignore[no-any-return]


async def notice_row(pool: asyncpg.Pool, notice_id: str) -> asyncpg.Record:
    async with pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT status, next_attempt_at, closed_at, last_error FROM notices WHERE id = $1", uuid.UUID(notice_id)
        )
    assert row is not None
    return row


def attempts(delivery: dict[str, Any]) -> list[tuple[int, int | None, str]]:
    return [(a["attempt"], a["status_code"], a["outcome"]) for a in delivery["history"]]


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def gone_first(number: int, request: Received) -> int:
    return 410 if number == 0 else 200


# ---------------------------------------------------------------------------------------------
# Retry


async def test_a_failed_delivery_is_retried_and_then_delivered_with_both_tries_in_its_history(
    tenant: Tenant, private: httpx.AsyncClient, pool: asyncpg.Pool, database_url: str
) -> None:
    """410 fails a delivery at once; retried, it is pending at once (next_attempt_at = now), its
    notice back in the outbox; the next burst delivers it, and its history shows both tries."""
    gauge = await tenant.register(**GAUGE, last_verified_on=OVERDUE)
    with WebhookReceiver(respond=gone_first).running() as receiver:
        webhook_id, _ = await create_webhook(on(private, tenant.api), receiver.url)
        await plan_and_burst(pool, database_url)
        notice = await notice_of(tenant.api, gauge["id"])
        assert notice["status"] == "failed"
        (delivery,) = notice["deliveries"]
        assert (delivery["webhook_id"], delivery["status"], delivery["last_status"]) == (webhook_id, "failed", 410)
        assert attempts(delivery) == [(1, 410, "failed")]

        response = await tenant.api.post(f"/v1/deliveries/{delivery['id']}/retry")
        assert response.status_code == 202, response.text
        retried = response.json()
        assert retried["id"] == delivery["id"]
        assert retried["notice_id"] == notice["id"]
        assert retried["status"] == "pending"
        assert retried["next_attempt_at"] == NOW_ISO
        assert attempts(retried) == [(1, 410, "failed")]
        assert retried["attempts"] == 1
        row = await notice_row(pool, notice["id"])
        assert (row["status"], row["next_attempt_at"], row["closed_at"], row["last_error"]) == (
            "pending",
            NOW,
            None,
            None,
        )
        assert (await tenant.api.get(f"/v1/notices/{notice['id']}")).json()["status"] == "pending"

        await burst(database_url)
        assert receiver.statuses == [410, 200]
        assert [r.json()["notice_id"] for r in receiver.requests] == [notice["id"]] * 2
        # Metreg-Delivery names the delivery on both tries.
        assert {r.headers["metreg-delivery"] for r in receiver.requests} == {delivery["id"]}
        after = await notice_of(tenant.api, gauge["id"])
        assert after["status"] == "delivered"
        assert after["last_error"] is None
        (done,) = after["deliveries"]
        assert (done["status"], done["last_status"], done["last_error"]) == ("delivered", 200, None)
        assert done["delivered_at"] == NOW_ISO
        assert attempts(done) == [(1, 410, "failed"), (2, 200, "delivered")]

        again = problem(await tenant.api.post(f"/v1/deliveries/{delivery['id']}/retry"), 409)
        assert "delivered" in again["detail"]
        await burst(database_url)
        assert len(receiver.requests) == 2


async def test_a_delivery_of_a_cancelled_notice_is_not_retried(
    tenant: Tenant, private: httpx.AsyncClient, pool: asyncpg.Pool, database_url: str
) -> None:
    """Retried (its notice pending again), then the gauge is sealed: the notice is cancelled with
    its cycle, and retrying the delivery now is a 409; nothing more is sent."""
    gauge = await tenant.register(**GAUGE, last_verified_on=OVERDUE)
    with WebhookReceiver(respond=lambda n, r: 410).running() as receiver:
        await create_webhook(on(private, tenant.api), receiver.url)
        await plan_and_burst(pool, database_url)
        notice = await notice_of(tenant.api, gauge["id"])
        (delivery,) = notice["deliveries"]
        assert delivery["status"] == "failed"
        url = f"/v1/deliveries/{delivery['id']}/retry"
        assert (await tenant.api.post(url)).status_code == 202
        sealed = await tenant.api.post(f"/v1/instruments/{gauge['id']}/seal")
        assert sealed.status_code == 200, sealed.text
        assert (await notice_row(pool, notice["id"]))["status"] == "cancelled"

        body = problem(await tenant.api.post(url), 409)
        assert "cancelled" in body["detail"]
        await burst(database_url)
        assert len(receiver.requests) == 1
        after = await notice_of(tenant.api, gauge["id"])
        assert after["status"] == "cancelled"
        # The try the retry scheduled is dropped with the notice: nothing stays pending for ever.
        (dropped,) = after["deliveries"]
        assert (dropped["status"], dropped["last_error"]) == ("failed", "not tried again: the notice was cancelled")
        assert attempts(dropped) == [(1, 410, "failed")]


async def test_who_may_retry_a_delivery(
    tenant: Tenant,
    make_tenant: MakeTenant,
    lab: LabAccount,
    admin: Api,
    anonymous: Api,
    app_client: httpx.AsyncClient,
    private: httpx.AsyncClient,
    pool: asyncpg.Pool,
    database_url: str,
) -> None:
    """Another enterprise and a regulator of another region get 404 with nothing of the delivery in
    it; a lab 403; no key 401; a malformed id 400 naming ``delivery_id``. The regulator of the
    region reads the enterprise's notices but not where the enterprise has them sent: its own
    webhook deliveries are the enterprise's to retry (404 to the regulator); an admin may (202)."""
    gauge = await tenant.register(**GAUGE, last_verified_on=OVERDUE)
    with WebhookReceiver(respond=lambda n, r: 410).running() as receiver:
        await create_webhook(on(private, tenant.api), receiver.url)
        await plan_and_burst(pool, database_url)
        (delivery,) = (await notice_of(tenant.api, gauge["id"]))["deliveries"]
        url = f"/v1/deliveries/{delivery['id']}/retry"

        other = await make_tenant()
        far = Api(app_client, await mint(pool, Role.REGULATOR, region_code="44"))
        for api in (other.api, far):
            body = problem(await api.post(url), 404)
            assert receiver.url not in str(body)
            assert "history" not in body
        problem(await lab.api.post(url), 403)
        problem(await anonymous.post(url), 401)
        problem(await Api(app_client, "mr_000000000000_nope").post(url), 401)
        assert fields_of(problem(await tenant.api.post("/v1/deliveries/not-a-uuid/retry"), 400)) == ["delivery_id"]
        problem(await tenant.api.post(f"/v1/deliveries/{uuid.uuid4()}/retry"), 404)
        async with pool.acquire() as conn:
            untouched = await conn.fetchrow(
                "SELECT status, attempts FROM deliveries WHERE id = $1", uuid.UUID(delivery["id"])
            )
        assert (untouched["status"], untouched["attempts"]) == ("failed", 1)

        near = Api(app_client, await mint(pool, Role.REGULATOR, region_code="31"))
        assert receiver.url not in str(problem(await near.post(url), 404))
        notice = (await near.get("/v1/notices", params={"instrument_id": gauge["id"]})).json()["items"][0]
        assert (await near.get(f"/v1/notices/{notice['id']}")).json()["deliveries"] == []
        response = await admin.post(url)
        assert response.status_code == 202, response.text
        assert response.json()["status"] == "pending"
        response = await tenant.api.post(url)  # a pending one may be retried too: tried now
        assert response.status_code == 202, response.text
        assert response.json()["next_attempt_at"] == NOW_ISO


async def test_a_regulator_retries_an_escalation_to_its_webhook(
    make_tenant: MakeTenant,
    app_client: httpx.AsyncClient,
    private: httpx.AsyncClient,
    pool: asyncpg.Pool,
    database_url: str,
) -> None:
    """An escalation goes to the webhook of the region's regulator. Its delivery failed (410), the
    regulator retries it (202) and the next burst delivers it; a regulator of another region gets
    404."""
    tenant = await make_tenant(region_code="653101")
    gauge = await tenant.register(**GAUGE, last_verified_on=LONG_OVERDUE)
    regulator = Api(app_client, await mint(pool, Role.REGULATOR, region_code="6531"))
    with WebhookReceiver(respond=gone_first).running() as receiver:
        webhook_id, secret = await create_webhook(on(private, regulator), receiver.url, events=["escalation"])
        await plan_and_burst(pool, database_url)
        escalation = await notice_of(regulator, gauge["id"], kind="escalation")
        assert escalation["audience"] == "regulator"
        (delivery,) = escalation["deliveries"]
        assert (delivery["webhook_id"], delivery["status"]) == (webhook_id, "failed")
        url = f"/v1/deliveries/{delivery['id']}/retry"

        for region in ("31", "6532", "653102"):
            problem(await Api(app_client, await mint(pool, Role.REGULATOR, region_code=region)).post(url), 404)
        response = await regulator.post(url)
        assert response.status_code == 202, response.text
        assert (response.json()["status"], response.json()["next_attempt_at"]) == ("pending", NOW_ISO)

        await burst(database_url)
        mine = [r for r in receiver.requests if r.json()["notice_id"] == escalation["id"]]
        assert [r.headers["metreg-event"] for r in mine] == ["escalation", "escalation"]
        assert verify(secret, mine[-1].headers["metreg-signature"], mine[-1].body, now=int(NOW.timestamp()))
        after = await notice_of(regulator, gauge["id"], kind="escalation")
        assert after["status"] == "delivered"
        assert attempts(after["deliveries"][0]) == [(1, 410, "failed"), (2, 200, "delivered")]


async def test_an_enterprise_neither_sees_nor_retries_its_regulators_delivery(
    make_tenant: MakeTenant,
    app_client: httpx.AsyncClient,
    private: httpx.AsyncClient,
    pool: asyncpg.Pool,
    database_url: str,
) -> None:
    """The regulator's webhook is the regulator's: its URL is not listed to the enterprise
    (GET /v1/webhooks) nor may the enterprise ping it, so the escalation's delivery to it should
    not show the URL to the enterprise, nor let the enterprise make metreg call it again."""
    tenant = await make_tenant(region_code="659002")
    gauge = await tenant.register(**GAUGE, last_verified_on=LONG_OVERDUE)
    regulator = Api(app_client, await mint(pool, Role.REGULATOR, region_code="659002"))
    with WebhookReceiver(respond=lambda n, r: 410).running() as receiver:
        secret_url = f"{receiver.url}?token=regulator-only"
        webhook_id, _ = await create_webhook(on(private, regulator), secret_url, events=["escalation"])
        await plan_and_burst(pool, database_url)
        (delivery,) = (await notice_of(regulator, gauge["id"], kind="escalation"))["deliveries"]
        assert delivery["target"] == secret_url
        assert webhook_id not in (await tenant.api.get("/v1/webhooks")).text
        problem(await on(private, tenant.api).post(f"/v1/webhooks/{webhook_id}/ping"), 404)

        as_seen = await tenant.api.get("/v1/notices", params={"instrument_id": gauge["id"], "kind": "escalation"})
        seen = [await tenant.api.get(f"/v1/notices/{n['id']}") for n in as_seen.json()["items"]]
        calls = len(receiver.requests)
        retried = await tenant.api.post(f"/v1/deliveries/{delivery['id']}/retry")
        await burst(database_url)
        assert all("regulator-only" not in r.text for r in seen)
        assert retried.status_code in (403, 404), retried.text
        assert len(receiver.requests) == calls


# ---------------------------------------------------------------------------------------------
# Ping


async def test_a_ping_reaches_the_receiver_signed_and_is_not_recorded(
    tenant: Tenant, private: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    with WebhookReceiver().running() as receiver:
        webhook_id, secret = await create_webhook(on(private, tenant.api), receiver.url)
        response = await on(private, tenant.api).post(f"/v1/webhooks/{webhook_id}/ping")
        assert response.status_code == 200, response.text
        # The documented answer, field for field and type for type (how long the call took is for
        # `make bench`, never a test's business).
        assert set(response.json()) == set(PingResult.__struct_fields__)
        result = msgspec.json.decode(response.content, type=PingResult)
        assert (result.delivered, result.status_code, result.error) == (True, 200, None)

        (got,) = receiver.requests
        assert got.path == "/hooks/metreg"
        assert got.headers["metreg-event"] == "ping"
        assert got.headers["content-type"] == "application/json"
        assert got.headers["metreg-delivery"].startswith("ping-")
        assert got.json() == {"kind": "ping", "webhook_id": webhook_id, "sent_at": NOW_ISO}
        assert verify(secret, got.headers["metreg-signature"], got.body, now=int(NOW.timestamp()))
        assert not verify("whsec_" + "x" * 32, got.headers["metreg-signature"], got.body, now=int(NOW.timestamp()))
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM deliveries WHERE webhook_id = $1", uuid.UUID(webhook_id)) == 0


async def test_a_ping_says_how_a_failing_receiver_answered(tenant: Tenant, private: httpx.AsyncClient) -> None:
    api = on(private, tenant.api)
    with WebhookReceiver(respond=lambda n, r: 410).running() as receiver:
        webhook_id, _ = await create_webhook(api, receiver.url)
        result = (await api.post(f"/v1/webhooks/{webhook_id}/ping")).json()
        assert (result["delivered"], result["status_code"], result["error"]) == (False, 410, "answered 410")
        assert len(receiver.requests) == 1
        # One call, nothing retried, even for a transient answer.
    with WebhookReceiver(respond=lambda n, r: 503).running() as receiver:
        webhook_id, _ = await create_webhook(api, receiver.url)
        result = (await api.post(f"/v1/webhooks/{webhook_id}/ping")).json()
        assert (result["delivered"], result["status_code"]) == (False, 503)
        assert len(receiver.requests) == 1


@pytest.mark.parametrize(
    "retry_after", ["²", "99999999999999999999", "9" * 5000, "-1", "1.5", "Wed, 21 Oct 2015 07:28:00 GMT"]
)
async def test_a_ping_survives_whatever_retry_after_the_receiver_sends(
    tenant: Tenant, private: httpx.AsyncClient, retry_after: str
) -> None:
    """Found by fuzzing: a ``Retry-After`` of a non-ASCII digit (``²``), or of more seconds than a
    timedelta holds, made the send raise, so the ping answered 500 (and a delivery's send failed the
    same way). It is ignored, or taken as the longest wait, instead."""
    api = on(private, tenant.api)
    with WebhookReceiver(respond=lambda n, r: (503, {"Retry-After": retry_after})).running() as receiver:
        webhook_id, _ = await create_webhook(api, receiver.url)
        response = await api.post(f"/v1/webhooks/{webhook_id}/ping")
    assert response.status_code == 200, response.text
    assert (response.json()["delivered"], response.json()["status_code"]) == (False, 503)


async def test_a_ping_to_an_unreachable_or_slow_url_reports_the_error(
    tenant: Tenant, private: httpx.AsyncClient
) -> None:
    api = on(private, tenant.api)
    webhook_id, _ = await create_webhook(api, f"http://127.0.0.1:{closed_port()}/hooks")
    response = await api.post(f"/v1/webhooks/{webhook_id}/ping")
    assert response.status_code == 200, response.text
    result = response.json()
    assert (result["delivered"], result["status_code"]) == (False, None)
    assert result["error"].startswith("connection failed")

    def slow(number: int, request: Received) -> int:
        time.sleep(1.5)  # longer than the app's send timeout (1 s)
        return 200

    with WebhookReceiver(respond=slow).running() as receiver:
        webhook_id, _ = await create_webhook(api, receiver.url)
        result = (await api.post(f"/v1/webhooks/{webhook_id}/ping")).json()
    assert (result["delivered"], result["status_code"], result["error"]) == (False, None, "timed out")


async def test_without_private_webhooks_a_ping_to_loopback_is_refused_before_any_call(
    tenant: Tenant, private: httpx.AsyncClient
) -> None:
    """A loopback webhook left from a time the server allowed it: the server that does not allow
    private addresses refuses to call it (the address is checked on every call)."""
    with WebhookReceiver().running() as receiver:
        webhook_id, _ = await create_webhook(on(private, tenant.api), receiver.url)
        response = await tenant.api.post(f"/v1/webhooks/{webhook_id}/ping")  # the conftest app
        assert response.status_code == 200, response.text
        result = response.json()
        assert (result["delivered"], result["status_code"]) == (False, None)
        assert "non-public" in result["error"]
        assert receiver.requests == []


async def test_who_may_ping_a_webhook(
    tenant: Tenant,
    make_tenant: MakeTenant,
    lab: LabAccount,
    admin: Api,
    app_client: httpx.AsyncClient,
    private: httpx.AsyncClient,
    pool: asyncpg.Pool,
) -> None:
    """Another enterprise and another region: 404; a deleted webhook: 404; a lab: 403; no key: 401;
    a malformed id: 400 naming ``webhook_id``. An admin pings any webhook, a regulator its region's."""
    with WebhookReceiver().running() as receiver:
        webhook_id, _ = await create_webhook(on(private, tenant.api), receiver.url)
        url = f"/v1/webhooks/{webhook_id}/ping"
        other = await make_tenant()
        regional = Api(private, await mint(pool, Role.REGULATOR, region_code="31"))
        for api in (on(private, other.api), regional):
            body = problem(await api.post(url), 404)
            assert receiver.url not in str(body)
        problem(await on(private, lab.api).post(url), 403)
        problem(await Api(private, None).post(url), 401)
        assert fields_of(problem(await on(private, tenant.api).post("/v1/webhooks/nope/ping"), 400)) == ["webhook_id"]
        problem(await on(private, tenant.api).post(f"/v1/webhooks/{uuid.uuid4()}/ping"), 404)
        assert receiver.requests == []

        assert (await on(private, admin).post(url)).json()["delivered"] is True
        region_hook, _ = await create_webhook(regional, receiver.url)
        assert (await regional.post(f"/v1/webhooks/{region_hook}/ping")).json()["delivered"] is True
        problem(await on(private, tenant.api).post(f"/v1/webhooks/{region_hook}/ping"), 404)
        assert len(receiver.requests) == 2
        # Escalations of every enterprise in 31 would go to it: it goes with its receiver.
        assert (await regional.delete(f"/v1/webhooks/{region_hook}")).status_code == 204

        deleted = await tenant.api.delete(f"/v1/webhooks/{webhook_id}")
        assert deleted.status_code == 204, deleted.text
        problem(await on(private, tenant.api).post(url), 404)
        problem(await on(private, admin).post(url), 404)
        assert len(receiver.requests) == 2


# ---------------------------------------------------------------------------------------------
# OpenAPI


async def test_both_operations_are_documented(anonymous: Api) -> None:
    response = await anonymous.get("/docs/openapi.json")
    assert response.status_code == 200, response.text
    paths = response.json()["paths"]
    retry = paths["/v1/deliveries/{delivery_id}/retry"]["post"]
    ping = paths["/v1/webhooks/{webhook_id}/ping"]["post"]
    assert retry["operationId"] == "RetryDelivery"
    assert ping["operationId"] == "PingWebhook"
    # 409 and 422 include what an Idempotency-Key may answer (service.idempotency).
    assert set(retry["responses"]) == {"202", "400", "401", "403", "404", "409", "422", "429", "503"}
    assert set(ping["responses"]) == {"200", "400", "401", "403", "404", "409", "422", "429", "503"}
    for operation, name in ((retry, "delivery_id"), (ping, "webhook_id")):
        assert operation["summary"]
        (parameter,) = [p for p in operation.get("parameters", []) if p["in"] == "path"]
        assert parameter["name"] == name
        assert parameter["required"] is True
    ping_schema = ping["responses"]["200"]["content"]["application/json"]["schema"]
    assert ping_schema == {"$ref": "#/components/schemas/PingResult"}
