"""Drill 1: SIGKILL the worker while deliveries are on the wire, start another, count.

A slow receiver (0.2 s a call) and a few calls at once keep calls in flight; once a quarter
of the notices have reached the receiver the worker is killed without warning. The calls on the
wire at that moment reach the receiver but are never recorded: those notices may be sent again
(allowed: receivers deduplicate on ``notice_id``); every other notice must be sent exactly once.
A new worker takes over: the queued jobs it runs at once, the killed ones once their dispatch
lease (3 s) and arq's in-progress marks have run out.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

import httpx

from drills.harness import Load, Scene, Stack, alive, answer_after, drill_result, new_tenant, wait_until
from drills.receiver import WebhookReceiver
from drills.report import DrillResult, judge, tally
from jobs.runtime import PARALLEL_SENDS

NAME = "worker SIGKILL"
NOTICES = 60
SETTINGS = {"METREG_WORKER_JOBS": "5", "METREG_SEND_TIMEOUT": "1", "METREG_DISPATCH_TIMEOUT": "3"}
#: Calls a kill can leave unrecorded: each running job's calls on the wire, and as many finished
#: ones being recorded (a job records each try as it finishes, with whatever finished meanwhile).
UNRECORDED_AT_MOST = int(SETTINGS["METREG_WORKER_JOBS"]) * 2 * PARALLEL_SENDS


async def run(stack: Stack) -> DrillResult:
    started = time.monotonic()
    receiver = WebhookReceiver(respond=answer_after(0.2))
    with receiver.running():
        async with Scene.open(stack, "worker_kill", **SETTINGS) as scene:
            async with httpx.AsyncClient(base_url=scene.api_url, timeout=30) as api:
                tenant = await new_tenant(api, scene.admin_key, gauges=NOTICES, webhook_url=receiver.url)
            await scene.plan()
            expected = {n["id"] for n in await scene.notices(tenant)}
            async with Load(scene.api_url, tenant, readers=4).running() as load:
                with scene.worker() as worker:

                    async def a_quarter_sent() -> bool:
                        alive(worker)
                        return len(receiver.requests) >= NOTICES // 4

                    await wait_until("a quarter of the notices sent", a_quarter_sent, within=60, every=0.01)
                    os.kill(worker.pid, signal.SIGKILL)
                    await asyncio.to_thread(worker.wait)
                await asyncio.sleep(0.5)  # calls already on the wire reach the receiver
                sent_before = {r.json()["notice_id"] for r in receiver.requests}
                delivered_before = {n["id"] for n in await scene.notices(tenant) if n["status"] == "delivered"}
                in_flight = sent_before - delivered_before
                with scene.worker():
                    await wait_until("every notice settled", lambda: scene.settled(tenant), within=90, every=0.5)
            notices = await scene.notices(tenant)
    accepted = receiver.accepted()
    unrecorded = {n["id"]: receiver.calls().get(n["id"], 0) - n["tries"] for n in notices}
    # A call cut short by the kill was never recorded: it may be one call more than the tries.
    unrecorded = {n: extra - (1 if n in in_flight else 0) for n, extra in unrecorded.items()}
    counts = tally(
        expected,
        accepted,
        failed={n["id"] for n in notices if n["status"] == "failed"},
        in_flight=in_flight,
        unrecorded_calls=unrecorded,
    )
    checks = judge(
        counts,
        load.answers_5xx,
        {
            "calls were in flight at the kill": 0 < len(in_flight) <= UNRECORDED_AT_MOST,
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
            f"killed with {len(in_flight)} calls in flight, {len(delivered_before)} notices recorded delivered",
        ],
    )
