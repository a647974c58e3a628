"""Delivery against real PostgreSQL, Redis, a local webhook endpoint and a local SMTP server.

Exactly once across repeated planning and concurrent workers, signatures and headers, the local
date of the enterprise, retries (5xx, 429 with Retry-After, a refused connection), final failures
(410, a deleted webhook, no target at all), a lost Redis queue, stale notices that must not go out,
escalations to the regulator, event filters, e-mail and the daily digest.

``run_burst`` delivers every due notice of its database. In the session's shared database that is
the backlog every earlier test left (thousands of notices, hundreds of them to unresolvable hosts
in a full run), which made each burst take 20–40 s; so this module runs on a database of its own
(``database_url`` and ``pool`` are overridden here; conftest's app, tenants and labs follow them).
The module's tests still share it, so requests a receiver gets, e-mails the SMTP server gets and
rows are always narrowed to the test's own enterprise (or instruments, addresses, webhooks) before
anything is counted. The worker's clock is a ``FixedClock`` of each test's own; the app (and with
it registration) stays at ``NOW``.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import itertools
import os
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import contextmanager
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import asyncpg
import httpx
import pytest
from redis.asyncio import Redis

from jobs.deliver import PARALLEL_SENDS, claim_limit, deliver, deliver_batch
from jobs.digest import PARALLEL_SESSIONS, send_digests
from jobs.dispatch import dispatch, end_lost_tries, job_id
from jobs.plan import plan
from jobs.runtime import Runtime, job_deserializer, open_queue
from jobs.worker import run_burst
from service.auth import Role
from service.catalog.rules import Regime
from service.clock import FixedClock
from service.db import init_connection
from service.deliveries.attempt import Attempted
from service.deliveries.queries import LOST_TO_CANCELLED, Claimed, record_many
from service.instruments.rules import Lifecycle
from service.notices.rules import Pacing, due_notices
from service.settings import Settings
from service.webhooks.signing import verify
from tests.conftest import (
    GAUGE,
    NOW,
    Api,
    LabAccount,
    MakeTenant,
    Tenant,
    accepted_request,
    fresh_database,
    mint,
    problem,
    worker_settings,
)
from tests.receivers import Received, WebhookReceiver, smtp_server

#: The default reminder settings of a new enterprise.
DEFAULT_PACING = Pacing(
    reminder_days=(30, 7), rotation_reminder_days=(90, 30), overdue_repeat_days=7, escalate_after_days=30
)
DAY = dt.timedelta(days=1)


@pytest.fixture(scope="module")
async def database_url() -> AsyncIterator[str]:
    """The module's own database (overrides the session's shared one for these tests)."""
    async with fresh_database("metreg_delivery") as dsn:
        yield dsn


@pytest.fixture(scope="module")
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    async with asyncpg.create_pool(database_url, min_size=1, max_size=4, init=init_connection) as p:
        yield p


def at(day: dt.date, hour: int = 4, minute: int = 0) -> dt.datetime:
    """An instant on ``day`` in UTC (04:00Z is 12:00 in Shanghai)."""
    return dt.datetime(day.year, day.month, day.day, hour, minute, tzinfo=dt.UTC)


# --- arranging -------------------------------------------------------------------------------------


async def add_webhook(
    pool: asyncpg.Pool,
    url: str,
    *,
    enterprise_id: str | None = None,
    region_code: str | None = None,
    events: list[str] | None = None,
) -> tuple[uuid.UUID, str]:
    """A webhook row (an enterprise's, or a regulator region's); returns its id and secret."""
    secret = f"whsec_{uuid.uuid4().hex}"
    async with pool.acquire() as conn:
        webhook_id: uuid.UUID = await conn.fetchval(
            """INSERT INTO webhooks (enterprise_id, region_code, url, secret, events, created_at)
               VALUES ($1, $2, $3, $4, $5, $6) RETURNING id""",
            uuid.UUID(enterprise_id) if enterprise_id else None,
            region_code,
            url,
            secret,
            events or [],
            NOW,
        )
    return webhook_id, secret


async def deactivate(pool: asyncpg.Pool, *webhook_ids: uuid.UUID) -> None:
    """Switch webhooks off: a regulator's (or a hanging one) would otherwise be called by every later
    burst of the module."""
    async with pool.acquire() as conn:
        await conn.execute(
            "UPDATE webhooks SET active = false, deleted_at = $2 WHERE id = ANY($1::uuid[])", list(webhook_ids), NOW
        )


async def register(tenant: Tenant, valid_until: Iterable[dt.date]) -> list[str]:
    """Pressure gauges verified 120 days before each printed ``valid_until`` (within their 6-month
    cycle), in order."""
    ids = []
    for until in valid_until:
        verified = min(until - dt.timedelta(days=120), NOW.date())
        body = await tenant.register(**GAUGE, last_verified_on=verified.isoformat(), valid_until=until.isoformat())
        assert body["valid_until"] == until.isoformat()
        ids.append(str(body["id"]))
    return ids


async def patch_enterprise(tenant: Tenant, **change: Any) -> None:
    response = await tenant.api.patch(f"/v1/enterprises/{tenant.id}", json=change)
    assert response.status_code == 200, response.text


async def plan_at(pool: asyncpg.Pool, now: dt.datetime) -> None:
    async with pool.acquire() as conn:
        result = await plan(conn, now)
    assert result.ran


# --- reading ---------------------------------------------------------------------------------------


async def fetch(pool: asyncpg.Pool, sql: str, *args: Any) -> list[asyncpg.Record]:
    async with pool.acquire() as conn:
        return list(await conn.fetch(sql, *args))


async def notices_of(pool: asyncpg.Pool, enterprise_id: str) -> list[asyncpg.Record]:
    return await fetch(
        pool,
        """SELECT id, instrument_id, kind, audience, cycle, step, due_on, status, last_error, attempts,
                  next_attempt_at, certificate_id
           FROM notices WHERE enterprise_id = $1 ORDER BY created_at, kind, instrument_id, step""",
        uuid.UUID(enterprise_id),
    )


async def notices_for(pool: asyncpg.Pool, instrument_id: str) -> list[asyncpg.Record]:
    return await fetch(
        pool,
        "SELECT id, kind, step, status, last_error, certificate_id FROM notices WHERE instrument_id = $1",
        uuid.UUID(instrument_id),
    )


async def deliveries_of(pool: asyncpg.Pool, notice_ids: Iterable[uuid.UUID]) -> list[asyncpg.Record]:
    return await fetch(
        pool,
        """SELECT id, notice_id, channel, webhook_id, target, digest, status, attempts, next_attempt_at,
                  last_status, last_error, delivered_at
           FROM deliveries WHERE notice_id = ANY($1::uuid[]) ORDER BY created_at, channel, target""",
        list(notice_ids),
    )


async def attempts_of(pool: asyncpg.Pool, delivery_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, list[asyncpg.Record]]:
    rows = await fetch(
        pool,
        """SELECT delivery_id, attempt, started_at, duration_ms, status_code, error, outcome
           FROM delivery_attempts WHERE delivery_id = ANY($1::uuid[]) ORDER BY delivery_id, attempt""",
        list(delivery_ids),
    )
    found: dict[uuid.UUID, list[asyncpg.Record]] = collections.defaultdict(list)
    for row in rows:
        found[row["delivery_id"]].append(row)
    return found


def of_enterprise(requests: Iterable[Received], enterprise_id: str) -> list[Received]:
    """The requests about ``enterprise_id``'s notices (a shared database sends others' too)."""
    return [r for r in requests if r.json()["enterprise"]["id"] == enterprise_id]


def mail_to(inbox: Iterable[EmailMessage], addresses: Iterable[str]) -> list[EmailMessage]:
    wanted = set(addresses)
    return [m for m in inbox if m["To"] in wanted]


# --- a webhook endpoint whose answer carries headers ------------------------------------------------


@contextmanager
def serving(
    answer: Callable[[int], tuple[int, dict[str, str]]], bound: socket.socket | None = None
) -> Iterator[tuple[str, list[Received]]]:
    """A webhook endpoint in a thread answering request ``n`` with ``answer(n)`` (status, headers).

    ``bound``: a socket bound earlier (connections to it were refused while it did not listen) that
    the server takes over and starts listening on. Yields the URL and the requests received.
    """
    requests: list[Received] = []
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            got = Received(self.path, {k.lower(): v for k, v in self.headers.items()}, self.rfile.read(length))
            with lock:
                number = len(requests)
                requests.append(got)
            status, headers = answer(number)
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    class Server(ThreadingHTTPServer):
        # Room for every connection two workers open at once (the default backlog is 5).
        request_queue_size = 128
        daemon_threads = True

    if bound is None:
        server = Server(("127.0.0.1", 0), Handler)
    else:
        server = Server(bound.getsockname(), Handler, bind_and_activate=False)
        server.socket.close()
        server.socket = bound
        server.server_activate()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hooks/metreg", requests
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


# --- exactly once ----------------------------------------------------------------------------------


@pytest.mark.timeout(60)
async def test_every_notice_is_delivered_exactly_once_over_days_of_double_planning_and_two_concurrent_workers(
    tenant: Tenant, pool: asyncpg.Pool, database_url: str
) -> None:
    first = dt.date(2026, 5, 25)
    # Every other day from 2026-05-25 to 2026-08-11: overdue (with repeats), 7- and 30-day reminders
    # and gauges not yet due, moving between them over the four days.
    valid_until = [first + dt.timedelta(days=2 * n) for n in range(40)]
    gauges = await register(tenant, valid_until)
    # A generous send timeout: a try that fails here is a slow test machine, not the subject.
    settings = worker_settings(database_url, worker_jobs=5, send_timeout_s=10.0)
    clock = FixedClock(NOW)
    days = [NOW.date() + n * DAY for n in range(4)]
    with serving(lambda n: (200, {})) as (url, received):
        webhook_id, _ = await add_webhook(pool, url, enterprise_id=tenant.id)
        for today in days:
            clock.set(at(today))  # 12:00 in Shanghai
            await plan_at(pool, clock.now())
            await plan_at(pool, clock.now())
            await asyncio.gather(run_burst(settings, clock), run_burst(settings, clock))
        requests = of_enterprise(received, tenant.id)

    # What the pure rules say is due on each of the days, all of it planned once.
    expected = {
        (gauge, n.kind.value, n.step, n.due_on)
        for gauge, until in zip(gauges, valid_until, strict=True)
        for today in days
        for n in due_notices(
            lifecycle=Lifecycle.IN_SERVICE,
            regime=Regime.PERIODIC,
            valid_until=until,
            pacing=DEFAULT_PACING,
            today=today,
        )
    }
    notices = await notices_of(pool, tenant.id)
    assert {(str(n["instrument_id"]), n["kind"], n["step"], n["due_on"]) for n in notices} == expected
    assert len(notices) == len(expected)
    assert {n["kind"] for n in notices} == {"due_soon", "overdue"}
    assert [n["status"] for n in notices] == ["delivered"] * len(notices)
    notice_ids = {str(n["id"]) for n in notices}

    received = collections.Counter(r.json()["notice_id"] for r in requests)
    assert set(received) == notice_ids
    assert [k for k, count in received.items() if count != 1] == []
    assert len(requests) == len(notices)

    listed = await tenant.api.get("/v1/notices", params={"limit": 500})
    assert listed.status_code == 200, listed.text
    assert {n["id"] for n in listed.json()["items"]} == notice_ids
    assert {n["status"] for n in listed.json()["items"]} == {"delivered"}

    deliveries = await deliveries_of(pool, [n["id"] for n in notices])
    assert sorted(str(d["notice_id"]) for d in deliveries) == sorted(notice_ids)
    attempts = await attempts_of(pool, [d["id"] for d in deliveries])
    assert {(d["channel"], d["webhook_id"], d["status"], d["attempts"]) for d in deliveries} == {
        ("webhook", webhook_id, "delivered", 1)
    }, [[dict(a) for a in attempts[d["id"]]] for d in deliveries if d["attempts"] != 1]
    for delivery in deliveries:
        assert [(a["attempt"], a["outcome"], a["status_code"]) for a in attempts[delivery["id"]]] == [
            (1, "delivered", 200)
        ]


@pytest.mark.timeout(60)
async def test_every_request_is_signed_and_names_its_event_and_delivery(
    tenant: Tenant, pool: asyncpg.Pool, database_url: str
) -> None:
    today = NOW.date()
    # Overdue, 7-day and 30-day reminders.
    gauges = await register(tenant, [today - 10 * DAY, today - DAY, today + 3 * DAY, today + 20 * DAY])
    clock = FixedClock(NOW + dt.timedelta(minutes=7, seconds=13))
    with WebhookReceiver().running() as receiver:
        webhook_id, secret = await add_webhook(pool, receiver.url, enterprise_id=tenant.id)
        await plan_at(pool, NOW)
        await run_burst(worker_settings(database_url), clock)
        requests = of_enterprise(receiver.requests, tenant.id)

    notices = {str(n["id"]): n for n in await notices_of(pool, tenant.id)}
    assert len(notices) == 4
    deliveries = {str(d["notice_id"]): d for d in await deliveries_of(pool, [n["id"] for n in notices.values()])}
    assert sorted(r.json()["notice_id"] for r in requests) == sorted(notices)
    now = int(clock.now().timestamp())
    for got in requests:
        body = got.json()
        notice = notices[body["notice_id"]]
        assert verify(secret, got.headers["metreg-signature"], got.body, now=now), got.headers
        assert got.headers["metreg-signature"].startswith(f"t={now},v1=")
        assert not verify(f"{secret}x", got.headers["metreg-signature"], got.body, now=now)
        assert not verify(secret, got.headers["metreg-signature"], got.body + b" ", now=now)
        assert got.headers["metreg-event"] == body["kind"] == notice["kind"]
        assert got.headers["metreg-delivery"] == str(deliveries[body["notice_id"]]["id"])
        assert deliveries[body["notice_id"]]["webhook_id"] == webhook_id
        assert got.headers["content-type"] == "application/json"
        assert got.headers["user-agent"] == "metreg-webhooks/1"
        assert got.path == "/hooks/metreg"
        assert body["instrument"]["id"] == str(notice["instrument_id"])
        assert body["instrument"]["id"] in gauges
        assert (body["audience"], body["due_on"], body["cycle"], body["step"]) == (
            "enterprise",
            notice["due_on"].isoformat(),
            notice["cycle"].isoformat(),
            notice["step"],
        )
        assert body["enterprise"]["id"] == tenant.id
    assert {r.json()["kind"] for r in requests} == {"overdue", "due_soon"}


# --- the enterprise's local date ---------------------------------------------------------------------


@pytest.mark.timeout(60)
async def test_at_1730z_on_the_last_valid_day_shanghai_is_overdue_and_utc_is_not(
    make_tenant: MakeTenant, pool: asyncpg.Pool, database_url: str
) -> None:
    shanghai = await make_tenant()
    utc = await make_tenant()
    await patch_enterprise(utc, timezone="UTC")
    last_valid = dt.date(2026, 7, 14)
    (east,) = await register(shanghai, [last_valid])
    (west,) = await register(utc, [last_valid])
    clock = FixedClock(at(last_valid, 17, 30))  # 01:30 on 2026-07-15 in Shanghai
    settings = worker_settings(database_url)
    with WebhookReceiver().running() as receiver:
        await add_webhook(pool, receiver.url, enterprise_id=shanghai.id)
        await add_webhook(pool, receiver.url, enterprise_id=utc.id)
        await plan_at(pool, clock.now())
        await run_burst(settings, clock)
        east_got = [r.json() for r in of_enterprise(receiver.requests, shanghai.id)]
        west_got = [r.json() for r in of_enterprise(receiver.requests, utc.id)]

        assert [(n["kind"], n["step"], n["due_on"], n["status"]) for n in await notices_of(pool, shanghai.id)] == [
            ("overdue", 0, dt.date(2026, 7, 15), "delivered")
        ]
        assert [(b["kind"], b["instrument"]["id"], b["instrument"]["days_until_due"]) for b in east_got] == [
            ("overdue", east, -1)
        ]
        assert [(n["kind"], n["step"], n["due_on"], n["status"]) for n in await notices_of(pool, utc.id)] == [
            ("due_soon", 7, dt.date(2026, 7, 7), "delivered")
        ]
        assert [(b["kind"], b["instrument"]["id"], b["instrument"]["days_until_due"]) for b in west_got] == [
            ("due_soon", west, 0)
        ]

        # Once it is 2026-07-15 in UTC too, the UTC enterprise gets its overdue notice; Shanghai nothing new.
        clock.set(at(last_valid + DAY, 0, 30))
        await plan_at(pool, clock.now())
        await run_burst(settings, clock)
        assert [b["kind"] for b in (r.json() for r in of_enterprise(receiver.requests, utc.id))] == [
            "due_soon",
            "overdue",
        ]
        assert len(of_enterprise(receiver.requests, shanghai.id)) == 1
    assert [(n["kind"], n["due_on"], n["status"]) for n in await notices_of(pool, utc.id)] == [
        ("due_soon", dt.date(2026, 7, 7), "delivered"),
        ("overdue", dt.date(2026, 7, 15), "delivered"),
    ]


# --- retries and final failures ----------------------------------------------------------------------


@pytest.mark.timeout(60)
async def test_a_receiver_failing_every_second_request_gets_each_notice_delivered_once_after_retries(
    tenant: Tenant, pool: asyncpg.Pool, database_url: str
) -> None:
    today = NOW.date()
    # Reminders far enough ahead that they stay current while the clock moves on two days.
    await register(tenant, [today - 3 * DAY, today - 20 * DAY, today + 5 * DAY, today + 6 * DAY, today + 25 * DAY])

    def respond(n: int, got: Received) -> int:
        return 500 if n % 2 else 200

    clock = FixedClock(NOW)
    settings = worker_settings(database_url)
    with WebhookReceiver(respond=respond).running() as receiver:
        await add_webhook(pool, receiver.url, enterprise_id=tenant.id)
        await plan_at(pool, NOW)
        await run_burst(settings, clock)

        notices = await notices_of(pool, tenant.id)
        assert len(notices) == 5
        deliveries = await deliveries_of(pool, [n["id"] for n in notices])
        retried = [d for d in deliveries if d["status"] == "pending"]
        assert retried, "the second request of the first round was answered 500"
        by_id = {n["id"]: n for n in notices}
        for delivery in retried:
            # The first retry comes 30 s (±20 % jitter) later, and the notice waits for it.
            assert dt.timedelta(seconds=24) <= delivery["next_attempt_at"] - NOW <= dt.timedelta(seconds=36)
            assert (delivery["last_status"], delivery["last_error"]) == (500, "answered 500")
            notice = by_id[delivery["notice_id"]]
            assert notice["status"] == "pending"
            assert notice["next_attempt_at"] == delivery["next_attempt_at"]

        for _ in range(10):
            if all(n["status"] == "delivered" for n in await notices_of(pool, tenant.id)):
                break
            clock.set(clock.now() + dt.timedelta(hours=6))
            await run_burst(settings, clock)
        requests = [(n, r) for n, r in enumerate(receiver.requests) if r.json()["enterprise"]["id"] == tenant.id]

    notices = await notices_of(pool, tenant.id)
    assert [n["status"] for n in notices] == ["delivered"] * 5
    assert {n["last_error"] for n in notices} == {None}
    deliveries = await deliveries_of(pool, [n["id"] for n in notices])
    assert len(deliveries) == 5
    attempts = await attempts_of(pool, [d["id"] for d in deliveries])
    several = 0
    for delivery in deliveries:
        history = attempts[delivery["id"]]
        assert [a["outcome"] for a in history] == ["retry"] * (len(history) - 1) + ["delivered"]
        assert [a["status_code"] for a in history] == [500] * (len(history) - 1) + [200]
        assert [a["attempt"] for a in history] == list(range(1, len(history) + 1))
        assert (delivery["status"], delivery["attempts"], delivery["last_status"]) == ("delivered", len(history), 200)
        # The receiver saw exactly these tries: one 200 per notice, after its 500s.
        seen = [respond(n, r) for n, r in requests if r.json()["notice_id"] == str(delivery["notice_id"])]
        assert seen == [a["status_code"] for a in history]
        several += len(history) > 1
    assert several >= 1

    retried_notice = next(d["notice_id"] for d in deliveries if len(attempts[d["id"]]) > 1)
    detail = await tenant.api.get(f"/v1/notices/{retried_notice}")
    assert detail.status_code == 200, detail.text
    (delivery,) = detail.json()["deliveries"]
    assert delivery["status"] == "delivered"
    history = delivery["history"]
    assert len(history) >= 2
    assert [(h["status_code"], h["outcome"]) for h in history] == [(500, "retry")] * (len(history) - 1) + [
        (200, "delivered")
    ]
    assert [h["error"] for h in history] == ["answered 500"] * (len(history) - 1) + [None]


@pytest.mark.timeout(60)
async def test_a_410_fails_the_delivery_after_one_attempt_and_nothing_is_sent_again(
    tenant: Tenant, pool: asyncpg.Pool, database_url: str
) -> None:
    (gauge,) = await register(tenant, [NOW.date() - 4 * DAY])
    clock = FixedClock(NOW)
    settings = worker_settings(database_url)
    with WebhookReceiver(respond=lambda n, got: 410).running() as receiver:
        await add_webhook(pool, receiver.url, enterprise_id=tenant.id)
        await plan_at(pool, NOW)
        await run_burst(settings, clock)
        assert len(of_enterprise(receiver.requests, tenant.id)) == 1
        for hours in (1, 30):
            clock.set(NOW + dt.timedelta(hours=hours))
            await run_burst(settings, clock)
        assert len(of_enterprise(receiver.requests, tenant.id)) == 1

    (notice,) = await notices_of(pool, tenant.id)
    assert (notice["kind"], notice["status"], notice["last_error"]) == ("overdue", "failed", "all 1 deliveries failed")
    (delivery,) = await deliveries_of(pool, [notice["id"]])
    assert (delivery["status"], delivery["attempts"], delivery["last_status"], delivery["last_error"]) == (
        "failed",
        1,
        410,
        "answered 410",
    )
    assert [
        (a["attempt"], a["outcome"], a["status_code"])
        for a in (await attempts_of(pool, [delivery["id"]]))[delivery["id"]]
    ] == [(1, "failed", 410)]
    assert str(notice["instrument_id"]) == gauge


@pytest.mark.timeout(60)
async def test_retry_after_is_honoured_and_a_refused_connection_is_retried_until_the_receiver_listens(
    tenant: Tenant, pool: asyncpg.Pool, database_url: str
) -> None:
    await register(tenant, [NOW.date() - 4 * DAY])
    clock = FixedClock(NOW)
    settings = worker_settings(database_url)
    # Bound and not listening: every connection to it is refused until the server takes it over.
    closed = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    closed.bind(("127.0.0.1", 0))
    refused_url = f"http://127.0.0.1:{closed.getsockname()[1]}/hooks/metreg"

    def busy_then_fine(n: int) -> tuple[int, dict[str, str]]:
        return (429, {"Retry-After": "3600"}) if n == 0 else (200, {})

    try:
        with serving(busy_then_fine) as (busy_url, busy_requests):
            busy_id, _ = await add_webhook(pool, busy_url, enterprise_id=tenant.id)
            refused_id, _ = await add_webhook(pool, refused_url, enterprise_id=tenant.id)
            await plan_at(pool, NOW)
            await run_burst(settings, clock)

            (notice,) = await notices_of(pool, tenant.id)
            deliveries = {d["webhook_id"]: d for d in await deliveries_of(pool, [notice["id"]])}
            assert set(deliveries) == {busy_id, refused_id}
            attempts = await attempts_of(pool, [d["id"] for d in deliveries.values()])
            busy, refused = deliveries[busy_id], deliveries[refused_id]
            (busy_try,) = attempts[busy["id"]]
            assert (busy_try["outcome"], busy_try["status_code"], busy_try["error"]) == ("retry", 429, "answered 429")
            assert busy["status"] == "pending"
            assert busy["next_attempt_at"] >= busy_try["started_at"] + dt.timedelta(hours=1)
            assert busy["next_attempt_at"] <= NOW + dt.timedelta(hours=1, minutes=1)
            (refused_try,) = attempts[refused["id"]]
            assert (refused_try["outcome"], refused_try["status_code"]) == ("retry", None)
            assert "connection" in refused_try["error"].lower()
            assert refused["status"] == "pending"
            assert "connection" in refused["last_error"].lower()
            assert refused["next_attempt_at"] < NOW + dt.timedelta(minutes=1)
            assert (notice["status"], notice["next_attempt_at"]) == ("pending", refused["next_attempt_at"])
            assert len(busy_requests) == 1

            # Ten minutes on the receiver listens: the refused delivery goes through; the 429 waits its hour.
            with serving(lambda n: (200, {}), bound=closed) as (url, listening_requests):
                assert url == refused_url
                clock.set(NOW + dt.timedelta(minutes=10))
                await run_burst(settings, clock)
                assert [r.json()["notice_id"] for r in listening_requests] == [str(notice["id"])]
            assert len(busy_requests) == 1
            deliveries = {d["webhook_id"]: d for d in await deliveries_of(pool, [notice["id"]])}
            assert (deliveries[refused_id]["status"], deliveries[refused_id]["attempts"]) == ("delivered", 2)
            assert deliveries[busy_id]["status"] == "pending"
            (notice,) = await notices_of(pool, tenant.id)
            assert (notice["status"], notice["next_attempt_at"]) == ("pending", deliveries[busy_id]["next_attempt_at"])

            clock.set(NOW + dt.timedelta(hours=1, minutes=2))
            await run_burst(settings, clock)
            assert len(busy_requests) == 2
    finally:
        closed.close()
    (notice,) = await notices_of(pool, tenant.id)
    assert (notice["status"], notice["last_error"]) == ("delivered", None)
    deliveries = await deliveries_of(pool, [notice["id"]])
    assert {(d["webhook_id"], d["status"], d["attempts"]) for d in deliveries} == {
        (busy_id, "delivered", 2),
        (refused_id, "delivered", 2),
    }


@pytest.mark.timeout(60)
async def test_a_webhook_deleted_between_tries_fails_its_delivery(
    tenant: Tenant, pool: asyncpg.Pool, database_url: str
) -> None:
    await register(tenant, [NOW.date() - 4 * DAY])
    clock = FixedClock(NOW)
    settings = worker_settings(database_url)
    with WebhookReceiver(respond=lambda n, got: 503).running() as receiver:
        webhook_id, _ = await add_webhook(pool, receiver.url, enterprise_id=tenant.id)
        await plan_at(pool, NOW)
        await run_burst(settings, clock)
        (notice,) = await notices_of(pool, tenant.id)
        (delivery,) = await deliveries_of(pool, [notice["id"]])
        assert (notice["status"], delivery["status"], delivery["attempts"]) == ("pending", "pending", 1)

        deleted = await tenant.api.delete(f"/v1/webhooks/{webhook_id}")
        assert deleted.status_code == 204, deleted.text
        clock.set(NOW + dt.timedelta(hours=1))
        await run_burst(settings, clock)
        assert len(of_enterprise(receiver.requests, tenant.id)) == 1

    (notice,) = await notices_of(pool, tenant.id)
    assert (notice["status"], notice["last_error"]) == ("failed", "all 1 deliveries failed")
    (delivery,) = await deliveries_of(pool, [notice["id"]])
    assert (delivery["status"], delivery["attempts"], delivery["last_error"]) == (
        "failed",
        2,
        "the webhook was deleted",
    )
    history = (await attempts_of(pool, [delivery["id"]]))[delivery["id"]]
    assert [(a["outcome"], a["status_code"], a["error"]) for a in history] == [
        ("retry", 503, "answered 503"),
        ("failed", None, "the webhook was deleted"),
    ]


@pytest.mark.timeout(60)
async def test_a_notice_without_any_target_fails_naming_it(
    tenant: Tenant, pool: asyncpg.Pool, database_url: str
) -> None:
    await register(tenant, [NOW.date() - 4 * DAY])
    await plan_at(pool, NOW)
    await run_burst(worker_settings(database_url), FixedClock(NOW))
    (notice,) = await notices_of(pool, tenant.id)
    assert notice["status"] == "failed"
    assert notice["last_error"].startswith("no delivery target")
    assert await deliveries_of(pool, [notice["id"]]) == []
    detail = (await tenant.api.get(f"/v1/notices/{notice['id']}")).json()
    assert (detail["status"], detail["deliveries"], detail["last_error"]) == ("failed", [], notice["last_error"])


# --- a lost queue ------------------------------------------------------------------------------------


async def lose_queue(settings: Settings) -> set[str]:
    """What a flushed Redis does to this test's work: the queue and every job on it are gone.

    Only this test's keys are dropped (not FLUSHDB): other sessions may share the test Redis.
    Returns the ids of the notices whose jobs were lost.
    """
    redis = Redis.from_url(settings.redis_url)
    try:
        lost = [j.decode() for j in await redis.zrange(settings.queue_name, 0, -1)]
        notices: set[str] = set()
        for job in lost:
            stored = await redis.get(f"arq:job:{job}")
            assert stored is not None
            payload = job_deserializer(stored)["a"][0]
            assert job == job_id([uuid.UUID(n) for n in payload["notice_ids"]])
            notices |= set(payload["notice_ids"])
        keys = [settings.queue_name] + [
            f"{prefix}{j}" for j in lost for prefix in ("arq:job:", "arq:in-progress:", "arq:retry:", "arq:result:")
        ]
        await redis.delete(*keys)
        assert await redis.exists(*keys) == 0
    finally:
        await redis.aclose()
    return notices


@pytest.mark.timeout(60)
async def test_notices_dispatched_before_redis_lost_them_are_swept_after_the_timeout_and_sent_once(
    tenant: Tenant, pool: asyncpg.Pool, database_url: str
) -> None:
    today = NOW.date()
    await register(tenant, [today - 4 * DAY, today - 12 * DAY, today + 3 * DAY])
    settings = worker_settings(database_url, dispatch_timeout_s=60)
    clock = FixedClock(NOW)
    with WebhookReceiver().running() as receiver:
        await add_webhook(pool, receiver.url, enterprise_id=tenant.id)
        await plan_at(pool, NOW)
        queue = await open_queue(settings)
        try:
            async with pool.acquire() as conn:
                assert await dispatch(conn, queue, NOW, sweep_after=dt.timedelta(seconds=60)) >= 3
        finally:
            await queue.aclose()
        notices = await notices_of(pool, tenant.id)
        assert len(notices) == 3
        assert {(n["status"], n["next_attempt_at"]) for n in notices} == {
            ("dispatched", NOW + dt.timedelta(seconds=60))
        }
        lost = await lose_queue(settings)
        assert {str(n["id"]) for n in notices} <= lost

        # Before the sweep deadline nothing is handed over again: the rows say "dispatched".
        await run_burst(settings, clock)
        assert of_enterprise(receiver.requests, tenant.id) == []
        assert {n["status"] for n in await notices_of(pool, tenant.id)} == {"dispatched"}

        clock.set(NOW + dt.timedelta(seconds=61))
        await run_burst(settings, clock)
        clock.set(NOW + dt.timedelta(hours=2))
        await run_burst(settings, clock)
        requests = of_enterprise(receiver.requests, tenant.id)

    notices = await notices_of(pool, tenant.id)
    assert [n["status"] for n in notices] == ["delivered"] * 3
    assert sorted(r.json()["notice_id"] for r in requests) == sorted(str(n["id"]) for n in notices)
    deliveries = await deliveries_of(pool, [n["id"] for n in notices])
    assert {(d["status"], d["attempts"]) for d in deliveries} == {("delivered", 1)}
    assert len(deliveries) == 3


# --- stale notices -----------------------------------------------------------------------------------


@pytest.mark.timeout(60)
async def test_reminders_of_sealed_scrapped_or_re_verified_gauges_are_cancelled_not_sent(
    tenant: Tenant, lab: LabAccount, pool: asyncpg.Pool, database_url: str
) -> None:
    # Valid until 2026-07-14: each has its 30-day reminder on NOW.
    sealed, scrapped, verified, kept = await register(tenant, [dt.date(2026, 7, 14)] * 4)
    with WebhookReceiver().running() as receiver:
        await add_webhook(pool, receiver.url, enterprise_id=tenant.id)
        await plan_at(pool, NOW)
        planned: dict[str, uuid.UUID] = {}
        for gauge in (sealed, scrapped, verified, kept):
            (notice,) = await notices_for(pool, gauge)
            assert (notice["kind"], notice["step"], notice["status"]) == ("due_soon", 30, "pending")
            planned[gauge] = notice["id"]

        for gauge, action in ((sealed, "seal"), (scrapped, "scrap")):
            response = await tenant.api.post(f"/v1/instruments/{gauge}/{action}")
            assert response.status_code == 200, response.text
        await accepted_request(tenant, lab, verified)
        recorded = await lab.record(verified, performed_on="2026-06-10", issued_on="2026-06-12")
        assert recorded.status_code == 201, recorded.text

        await run_burst(worker_settings(database_url), FixedClock(NOW))
        got = [r.json() for r in of_enterprise(receiver.requests, tenant.id)]

    sent = {b["notice_id"] for b in got}
    assert not sent & {str(planned[g]) for g in (sealed, scrapped, verified)}
    assert str(planned[kept]) in sent
    # What did go out: the kept gauge's reminder and the re-verified gauge's result event.
    assert sorted((b["kind"], b["instrument"]["id"]) for b in got) == sorted(
        [("due_soon", kept), ("result_recorded", verified)]
    )
    reasons = {
        sealed: "cancelled: the instrument is sealed",
        scrapped: "cancelled: the instrument is scrapped",
        verified: "cancelled: a newer result governs",
    }
    for gauge, reason in reasons.items():
        (notice,) = [n for n in await notices_for(pool, gauge) if n["certificate_id"] is None]
        assert (notice["id"], notice["status"], notice["last_error"]) == (planned[gauge], "cancelled", reason)
    assert await deliveries_of(pool, [planned[g] for g in reasons]) == []
    assert [n["status"] for n in await notices_for(pool, kept)] == ["delivered"]


@pytest.mark.timeout(60)
async def test_the_deliver_job_cancels_a_notice_whose_instrument_changed_behind_its_back(
    tenant: Tenant, pool: asyncpg.Pool, database_url: str
) -> None:
    sealed, moved, kept = await register(tenant, [dt.date(2026, 7, 14)] * 3)
    settings = worker_settings(database_url)
    with WebhookReceiver().running() as receiver:
        await add_webhook(pool, receiver.url, enterprise_id=tenant.id)
        await plan_at(pool, NOW)
        # Handed to Redis first: the jobs are queued when the rows change.
        queue = await open_queue(settings)
        try:
            async with pool.acquire() as conn:
                assert await dispatch(conn, queue, NOW, sweep_after=dt.timedelta(seconds=300)) >= 3
        finally:
            await queue.aclose()
        async with pool.acquire() as conn:
            # Written straight to the table: nothing cancelled the notices on the way.
            await conn.execute("UPDATE instruments SET lifecycle = 'sealed' WHERE id = $1", uuid.UUID(sealed))
            await conn.execute(
                "UPDATE instruments SET valid_until = '2026-12-09', last_verified_on = '2026-06-10' WHERE id = $1",
                uuid.UUID(moved),
            )
        assert {n["status"] for n in await notices_of(pool, tenant.id)} == {"dispatched"}
        await run_burst(settings, FixedClock(NOW))
        got = [r.json() for r in of_enterprise(receiver.requests, tenant.id)]

    assert [(b["kind"], b["instrument"]["id"]) for b in got] == [("due_soon", kept)]
    (notice,) = await notices_for(pool, sealed)
    assert (notice["status"], notice["last_error"]) == ("cancelled", "cancelled: the instrument is sealed")
    (notice,) = await notices_for(pool, moved)
    assert (notice["status"], notice["last_error"]) == ("cancelled", "cancelled: a newer result governs")
    stale = [n["id"] for g in (sealed, moved) for n in await notices_for(pool, g)]
    assert await deliveries_of(pool, stale) == []
    assert [n["status"] for n in await notices_for(pool, kept)] == ["delivered"]


# --- owners, events and channels ---------------------------------------------------------------------


@pytest.mark.timeout(60)
async def test_the_escalation_goes_to_the_regulator_of_the_region_and_the_overdue_notice_to_the_enterprise(
    tenant: Tenant, pool: asyncpg.Pool, database_url: str
) -> None:
    # Last valid 2026-05-01: 45 days overdue on NOW, past the 30 days after which it is escalated.
    (gauge,) = await register(tenant, [dt.date(2026, 5, 1)])
    regulator_ids: list[uuid.UUID] = []
    try:
        with (
            WebhookReceiver().running() as own,
            WebhookReceiver().running() as shanghai,
            WebhookReceiver().running() as guangdong,
        ):
            await add_webhook(pool, own.url, enterprise_id=tenant.id)
            shanghai_id, shanghai_secret = await add_webhook(pool, shanghai.url, region_code="31")
            guangdong_id, _ = await add_webhook(pool, guangdong.url, region_code="44")
            regulator_ids += [shanghai_id, guangdong_id]
            await plan_at(pool, NOW)
            clock = FixedClock(NOW)
            await run_burst(worker_settings(database_url), clock)
            own_got = [r.json() for r in of_enterprise(own.requests, tenant.id)]
            shanghai_got = of_enterprise(shanghai.requests, tenant.id)
            guangdong_got = of_enterprise(guangdong.requests, tenant.id)
    finally:
        await deactivate(pool, *regulator_ids)

    notices = {n["kind"]: n for n in await notices_of(pool, tenant.id)}
    assert set(notices) == {"overdue", "escalation"}
    escalation, overdue = notices["escalation"], notices["overdue"]
    assert (escalation["audience"], escalation["due_on"]) == ("regulator", dt.date(2026, 6, 1))
    assert [(b["kind"], b["notice_id"], b["instrument"]["id"]) for b in own_got] == [
        ("overdue", str(overdue["id"]), gauge)
    ]
    assert [(r.json()["kind"], r.json()["notice_id"], r.json()["audience"]) for r in shanghai_got] == [
        ("escalation", str(escalation["id"]), "regulator")
    ]
    assert verify(
        shanghai_secret, shanghai_got[0].headers["metreg-signature"], shanghai_got[0].body, now=int(NOW.timestamp())
    )
    assert guangdong_got == []
    deliveries = await deliveries_of(pool, [escalation["id"]])
    assert guangdong_id not in {d["webhook_id"] for d in deliveries}
    (to_shanghai,) = [d for d in deliveries if d["webhook_id"] == shanghai_id]
    assert (to_shanghai["status"], to_shanghai["attempts"]) == ("delivered", 1)
    assert overdue["status"] == "delivered"
    assert {d["webhook_id"] for d in await deliveries_of(pool, [overdue["id"]])}.isdisjoint(regulator_ids)


#: A province and a county in it, whose regulators share one receiver.
REGIONS = ("33", "330106")


@pytest.mark.timeout(60)
async def test_two_regulators_with_webhooks_at_one_url_each_get_the_escalation_signed_with_their_own_secret(
    make_tenant: MakeTenant, app_client: httpx.AsyncClient, pool: asyncpg.Pool, database_url: str
) -> None:
    """Both regions cover the enterprise, and both regulators have their webhook at one URL (a shared
    integration platform): each webhook gets a delivery of its own, signed with its own secret and
    shown to its own owner, who alone may retry it. One delivery per URL lost the other's."""
    tenant = await make_tenant(region_code="330106")
    await register(tenant, [dt.date(2026, 5, 1)])  # 45 days overdue: escalated
    regulators = {region: Api(app_client, await mint(pool, Role.REGULATOR, region_code=region)) for region in REGIONS}
    hooks: dict[str, tuple[uuid.UUID, str]] = {}
    try:
        with WebhookReceiver().running() as platform:
            for region in REGIONS:
                hooks[region] = await add_webhook(pool, platform.url, region_code=region)
            await plan_at(pool, NOW)
            await run_burst(worker_settings(database_url), FixedClock(NOW))
            calls = of_enterprise(platform.requests, tenant.id)
    finally:
        await deactivate(pool, *(webhook_id for webhook_id, _ in hooks.values()))

    (escalation,) = [n for n in await notices_of(pool, tenant.id) if n["kind"] == "escalation"]
    assert escalation["status"] == "delivered"
    deliveries = {d["webhook_id"]: d for d in await deliveries_of(pool, [escalation["id"]])}
    assert {w: (d["target"], d["status"]) for w, d in deliveries.items()} == {
        webhook_id: (platform.url, "delivered") for webhook_id, _ in hooks.values()
    }
    now = int(NOW.timestamp())
    signed_by = {}
    for call in calls:
        assert call.json()["notice_id"] == str(escalation["id"])
        signature = call.headers["metreg-signature"]
        (signer,) = [w for w, secret in hooks.values() if verify(secret, signature, call.body, now=now)]
        signed_by[call.headers["metreg-delivery"]] = signer
    assert signed_by == {str(d["id"]): webhook_id for webhook_id, d in deliveries.items()}

    for region, regulator in regulators.items():
        own = deliveries[hooks[region][0]]
        seen = (await regulator.get(f"/v1/notices/{escalation['id']}")).json()["deliveries"]
        assert [(d["id"], d["webhook_id"], d["status"]) for d in seen] == [
            (str(own["id"]), str(own["webhook_id"]), "delivered")
        ]
        (others,) = [d for d in deliveries.values() if d["id"] != own["id"]]
        problem(await regulator.post(f"/v1/deliveries/{others['id']}/retry"), 404)


