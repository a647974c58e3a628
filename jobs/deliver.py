"""The ``deliver_notices`` job: a batch of notices to every target, each try recorded.

It may run more than once for a notice (arq runs jobs at least once; the dispatcher re-dispatches
what looks lost), so it starts from the rows: a closed notice is left alone, a planned notice whose
cycle no longer governs is cancelled instead of sent, and only deliveries whose next try is due are
claimed. Targets are fixed at the first run; the sends themselves happen outside any transaction.

One job handles a batch in a fixed number of statements before it sends (lock, cancel, targets,
claim, bodies) and four for each group of tries recorded, whatever the batch's size, and sends
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

import uuid
from collections.abc import Sequence

import msgspec

from jobs.runtime import PARALLEL_SENDS, Runtime
from jobs.tries import claim_limit, record_tries, send_recording
from service.deliveries.attempt import Attempted
from service.deliveries.email import notice_message
from service.deliveries.payload import NoticeEvent, load_events
from service.deliveries.queries import (
    Claimed,
    claim_live_of,
    create_targets_of,
    lock_notices,
    settle_notices,
)
from service.deliveries.rules import Outcome, next_digest_at
from service.deliveries.webhook import WebhookCall, WebhookClient, post_webhook
from service.notices.queries import cancel_stale_notices
from service.notices.rules import NoticeStatus

__all__ = ("PARALLEL_SENDS", "claim_limit", "deliver", "deliver_batch", "send")

_CLOSED = {NoticeStatus.DELIVERED, NoticeStatus.FAILED, NoticeStatus.CANCELLED}


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
        async with runtime.webhook_client() as client:

            async def one(claim: Claimed) -> Attempted:
                return await send(runtime, client, claim, events[claim.notice_id], bodies[claim.notice_id])

            async def record(tries: list[tuple[Claimed, Attempted]]) -> None:
                await record_tries(runtime, db, tries, started_at=now)

            await send_recording(claimed, one, record, parallel=PARALLEL_SENDS)
