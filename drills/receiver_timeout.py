"""Drill 4: webhook receivers that time out, one for good and one for a while, beside a healthy one.

Three enterprises, each with its own receiver; the worker sends with a 1 s time-out and retries
a failed try 1 s later at the earliest, doubled after each (``METREG_RETRY_DELAY=1``), 3 tries at
most (``METREG_RETRY_TRIES=3``); retries wait for the dispatcher's next tick (every 10 s).

- *black hole*: answers every call after 2 s, too late. Each notice must be tried exactly 3 times
  and end ``failed``, visible in the API: not lost, and no call the register did not record.
- *recovering*: the first call of each notice times out, the next answers 200 at once: each
  notice is delivered on its second try, exactly once.
- *healthy*: answers at once. Its notices must all be delivered, once each, while the black
  hole's are still being retried: a stuck receiver holds up nobody else.
"""

from __future__ import annotations

import threading
import time

import httpx

from drills.harness import Load, Scene, Stack, Tenant, alive, drill_result, new_tenant, wait_until
from drills.receiver import Received, WebhookReceiver
from drills.report import DrillResult, judge, tally

NAME = "receiver time-out"
TRIES = 3
HOLE, RECOVERING, HEALTHY = 10, 10, 20
SETTINGS = {
    "METREG_WORKER_JOBS": "20",
    "METREG_SEND_TIMEOUT": "1",
    "METREG_DISPATCH_TIMEOUT": "3",
    "METREG_RETRY_TRIES": str(TRIES),
    "METREG_RETRY_DELAY": "1",
}
_TOO_LATE_S = 2.0


def _too_late(number: int, request: Received) -> int:
    time.sleep(_TOO_LATE_S)
    return 504


class _FirstCallTooLate:
    """Times out the first call of each notice, then answers at once."""

    def __init__(self) -> None:
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, number: int, request: Received) -> int:
        notice = request.json()["notice_id"]
        with self._lock:
            first = notice not in self._seen
            self._seen.add(notice)
        if first:
            time.sleep(_TOO_LATE_S)
            return 504
        return 200


async def run(stack: Stack) -> DrillResult:
    started = time.monotonic()
    hole = WebhookReceiver(respond=_too_late)
    recovering = WebhookReceiver(respond=_FirstCallTooLate())
    healthy = WebhookReceiver()
    with hole.running(), recovering.running(), healthy.running():
        async with Scene.open(stack, "receiver_timeout", **SETTINGS) as scene:
            async with httpx.AsyncClient(base_url=scene.api_url, timeout=30) as api:
                tenants: dict[str, Tenant] = {}
                for name, receiver, count in (("hole", hole, HOLE), ("recovering", recovering, RECOVERING)):
                    tenants[name] = await new_tenant(api, scene.admin_key, gauges=count, webhook_url=receiver.url)
                tenants["healthy"] = await new_tenant(api, scene.admin_key, gauges=HEALTHY, webhook_url=healthy.url)
            await scene.plan()
            groups = {name: {n["id"] for n in await scene.notices(t)} for name, t in tenants.items()}
            everyone = list(tenants.values())
            async with Load(scene.api_url, tenants["healthy"], readers=4).running() as load:
                with scene.worker() as worker:

                    async def healthy_done() -> bool:
                        alive(worker)
                        return await scene.settled(tenants["healthy"])

                    await wait_until("the healthy receiver's notices delivered", healthy_done, within=60)
                    hole_open = sum(
                        n["status"] not in ("failed", "delivered") for n in await scene.notices(tenants["hole"])
                    )
                    await wait_until("every notice settled", lambda: scene.settled(*everyone), within=120, every=0.5)
            notices = await scene.notices(*everyone)
    calls = hole.calls() + recovering.calls() + healthy.calls()
    accepted = hole.accepted() + recovering.accepted() + healthy.accepted()
    counts = tally(
        set().union(*groups.values()),
        accepted,
        failed={n["id"] for n in notices if n["status"] == "failed"},
        unrecorded_calls={n["id"]: calls.get(n["id"], 0) - n["tries"] for n in notices},
    )
    status = {n["id"]: n["status"] for n in notices}
    checks = judge(
        counts,
        load.answers_5xx,
        {
            f"black hole: each notice tried {TRIES} times, then failed": all(
                status[n] == "failed" and calls[n] == TRIES for n in groups["hole"]
            ),
            "recovering: each notice delivered on its second try": all(
                status[n] == "delivered" and calls[n] == 2 for n in groups["recovering"]
            ),
            "healthy: delivered once each while the black hole was still retried": hole_open > 0
            and all(status[n] == "delivered" and calls[n] == 1 for n in groups["healthy"]),
            "API answered throughout": load.no_answer == 0 and load.bad_503 == 0,
        },
        failed_expected=HOLE,
    )
    return drill_result(
        NAME,
        counts,
        load,
        checks,
        started,
        notes=[
            f"{HOLE} notices to a receiver that never answers in time, {RECOVERING} to one that times out once, "
            f"{HEALTHY} to a healthy one; {hole_open} black-hole notices were still being retried when the "
            f"healthy ones were all delivered; calls to the black hole: {sum(hole.calls().values())}",
        ],
    )
