"""The arq worker: plans, dispatches and delivers notices (``metreg worker``).

Cron ticks are reconcilers that read PostgreSQL and are safe to overlap: planning every five
minutes, dispatching every ten seconds (then failing the tries of cancelled notices that were lost
with their jobs, which no dispatch takes again), digests every five minutes, and every five
minutes the purge of expired Idempotency-Key answers. Delivery jobs retry only on transient
trouble with PostgreSQL or Redis; a webhook or SMTP failure is not a job failure but a recorded
try, rescheduled in PostgreSQL. Everything runs in UTC whatever the machine's zone.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import Coroutine
from typing import Any

import asyncpg
import msgspec
import uvloop
from arq import Retry, cron
from arq.connections import RedisSettings
from arq.worker import Function, Worker, func
from redis.exceptions import RedisError

from jobs.deliver import deliver, deliver_batch
from jobs.digest import send_digests
from jobs.dispatch import DELIVER_NOTICE, DELIVER_NOTICES, DeliverNotice, DeliverNotices, dispatch, end_lost_tries
from jobs.plan import plan
from jobs.runtime import Runtime, job_deserializer, job_serializer
from service.clock import Clock
from service.idempotency import purge_expired
from service.settings import Settings

__all__ = ("BurstResult", "run_burst", "run_worker", "worker_options")

log = logging.getLogger("metreg.worker")

# Trouble that passes: the database or Redis is restarting or unreachable for a moment.
# A deadlock too: jobs whose batches share instruments or webhooks may meet in PostgreSQL, which
# aborts one of them; tried again, it finds the other's work done.
_TRANSIENT = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.InterfaceError,
    asyncpg.DeadlockDetectedError,
)
_JOB_TRIES = 5
# Pause between a lost Redis and the next start (arq itself then tries to connect 5 times, 1 s apart).
_RESTART_DELAY_S = 1.0


def _runtime(ctx: dict[str, Any]) -> Runtime:
    runtime: Runtime = ctx["runtime"]
    return runtime


async def deliver_notices(ctx: dict[str, Any], payload: dict[str, Any]) -> None:
    job = msgspec.convert(payload, DeliverNotices)
    await _retrying(ctx, deliver_batch(_runtime(ctx), job.notice_ids))


async def deliver_notice(ctx: dict[str, Any], payload: dict[str, Any]) -> None:
    job = msgspec.convert(payload, DeliverNotice)
    await _retrying(ctx, deliver(_runtime(ctx), job.notice_id))


async def _retrying(ctx: dict[str, Any], delivery: Coroutine[Any, Any, None]) -> None:
    try:
        await delivery
    except _TRANSIENT as exc:
        if ctx["job_try"] >= _JOB_TRIES:
            raise  # the notices stay dispatched; the sweep hands them over again after the timeout
        raise Retry(defer=min(2 ** ctx["job_try"], 60)) from exc


async def plan_tick(ctx: dict[str, Any]) -> None:
    runtime = _runtime(ctx)
    async with runtime.connection() as db:
        result = await plan(db, runtime.clock.now())
    if result.created or result.cancelled:
        log.info("planned notices", extra={"notices_created": result.created, "notices_cancelled": result.cancelled})


async def dispatch_tick(ctx: dict[str, Any]) -> None:
    runtime = _runtime(ctx)
    async with runtime.connection() as db:
        while await dispatch(db, runtime.queue, runtime.clock.now(), sweep_after=runtime.lease) == 500:
            pass
        # After the dispatch: trouble here holds up nothing that is still to be sent.
        ended = await end_lost_tries(db, runtime.clock.now())
    if ended:
        log.warning(
            "failed tries lost with their jobs while their notices were cancelled", extra={"deliveries_failed": ended}
        )


async def digest_tick(ctx: dict[str, Any]) -> None:
    await send_digests(_runtime(ctx))


async def idempotency_purge_tick(ctx: dict[str, Any]) -> None:
    runtime = _runtime(ctx)
    async with runtime.connection() as db:
        purged = await purge_expired(db, runtime.clock.now())
    if purged:
        log.info("purged expired idempotency keys", extra={"idempotency_keys_purged": purged})


def _deliver_functions(settings: Settings) -> list[Function]:
    # keep_result=0: a finished job must not block the next dispatch of its notices under the same id.
    return [
        func(coroutine, name=name, keep_result=0, max_tries=_JOB_TRIES, timeout=settings.dispatch_timeout_s)
        for coroutine, name in ((deliver_notices, DELIVER_NOTICES), (deliver_notice, DELIVER_NOTICE))
    ]


def worker_options(settings: Settings, clock: Clock) -> dict[str, Any]:
    """Keyword arguments of :class:`arq.worker.Worker` for a long-running worker."""

    async def startup(ctx: dict[str, Any]) -> None:
        ctx["runtime"] = await Runtime.open(settings, clock, queue=ctx["redis"])

    async def shutdown(ctx: dict[str, Any]) -> None:
        runtime: Runtime | None = ctx.pop("runtime", None)
        if runtime is not None:
            await runtime.close()

    every_5_minutes = set(range(0, 60, 5))
    # Cron job ids are global in Redis: the queue name keeps two deployments on one Redis apart.
    prefix = settings.queue_name
    return {
        "functions": _deliver_functions(settings),
        "cron_jobs": [
            cron(plan_tick, name=f"{prefix}:plan", minute=every_5_minutes, second=0, run_at_startup=True),
            cron(dispatch_tick, name=f"{prefix}:dispatch", second=set(range(0, 60, 10)), run_at_startup=True),
            cron(digest_tick, name=f"{prefix}:digest", minute=every_5_minutes, second=30),
            cron(idempotency_purge_tick, name=f"{prefix}:idempotency-purge", minute=every_5_minutes, second=45),
        ],
        "queue_name": settings.queue_name,
        "redis_settings": RedisSettings.from_dsn(settings.redis_url),
        "on_startup": startup,
        "on_shutdown": shutdown,
        "max_jobs": settings.worker_jobs,
        "job_timeout": settings.dispatch_timeout_s,
        "keep_result": 0,
        "max_tries": _JOB_TRIES,
        "health_check_interval": 30,
        "timezone": dt.UTC,
        "job_serializer": job_serializer,
        "job_deserializer": job_deserializer,
    }


def run_worker(settings: Settings, clock: Clock) -> None:
    """Run the long-lived worker until SIGINT or SIGTERM (``metreg worker``).

    arq's worker ends with an error when Redis goes away (a restart, a failover). Redis holds only
    the queue and the outbox in PostgreSQL is swept again, so a worker that has been connected
    once starts again (a fresh arq worker on a fresh event loop) until Redis answers, instead of
    leaving delivery to whatever supervises the process. A Redis that never answered is the
    operator's to fix: that error ends the command.
    """
    connected_once = False
    while True:
        # arq's Worker binds to the current event loop when it is built.
        loop = uvloop.new_event_loop()
        asyncio.set_event_loop(loop)
        worker = Worker(**worker_options(settings, clock))
        try:
            worker.run()
            return
        except (RedisError, OSError) as exc:
            connected_once = connected_once or "redis" in worker.ctx
            if not connected_once:
                raise
            log.warning("lost Redis (%s); the worker starts again in %g s", type(exc).__name__, _RESTART_DELAY_S)
            # A close cut short by the lost connection did not run the shutdown hook.
            runtime: Runtime | None = worker.ctx.pop("runtime", None)
            if runtime is not None:
                with contextlib.suppress(Exception):
                    loop.run_until_complete(runtime.close())
        finally:
            loop.close()
        time.sleep(_RESTART_DELAY_S)


class BurstResult(msgspec.Struct, frozen=True, kw_only=True):
    dispatched: int
    digests: int


async def run_burst(settings: Settings, clock: Clock, *, max_rounds: int = 1000) -> BurstResult:
    """Dispatch every due notice, send every held digest, drain the queue; repeat until nothing is due."""
    runtime = await Runtime.open(settings, clock)
    worker = Worker(
        functions=_deliver_functions(settings),
        queue_name=settings.queue_name,
        redis_pool=runtime.queue,
        burst=True,
        poll_delay=0.05,
        handle_signals=False,
        ctx={"runtime": runtime},
        max_jobs=settings.worker_jobs,
        job_timeout=settings.dispatch_timeout_s,
        keep_result=0,
        max_tries=_JOB_TRIES,
        timezone=dt.UTC,
        job_serializer=job_serializer,
        job_deserializer=job_deserializer,
        log_results=False,
    )
    dispatched = digests = 0
    try:
        for _ in range(max_rounds):
            async with runtime.connection() as db:
                handed = await dispatch(db, runtime.queue, clock.now(), sweep_after=runtime.lease)
                await end_lost_tries(db, clock.now())
            dispatched += handed
            await worker.main()
            sent = await send_digests(runtime, everything=True)
            digests += sent
            if handed == 0 and sent == 0 and await runtime.queue.zcard(settings.queue_name) == 0:
                break
            await asyncio.sleep(0)
    finally:
        await runtime.close()
    return BurstResult(dispatched=dispatched, digests=digests)