@pytest.mark.timeout(60)
async def test_a_webhook_deleted_while_its_delivery_waits_fails_it_and_leaves_another_owners_at_that_url_alone(
    make_tenant: MakeTenant, app_client: httpx.AsyncClient, pool: asyncpg.Pool, database_url: str
) -> None:
    """Both regulators' webhooks at one URL fail their first try (503). The county deletes its
    webhook: its delivery fails, "the webhook was deleted", while the province's is tried again,
    signed with the province's secret, and delivered."""
    tenant = await make_tenant(region_code="330107")
    await register(tenant, [dt.date(2026, 5, 1)])
    county = Api(app_client, await mint(pool, Role.REGULATOR, region_code="330107"))
    settings = worker_settings(database_url)
    clock = FixedClock(NOW)
    province_id = county_id = None
    try:
        with WebhookReceiver(respond=lambda n, got: 503 if n < 2 else 200).running() as platform:
            province_id, province_secret = await add_webhook(pool, platform.url, region_code="33")
            county_id, _ = await add_webhook(pool, platform.url, region_code="330107")
            await plan_at(pool, NOW)
            await run_burst(settings, clock)
            escalation = next(n for n in await notices_of(pool, tenant.id) if n["kind"] == "escalation")
            waiting = await deliveries_of(pool, [escalation["id"]])
            assert sorted((d["status"], d["attempts"]) for d in waiting) == [("pending", 1), ("pending", 1)]

            deleted = await county.delete(f"/v1/webhooks/{county_id}")
            assert deleted.status_code == 204, deleted.text
            clock.set(NOW + dt.timedelta(hours=1))
            await run_burst(settings, clock)
            calls = of_enterprise(platform.requests, tenant.id)
    finally:
        await deactivate(pool, *(w for w in (province_id, county_id) if w is not None))

    (escalation,) = [n for n in await notices_of(pool, tenant.id) if n["kind"] == "escalation"]
    assert (escalation["status"], escalation["last_error"]) == ("delivered", "1 of 2 deliveries failed")
    deliveries = {d["webhook_id"]: d for d in await deliveries_of(pool, [escalation["id"]])}
    to_province, to_county = deliveries[province_id], deliveries[county_id]
    assert (to_county["status"], to_county["attempts"], to_county["last_error"]) == (
        "failed",
        2,
        "the webhook was deleted",
    )
    assert (to_province["status"], to_province["attempts"]) == ("delivered", 2)
    history = await attempts_of(pool, [to_province["id"], to_county["id"]])
    assert [(a["outcome"], a["status_code"]) for a in history[to_province["id"]]] == [
        ("retry", 503),
        ("delivered", 200),
    ]
    assert [(a["outcome"], a["error"]) for a in history[to_county["id"]]] == [
        ("retry", "answered 503"),
        ("failed", "the webhook was deleted"),
    ]
    assert len(calls) == 3
    assert calls[-1].headers["metreg-delivery"] == str(to_province["id"])
    assert verify(
        province_secret, calls[-1].headers["metreg-signature"], calls[-1].body, now=int(clock.now().timestamp())
    )
    seen = (await county.get(f"/v1/notices/{escalation['id']}")).json()["deliveries"]
    assert [(d["id"], d["status"]) for d in seen] == [(str(to_county["id"]), "failed")]


