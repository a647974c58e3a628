"""Real ``metreg`` processes: plan and burst, a worker killed mid-delivery, the health check.

A long-running ``metreg worker`` runs its cron ticks with the real clock, the planner over the
whole database included, so this module works in a database of its own (created, migrated and
dropped here) and every test uses a queue of its own on the test Redis. Rows are arranged through
an app on that database (with the real clock, as the processes have it) or plain SQL; the
processes get their whole configuration from an explicit environment.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import logging
import math
import os
import signal
import subprocess
import threading
import time
import uuid
import zoneinfo
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from drills.harness import background, metreg_env
from drills.harness import run_metreg as metreg
from jobs.dispatch import BATCH
from jobs.plan import plan
from jobs.runtime import PARALLEL_SENDS
from service.app import create_app
from service.auth import Role
from service.clock import SystemClock
from service.db import init_connection
from service.keys.queries import create_key
from service.keys.schemas import ApiKeyCreate
from service.settings import Settings
from service.webhooks.signing import verify
from tests.conftest import GAUGE, REDIS_URL, Api, fresh_database, new_credit_code, running
from tests.receivers import Received, WebhookReceiver, notice_ids

SHANGHAI = zoneinfo.ZoneInfo("Asia/Shanghai")
logger = logging.getLogger(__name__)


def shanghai_today() -> dt.date:
    return dt.datetime.now(dt.UTC).astimezone(SHANGHAI).date()


# ---------------------------------------------------------------------------------------------
# The module's own database, and an app on it to arrange rows with.


@pytest.fixture(scope="module")
async def own_dsn() -> AsyncIterator[str]:
    async with fresh_database("metreg_worker", dt.datetime.now(dt.UTC)) as dsn:
        yield dsn


@pytest.fixture(scope="module")
async def own_pool(own_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    async with asyncpg.create_pool(own_dsn, min_size=1, max_size=4, init=init_connection) as p:
        yield p


@pytest.fixture(scope="module")
async def own_client(own_dsn: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        database_url=own_dsn,
        redis_url=REDIS_URL,
        allow_private_webhooks=True,
        db_pool_min=1,
        db_pool_max=4,
        log_level="WARNING",
    )
    app = create_app(settings, clock=SystemClock())
    async with running(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://metreg.test") as client:
            yield client


@pytest.fixture(scope="module")
async def own_admin(own_client: httpx.AsyncClient, own_pool: asyncpg.Pool) -> Api:
    async with own_pool.acquire() as conn:
        created = await create_key(conn, ApiKeyCreate(role=Role.ADMIN, name="worker tests"), dt.datetime.now(dt.UTC))
    return Api(own_client, created.key)


async def new_enterprise(admin: Api, pool: asyncpg.Pool, region_code: str) -> tuple[str, Api]:
    body = {"name": "进程测试企业", "credit_code": new_credit_code(), "region_code": region_code}
    response = await admin.post("/v1/enterprises", json=body)
    assert response.status_code == 201, response.text
    enterprise_id = response.json()["id"]
    async with pool.acquire() as conn:
        key = await create_key(
            conn,
            ApiKeyCreate(role=Role.ENTERPRISE, name="worker tests", enterprise_id=uuid.UUID(enterprise_id)),
            dt.datetime.now(dt.UTC),
        )
    return enterprise_id, Api(admin.client, key.key)


async def register_gauge(api: Api, enterprise_id: str, last_verified_on: dt.date) -> dict[str, Any]:
    body = GAUGE | {"name": "一般压力表", "serial_no": uuid.uuid4().hex[:10], "last_verified_on": str(last_verified_on)}
    response = await api.post(f"/v1/enterprises/{enterprise_id}/instruments", json=body)
    assert response.status_code == 201, response.text
    return response.json()


async def add_webhook(api: Api, url: str, **owner: str) -> str:
    response = await api.post("/v1/webhooks", json={"url": url} | owner)
    assert response.status_code == 201, response.text
    return str(response.json()["secret"])


async def notices_of(pool: asyncpg.Pool, enterprise_id: str) -> list[asyncpg.Record]:
    async with pool.acquire() as conn:
        return await conn.fetch(
            "SELECT id, kind, audience, status FROM notices WHERE enterprise_id = $1 ORDER BY kind, id",
            uuid.UUID(enterprise_id),
        )


# ---------------------------------------------------------------------------------------------
# The processes.


def process_env(dsn: str, queue: str, **metreg: str) -> dict[str, str]:
    """The environment of a ``metreg`` process on the test Redis (``drills.harness`` builds it)."""
    return metreg_env(dsn, REDIS_URL, queue, **metreg)


def new_queue() -> str:
    return f"metreg-test-proc:{uuid.uuid4().hex[:12]}"


def long_running_worker(env: dict[str, str], log: Path) -> contextlib.AbstractContextManager[subprocess.Popen[bytes]]:
    """``metreg worker`` in the background, its output in ``log``; killed on the way out if still up."""
    return background(["worker"], env, log)


async def exited(process: subprocess.Popen[bytes]) -> int:
    """The process's exit code once it has exited (the test's own time-out bounds the wait)."""
    return await asyncio.to_thread(process.wait)


# ---------------------------------------------------------------------------------------------


@pytest.mark.timeout(90)
async def test_plan_then_burst_delivers_every_notice_due_once_and_a_second_run_nothing(
    own_admin: Api, own_pool: asyncpg.Pool, own_dsn: str
) -> None:
    """``metreg plan --today D`` and ``metreg worker --burst``: a due-soon reminder, two overdue
    notices and an escalation (to the region's webhook) each reach the receiver exactly once,
    signed; both commands say what they did; run again, they do nothing."""
    today = shanghai_today()
    region = "320102"
    enterprise_id, enterprise = await new_enterprise(own_admin, own_pool, region)
    due_soon = await register_gauge(enterprise, enterprise_id, today - dt.timedelta(days=170))
    overdue = await register_gauge(enterprise, enterprise_id, today - dt.timedelta(days=195))
    escalated = await register_gauge(enterprise, enterprise_id, today - dt.timedelta(days=260))
    await register_gauge(enterprise, enterprise_id, today - dt.timedelta(days=20))  # valid: nothing due
    assert [g["status"] for g in (due_soon, overdue, escalated)] == ["due_soon", "overdue", "overdue"]

    env = process_env(own_dsn, new_queue())
    with WebhookReceiver().running() as receiver:
        secret = await add_webhook(enterprise, receiver.url)
        regional_secret = await add_webhook(own_admin, receiver.url, region_code=region)

        code, out, err = await metreg("plan", "--today", str(today), env=env)
        assert code == 0, err
        notices = await notices_of(own_pool, enterprise_id)
        kinds = collections.Counter(n["kind"] for n in notices)
        assert kinds == {"due_soon": 1, "overdue": 2, "escalation": 1}, notices
        planned = ", ".join(f"{kind} {count}" for kind, count in sorted(kinds.items()))
        assert out.strip() == f"planned: {planned}; cancelled 0 stale", out

        code, out, err = await metreg("worker", "--burst", env=env)
        assert code == 0, err
        assert out == ""
        assert f"dispatched {len(notices)} notices; sent 0 digest e-mails" in err.splitlines(), err

        received = notice_ids(receiver.requests)
        assert received == {str(n["id"]): 1 for n in notices}
        assert receiver.statuses == [200] * len(notices)
        now = int(time.time())
        for got in receiver.requests:
            key = regional_secret if got.json()["kind"] == "escalation" else secret
            assert verify(key, got.headers["metreg-signature"], got.body, now=now), got.headers
        assert {n["status"] for n in await notices_of(own_pool, enterprise_id)} == {"delivered"}
        async with own_pool.acquire() as conn:
            attempts = await conn.fetch(
                """SELECT d.status, count(a.*) AS tries
                   FROM deliveries d JOIN notices n ON n.id = d.notice_id
                   LEFT JOIN delivery_attempts a ON a.delivery_id = d.id
                   WHERE n.enterprise_id = $1 GROUP BY d.id""",
                uuid.UUID(enterprise_id),
            )
        assert sorted((r["status"], r["tries"]) for r in attempts) == [("delivered", 1)] * len(notices)

        code, out, err = await metreg("plan", "--today", str(today), env=env)
        assert (code, out.strip()) == (0, "planned: nothing new; cancelled 0 stale"), err
        code, out, err = await metreg("worker", "--burst", env=env)
        assert code == 0, err
        assert "dispatched 0 notices; sent 0 digest e-mails" in err.splitlines(), err
        assert len(receiver.requests) == len(notices)


@pytest.mark.timeout(90)
async def test_a_worker_killed_mid_delivery_loses_nothing_and_records_each_delivery_once(
    own_admin: Api, own_pool: asyncpg.Pool, own_dsn: str, tmp_path: Path, record_property: Any
) -> None:
    """SIGKILL while deliveries are in flight: once the dispatch timeout has passed and arq's
    in-progress marks have run out, ``metreg worker --burst`` delivers the rest. Every notice is
    delivered and recorded delivered once; only the calls in flight at the kill reach the receiver
    twice (the receiver dedupes on ``notice_id``)."""
    count, jobs, dispatch_timeout = 30, 5, 3
    today = shanghai_today()
    enterprise_id, enterprise = await new_enterprise(own_admin, own_pool, "330106")
    for _ in range(count):
        await register_gauge(enterprise, enterprise_id, today - dt.timedelta(days=190))  # overdue by a week or so

    def slowly(number: int, request: Received) -> int:
        time.sleep(0.3)
        return 200

    with WebhookReceiver(respond=slowly).running() as receiver:
        await add_webhook(enterprise, receiver.url)
        async with own_pool.acquire() as conn:
            assert (await plan(conn, dt.datetime.now(dt.UTC))).ran
        notices = await notices_of(own_pool, enterprise_id)
        assert [n["kind"] for n in notices] == ["overdue"] * count
        mine = {str(n["id"]) for n in notices}

        env = process_env(
            own_dsn,
            new_queue(),
            METREG_DISPATCH_TIMEOUT=str(dispatch_timeout),
            METREG_SEND_TIMEOUT="1",
            METREG_WORKER_JOBS=str(jobs),
        )
        log = tmp_path / "worker.log"
        with long_running_worker(env, log) as worker:
            while len(receiver.requests) < 2 * jobs:  # the test's time-out bounds the wait
                assert worker.poll() is None, log.read_text()
                await asyncio.sleep(0.01)
            os.kill(worker.pid, signal.SIGKILL)
            assert await exited(worker) == -signal.SIGKILL
        killed_at = time.monotonic()
        await asyncio.sleep(0.5)  # calls already on the wire reach the receiver
        before = notice_ids(receiver.requests)
        async with own_pool.acquire() as conn:
            recorded = {
                str(r["notice_id"])
                for r in await conn.fetch(
                    """SELECT d.notice_id FROM deliveries d JOIN notices n ON n.id = d.notice_id
                       WHERE n.enterprise_id = $1 AND d.status = 'delivered'""",
                    uuid.UUID(enterprise_id),
                )
            }
        in_flight = set(before) - recorded
        assert 0 < len(before) < count, before
        # What a kill can leave unrecorded: each running job's calls on the wire and as many
        # finished ones being recorded (a job records each try as it finishes).
        running = min(jobs, math.ceil(count / BATCH))
        assert len(in_flight) <= running * 2 * PARALLEL_SENDS < count, (in_flight, recorded)

        await asyncio.sleep(max(0.0, dispatch_timeout + 0.5 - (time.monotonic() - killed_at)))
        runs = []
        while set(notice_ids(receiver.requests)) != mine or {
            n["status"] for n in await notices_of(own_pool, enterprise_id)
        } != {"delivered"}:
            assert len(runs) < 10, (runs, notice_ids(receiver.requests))
            code, _, err = await metreg("worker", "--burst", env=env, within=40)
            assert code == 0, err
            runs.append(next((line for line in err.splitlines() if line.startswith("dispatched")), err))
            await asyncio.sleep(0.5)

    received = notice_ids(receiver.requests)
    duplicates = {notice: n for notice, n in received.items() if n > 1}
    extra_calls = sum(duplicates.values()) - len(duplicates)
    record_property("in_flight_at_kill", len(in_flight))
    record_property("duplicate_calls", extra_calls)
    logger.warning("killed with %d in flight; %d duplicate calls; burst runs: %s", len(in_flight), extra_calls, runs)
    assert set(received) == mine
    assert set(duplicates) <= in_flight
    assert all(n == 2 for n in duplicates.values()), duplicates
    async with own_pool.acquire() as conn:
        rows = await conn.fetch(
            """SELECT d.id, d.notice_id, d.status, d.attempts,
                      count(a.*) FILTER (WHERE a.outcome = 'delivered') AS delivered,
                      array_agg(a.attempt ORDER BY a.attempt) FILTER (WHERE a.attempt IS NOT NULL) AS tries
               FROM deliveries d JOIN notices n ON n.id = d.notice_id
               LEFT JOIN delivery_attempts a ON a.delivery_id = d.id
               WHERE n.enterprise_id = $1 GROUP BY d.id""",
            uuid.UUID(enterprise_id),
        )
    assert len(rows) == count
    assert {str(r["notice_id"]) for r in rows} == mine
    assert all(r["status"] == "delivered" and r["delivered"] == 1 for r in rows), rows
    # A try cut short by the kill was counted when claimed but left no attempt row: the try that
    # delivered such a delivery is its second. (A claim the kill caught before it sent anything
    # looks the same.)
    for r in rows:
        assert r["tries"] == [r["attempts"]], r
        assert r["attempts"] == 2 if str(r["notice_id"]) in in_flight else r["attempts"] in (1, 2), r


@pytest.mark.timeout(90)
async def test_calls_a_killed_worker_left_unrecorded_while_their_notices_were_cancelled_end_failed_not_pending(
    own_admin: Api, own_pool: asyncpg.Pool, own_dsn: str, tmp_path: Path
) -> None:
    """SIGKILL while a batch's webhook calls are on the wire (claimed, not recorded), then every
    gauge is sealed, which cancels its notice and leaves the claims to the job that made them, now
    dead. No dispatch takes a cancelled notice again: once the claims have run out, the next
    worker's dispatch tick fails them, saying each try went unrecorded, and calls nobody."""
    count, dispatch_timeout = PARALLEL_SENDS, 7
    today = shanghai_today()
    enterprise_id, enterprise = await new_enterprise(own_admin, own_pool, "330108")
    gauges = [await register_gauge(enterprise, enterprise_id, today - dt.timedelta(days=190)) for _ in range(count)]
    release = threading.Event()

    def held(number: int, request: Received) -> int:
        release.wait(30)  # until the worker that sent it is gone
        return 200

    # A lease of 7 s claims one round of sends of at most 3 s (jobs.tries.claim_limit): every
    # notice's call is on the wire at once, and the kill comes well before any could time out.
    env = process_env(own_dsn, new_queue(), METREG_DISPATCH_TIMEOUT=str(dispatch_timeout), METREG_SEND_TIMEOUT="3")
    with WebhookReceiver(respond=held).running() as receiver:
        await add_webhook(enterprise, receiver.url)
        async with own_pool.acquire() as conn:
            assert (await plan(conn, dt.datetime.now(dt.UTC))).ran
        try:
            with long_running_worker(env, tmp_path / "killed.log") as worker:
                while len(receiver.requests) < count:  # the test's time-out bounds the wait
                    assert worker.poll() is None, (tmp_path / "killed.log").read_text()
                    await asyncio.sleep(0.01)
                os.kill(worker.pid, signal.SIGKILL)
                assert await exited(worker) == -signal.SIGKILL
            killed_at = time.monotonic()
        finally:
            release.set()
        for gauge in gauges:
            sealed = await enterprise.post(f"/v1/instruments/{gauge['id']}/seal")
            assert sealed.status_code == 200, sealed.text
        async with own_pool.acquire() as conn:
            left = await conn.fetch(
                """SELECT n.status AS notice, d.status, d.attempts
                   FROM deliveries d JOIN notices n ON n.id = d.notice_id WHERE n.enterprise_id = $1""",
                uuid.UUID(enterprise_id),
            )
        assert [tuple(r.values()) for r in left] == [("cancelled", "pending", 1)] * count

        await asyncio.sleep(max(0.0, dispatch_timeout + 0.5 - (time.monotonic() - killed_at)))
        log = tmp_path / "next.log"
        with long_running_worker(env, log) as worker:
            while True:  # its dispatch tick runs at start and every 10 s; the time-out bounds the wait
                assert worker.poll() is None, log.read_text()
                async with own_pool.acquire() as conn:
                    rows = await conn.fetch(
                        """SELECT d.id, n.status AS notice, d.status, d.attempts, d.last_error
                           FROM deliveries d JOIN notices n ON n.id = d.notice_id WHERE n.enterprise_id = $1""",
                        uuid.UUID(enterprise_id),
                    )
                if all(r["status"] != "pending" for r in rows):
                    break
                await asyncio.sleep(0.1)
        calls = len(receiver.requests)
    async with own_pool.acquire() as conn:
        tries = await conn.fetchval(
            "SELECT count(*) FROM delivery_attempts WHERE delivery_id = ANY ($1::uuid[])", [r["id"] for r in rows]
        )
    assert calls == count
    lost = "try 1 went unrecorded (its job ended first; it may have arrived); not tried again: the notice was cancelled"
    assert [(r["notice"], r["status"], r["attempts"], r["last_error"]) for r in rows] == [
        ("cancelled", "failed", 1, lost)
    ] * count
    assert tries == 0
    assert "failed tries lost with their jobs" in log.read_text()


@pytest.mark.timeout(60)
async def test_worker_check_follows_a_running_worker_and_sigterm_stops_it_cleanly(
    own_dsn: str, own_client: httpx.AsyncClient, tmp_path: Path
) -> None:
    """``metreg worker --check`` exits 1 while no worker serves the queue, 0 once one has written
    its health key; SIGTERM stops the worker with exit code 0 and it takes its health key along."""
    env = process_env(own_dsn, new_queue())
    code, _, err = await metreg("worker", "--check", env=env)
    assert code == 1, err

    log = tmp_path / "worker.log"
    with long_running_worker(env, log) as worker:
        while (code := (await metreg("worker", "--check", env=env))[0]) != 0:  # bounded by the test's time-out
            assert worker.poll() is None, log.read_text()
            await asyncio.sleep(0.2)
        # Another queue on the same Redis has no worker.
        assert (await metreg("worker", "--check", env=env | {"METREG_QUEUE": new_queue()}))[0] == 1
        worker.send_signal(signal.SIGTERM)
        assert await exited(worker) == 0, log.read_text()
    assert "Traceback" not in log.read_text(), log.read_text()
    code, _, err = await metreg("worker", "--check", env=env)
    assert code == 1, err


@pytest.mark.timeout(60)
async def test_a_call_slower_than_the_dispatch_timeout_is_recorded_not_repeated_unrecorded(
    own_admin: Api, own_pool: asyncpg.Pool, own_dsn: str
) -> None:
    """METREG_DISPATCH_TIMEOUT=1 with METREG_SEND_TIMEOUT=5 and a receiver that answers 200 after
    2 s: either the configuration is refused, or the burst ends and every call the receiver got is
    a recorded try. (Today the job is cancelled after 1 s, nothing is recorded, the notice is due
    again a lease later, and the burst, whose rounds each take the 1 s, sends it again and again.)"""
    today = shanghai_today()
    enterprise_id, enterprise = await new_enterprise(own_admin, own_pool, "340102")
    gauge = await register_gauge(enterprise, enterprise_id, today - dt.timedelta(days=190))

    def slowly(number: int, request: Received) -> int:
        time.sleep(2)
        return 200

    env = process_env(own_dsn, new_queue(), METREG_DISPATCH_TIMEOUT="1", METREG_SEND_TIMEOUT="5")
    try:
        with WebhookReceiver(respond=slowly).running() as receiver:
            await add_webhook(enterprise, receiver.url)
            async with own_pool.acquire() as conn:
                assert (await plan(conn, dt.datetime.now(dt.UTC))).ran
            try:
                code, _, err = await metreg("worker", "--burst", env=env, within=20)
            except TimeoutError:
                pytest.fail(f"the burst ran on for 20 s; the receiver was called {len(receiver.requests)} times")
            if code != 0 and "configuration" in err:
                return  # refused: fixed that way
            assert code == 0, err
            await asyncio.sleep(2.5)  # the receiver has answered every call
            async with own_pool.acquire() as conn:
                tries = await conn.fetchval(
                    """SELECT count(*) FROM delivery_attempts a JOIN deliveries d ON d.id = a.delivery_id
                       JOIN notices n ON n.id = d.notice_id WHERE n.enterprise_id = $1""",
                    uuid.UUID(enterprise_id),
                )
            assert receiver.statuses, "the receiver was called"
            assert tries == len(receiver.requests), (tries, receiver.statuses)
    finally:  # no notice of this test stays due for the other tests' workers
        sealed = await enterprise.post(f"/v1/instruments/{gauge['id']}/seal")
        assert sealed.status_code == 200, sealed.text


@pytest.mark.parametrize("flag", ["--check", "--burst"])
async def test_an_unreachable_redis_is_a_clear_error(own_dsn: str, flag: str) -> None:
    env = process_env(own_dsn, new_queue()) | {"REDIS_URL": "redis://127.0.0.1:1/0"}
    code, _, err = await metreg("worker", flag, env=env)
    assert code == 1, err
    assert "Traceback" not in err, err
    assert err.strip().splitlines()[-1].startswith("Error: "), err
