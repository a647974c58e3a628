"""The daily digest: an enterprise that asked for one gets one e-mail per address a day.

E-mail deliveries of such an enterprise are held (``digest``) until its next 08:00 local time;
this job, run every few minutes, claims the held ones whose hour has come, sends one message per
enterprise and address listing them, records the try on each, and settles their notices.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid

from jobs.runtime import Runtime
from service.deliveries.attempt import Attempted
from service.deliveries.email import digest_message
from service.deliveries.payload import NoticeEvent, load_event
from service.deliveries.queries import Claimed, claim_held, record, settle_notice

__all__ = ("send_digests",)

#: SMTP sessions open at once: one digest per enterprise and address, sent side by side.
_PARALLEL_SESSIONS = 20
#: Held e-mails claimed in one run; more wait for the next.
_BATCH = 5000


async def send_digests(runtime: Runtime, *, everything: bool = False) -> int:
    """Send the digests whose hour has come (``everything``: all held ones); returns messages sent."""
    now = runtime.clock.now()
    async with runtime.connection() as db:
        async with db.transaction():
            claimed = await claim_held(db, now, runtime.lease, limit=_BATCH, everything=everything)
            events: dict[uuid.UUID, NoticeEvent] = {}
            for notice_id in {c.notice_id for c in claimed}:
                if (event := await load_event(db, notice_id, now)) is not None:
                    events[notice_id] = event
        if not claimed:
            return 0

        def group(c: Claimed) -> tuple[str, str]:
            return (str(c.enterprise_id), c.target)

        batches = [list(m) for _, m in itertools.groupby(sorted(claimed, key=group), key=group)]
        slots = asyncio.Semaphore(_PARALLEL_SESSIONS)

        async def send(batch: list[Claimed]) -> Attempted:
            listed = sorted((events[c.notice_id] for c in batch), key=lambda e: (e.due_on, e.kind, e.instrument.name))
            message = digest_message(
                listed, sender=runtime.settings.mail_from, to=batch[0].target, reference=f"digest-{batch[0].id}"
            )
            async with slots:
                return await runtime.mailer.send(message)

        outcomes = list(zip(batches, await asyncio.gather(*(send(b) for b in batches)), strict=True))
        done = runtime.clock.now()
        async with db.transaction():
            for batch, attempted in outcomes:
                for claim in batch:
                    await record(db, claim, attempted, started_at=now, now=done, **runtime.retries())
            for notice_id in sorted({c.notice_id for c in claimed}):
                await settle_notice(db, notice_id, done, runtime.lease)
    return len(outcomes)