@pytest.mark.timeout(60)
async def test_a_webhook_whose_url_is_longer_than_an_index_entry_gets_its_deliveries(
    tenant: Tenant, pool: asyncpg.Pool, database_url: str
) -> None:
    """Up to 2,000 characters of any script: here some 5,900 bytes, more than a B-tree entry holds
    (2,704). Keyed by URL, the delivery could not be written, and the job failed with its batch."""
    await register(tenant, [NOW.date() - 4 * DAY])
    with WebhookReceiver().running() as receiver:
        # Characters that do not repeat: an index compresses a long entry, and a repeated word
        # would fit once compressed.
        note = "".join(chr(0x4E00 + n * 7919 % 20000) for n in range(1950))
        url = f"{receiver.url}?note={note}"
        assert len(url) <= 2000
        assert len(url.encode()) > 2704
        webhook_id, _ = await add_webhook(pool, url, enterprise_id=tenant.id)
        await plan_at(pool, NOW)
        await run_burst(worker_settings(database_url), FixedClock(NOW))
        calls = of_enterprise(receiver.requests, tenant.id)
    (notice,) = await notices_of(pool, tenant.id)
    (delivery,) = await deliveries_of(pool, [notice["id"]])
    assert (notice["status"], delivery["webhook_id"], delivery["target"], delivery["status"]) == (
        "delivered",
        webhook_id,
        url,
        "delivered",
    )
    assert [c.headers["metreg-delivery"] for c in calls] == [str(delivery["id"])]


