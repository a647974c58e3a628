"""The ``deliver_notice`` job: one notice to every target, each try recorded.

It may run more than once for a notice (arq runs jobs at least once; the dispatcher re-dispatches
what looks lost), so it starts from the rows: a closed notice is left alone, a planned notice whose
cycle no longer governs is cancelled instead of sent, and only deliveries whose next try is due are
claimed. Targets are fixed at the first run; the sends themselves happen outside any transaction.
"""

from __future__ import annotations

import asyncio
import logging
import uuid

import msgspec

from jobs.runtime import Runtime
from service.deliveries.attempt import Attempted
from service.deliveries.email import notice_message
from service.deliveries.payload import NoticeEvent, load_event
from service.deliveries.queries import Claimed, claim_live, create_targets, lock_notice, record, settle_notice
from service.deliveries.rules import Outcome, next_digest_at
from service.deliveries.webhook import WebhookCall, post_webhook
from service.notices.queries import cancel_stale
from service.notices.rules import NoticeStatus

__all__ = ("deliver", "send")

log = logging.getLogger("metreg.worker")

_CLOSED = {NoticeStatus.DELIVERED, NoticeStatus.FAILED, NoticeStatus.CANCELLED}


async def send(runtime: Runtime, claimed: Claimed, event: NoticeEvent) -> Attempted:
    """One try of one delivery of ``event``."""
    if claimed.channel == "email":
        return await runtime.mailer.send(notice_message(event, sender=runtime.settings.mail_from, to=claimed.target))
    if claimed.secret is None:
        return Attempted(outcome=Outcome.FAILED, duration_ms=0, error="the webhook was deleted")
    call = WebhookCall(
        url=claimed.target,
        secret=claimed.secret,
        event=event.kind,
        delivery_id=str(claimed.id),
        body=msgspec.json.encode(event),
        timestamp=int(runtime.clock.now().timestamp()),
    )
    settings = runtime.settings
    return await post_webhook(
        runtime.http, call, allow_private=settings.allow_private_webhooks, deadline_s=settings.send_timeout_s
    )


def _attempted(result: Attempted | BaseException) -> Attempted:
    """A send that raised (a bug, not the network: senders classify those) fails that delivery
    only, so the others are still recorded and the notice settles."""
    if isinstance(result, Attempted):
        return result
    if not isinstance(result, Exception):
        raise result
    log.exception("a delivery could not be sent", exc_info=result)
    return Attempted(outcome=Outcome.FAILED, duration_ms=0, error=f"not sent: {type(result).__name__}")


async def deliver(runtime: Runtime, notice_id: uuid.UUID) -> None:
    """Make every due try of notice ``notice_id`` and settle it."""
    now = runtime.clock.now()
    async with runtime.connection() as db:
        async with db.transaction():
            notice = await lock_notice(db, notice_id)
            if notice is None or notice.status in _CLOSED:
                return
            if notice.certificate_id is None:
                await cancel_stale(db, now, instrument_id=notice.instrument_id)
                if await db.fetchval("SELECT status FROM notices WHERE id = $1", notice_id) == NoticeStatus.CANCELLED:
                    return
            if notice.attempts == 0:
                await create_targets(db, notice, now, next_digest_at(now, notice.timezone))
            await db.execute("UPDATE notices SET attempts = attempts + 1 WHERE id = $1", notice_id)
            claimed = await claim_live(db, notice_id, now, runtime.lease)
            event = await load_event(db, notice_id, now) if claimed else None
            if event is None:
                await settle_notice(db, notice_id, now, runtime.lease)
                return
        results = [
            _attempted(r)
            for r in await asyncio.gather(*(send(runtime, c, event) for c in claimed), return_exceptions=True)
        ]
        done = runtime.clock.now()
        async with db.transaction():
            for claim, attempted in zip(claimed, results, strict=True):
                await record(db, claim, attempted, started_at=now, now=done, **runtime.retries())
            await settle_notice(db, notice_id, done, runtime.lease)
