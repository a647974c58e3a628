"""Drill 3: PostgreSQL crashes under API load and delivery work, and comes back.

Sixteen clients read instruments and two register new ones while the worker delivers notices to
a slow receiver. PostgreSQL is then stopped the hard way (``pg_ctl stop -m immediate``: every
backend killed, nothing flushed beyond the write-ahead log, as in a crash) and started again 3 s
later, recovering from its log. While it is down the API must answer 503 problem+json with a
``Retry-After`` (never 500, never a hang), ``/readyz`` must say the database is unavailable, and
once it is back the same API and worker processes must serve and deliver again without a restart.
Every registration the API acknowledged (201) must still be there: fsync stays on.
"""

from __future__ import annotations

import asyncio
import time

import asyncpg
import httpx

from drills.harness import Load, Scene, Stack, alive, answer_after, drill_result, new_tenant, wait_until
from drills.receiver import WebhookReceiver
from drills.report import DrillResult, judge, tally

NAME = "PostgreSQL restart"
NOTICES = 60
DOWN_S = 3.0
READERS, WRITERS = 16, 2
SETTINGS = {"METREG_WORKER_JOBS": "5", "METREG_SEND_TIMEOUT": "1", "METREG_DISPATCH_TIMEOUT": "3"}


async def _readyz(api: httpx.AsyncClient) -> tuple[int, str]:
    try:
        response = await api.get("/readyz")
    except httpx.TransportError as exc:
        return 0, type(exc).__name__
    return response.status_code, str(response.json().get("checks", {}).get("postgresql"))


async def run(stack: Stack) -> DrillResult:
    started = time.monotonic()
    receiver = WebhookReceiver(respond=answer_after(0.1))
    with receiver.running():
        async with Scene.open(stack, "postgres_restart", **SETTINGS) as scene:
            async with httpx.AsyncClient(base_url=scene.api_url, timeout=30) as api:
                tenant = await new_tenant(api, scene.admin_key, gauges=NOTICES, webhook_url=receiver.url)
                await scene.plan()
                expected = {n["id"] for n in await scene.notices(tenant)}
                load = Load(scene.api_url, tenant, readers=READERS, writers=WRITERS)
                async with load.running():
                    with scene.worker() as worker:
                        await wait_until("some notices sent", lambda: _sent(receiver, NOTICES // 6), within=60)
                        await asyncio.sleep(1)  # under load for a moment first
                        before = sum(load.statuses.values())
                        recorded = {n["id"] for n in await scene.notices(tenant) if n["status"] == "delivered"}
                        await asyncio.to_thread(stack.postgres.stop, "immediate")
                        await asyncio.sleep(DOWN_S / 2)
                        ready_while_down = await _readyz(api)
                        await asyncio.sleep(DOWN_S / 2)
                        during = load.statuses.copy()
                        await asyncio.to_thread(stack.postgres.start)
                        back_at = time.monotonic()
                        # Sent but not recorded when the server went: the worker sends them again.
                        in_flight = set(receiver.calls()) - recorded
                        answered_while_down = sum(during.values()) - before
                        # Recovered: the API (same process) reads again and reports itself ready.
                        await wait_until("/readyz 200 again", lambda: _ready(api), within=30)

                        async def settled() -> bool:
                            alive(worker)
                            return await scene.settled(tenant)

                        await wait_until("every notice settled", settled, within=90, every=0.5)
                    # Recovered: the same API process answers a further second of load, all of it 2xx.
                    settled_statuses = load.statuses.copy()
                    await asyncio.sleep(1)
                    final = load.statuses - settled_statuses
                    same_api = scene.api.poll() is None
            notices = await scene.notices(tenant)
            kept = await _kept(scene.dsn, load.acknowledged)
    late = (load.last_503_at or back_at) - back_at
    calls = receiver.calls()
    counts = tally(
        expected,
        receiver.accepted(),
        failed={n["id"] for n in notices if n["status"] == "failed"},
        in_flight=in_flight,
        # A call the crash kept from being recorded is one call more than the tries.
        unrecorded_calls={n["id"]: calls.get(n["id"], 0) - n["tries"] - (n["id"] in in_flight) for n in notices},
    )
    checks = judge(
        counts,
        load.answers_5xx,
        {
            "503s were problem+json with Retry-After": load.bad_503 == 0,
            "every request answered (none refused, none hung)": load.no_answer == 0,
            "/readyz said PostgreSQL down while it was": ready_while_down[0] == 503,
            "recovered without a restart": same_api and final.total() > 0 and set(final) <= {200, 201},
            "every acknowledged registration kept": kept == len(load.acknowledged),
        },
    )
    return drill_result(
        NAME,
        counts,
        load,
        checks,
        started,
        notes=[
            f"{READERS} readers and {WRITERS} writers; down {DOWN_S:g} s: {answered_while_down} answers meanwhile; "
            f"/readyz while down: {ready_while_down[0]} ({ready_while_down[1]}); "
            f"answers by status: {dict(sorted(load.statuses.items()))}; 503s ended "
            + (f"{late:.1f} s after" if late > 0 else "before")
            + f" PostgreSQL accepted connections again; slowest answer {load.slowest_s:.1f} s; "
            f"{kept} of {len(load.acknowledged)} acknowledged registrations kept",
        ],
    )


async def _sent(receiver: WebhookReceiver, at_least: int) -> bool:
    return len(receiver.requests) >= at_least


async def _ready(api: httpx.AsyncClient) -> bool:
    return (await _readyz(api))[0] == 200


async def _kept(dsn: str, ids: list[str]) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        kept: int = await conn.fetchval("SELECT count(*) FROM instruments WHERE id = ANY ($1::uuid[])", ids)
        return kept
    finally:
        await conn.close()