@pytest.mark.timeout(60)
async def test_a_webhook_for_overdue_only_gets_no_reminder(
    tenant: Tenant, pool: asyncpg.Pool, database_url: str
) -> None:
    today = NOW.date()
    overdue_gauge, due_gauge = await register(tenant, [today - 4 * DAY, today + 10 * DAY])
    with WebhookReceiver().running() as only_overdue, WebhookReceiver().running() as everything:
        await add_webhook(pool, only_overdue.url, enterprise_id=tenant.id, events=["overdue"])
        await add_webhook(pool, everything.url, enterprise_id=tenant.id)
        await plan_at(pool, NOW)
        await run_burst(worker_settings(database_url), FixedClock(NOW))
        filtered = [
            (r.json()["kind"], r.json()["instrument"]["id"]) for r in of_enterprise(only_overdue.requests, tenant.id)
        ]
        unfiltered = [
            (r.json()["kind"], r.json()["instrument"]["id"]) for r in of_enterprise(everything.requests, tenant.id)
        ]
    assert filtered == [("overdue", overdue_gauge)]
    assert sorted(unfiltered) == sorted([("overdue", overdue_gauge), ("due_soon", due_gauge)])
    notices = await notices_of(pool, tenant.id)
    assert {n["status"] for n in notices} == {"delivered"}
    reminder = next(n for n in notices if n["kind"] == "due_soon")
    assert len(await deliveries_of(pool, [reminder["id"]])) == 1


@pytest.mark.timeout(60)
async def test_each_address_gets_each_notice_by_mail_and_a_refused_address_fails_alone(
    make_tenant: MakeTenant, pool: asyncpg.Pool, database_url: str
) -> None:
    today = NOW.date()
    tag = uuid.uuid4().hex[:8]
    ops, qa, gone = f"ops-{tag}@example.com", f"qa-{tag}@example.com", f"gone-{tag}@example.com"
    first = await make_tenant(name="上海测试仪表有限公司")
    second = await make_tenant()
    overdue_gauge, due_gauge = await register(first, [today - 4 * DAY, today + 10 * DAY])
    (second_gauge,) = await register(second, [today - 4 * DAY])
    await patch_enterprise(first, notify_emails=[ops, qa])
    await patch_enterprise(second, notify_emails=[ops, gone])

    def refuse(address: str) -> str | None:
        return "550 no such user" if address == gone else None

    with smtp_server(refuse=refuse) as (smtp_url, inbox):
        await plan_at(pool, NOW)
        await run_burst(worker_settings(database_url, smtp_url=smtp_url), FixedClock(NOW))
        mail = mail_to(inbox, [ops, qa, gone])

    notices = {n["instrument_id"]: n for n in await notices_of(pool, first.id)}
    overdue, due = notices[uuid.UUID(overdue_gauge)], notices[uuid.UUID(due_gauge)]
    (refused_notice,) = await notices_of(pool, second.id)
    sent = collections.Counter((m["To"], m["X-Metreg-Notice"]) for m in mail)
    assert sent == {
        (ops, str(overdue["id"])): 1,
        (qa, str(overdue["id"])): 1,
        (ops, str(due["id"])): 1,
        (qa, str(due["id"])): 1,
        (ops, str(refused_notice["id"])): 1,
    }
    overdue_mail = next(m for m in mail if m["X-Metreg-Notice"] == str(overdue["id"]))
    text = overdue_mail.get_content()
    assert "已超过检定有效期，须立即停止使用并申请检定" in text
    assert "overdue: stop using it and have it verified" in text
    assert "上海测试仪表有限公司" in text
    assert "一般压力表" in overdue_mail["Subject"]
    assert overdue_mail["Subject"].startswith("【计量器具】")
    due_mail = next(m for m in mail if m["X-Metreg-Notice"] == str(due["id"]))
    assert "检定有效期即将届满" in due_mail.get_content()
    assert "verification is due soon" in due_mail.get_content()
    assert "（剩余 10 天）" in due_mail.get_content()

    for notice in (overdue, due):
        assert (notice["status"], notice["last_error"]) == ("delivered", None)
        deliveries = await deliveries_of(pool, [notice["id"]])
        assert {(d["channel"], d["target"], d["status"], d["digest"]) for d in deliveries} == {
            ("email", ops, "delivered", False),
            ("email", qa, "delivered", False),
        }
    assert (refused_notice["status"], refused_notice["last_error"]) == ("delivered", "1 of 2 deliveries failed")
    deliveries = {d["target"]: d for d in await deliveries_of(pool, [refused_notice["id"]])}
    assert (deliveries[ops]["status"], deliveries[ops]["attempts"]) == ("delivered", 1)
    failed = deliveries[gone]
    assert (failed["status"], failed["attempts"], failed["last_status"]) == ("failed", 1, 550)
    assert "no such user" in failed["last_error"]
    (attempt,) = (await attempts_of(pool, [failed["id"]]))[failed["id"]]
    assert (attempt["outcome"], attempt["status_code"]) == ("failed", 550)
    assert str(refused_notice["instrument_id"]) == second_gauge


@pytest.mark.timeout(60)
async def test_a_digest_enterprise_gets_one_mail_per_address_listing_the_days_notices(
    make_tenant: MakeTenant, pool: asyncpg.Pool, database_url: str
) -> None:
    today = NOW.date()
    tag = uuid.uuid4().hex[:8]
    addresses = [f"ops-{tag}@example.com", f"qa-{tag}@example.com"]
    tenant = await make_tenant()
    gauges = await register(tenant, [today - 4 * DAY, today + 10 * DAY, today + 25 * DAY])
    await patch_enterprise(tenant, notify_emails=addresses, digest=True)
    serials = {
        r["serial_no"]
        for r in await fetch(
            pool, "SELECT serial_no FROM instruments WHERE id = ANY($1::uuid[])", [uuid.UUID(g) for g in gauges]
        )
    }
    assert len(serials) == 3
    with smtp_server() as (smtp_url, inbox):
        settings = worker_settings(database_url, smtp_url=smtp_url)
        await plan_at(pool, NOW)
        burst = await run_burst(settings, FixedClock(NOW))
        assert burst.digests >= 2
        mail = mail_to(inbox, addresses)
        assert sorted(m["To"] for m in mail) == sorted(addresses)
        for message in mail:
            text = message.get_content()
            assert "今日共有 3 条计量器具提醒" in text
            assert "3 instrument notices today" in text
            assert all(serial in text for serial in serials)
            assert message["Subject"] == "【计量器具】今日提醒 3 条 / 3 instrument notices today"
        await run_burst(settings, FixedClock(NOW))
        assert len(mail_to(inbox, addresses)) == 2

    notices = await notices_of(pool, tenant.id)
    assert len(notices) == 3
    assert {n["status"] for n in notices} == {"delivered"}
    deliveries = await deliveries_of(pool, [n["id"] for n in notices])
    assert len(deliveries) == 6
    assert {(d["channel"], d["digest"], d["status"], d["attempts"]) for d in deliveries} == {
        ("email", True, "delivered", 1)
    }


@pytest.mark.timeout(60)
async def test_the_digest_goes_out_at_0800_local_time_not_before(
    make_tenant: MakeTenant, pool: asyncpg.Pool, database_url: str
) -> None:
    today = NOW.date()
    tag = uuid.uuid4().hex[:8]
    addresses = [f"ops-{tag}@example.com", f"qa-{tag}@example.com"]
    tenant = await make_tenant()
    await register(tenant, [today - 4 * DAY, today + 10 * DAY])
    await patch_enterprise(tenant, notify_emails=addresses, digest=True)
    eight = dt.datetime(2026, 6, 16, 0, 0, tzinfo=dt.UTC)  # 08:00 on 2026-06-16 in Shanghai
    with smtp_server() as (smtp_url, inbox):
        clock = FixedClock(NOW)
        runtime = await Runtime.open(worker_settings(database_url, smtp_url=smtp_url), clock)
        try:
            await plan_at(pool, NOW)
            notices = await notices_of(pool, tenant.id)
            assert len(notices) == 2
            for notice in notices:
                await deliver(runtime, notice["id"])
            deliveries = await deliveries_of(pool, [n["id"] for n in notices])
            assert {(d["digest"], d["status"], d["attempts"], d["next_attempt_at"]) for d in deliveries} == {
                (True, "pending", 0, eight)
            }
            assert {n["status"] for n in await notices_of(pool, tenant.id)} == {"dispatched"}
            assert mail_to(inbox, addresses) == []

            for before in (NOW + dt.timedelta(hours=6), eight - dt.timedelta(minutes=1)):
                clock.set(before)
                await send_digests(runtime)
                assert mail_to(inbox, addresses) == []
            clock.set(eight)
            assert await send_digests(runtime) >= 2
            mail = mail_to(inbox, addresses)
            assert sorted(m["To"] for m in mail) == sorted(addresses)
            assert all("今日共有 2 条计量器具提醒" in m.get_content() for m in mail)
            clock.set(eight + dt.timedelta(minutes=5))
            await send_digests(runtime)
            assert len(mail_to(inbox, addresses)) == 2
        finally:
            await runtime.close()
    notices = await notices_of(pool, tenant.id)
    assert {n["status"] for n in notices} == {"delivered"}
    deliveries = await deliveries_of(pool, [n["id"] for n in notices])
    assert {(d["status"], d["attempts"], d["delivered_at"]) for d in deliveries} == {("delivered", 1, eight)}


async def held_for_the_digest(runtime: Runtime, pool: asyncpg.Pool, tenant: Tenant) -> dict[uuid.UUID, uuid.UUID]:
    """Plan the tenant's notices at NOW and hold their e-mails for the digest: notice id by instrument."""
    await plan_at(pool, NOW)
    notices = await notices_of(pool, tenant.id)
    for notice in notices:
        await deliver(runtime, notice["id"])
    deliveries = await deliveries_of(pool, [n["id"] for n in notices])
    assert {(d["digest"], d["status"], d["attempts"]) for d in deliveries} == {(True, "pending", 0)}
    assert {n["status"] for n in await notices_of(pool, tenant.id)} == {"dispatched"}
    return {n["instrument_id"]: n["id"] for n in notices}


