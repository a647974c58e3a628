"""Drill 2: Redis shut down without saving while work is queued, then started again empty.

Redis holds only arq's queue (design.md §2): the notices table in PostgreSQL is the outbox. With
a slow receiver most notices are still queued when Redis goes (SHUTDOWN NOSAVE: every job, every
in-progress mark and every job id is gone); it stays down for 3 s and comes back empty on the
same port. The worker must reconnect by itself, and the dispatcher's sweep must hand every notice
whose job was lost to arq again once its dispatch lease (3 s) has run out. The API keeps
answering meanwhile: it needs Redis only for rate limits, which fail open.
"""

from __future__ import annotations

import asyncio
import time

import httpx

from drills.harness import Load, Scene, Stack, alive, answer_after, drill_result, new_tenant, wait_until
from drills.receiver import WebhookReceiver
from drills.report import DrillResult, judge, tally

NAME = "Redis restart"
NOTICES = 60
DOWN_S = 3.0
SETTINGS = {"METREG_WORKER_JOBS": "5", "METREG_SEND_TIMEOUT": "1", "METREG_DISPATCH_TIMEOUT": "3"}


async def run(stack: Stack) -> DrillResult:
    started = time.monotonic()
    receiver = WebhookReceiver(respond=answer_after(0.2))
    with receiver.running():
        async with Scene.open(stack, "redis_restart", **SETTINGS) as scene:
            async with httpx.AsyncClient(base_url=scene.api_url, timeout=30) as api:
                tenant = await new_tenant(api, scene.admin_key, gauges=NOTICES, webhook_url=receiver.url)
            await scene.plan()
            expected = {n["id"] for n in await scene.notices(tenant)}
            async with Load(scene.api_url, tenant, readers=4).running() as load:
                with scene.worker() as worker:

                    async def some_sent() -> bool:
                        alive(worker)
                        return len(receiver.requests) >= NOTICES // 6

                    await wait_until("some notices sent", some_sent, within=60, every=0.01)
                    await stack.redis.shutdown()
                    queued_at_loss = NOTICES - len(receiver.requests)
                    await asyncio.sleep(DOWN_S)
                    await stack.redis.start()

                    async def settled() -> bool:
                        alive(worker)
                        return await scene.settled(tenant)

                    await wait_until("every notice settled", settled, within=90, every=0.5)
            notices = await scene.notices(tenant)
            restarts = scene.log("worker").read_text(errors="replace").count("lost Redis")
    calls = receiver.calls()
    counts = tally(
        expected,
        receiver.accepted(),
        failed={n["id"] for n in notices if n["status"] == "failed"},
        unrecorded_calls={n["id"]: calls.get(n["id"], 0) - n["tries"] for n in notices},
    )
    checks = judge(
        counts,
        load.answers_5xx,
        {
            "work was queued at the loss": queued_at_loss > 0,
            "API answered throughout": load.no_answer == 0 and load.bad_503 == 0,
        },
    )
    return drill_result(
        NAME,
        counts,
        load,
        checks,
        started,
        notes=[
            f"Redis lost the queue with {queued_at_loss} notices not yet sent; down {DOWN_S:g} s; "
            f"the worker started again {restarts} time(s) by itself"
        ],
    )
