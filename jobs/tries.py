"""What the delivery job and the digest share: how much one run claims, and its tries sent side by
side, each recorded as soon as it finishes.

A run is stopped a dispatch timeout after it started (arq's job timeout), and its claims are
leases of the same length counted from the claim: a run that claimed more than it can send in its
time would be stopped with tries unsent or unrecorded, and they would be made again once the
leases ran out. So a run claims only what fits in the time it has left, and records tries as they
finish: a crash or a stop repeats only the tries on the wire and those being recorded.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import asyncpg

from jobs.runtime import PARALLEL_SENDS, Runtime
from service.deliveries.attempt import Attempted
from service.deliveries.queries import Claimed, lock_notices, record_many, settle_notices
from service.deliveries.rules import Outcome
from service.notices.rules import NoticeStatus

__all__ = ("claim_limit", "record_tries", "send_recording")

log = logging.getLogger("metreg.worker")

T = TypeVar("T")


def claim_limit(*, lease_s: float, send_timeout_s: float, parallel: int = PARALLEL_SENDS) -> int:
    """How many sends one run claims with ``lease_s`` seconds of its lease left: as many rounds of
    ``parallel`` sends, each at most ``send_timeout_s``, as fit in them with one round to spare for
    the database work; none when not even that fits (the tries stay due for the next run). A whole
    lease always fits one round: the settings refuse a shorter one."""
    rounds = int(lease_s // send_timeout_s) - 1
    return parallel * max(0, rounds)


def _not_sent(exc: Exception) -> Attempted:
    """A send that raised (a bug, not the network: senders classify those) fails that send only,
    so the others are still recorded and their notices settle."""
    log.exception("a delivery could not be sent", exc_info=exc)
    return Attempted(outcome=Outcome.FAILED, duration_ms=0, error=f"not sent: {type(exc).__name__}")


async def send_recording(
    items: Sequence[T],
    send: Callable[[T], Awaitable[Attempted]],
    record: Callable[[list[tuple[T, Attempted]]], Awaitable[None]],
    *,
    parallel: int,
) -> None:
    """Send every item, at most ``parallel`` at a time, and ``record`` what they came to as they
    finish: whatever finished meanwhile at once (the slower the database, the more at a time)."""
    slots = asyncio.Semaphore(parallel)
    finished: asyncio.Queue[tuple[T, Attempted]] = asyncio.Queue()

    async def one(item: T) -> None:
        async with slots:
            try:
                attempted = await send(item)
            except Exception as exc:
                attempted = _not_sent(exc)
        finished.put_nowait((item, attempted))

    sending = [asyncio.create_task(one(item)) for item in items]
    try:
        left = len(items)
        while left:
            ready = [await finished.get()]
            while not finished.empty():
                ready.append(finished.get_nowait())
            await record(ready)
            left -= len(ready)
    finally:
        # Only when recording failed or the run was cancelled: the sends go with it.
        for task in sending:
            task.cancel()
        await asyncio.gather(*sending, return_exceptions=True)


async def record_tries(
    runtime: Runtime, db: asyncpg.Connection, tries: list[tuple[Claimed, Attempted]], *, started_at: dt.datetime
) -> None:
    """Record finished tries and settle their notices (again, if more of their tries are to come);
    a try whose notice was cancelled meanwhile is recorded as it went and not made again."""
    settings = runtime.settings
    notice_ids = sorted({claim.notice_id for claim, _ in tries})
    async with db.transaction():
        # The notices first, in id order, as every writer of deliveries takes them (a job's first
        # transaction, a cancellation, a manual retry): recording cannot deadlock with any of them,
        # and a cancellation either committed before (and is seen here) or waits for the record.
        notices = await lock_notices(db, notice_ids)
        # After the wait for the locks: retries are scheduled from when they are recorded.
        done = runtime.clock.now()
        await record_many(
            db,
            tries,
            started_at=started_at,
            now=done,
            jitter=runtime.rng.random,
            max_tries=settings.retry_tries,
            first_delay=dt.timedelta(seconds=settings.retry_delay_s),
            # Cancelled while these tries were on the wire (its cancellation left them to us): what
            # they came to is recorded, and none is made again. (Had this job died first, the
            # dispatch tick would fail them once their claims ran out: jobs.dispatch.end_lost_tries.)
            cancelled={n.id for n in notices if n.status == NoticeStatus.CANCELLED},
        )
        await settle_notices(db, notice_ids, done, runtime.lease)