@pytest.mark.timeout(60)
async def test_a_held_reminder_of_a_gauge_a_lab_re_verified_is_not_in_the_digest(
    make_tenant: MakeTenant, lab: LabAccount, pool: asyncpg.Pool, database_url: str
) -> None:
    today = NOW.date()
    addresses = [f"ops-{uuid.uuid4().hex[:8]}@example.com"]
    tenant = await make_tenant()
    (gauge,) = await register(tenant, [today + 30 * DAY])
    await patch_enterprise(tenant, notify_emails=addresses, digest=True)
    eight = dt.datetime(2026, 6, 16, 0, 0, tzinfo=dt.UTC)  # 08:00 on 2026-06-16 in Shanghai
    with smtp_server() as (smtp_url, inbox):
        clock = FixedClock(NOW)
        runtime = await Runtime.open(worker_settings(database_url, smtp_url=smtp_url), clock)
        try:
            reminder = (await held_for_the_digest(runtime, pool, tenant))[uuid.UUID(gauge)]
            # Re-verified while its reminder waits for the morning: the result's transaction cancels
            # the reminder, but a lab sees no deliveries, so the e-mail it held is the digest's to drop.
            await accepted_request(tenant, lab, gauge)
            recorded = await lab.record(gauge, performed_on="2026-06-10", issued_on="2026-06-12")
            assert recorded.status_code == 201, recorded.text
            clock.set(eight)
            assert await send_digests(runtime) == 0
            mail = mail_to(inbox, addresses)
        finally:
            await runtime.close()
    assert mail == []
    (notice,) = [n for n in await notices_for(pool, gauge) if n["id"] == reminder]
    assert (notice["status"], notice["last_error"]) == ("cancelled", "cancelled: a newer result governs")
    assert {(d["status"], d["attempts"], d["last_error"]) for d in await deliveries_of(pool, [reminder])} == {
        ("failed", 0, "not sent: the notice was cancelled")
    }


@pytest.mark.timeout(60)
async def test_a_lab_recording_a_certificate_fails_the_cancelled_reminders_waiting_webhook_and_held_e_mail(
    make_tenant: MakeTenant, lab: LabAccount, pool: asyncpg.Pool, database_url: str
) -> None:
    today = NOW.date()
    addresses = [f"ops-{uuid.uuid4().hex[:8]}@example.com"]
    tenant = await make_tenant()
    (gauge,) = await register(tenant, [today + 30 * DAY])
    await patch_enterprise(tenant, notify_emails=addresses, digest=True)
    runtime = await Runtime.open(worker_settings(database_url), FixedClock(NOW))
    try:
        with WebhookReceiver(respond=lambda n, got: 503).running() as busy:
            webhook_id, _ = await add_webhook(pool, busy.url, enterprise_id=tenant.id)
            await plan_at(pool, NOW)
            (notice,) = await notices_of(pool, tenant.id)
            await deliver(runtime, notice["id"])
    finally:
        await runtime.close()
    await deactivate(pool, webhook_id)
    waiting = {d["channel"]: d for d in await deliveries_of(pool, [notice["id"]])}
    # The webhook waits for its second try, the e-mail for the morning's digest.
    webhook, mail = waiting["webhook"], waiting["email"]
    assert (webhook["status"], webhook["attempts"], webhook["last_status"]) == ("pending", 1, 503)
    assert (mail["status"], mail["digest"], mail["attempts"]) == ("pending", True, 0)

    # Re-verified: the lab's transaction cancels the reminder, though the lab sees no deliveries.
    await accepted_request(tenant, lab, gauge)
    recorded = await lab.record(gauge, performed_on="2026-06-10", issued_on="2026-06-12")
    assert recorded.status_code == 201, recorded.text

    (cancelled,) = [n for n in await notices_for(pool, gauge) if n["id"] == notice["id"]]
    assert (cancelled["status"], cancelled["last_error"]) == ("cancelled", "cancelled: a newer result governs")
    ended = {d["channel"]: d for d in await deliveries_of(pool, [notice["id"]])}
    assert (ended["webhook"]["status"], ended["webhook"]["attempts"], ended["webhook"]["last_error"]) == (
        "failed",
        1,
        "not tried again: the notice was cancelled",
    )
    assert (ended["email"]["status"], ended["email"]["attempts"], ended["email"]["last_error"]) == (
        "failed",
        0,
        "not sent: the notice was cancelled",
    )
    # The try that was made stays as it was recorded.
    attempts = await attempts_of(pool, [webhook["id"], mail["id"]])
    assert {d: [(a["attempt"], a["status_code"], a["outcome"]) for a in rows] for d, rows in attempts.items()} == {
        webhook["id"]: [(1, 503, "retry")]
    }


@pytest.mark.timeout(60)
async def test_the_digest_cancels_held_reminders_whose_cycle_no_longer_governs_as_the_deliver_job_does(
    make_tenant: MakeTenant, pool: asyncpg.Pool, database_url: str
) -> None:
    today = NOW.date()
    addresses = [f"ops-{uuid.uuid4().hex[:8]}@example.com", f"qa-{uuid.uuid4().hex[:8]}@example.com"]
    tenant = await make_tenant()
    # 7- and 30-day reminders on NOW: the first runs out on 2026-06-22, the others still govern then.
    lapsed, moved, kept = await register(tenant, [today + 7 * DAY, today + 30 * DAY, today + 30 * DAY])
    await patch_enterprise(tenant, notify_emails=addresses, digest=True)
    # 08:00 in Shanghai the day after the first one's last valid day: the worker was down since.
    late = dt.datetime(2026, 6, 23, 0, 0, tzinfo=dt.UTC)
    with smtp_server() as (smtp_url, inbox):
        clock = FixedClock(NOW)
        runtime = await Runtime.open(worker_settings(database_url, smtp_url=smtp_url), clock)
        try:
            held = await held_for_the_digest(runtime, pool, tenant)
            async with pool.acquire() as conn:
                # Written straight to the table (no planner has run since): nothing cancelled it.
                await conn.execute(
                    "UPDATE instruments SET valid_until = '2026-12-09', last_verified_on = '2026-06-10' WHERE id = $1",
                    uuid.UUID(moved),
                )
            clock.set(late)
            assert await send_digests(runtime) == 2
            mail = mail_to(inbox, addresses)
        finally:
            await runtime.close()
    serial = await fetch(pool, "SELECT serial_no FROM instruments WHERE id = $1", uuid.UUID(kept))
    assert sorted(m["To"] for m in mail) == sorted(addresses)
    for message in mail:
        assert "今日共有 1 条计量器具提醒" in message.get_content()
        assert serial[0]["serial_no"] in message.get_content()
    reasons = {lapsed: "cancelled: the instrument is overdue", moved: "cancelled: a newer result governs"}
    for gauge, reason in reasons.items():
        (notice,) = await notices_for(pool, gauge)
        assert (notice["id"], notice["status"], notice["last_error"]) == (held[uuid.UUID(gauge)], "cancelled", reason)
        assert {(d["status"], d["attempts"], d["last_error"]) for d in await deliveries_of(pool, [notice["id"]])} == {
            ("failed", 0, "not sent: the notice was cancelled")
        }
    (notice,) = await notices_for(pool, kept)
    assert notice["status"] == "delivered"
    assert {(d["status"], d["attempts"]) for d in await deliveries_of(pool, [notice["id"]])} == {("delivered", 1)}


class HeldMailer:
    """Holds each e-mail the runtime sends until the test lets it through (``release``), so that a
    test can act while a send is on the wire; ``arrived``: the addresses sent to so far."""

    def __init__(self, runtime: Runtime, monkeypatch: pytest.MonkeyPatch, *, hold: Callable[[str], bool]) -> None:
        self.arrived: list[str] = []
        self.release = asyncio.Event()
        self._came = asyncio.Event()
        send = runtime.mailer.send

        async def held(message: EmailMessage) -> Attempted:
            self.arrived.append(str(message["To"]))
            self._came.set()
            if hold(str(message["To"])):
                await self.release.wait()
            return await send(message)

        monkeypatch.setattr(runtime.mailer, "send", held)

    async def wait(self, job: asyncio.Task[Any], count: int = 1) -> None:
        """Return once ``count`` messages have reached the mailer (and are held there if they are
        to be)."""
        while len(self.arrived) < count:
            assert not job.done(), f"the job ended having sent {len(self.arrived)} of {count} messages"
            came = asyncio.ensure_future(self._came.wait())
            try:
                await asyncio.wait([job, came], return_when=asyncio.FIRST_COMPLETED)
            finally:
                came.cancel()
            self._came.clear()


EIGHT = dt.datetime(2026, 6, 16, 0, 0, tzinfo=dt.UTC)  # 08:00 on 2026-06-16 in Shanghai


