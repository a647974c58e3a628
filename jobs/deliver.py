"""The ``deliver_notices`` job: a batch of notices to every target, each try recorded.

It may run more than once for a notice (arq runs jobs at least once; the dispatcher re-dispatches
what looks lost), so it starts from the rows: a closed notice is left alone, a planned notice whose
cycle no longer governs is cancelled instead of sent, and only deliveries whose next try is due are
claimed. Targets are fixed at the first run; the sends themselves happen outside any transaction.

One job handles a batch in a fixed number of statements before it sends (lock, cancel, targets,
claim, bodies) and three for each group of tries recorded, whatever the batch's size, and sends
its tries side by side over a keep-alive HTTP client it has to itself while it runs, at most
:data:`PARALLEL_SENDS` at a time. Each try is recorded as soon as it finishes (with whatever else
finished meanwhile), so a crash repeats only the calls on the wire and those being recorded, not
the batch's. Claims are leases of the dispatch timeout, counted from the claim (made once the
notices' locks are held, however long they were waited for); the job itself is stopped a dispatch
timeout after it started, so it claims no more tries than it can send in what is left of that
time (the rest stay due and go with the next dispatch): a slow batch never outlives its own
claims and sends twice.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import uuid
from collections.abc import Sequence

import asyncpg
import msgspec

from jobs.runtime import PARALLEL_SENDS, Runtime
from service.deliveries.attempt import Attempted
from service.deliveries.email import notice_message
from service.deliveries.payload import NoticeEvent, load_events
from service.deliveries.queries import (
    Claimed,
    claim_live_of,
    create_targets_of,
    lock_notices,
    record_many,
    settle_notices,
)
from service.deliveries.rules import Outcome, next_digest_at
from service.deliveries.webhook import WebhookCall, WebhookClient, post_webhook
from service.notices.queries import cancel_stale_notices
from service.notices.rules import NoticeStatus

__all__ = ("PARALLEL_SENDS", "claim_limit", "deliver", "deliver_batch", "send")

log = logging.getLogger("metreg.worker")

_CLOSED = {NoticeStatus.DELIVERED, NoticeStatus.FAILED, NoticeStatus.CANCELLED}


def claim_limit(*, lease_s: float, send_timeout_s: float) -> int:
    """How many tries one job claims with ``lease_s`` seconds of its lease left: as many rounds of
    :data:`PARALLEL_SENDS` sends, each at most ``send_timeout_s``, as fit in them with one round to
    spare for the database work; none when not even that fits (the tries stay due for the next
    job). A whole lease always fits one round: the settings refuse a shorter one."""
    rounds = int(lease_s // send_timeout_s) - 1
    return PARALLEL_SENDS * max(0, rounds)


async def send(
    runtime: Runtime, client: WebhookClient, claimed: Claimed, event: NoticeEvent, body: bytes | None = None
) -> Attempted:
    """One try of one delivery of ``event`` (a webhook over ``client``); ``body``: the event already
    encoded (shared by its targets)."""
    if claimed.channel == "email":
        return await runtime.mailer.send(notice_message(event, sender=runtime.settings.mail_from, to=claimed.target))
    if claimed.secret is None:
        return Attempted(outcome=Outcome.FAILED, duration_ms=0, error="the webhook was deleted")
    call = WebhookCall(
        url=claimed.target,
        secret=claimed.secret,
        event=event.kind,
        delivery_id=str(claimed.id),
        body=body if body is not None else msgspec.json.encode(event),
        timestamp=int(runtime.clock.now().timestamp()),
    )
    settings = runtime.settings
    return await post_webhook(
        client, call, allow_private=settings.allow_private_webhooks, deadline_s=settings.send_timeout_s
    )


def _not_sent(exc: Exception) -> Attempted:
    """A send that raised (a bug, not the network: senders classify those) fails that delivery
    only, so the others are still recorded and the notice settles."""
    log.exception("a delivery could not be sent", exc_info=exc)
    return Attempted(outcome=Outcome.FAILED, duration_ms=0, error=f"not sent: {type(exc).__name__}")


async def deliver(runtime: Runtime, notice_id: uuid.UUID) -> None:
    """Make every due try of notice ``notice_id`` and settle it."""
    await deliver_batch(runtime, [notice_id])


async def deliver_batch(runtime: Runtime, notice_ids: Sequence[uuid.UUID]) -> None:
    """Make the due tries of the notices ``notice_ids`` and settle them."""
    # The job's own time (arq's timeout, the dispatch timeout) runs from its start, waits included.
    started = runtime.clock.now()
    settings = runtime.settings
    async with runtime.connection() as db:
        async with db.transaction():
            notices = [n for n in await lock_notices(db, notice_ids) if n.status not in _CLOSED]
            # Only now: the locks may have been waited for (a long planner or API transaction), and
            # a lease counted from before the wait would run out while its tries are on the wire.
            now = runtime.clock.now()
            planned = [n.id for n in notices if n.certificate_id is None]
            cancelled = await cancel_stale_notices(db, now, planned) if planned else set()
            notices = [n for n in notices if n.id not in cancelled]
            if not notices:
                return
            ids = [n.id for n in notices]
            fresh = [n for n in notices if n.attempts == 0]
            if fresh:
                await create_targets_of(db, fresh, now, [next_digest_at(now, n.timezone) for n in fresh])
            await db.execute("UPDATE notices SET attempts = attempts + 1 WHERE id = ANY ($1::uuid[])", ids)
            # The claims hold for a whole lease from now, but the job is stopped a lease after it
            # started: it claims only what it can send in the time it has left.
            time_left = runtime.lease - (now - started)
            limit = claim_limit(lease_s=time_left.total_seconds(), send_timeout_s=settings.send_timeout_s)
            claimed = await claim_live_of(db, ids, now, runtime.lease, limit=limit)
            events = await load_events(db, sorted({c.notice_id for c in claimed}), now) if claimed else {}
            # Nothing to send for these now (held for the digest, waiting for a retry, no target):
            # they are settled here; the others once their tries are recorded.
            idle = [i for i in ids if i not in events]
            if idle:
                await settle_notices(db, idle, now, runtime.lease)
        if not claimed:
            return
        bodies = {notice_id: msgspec.json.encode(event) for notice_id, event in events.items()}
        slots = asyncio.Semaphore(PARALLEL_SENDS)
        finished: asyncio.Queue[tuple[Claimed, Attempted]] = asyncio.Queue()

        async with runtime.webhook_client() as client:

            async def one(claim: Claimed) -> None:
                async with slots:
                    try:
                        attempted = await send(runtime, client, claim, events[claim.notice_id], bodies[claim.notice_id])
                    except Exception as exc:
                        attempted = _not_sent(exc)
                finished.put_nowait((claim, attempted))

            # Tries are recorded as they finish, whatever is ready at once in one transaction (the
            # slower the database, the larger): a crash repeats only the calls made since the last
            # record, not the whole batch's.
            sending = [asyncio.create_task(one(claim)) for claim in claimed]
            try:
                left = len(claimed)
                while left:
                    ready = [await finished.get()]
                    while not finished.empty():
                        ready.append(finished.get_nowait())
                    await _record(runtime, db, ready, started_at=now)
                    left -= len(ready)
            finally:
                # Only when recording failed or the job was cancelled: the calls go with it.
                for task in sending:
                    task.cancel()
                await asyncio.gather(*sending, return_exceptions=True)


async def _record(
    runtime: Runtime, db: asyncpg.Connection, tries: list[tuple[Claimed, Attempted]], *, started_at: dt.datetime
) -> None:
    """Record finished tries and settle their notices (again, if more of their tries are to come)."""
    settings = runtime.settings
    notice_ids = sorted({claim.notice_id for claim, _ in tries})
    async with db.transaction():
        # The notices first, in id order, as every writer of deliveries takes them (the first
        # transaction of a job, a manual retry): recording cannot deadlock with either.
        await lock_notices(db, notice_ids)
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
        )
        await settle_notices(db, notice_ids, done, runtime.lease)