@pytest.mark.timeout(60)
async def test_the_digest_locks_the_notices_before_it_records_so_a_cancellation_holding_one_is_not_deadlocked(
    make_tenant: MakeTenant, pool: asyncpg.Pool, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    address = f"ops-{uuid.uuid4().hex[:8]}@example.com"
    tenant = await make_tenant()
    await register(tenant, [NOW.date() + 30 * DAY])
    await patch_enterprise(tenant, notify_emails=[address], digest=True)
    clock = FixedClock(NOW)
    with smtp_server() as (smtp_url, inbox):
        runtime = await Runtime.open(worker_settings(database_url, smtp_url=smtp_url), clock)
        try:
            (notice_id,) = (await held_for_the_digest(runtime, pool, tenant)).values()
            mailer = HeldMailer(runtime, monkeypatch, hold=lambda to: True)
            clock.set(EIGHT)
            digest = asyncio.create_task(send_digests(runtime))
            await mailer.wait(digest)
            # A cancellation of the notice begins while the digest is on the wire: it holds the
            # notice, then would fail its deliveries.
            async with pool.acquire() as holder, holder.transaction():
                await holder.execute("SELECT 1 FROM notices WHERE id = $1 FOR UPDATE", notice_id)
                mailer.release.set()
                await wait_until_blocked(pool, holder, digest)
                # The digest waits for the notice before it writes a delivery, so the cancellation
                # gets them at once (a digest holding one would wait for the notice in turn: deadlock).
                deliveries = await holder.fetch(
                    "SELECT id FROM deliveries WHERE notice_id = $1 FOR UPDATE NOWAIT", notice_id
                )
            assert await digest >= 1
        finally:
            await runtime.close()
    assert len(deliveries) == 1
    assert [m["To"] for m in inbox if m["To"] == address] == [address]
    assert {(d["status"], d["attempts"]) for d in await deliveries_of(pool, [notice_id])} == {("delivered", 1)}


@pytest.mark.timeout(60)
async def test_a_digest_run_claims_no_more_messages_than_fit_in_its_lease_and_leaves_the_rest_held(
    make_tenant: MakeTenant, pool: asyncpg.Pool, database_url: str
) -> None:
    tag = uuid.uuid4().hex[:8]
    # One more address than a run can send to: every address of one enterprise (20 at most) and
    # one of another.
    many = [f"ops{n}-{tag}@example.com" for n in range(PARALLEL_SESSIONS)]
    one = [f"qa-{tag}@example.com"]
    tenants = [await make_tenant(), await make_tenant()]
    for tenant, addresses in zip(tenants, (many, one), strict=True):
        await register(tenant, [NOW.date() + 30 * DAY])
        await patch_enterprise(tenant, notify_emails=addresses, digest=True)
    # The shortest lease the settings allow: one round of sessions.
    assert claim_limit(lease_s=5.0, send_timeout_s=2.0, parallel=PARALLEL_SESSIONS) == PARALLEL_SESSIONS
    clock = FixedClock(NOW)
    with smtp_server() as (smtp_url, inbox):
        settings = worker_settings(database_url, smtp_url=smtp_url, send_timeout_s=2.0, dispatch_timeout_s=5.0)
        runtime = await Runtime.open(settings, clock)
        try:
            held = [n for tenant in tenants for n in (await held_for_the_digest(runtime, pool, tenant)).values()]
            clock.set(EIGHT)
            first = await send_digests(runtime)
            after_first = [m["To"] for m in mail_to(inbox, many + one)]
            left = [d for d in await deliveries_of(pool, held) if d["status"] == "pending"]
            second = await send_digests(runtime)
            sent = [m["To"] for m in mail_to(inbox, many + one)]
        finally:
            await runtime.close()
    assert first == len(after_first) == PARALLEL_SESSIONS
    # The one left over is still held and due: the next run sends it.
    assert [(d["attempts"], d["next_attempt_at"]) for d in left] == [(0, EIGHT)]
    assert second == 1
    assert sorted(sent) == sorted(many + one)
    assert {(d["status"], d["attempts"]) for d in await deliveries_of(pool, held)} == {("delivered", 1)}


@pytest.mark.timeout(60)
async def test_a_digest_run_that_waited_for_the_lock_past_what_it_can_send_claims_nothing_and_leaves_it_held(
    make_tenant: MakeTenant, pool: asyncpg.Pool, database_url: str
) -> None:
    address = f"ops-{uuid.uuid4().hex[:8]}@example.com"
    tenant = await make_tenant()
    await register(tenant, [NOW.date() + 30 * DAY])
    await patch_enterprise(tenant, notify_emails=[address], digest=True)
    # One round of 2 s sessions fits in the 5 s lease with one to spare; after 2 s of waiting none
    # does: the run would be stopped with its messages on the wire.
    assert claim_limit(lease_s=3.0, send_timeout_s=2.0, parallel=PARALLEL_SESSIONS) == 0
    waited = dt.timedelta(seconds=2)
    clock = FixedClock(NOW)
    with smtp_server() as (smtp_url, inbox):
        settings = worker_settings(database_url, smtp_url=smtp_url, send_timeout_s=2.0, dispatch_timeout_s=5.0)
        runtime = await Runtime.open(settings, clock)
        try:
            (notice_id,) = (await held_for_the_digest(runtime, pool, tenant)).values()
            clock.set(EIGHT)
            async with pool.acquire() as holder, holder.transaction():
                await holder.execute("SELECT 1 FROM notices WHERE id = $1 FOR UPDATE", notice_id)
                digest = asyncio.create_task(send_digests(runtime))
                await wait_until_blocked(pool, holder, digest)
                clock.set(EIGHT + waited)
            unsent = await digest
            (left,) = await deliveries_of(pool, [notice_id])
            # The next run has its whole time: it sends.
            sent = await send_digests(runtime)
            mail = mail_to(inbox, [address])
        finally:
            await runtime.close()
    assert unsent == 0
    assert (left["status"], left["attempts"], left["next_attempt_at"]) == ("pending", 0, EIGHT)
    assert sent >= 1
    assert [m["To"] for m in mail] == [address]
    assert {(d["status"], d["attempts"]) for d in await deliveries_of(pool, [notice_id])} == {("delivered", 1)}


@pytest.mark.timeout(60)
async def test_a_digest_run_records_each_message_as_it_is_sent_not_when_the_slowest_is(
    make_tenant: MakeTenant, pool: asyncpg.Pool, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    tag = uuid.uuid4().hex[:8]
    quick, slow = f"quick-{tag}@example.com", f"slow-{tag}@example.com"
    tenant = await make_tenant()
    await register(tenant, [NOW.date() + 30 * DAY])
    await patch_enterprise(tenant, notify_emails=[quick, slow], digest=True)
    clock = FixedClock(NOW)
    with smtp_server() as (smtp_url, inbox):
        runtime = await Runtime.open(worker_settings(database_url, smtp_url=smtp_url), clock)
        try:
            (notice_id,) = (await held_for_the_digest(runtime, pool, tenant)).values()
            # The slow one is held until the quick one is seen recorded.
            mailer = HeldMailer(runtime, monkeypatch, hold=lambda to: to == slow)
            clock.set(EIGHT)
            digest = asyncio.create_task(send_digests(runtime))
            try:
                while not [
                    d
                    for d in await deliveries_of(pool, [notice_id])
                    if d["target"] == quick and d["status"] == "delivered"
                ]:
                    assert not digest.done(), "the run ended before its quick message was recorded"
                    await asyncio.sleep(0.02)
                (on_the_wire,) = [d for d in await deliveries_of(pool, [notice_id]) if d["target"] == slow]
            finally:
                mailer.release.set()
            assert await digest >= 2
        finally:
            await runtime.close()
    assert slow in mailer.arrived
    assert (on_the_wire["status"], on_the_wire["attempts"]) == ("pending", 1)
    assert sorted(m["To"] for m in mail_to(inbox, [quick, slow])) == sorted([quick, slow])
    assert {(d["status"], d["attempts"]) for d in await deliveries_of(pool, [notice_id])} == {("delivered", 1)}


# --- a cancellation while tries are on the wire --------------------------------------------------------


@pytest.mark.timeout(60)
async def test_webhook_calls_on_the_wire_when_a_lab_cancels_their_notice_are_recorded_as_they_went_and_not_retried(
    make_tenant: MakeTenant, lab: LabAccount, pool: asyncpg.Pool, database_url: str
) -> None:
    tenant = await make_tenant()
    (gauge,) = await register(tenant, [NOW.date() + 30 * DAY])
    await accepted_request(tenant, lab, gauge)
    on_the_wire, answer = threading.Semaphore(0), threading.Event()

    def held(status: int) -> Callable[[int, Received], int]:
        def respond(n: int, got: Received) -> int:
            on_the_wire.release()
            answer.wait(20)  # until the lab's result is in
            return status

        return respond

    clock = FixedClock(NOW)
    runtime = await Runtime.open(worker_settings(database_url), clock)
    try:
        with (
            WebhookReceiver(respond=held(200)).running() as good,
            WebhookReceiver(respond=held(503)).running() as busy,
        ):
            hooks = [(await add_webhook(pool, r.url, enterprise_id=tenant.id))[0] for r in (good, busy)]
            await plan_at(pool, NOW)
            (notice,) = await notices_of(pool, tenant.id)
            job = asyncio.create_task(deliver_batch(runtime, [notice["id"]]))
            try:
                for _ in hooks:
                    assert await asyncio.to_thread(on_the_wire.acquire, True, 20)
                # Re-verified while both calls are on the wire: the result's transaction cancels the
                # reminder.
                recorded = await lab.record(gauge, performed_on="2026-06-10", issued_on="2026-06-12")
                assert recorded.status_code == 201, recorded.text
                (cancelled,) = [n for n in await notices_for(pool, gauge) if n["id"] == notice["id"]]
                wire = await deliveries_of(pool, [notice["id"]])
            finally:
                answer.set()
            await job
            # Long after the retry the 503 would have had: nothing is sent again.
            clock.set(NOW + DAY)
            await deliver_batch(runtime, [notice["id"]])
            calls = [len(of_enterprise(r.requests, tenant.id)) for r in (good, busy)]
    finally:
        await runtime.close()
        await deactivate(pool, *hooks)
    assert (cancelled["status"], cancelled["last_error"]) == ("cancelled", "cancelled: a newer result governs")
    # The cancellation left the claimed tries alone.
    assert {(d["status"], d["attempts"]) for d in wire} == {("pending", 1)}
    assert calls == [1, 1]
    ended = {d["webhook_id"]: d for d in await deliveries_of(pool, [notice["id"]])}
    got, gave_up = ended[hooks[0]], ended[hooks[1]]
    assert (got["status"], got["attempts"], got["last_status"], got["last_error"]) == ("delivered", 1, 200, None)
    assert (gave_up["status"], gave_up["attempts"], gave_up["last_status"]) == ("failed", 1, 503)
    assert gave_up["last_error"].endswith("; not tried again: the notice was cancelled")
    attempts = await attempts_of(pool, [got["id"], gave_up["id"]])
    assert {d: [(a["attempt"], a["status_code"], a["outcome"]) for a in rows] for d, rows in attempts.items()} == {
        got["id"]: [(1, 200, "delivered")],
        gave_up["id"]: [(1, 503, "failed")],
    }
    (still,) = [n for n in await notices_for(pool, gauge) if n["id"] == notice["id"]]
    assert still["status"] == "cancelled"


@pytest.mark.timeout(60)
async def test_digests_on_the_wire_when_their_gauge_is_sealed_are_recorded_as_they_went_and_not_retried(
    make_tenant: MakeTenant, pool: asyncpg.Pool, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    tag = uuid.uuid4().hex[:8]
    ok, busy = f"ok-{tag}@example.com", f"busy-{tag}@example.com"
    tenant = await make_tenant()
    (gauge,) = await register(tenant, [NOW.date() + 30 * DAY])
    await patch_enterprise(tenant, notify_emails=[ok, busy], digest=True)
    clock = FixedClock(NOW)
    with smtp_server(refuse=lambda to: "450 mailbox busy, try later" if to == busy else None) as (smtp_url, inbox):
        runtime = await Runtime.open(worker_settings(database_url, smtp_url=smtp_url), clock)
        try:
            (notice_id,) = (await held_for_the_digest(runtime, pool, tenant)).values()
            mailer = HeldMailer(runtime, monkeypatch, hold=lambda to: True)
            clock.set(EIGHT)
            digest = asyncio.create_task(send_digests(runtime))
            try:
                await mailer.wait(digest, count=2)
                # Sealed while both messages are on the wire: the reminder is cancelled.
                sealed = await tenant.api.post(f"/v1/instruments/{gauge}/seal")
                assert sealed.status_code == 200, sealed.text
                wire = await deliveries_of(pool, [notice_id])
            finally:
                mailer.release.set()
            await digest
            # Long after the retry the 450 would have had: nothing is sent again.
            clock.set(EIGHT + DAY)
            await send_digests(runtime)
        finally:
            await runtime.close()
    (notice,) = await notices_for(pool, gauge)
    assert (notice["status"], notice["last_error"]) == ("cancelled", "cancelled: the instrument is sealed")
    assert {(d["status"], d["attempts"]) for d in wire} == {("pending", 1)}
    assert sorted(mailer.arrived) == sorted([ok, busy])
    assert [m["To"] for m in mail_to(inbox, [ok, busy])] == [ok]
    ended = {d["target"]: d for d in await deliveries_of(pool, [notice_id])}
    assert (ended[ok]["status"], ended[ok]["attempts"], ended[ok]["last_status"]) == ("delivered", 1, 250)
    assert (ended[busy]["status"], ended[busy]["attempts"], ended[busy]["last_status"]) == ("failed", 1, 450)
    assert ended[busy]["last_error"].endswith("; not tried again: the notice was cancelled")
    attempts = await attempts_of(pool, [d["id"] for d in ended.values()])
    assert {d: [(a["attempt"], a["status_code"], a["outcome"]) for a in rows] for d, rows in attempts.items()} == {
        ended[ok]["id"]: [(1, 250, "delivered")],
        ended[busy]["id"]: [(1, 450, "failed")],
    }


@pytest.mark.timeout(60)
async def test_the_digest_fails_a_cancelled_notices_lost_claim_but_not_its_claim_still_on_the_wire(
    make_tenant: MakeTenant, pool: asyncpg.Pool, database_url: str
) -> None:
    tag = uuid.uuid4().hex[:8]
    lost, sending = f"lost-{tag}@example.com", f"sending-{tag}@example.com"
    tenant = await make_tenant()
    await register(tenant, [NOW.date() + 30 * DAY])
    await patch_enterprise(tenant, notify_emails=[lost, sending], digest=True)
    lease = dt.timedelta(seconds=300)
    clock = FixedClock(NOW)
    with smtp_server() as (smtp_url, inbox):
        runtime = await Runtime.open(
            worker_settings(database_url, smtp_url=smtp_url, dispatch_timeout_s=lease.total_seconds()), clock
        )
        try:
            (notice_id,) = (await held_for_the_digest(runtime, pool, tenant)).values()
            claimed = {d["target"]: d["id"] for d in await deliveries_of(pool, [notice_id])}
            async with pool.acquire() as conn, conn.transaction():
                # One e-mail was claimed by a run that died; the other, later, by a run still
                # sending it when the notice was cancelled (before the first claim's lease ran out).
                for target, claimed_at in ((lost, EIGHT - lease), (sending, EIGHT - dt.timedelta(seconds=5))):
                    await conn.execute(
                        "UPDATE deliveries SET attempts = 1, next_attempt_at = $2 WHERE id = $1",
                        claimed[target],
                        claimed_at + lease,
                    )
                await conn.execute(
                    """UPDATE notices SET status = 'cancelled', last_error = 'cancelled: the instrument is sealed',
                                          closed_at = $2, updated_at = $2
                       WHERE id = $1""",
                    notice_id,
                    EIGHT - dt.timedelta(seconds=1),
                )
            assert {(d["status"], d["attempts"]) for d in await deliveries_of(pool, [notice_id])} == {("pending", 1)}
            clock.set(EIGHT)
            assert await send_digests(runtime) == 0
        finally:
            await runtime.close()
    assert mail_to(inbox, [lost, sending]) == []
    ended = {d["target"]: d for d in await deliveries_of(pool, [notice_id])}
    # Its try left no attempt row and may have arrived: the error says so.
    assert (ended[lost]["status"], ended[lost]["last_error"]) == (
        "failed",
        LOST_TRY,
    )
    # Still the claim of the run sending it: that run records what it came to.
    assert (ended[sending]["status"], ended[sending]["attempts"]) == ("pending", 1)


async def sent_then_died(items: Any, send: Any, record: Any, *, parallel: int) -> None:
    """In place of ``jobs.deliver.send_recording``: every try is sent, then the worker dies before
    it records any."""
    for item in items:
        await send(item)
    raise RuntimeError("the worker died before it recorded what it sent")


#: What a try lost with its job says once its cancelled notice's sweep (or cancellation) ends it.
LOST_TRY = "try 1 went unrecorded (its job ended first; it may have arrived); not tried again: the notice was cancelled"


@pytest.mark.timeout(60)
async def test_tries_lost_in_a_crash_while_a_lab_cancels_their_notice_end_failed_and_are_never_sent_again(
    make_tenant: MakeTenant, lab: LabAccount, pool: asyncpg.Pool, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker dies after sending a webhook call and an e-mail and before recording them; a lab
    cancels the notice meanwhile (its claims were on the wire, so the cancellation leaves them to
    the job, which is gone). The dispatcher never hands a cancelled notice over again: once the
    claims' lease has run out, the sweep ends both deliveries failed, saying the try went
    unrecorded, and neither target hears of the notice again."""
    address = f"ops-{uuid.uuid4().hex[:8]}@example.com"
    tenant = await make_tenant()
    (gauge,) = await register(tenant, [NOW.date() + 30 * DAY])
    await patch_enterprise(tenant, notify_emails=[address])
    await accepted_request(tenant, lab, gauge)
    lease = dt.timedelta(seconds=60)
    clock = FixedClock(NOW)
    with smtp_server() as (smtp_url, inbox), WebhookReceiver().running() as receiver:
        settings = worker_settings(database_url, smtp_url=smtp_url, dispatch_timeout_s=lease.total_seconds())
        webhook_id, _ = await add_webhook(pool, receiver.url, enterprise_id=tenant.id)
        await plan_at(pool, NOW)
        (notice,) = await notices_of(pool, tenant.id)

        def calls() -> tuple[int, int]:
            hooks = [r for r in receiver.requests if r.json()["notice_id"] == str(notice["id"])]
            mails = [m for m in mail_to(inbox, [address]) if m["X-Metreg-Notice"] == str(notice["id"])]
            return len(hooks), len(mails)

        with monkeypatch.context() as patched:
            patched.setattr("jobs.deliver.send_recording", sent_then_died)
            await run_burst(settings, clock)
        assert calls() == (1, 1)
        # Re-verified while the claims hold: the lab's transaction cancels the reminder and leaves
        # the claimed tries to the job that made them.
        recorded = await lab.record(gauge)
        assert recorded.status_code == 201, recorded.text
        claimed = await deliveries_of(pool, [notice["id"]])
        assert {(d["channel"], d["status"], d["attempts"], d["next_attempt_at"]) for d in claimed} == {
            ("webhook", "pending", 1, NOW + lease),
            ("email", "pending", 1, NOW + lease),
        }
        for later in (lease + dt.timedelta(seconds=1), dt.timedelta(hours=2), 2 * DAY):
            clock.set(NOW + later)
            await run_burst(settings, clock)
        sent = calls()
        shown = await tenant.api.get(f"/v1/notices/{notice['id']}")
    await deactivate(pool, webhook_id)

    assert sent == (1, 1)
    (cancelled,) = [n for n in await notices_for(pool, gauge) if n["id"] == notice["id"]]
    assert (cancelled["status"], cancelled["last_error"]) == ("cancelled", "cancelled: a newer result governs")
    ended = await deliveries_of(pool, [notice["id"]])
    assert {(d["channel"], d["status"], d["attempts"], d["last_status"], d["last_error"]) for d in ended} == {
        ("webhook", "failed", 1, None, LOST_TRY),
        ("email", "failed", 1, None, LOST_TRY),
    }
    # Nothing is made up about the lost try: it has no attempt row, as a lost try never has.
    assert await attempts_of(pool, [d["id"] for d in ended]) == {}
    assert shown.status_code == 200, shown.text
    assert {(d["channel"], d["status"], d["last_error"], len(d["history"])) for d in shown.json()["deliveries"]} == {
        ("webhook", "failed", LOST_TRY, 0),
        ("email", "failed", LOST_TRY, 0),
    }


@pytest.mark.timeout(60)
async def test_the_sweep_fails_only_lost_tries_of_cancelled_notices_past_their_lease_and_waits_for_a_locked_one(
    tenant: Tenant, pool: asyncpg.Pool, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Four tries lost with their job: of a cancelled notice (failed once the lease has run out), of
    a cancelled notice claimed again since (on the wire: left to its job), of a live notice (left
    to its next dispatch) and of a cancelled notice another transaction holds (left to the next
    sweep, which fails it)."""
    today = NOW.date()
    lease = dt.timedelta(seconds=60)
    settings = worker_settings(database_url, dispatch_timeout_s=lease.total_seconds())
    await register(tenant, [today - 4 * DAY, today + 3 * DAY, today + 7 * DAY, today + 30 * DAY])
    with WebhookReceiver().running() as receiver:
        webhook_id, _ = await add_webhook(pool, receiver.url, enterprise_id=tenant.id)
        await plan_at(pool, NOW)
        with monkeypatch.context() as patched:
            patched.setattr("jobs.deliver.send_recording", sent_then_died)
            await run_burst(settings, FixedClock(NOW))
        sent = len(of_enterprise(receiver.requests, tenant.id))
    await deactivate(pool, webhook_id)
    lost, on_the_wire, live, locked = [n["id"] for n in await notices_of(pool, tenant.id)]
    delivery = {d["notice_id"]: d["id"] for d in await deliveries_of(pool, [lost, on_the_wire, live, locked])}
    async with pool.acquire() as conn, conn.transaction():
        # One notice's try was claimed again later and is still on the wire (its lease runs on).
        await conn.execute(
            "UPDATE deliveries SET next_attempt_at = $2 WHERE id = $1", delivery[on_the_wire], NOW + 10 * lease
        )
        await conn.execute(
            """UPDATE notices SET status = 'cancelled', last_error = 'cancelled: the instrument is sealed',
                                  closed_at = $2, updated_at = $2
               WHERE id = ANY ($1::uuid[])""",
            [lost, on_the_wire, locked],
            NOW + dt.timedelta(seconds=1),
        )
    # The cancellation left every claim to its job.
    assert {(d["status"], d["attempts"]) for d in await deliveries_of(pool, delivery)} == {("pending", 1)}

    later = NOW + lease + dt.timedelta(seconds=1)
    async with pool.acquire() as holder, holder.transaction():
        await holder.execute("SELECT 1 FROM notices WHERE id = $1 FOR UPDATE", locked)
        async with pool.acquire() as conn:
            assert await end_lost_tries(conn, later) == 1
    async with pool.acquire() as conn:
        assert await end_lost_tries(conn, later) == 1
        assert await end_lost_tries(conn, later) == 0

    ended = {d["notice_id"]: d for d in await deliveries_of(pool, delivery)}
    assert {n: (d["status"], d["attempts"], d["last_error"]) for n, d in ended.items()} == {
        lost: ("failed", 1, LOST_TRY),
        locked: ("failed", 1, LOST_TRY),
        # Its job records it.
        on_the_wire: ("pending", 1, None),
        # Its notice's next dispatch makes the try again.
        live: ("pending", 1, None),
    }
    assert await attempts_of(pool, delivery.values()) == {}
    assert sent == 4


@pytest.mark.timeout(60)
async def test_a_cancellation_after_a_lost_claims_lease_ran_out_says_the_try_went_unrecorded(
    tenant: Tenant, pool: asyncpg.Pool, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The job died and its claim ran out before the notice's next dispatch; then the notice is
    cancelled. The cancellation's trigger fails the delivery itself (no claim holds it any more),
    in the sweep's words."""
    lease = dt.timedelta(seconds=60)
    await register(tenant, [NOW.date() - 4 * DAY])
    with WebhookReceiver().running() as receiver:
        webhook_id, _ = await add_webhook(pool, receiver.url, enterprise_id=tenant.id)
        await plan_at(pool, NOW)
        with monkeypatch.context() as patched:
            patched.setattr("jobs.deliver.send_recording", sent_then_died)
            await run_burst(worker_settings(database_url, dispatch_timeout_s=lease.total_seconds()), FixedClock(NOW))
    await deactivate(pool, webhook_id)
    (notice,) = await notices_of(pool, tenant.id)
    async with pool.acquire() as conn:
        await conn.execute(
            """UPDATE notices SET status = 'cancelled', last_error = 'cancelled: a newer result governs',
                                  closed_at = $2, updated_at = $2
               WHERE id = $1""",
            notice["id"],
            NOW + lease + dt.timedelta(seconds=1),
        )
    (ended,) = await deliveries_of(pool, [notice["id"]])
    assert (ended["status"], ended["attempts"], ended["last_error"]) == ("failed", 1, LOST_TRY)


async def test_the_sweep_finds_lost_tries_through_their_index_and_their_notices_by_key(pool: asyncpg.Pool) -> None:
    """The sweep runs every ten seconds over every delivery ever made: its conditions must be those
    of deliveries_claimed, and each due try's notice read by its key. (Sequential reads are priced
    out: on this module's few rows they are cheapest, which says nothing of a large table; on
    1,000,000 deliveries the sweep read the 129 due claims from the index in about a millisecond.)"""
    async with pool.acquire() as conn, conn.transaction():
        # Bitmap scans too, so that each read of a table names its index.
        await conn.execute("SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off")
        plan = await conn.fetchval(f"EXPLAIN (FORMAT JSON) {LOST_TO_CANCELLED}", NOW, 500)

    def nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
        yield node
        for child in node.get("Plans", []):
            yield from nodes(child)

    # Every read of a table: the index it goes through (None: a sequential read) and whether it
    # looks up a range or a key in it rather than reading it whole.
    reads = [(n.get("Index Name"), "Index Cond" in n) for n in nodes(plan[0]["Plan"]) if "Relation Name" in n]
    assert set(reads) == {("deliveries_claimed", True), ("notices_pkey", True)}, reads


# --- a slow resolver ---------------------------------------------------------------------------------

#: A host whose name the (patched) system resolver takes 3 s to give up on.
SLOW_HOST = "slow-dns.metreg.test"


@pytest.mark.timeout(60)
async def test_a_webhook_call_is_given_up_after_the_send_timeout_even_while_its_name_resolves(
    tenant: Tenant, pool: asyncpg.Pool, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    resolve = socket.getaddrinfo
    finished = threading.Event()

    def slow_resolver(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host != SLOW_HOST:
            return resolve(host, *args, **kwargs)
        try:
            time.sleep(3)  # what an unanswered DNS query does (glibc waits 5 s per try)
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        finally:
            finished.set()

    monkeypatch.setattr(socket, "getaddrinfo", slow_resolver)
    await register(tenant, [NOW.date() - 4 * DAY])
    webhook_id, _ = await add_webhook(pool, f"http://{SLOW_HOST}/hooks/metreg", enterprise_id=tenant.id)
    try:
        await plan_at(pool, NOW)
        await run_burst(worker_settings(database_url, send_timeout_s=1.0), FixedClock(NOW))
    finally:
        await deactivate(pool, webhook_id)  # later bursts of the module must not try it again
        # The lookup's thread is not cancelled with the call: let it end before the next test.
        assert await asyncio.to_thread(finished.wait, 10)
    (notice,) = await notices_of(pool, tenant.id)
    (delivery,) = await deliveries_of(pool, [notice["id"]])
    (attempt,) = (await attempts_of(pool, [delivery["id"]]))[delivery["id"]]
    # "timed out", not "does not resolve": the deadline ended the try before the resolver gave up.
    assert (attempt["outcome"], attempt["status_code"], attempt["error"]) == ("retry", None, "timed out")
    assert (notice["status"], delivery["status"]) == ("pending", "pending")


@pytest.mark.timeout(60)
async def test_a_healthy_receiver_is_reached_while_other_host_names_resolve_slowly(
    make_tenant: MakeTenant, pool: asyncpg.Pool, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As many hanging lookups as the event loop's default thread pool has threads: calls that
    # resolved there waited behind them past their timeout, even to an IP literal.
    loop = asyncio.get_running_loop()
    threads = min(32, (os.cpu_count() or 1) + 4)
    resolve = socket.getaddrinfo
    release = threading.Event()
    entered: list[str] = []
    all_held = asyncio.Event()

    def slow_resolver(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host != SLOW_HOST:
            return resolve(host, *args, **kwargs)
        entered.append(host)
        if len(entered) == threads:
            loop.call_soon_threadsafe(all_held.set)
        release.wait(20)  # an unanswered DNS query, until the test has seen enough
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    slow, healthy = await make_tenant(), await make_tenant()
    await register(slow, [NOW.date() - 4 * DAY] * threads)
    await register(healthy, [NOW.date() - 4 * DAY])
    slow_hook, _ = await add_webhook(pool, f"http://{SLOW_HOST}/hooks/metreg", enterprise_id=slow.id)
    await plan_at(pool, NOW)
    settings = worker_settings(database_url, send_timeout_s=1.0, db_pool_min=threads + 2, db_pool_max=threads + 2)
    runtime = await Runtime.open(settings, FixedClock(NOW))  # connections opened before any lookup hangs
    monkeypatch.setattr(socket, "getaddrinfo", slow_resolver)
    try:
        with WebhookReceiver().running() as receiver:
            await add_webhook(pool, receiver.url, enterprise_id=healthy.id)
            slow_tries = [asyncio.create_task(deliver(runtime, n["id"])) for n in await notices_of(pool, slow.id)]
            await asyncio.wait_for(all_held.wait(), 10)
            (notice,) = await notices_of(pool, healthy.id)
            await deliver(runtime, notice["id"])
            release.set()
            await asyncio.gather(*slow_tries)
            got = of_enterprise(receiver.requests, healthy.id)
    finally:
        release.set()
        await deactivate(pool, slow_hook)
        await runtime.close()
    (delivery,) = await deliveries_of(pool, [notice["id"]])
    assert (delivery["status"], delivery["last_error"]) == ("delivered", None)
    assert len(got) == 1


# --- batches -----------------------------------------------------------------------------------------


@pytest.mark.timeout(60)
async def test_one_batch_delivers_to_good_targets_and_records_each_failing_target_on_its_own(
    tenant: Tenant, pool: asyncpg.Pool, database_url: str
) -> None:
    today = NOW.date()
    await register(tenant, [today - 4 * DAY, today - 12 * DAY, today + 3 * DAY])
    runtime = await Runtime.open(worker_settings(database_url), FixedClock(NOW))
    try:
        with (
            WebhookReceiver().running() as good,
            WebhookReceiver(respond=lambda n, got: 410).running() as gone,
            WebhookReceiver(respond=lambda n, got: 503).running() as busy,
        ):
            hooks = {
                name: (await add_webhook(pool, r.url, enterprise_id=tenant.id))[0]
                for name, r in (("good", good), ("gone", gone), ("busy", busy))
            }
            await plan_at(pool, NOW)
            notices = await notices_of(pool, tenant.id)
            assert len(notices) == 3
            await deliver_batch(runtime, [n["id"] for n in notices])
            calls = {
                name: of_enterprise(r.requests, tenant.id)
                for name, r in (("good", good), ("gone", gone), ("busy", busy))
            }
    finally:
        await runtime.close()

    ids = sorted(str(n["id"]) for n in notices)
    for name in ("good", "gone", "busy"):
        assert sorted(r.json()["notice_id"] for r in calls[name]) == ids, name
    deliveries = await deliveries_of(pool, [n["id"] for n in notices])
    by_hook = collections.defaultdict(set)
    for d in deliveries:
        by_hook[d["webhook_id"]].add((d["status"], d["attempts"], d["last_status"]))
    assert by_hook[hooks["good"]] == {("delivered", 1, 200)}
    assert by_hook[hooks["gone"]] == {("failed", 1, 410)}
    assert by_hook[hooks["busy"]] == {("pending", 1, 503)}
    attempts = await attempts_of(pool, [d["id"] for d in deliveries])
    assert sorted(len(a) for a in attempts.values()) == [1] * 9
    # The 503s wait for their retry, so every notice does too.
    retry_at = {d["next_attempt_at"] for d in deliveries if d["webhook_id"] == hooks["busy"]}
    assert all(NOW < at_ <= NOW + dt.timedelta(seconds=36) for at_ in retry_at)
    for notice in await notices_of(pool, tenant.id):
        assert notice["status"] == "pending"
        assert notice["next_attempt_at"] in retry_at
    await deactivate(pool, *hooks.values())


@pytest.mark.timeout(60)
async def test_a_crash_between_send_and_record_sends_again_after_the_lease_and_records_once(
    tenant: Tenant, pool: asyncpg.Pool, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    today = NOW.date()
    await register(tenant, [today - 4 * DAY, today + 3 * DAY])
    settings = worker_settings(database_url, dispatch_timeout_s=60)
    clock = FixedClock(NOW)
    lost: list[tuple[Claimed, Attempted]] = []

    async def crash(db: asyncpg.Connection, tries: list[tuple[Claimed, Attempted]], **kwargs: Any) -> None:
        lost.extend(tries)
        raise RuntimeError("the worker died before it recorded what it sent")

    with WebhookReceiver().running() as receiver:
        webhook_id, _ = await add_webhook(pool, receiver.url, enterprise_id=tenant.id)
        await plan_at(pool, NOW)
        with monkeypatch.context() as patched:
            patched.setattr("jobs.tries.record_many", crash)
            await run_burst(settings, clock)
        notices = await notices_of(pool, tenant.id)
        assert len(notices) == 2
        # The first tries to finish were being recorded when the worker died; a call still on its
        # way then died with it.
        before_crash = collections.Counter(r.json()["notice_id"] for r in of_enterprise(receiver.requests, tenant.id))
        assert set(before_crash) <= {str(n["id"]) for n in notices}
        assert set(before_crash.values()) == {1}
        assert lost
        assert {str(claim.notice_id) for claim, _ in lost} <= set(before_crash)
        # Sent, not recorded: the claims hold the deliveries and the notices wait for the sweep.
        deliveries = await deliveries_of(pool, [n["id"] for n in notices])
        assert {(d["status"], d["attempts"], d["next_attempt_at"]) for d in deliveries} == {
            ("pending", 1, NOW + dt.timedelta(seconds=60))
        }
        assert await attempts_of(pool, [d["id"] for d in deliveries]) == {}
        assert {(n["status"], n["next_attempt_at"]) for n in notices} == {
            ("dispatched", NOW + dt.timedelta(seconds=60))
        }

        await run_burst(settings, clock)  # within the lease nothing is sent again
        assert len(of_enterprise(receiver.requests, tenant.id)) == len(before_crash)
        clock.set(NOW + dt.timedelta(seconds=61))
        await run_burst(settings, clock)
        clock.set(NOW + dt.timedelta(hours=2))
        await run_burst(settings, clock)
        sent = of_enterprise(receiver.requests, tenant.id)
    await deactivate(pool, webhook_id)

    # Twice what was sent before the crash, the only doubling allowed: the same notice_id and
    # delivery id for the receiver to drop; once what was not.
    assert collections.Counter(r.json()["notice_id"] for r in sent) == {
        str(n["id"]): 1 + before_crash[str(n["id"])] for n in notices
    }
    for delivery_id, calls in itertools.groupby(
        sorted(sent, key=lambda r: r.headers["metreg-delivery"]), key=lambda r: r.headers["metreg-delivery"]
    ):
        assert len({r.body for r in calls}) == 1, delivery_id
    deliveries = await deliveries_of(pool, [n["id"] for n in notices])
    assert {(d["status"], d["attempts"]) for d in deliveries} == {("delivered", 2)}
    attempts = await attempts_of(pool, [d["id"] for d in deliveries])
    assert {d: [a["attempt"] for a in rows] for d, rows in attempts.items()} == {d["id"]: [2] for d in deliveries}
    assert [n["status"] for n in await notices_of(pool, tenant.id)] == ["delivered"] * 2

    # What the lost claims would have recorded, had the worker come back: the claims no longer hold.
    async with pool.acquire() as conn:
        late = await record_many(conn, lost, started_at=NOW, now=NOW + dt.timedelta(hours=3), jitter=lambda: 0.5)
    assert late == {}
    assert await attempts_of(pool, [d["id"] for d in deliveries]) == attempts


@pytest.mark.timeout(60)
async def test_a_batch_claims_no_more_tries_than_fit_in_its_lease_and_leaves_the_rest_due(
    tenant: Tenant, pool: asyncpg.Pool, database_url: str
) -> None:
    await register(tenant, [NOW.date() - 4 * DAY])
    # The shortest lease the settings allow: one round of sends.
    settings = worker_settings(database_url, send_timeout_s=2.0, dispatch_timeout_s=5.0)
    limit = claim_limit(lease_s=5.0, send_timeout_s=2.0)
    assert limit == PARALLEL_SENDS
    runtime = await Runtime.open(settings, FixedClock(NOW))
    try:
        with WebhookReceiver().running() as receiver:
            # A delivery per target URL: one receiver, as many URLs.
            hooks = [
                (await add_webhook(pool, f"{receiver.url}?hook={n}", enterprise_id=tenant.id))[0]
                for n in range(limit + 1)
            ]
            await plan_at(pool, NOW)
            (notice,) = await notices_of(pool, tenant.id)
            await deliver(runtime, notice["id"])
            first = len(of_enterprise(receiver.requests, tenant.id))
            (waiting,) = await notices_of(pool, tenant.id)
            await deliver(runtime, notice["id"])
            calls = of_enterprise(receiver.requests, tenant.id)
    finally:
        await runtime.close()
        await deactivate(pool, *hooks)
    assert first == limit
    # The one left over is due at once, and so is its notice: the next dispatch takes it.
    assert (waiting["status"], waiting["next_attempt_at"]) == ("pending", NOW)
    assert len(calls) == limit + 1
    assert len({r.headers["metreg-delivery"] for r in calls}) == limit + 1
    deliveries = await deliveries_of(pool, [notice["id"]])
    assert {(d["status"], d["attempts"]) for d in deliveries} == {("delivered", 1)}
    assert [n["status"] for n in await notices_of(pool, tenant.id)] == ["delivered"]


@pytest.mark.timeout(60)
async def test_a_batch_records_each_try_as_it_finishes_not_when_the_slowest_does(
    tenant: Tenant, pool: asyncpg.Pool, database_url: str
) -> None:
    quick, slow = await register(tenant, [NOW.date() - 4 * DAY, NOW.date() - 12 * DAY])
    release = threading.Event()

    def respond(n: int, got: Received) -> int:
        if got.json()["instrument"]["id"] == slow:
            release.wait(20)  # held until the quick one is seen recorded
        return 200

    runtime = await Runtime.open(
        worker_settings(database_url, send_timeout_s=30.0, dispatch_timeout_s=61.0), FixedClock(NOW)
    )
    try:
        with WebhookReceiver(respond=respond).running() as receiver:
            webhook_id, _ = await add_webhook(pool, receiver.url, enterprise_id=tenant.id)
            await plan_at(pool, NOW)
            notices = {n["instrument_id"]: n["id"] for n in await notices_of(pool, tenant.id)}
            batch = asyncio.create_task(deliver_batch(runtime, list(notices.values())))
            try:
                while not [
                    d for d in await deliveries_of(pool, [notices[uuid.UUID(quick)]]) if d["status"] == "delivered"
                ]:
                    assert not batch.done(), "the batch ended before its quick try was recorded"
                    await asyncio.sleep(0.02)
                (held,) = await deliveries_of(pool, [notices[uuid.UUID(slow)]])
                assert (held["status"], held["attempts"]) == ("pending", 1)
                assert [n["status"] for n in await notices_for(pool, quick)] == ["delivered"]
            finally:
                release.set()
                await batch
    finally:
        await runtime.close()
        await deactivate(pool, webhook_id)
    assert {n["status"] for n in await notices_of(pool, tenant.id)} == {"delivered"}


# --- claims made after a wait for the notices' locks ---------------------------------------------------


async def wait_until_blocked(pool: asyncpg.Pool, holder: asyncpg.Connection, job: asyncio.Task[Any]) -> None:
    """Return once some backend waits for a lock that ``holder`` holds (the job, in its lock wait)."""
    pid = holder.get_server_pid()
    while not await fetch(pool, "SELECT 1 FROM pg_stat_activity WHERE $1::int = ANY (pg_blocking_pids(pid))", pid):
        assert not job.done(), "the job ended without waiting for the lock"
        await asyncio.sleep(0.01)


@pytest.mark.timeout(60)
async def test_a_claim_made_after_waiting_for_the_notices_lock_holds_a_whole_lease_from_the_claim(
    tenant: Tenant, pool: asyncpg.Pool, database_url: str
) -> None:
    (gauge,) = await register(tenant, [NOW.date() - 4 * DAY])
    lease, waited = dt.timedelta(seconds=60), dt.timedelta(seconds=20)
    clock = FixedClock(NOW)
    arrived, answer = threading.Event(), threading.Event()

    def respond(n: int, got: Received) -> int:
        arrived.set()
        answer.wait(20)  # on the wire until the test has read the claim
        return 200

    runtime = await Runtime.open(worker_settings(database_url, dispatch_timeout_s=lease.total_seconds()), clock)
    try:
        with WebhookReceiver(respond=respond).running() as receiver:
            webhook_id, _ = await add_webhook(pool, receiver.url, enterprise_id=tenant.id)
            await plan_at(pool, NOW)
            (notice,) = await notices_of(pool, tenant.id)
            try:
                # Another transaction (a long planner run, say) holds the notice while the job starts.
                async with pool.acquire() as holder, holder.transaction():
                    await holder.execute("SELECT 1 FROM notices WHERE id = $1 FOR UPDATE", notice["id"])
                    job = asyncio.create_task(deliver_batch(runtime, [notice["id"]]))
                    await wait_until_blocked(pool, holder, job)
                    clock.set(NOW + waited)
                assert await asyncio.to_thread(arrived.wait, 20)
                (claimed,) = await deliveries_of(pool, [notice["id"]])
            finally:
                answer.set()
            await job
            got = of_enterprise(receiver.requests, tenant.id)
    finally:
        await runtime.close()
    await deactivate(pool, webhook_id)
    # The lease runs from the claim, made once the lock was had, not from when the job started.
    assert (claimed["status"], claimed["attempts"], claimed["next_attempt_at"]) == ("pending", 1, NOW + waited + lease)
    assert [r.json()["instrument"]["id"] for r in got] == [gauge]
    (delivered,) = await deliveries_of(pool, [notice["id"]])
    (attempt,) = (await attempts_of(pool, [delivered["id"]]))[delivered["id"]]
    assert (delivered["status"], attempt["attempt"], attempt["started_at"]) == ("delivered", 1, NOW + waited)


@pytest.mark.timeout(60)
async def test_a_job_that_waited_for_the_lock_past_what_it_can_send_claims_nothing_and_leaves_the_tries_due(
    tenant: Tenant, pool: asyncpg.Pool, database_url: str
) -> None:
    await register(tenant, [NOW.date() - 4 * DAY])
    # One round of 2 s sends fits in the 5 s lease with one to spare; after 2 s of waiting none
    # does: the job would be stopped with its calls on the wire.
    settings = worker_settings(database_url, send_timeout_s=2.0, dispatch_timeout_s=5.0)
    assert claim_limit(lease_s=5.0, send_timeout_s=2.0) == PARALLEL_SENDS
    assert claim_limit(lease_s=3.0, send_timeout_s=2.0) == 0
    waited = dt.timedelta(seconds=2)
    clock = FixedClock(NOW)
    runtime = await Runtime.open(settings, clock)
    try:
        with WebhookReceiver().running() as receiver:
            webhook_id, _ = await add_webhook(pool, receiver.url, enterprise_id=tenant.id)
            await plan_at(pool, NOW)
            (notice,) = await notices_of(pool, tenant.id)
            async with pool.acquire() as holder, holder.transaction():
                await holder.execute("SELECT 1 FROM notices WHERE id = $1 FOR UPDATE", notice["id"])
                job = asyncio.create_task(deliver_batch(runtime, [notice["id"]]))
                await wait_until_blocked(pool, holder, job)
                clock.set(NOW + waited)
            await job
            unsent = len(of_enterprise(receiver.requests, tenant.id))
            (left,) = await deliveries_of(pool, [notice["id"]])
            (waiting,) = await notices_of(pool, tenant.id)
            # The next job has its whole time: it sends.
            await deliver_batch(runtime, [notice["id"]])
            got = of_enterprise(receiver.requests, tenant.id)
    finally:
        await runtime.close()
    await deactivate(pool, webhook_id)
    assert unsent == 0
    assert (left["status"], left["attempts"], left["next_attempt_at"]) == ("pending", 0, NOW + waited)
    # Due at once: the next dispatch hands it to a job of its own.
    assert (waiting["status"], waiting["next_attempt_at"]) == ("pending", NOW + waited)
    assert len(got) == 1
    (delivered,) = await deliveries_of(pool, [notice["id"]])
    assert (delivered["status"], delivered["attempts"]) == ("delivered", 1)


async def test_a_burst_run_sends_every_held_digest_but_one_another_run_is_still_sending(
    make_tenant: MakeTenant, pool: asyncpg.Pool, database_url: str
) -> None:
    tag = uuid.uuid4().hex[:8]
    sending, held = f"sending-{tag}@example.com", f"held-{tag}@example.com"
    tenant = await make_tenant()
    await register(tenant, [NOW.date() + 30 * DAY])
    await patch_enterprise(tenant, notify_emails=[sending, held], digest=True)
    lease = dt.timedelta(seconds=300)
    clock = FixedClock(NOW)
    with smtp_server() as (smtp_url, inbox):
        runtime = await Runtime.open(
            worker_settings(database_url, smtp_url=smtp_url, dispatch_timeout_s=lease.total_seconds()), clock
        )
        try:
            (notice_id,) = (await held_for_the_digest(runtime, pool, tenant)).values()
            claimed = {d["target"]: d["id"] for d in await deliveries_of(pool, [notice_id])}
            # A run that claimed one e-mail a minute ago is sending it (its lease runs 4 more minutes).
            await pool.execute(
                "UPDATE deliveries SET attempts = 1, next_attempt_at = $2 WHERE id = $1",
                claimed[sending],
                NOW - dt.timedelta(minutes=1) + lease,
            )
            # `metreg worker --burst` before the digest's hour: every held e-mail goes now.
            sent = await send_digests(runtime, everything=True)
        finally:
            await runtime.close()
    assert sent == 1
    assert [m["To"] for m in mail_to(inbox, [sending, held])] == [held]
    ended = {d["target"]: d for d in await deliveries_of(pool, [notice_id])}
    assert (ended[held]["status"], ended[held]["attempts"]) == ("delivered", 1)
    # Still the other run's claim: that run records what its send came to.
    assert (ended[sending]["status"], ended[sending]["attempts"]) == ("pending", 1)
