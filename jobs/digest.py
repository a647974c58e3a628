"""The daily digest: an enterprise that asked for one gets one e-mail per address a day.

E-mail deliveries of such an enterprise are held (``digest``) until its next 08:00 local time;
this job, run every few minutes, claims the held ones whose hour has come, sends one message per
enterprise and address listing them, records the try on each, and settles their notices.

A notice's cycle may have stopped governing in the hours its e-mails were held. So, as the
delivery job does, the job first locks their notices: a planned notice whose cycle no longer
governs is cancelled instead of sent (its held e-mails failed with it, schema/0014), a cancelled
notice's e-mails left by a lost claim are failed unsent, and only the other notices' e-mails are
claimed.
"""

from __future__ import annotations

import asyncio
import itertools

from jobs.runtime import Runtime
from service.deliveries.attempt import Attempted
from service.deliveries.email import digest_message
from service.deliveries.payload import load_events
from service.deliveries.queries import Claimed, claim_held, held_notices, lock_notices, record, settle_notice
from service.notices.queries import cancel_stale_notices, drop_deliveries
from service.notices.rules import NoticeStatus

__all__ = ("send_digests",)

#: SMTP sessions open at once: one digest per enterprise and address, sent side by side.
_PARALLEL_SESSIONS = 20
#: Held e-mails claimed in one run; more wait for the next.
_BATCH = 5000


async def send_digests(runtime: Runtime, *, everything: bool = False) -> int:
    """Send the digests whose hour has come (``everything``: all held ones); returns messages sent."""
    async with runtime.connection() as db:
        async with db.transaction():
            due = await held_notices(db, runtime.clock.now(), limit=_BATCH, everything=everything)
            # The notices first, in id order, as every writer of deliveries takes them: a
            # cancellation either committed before (and is seen here) or waits for the claims.
            notices = await lock_notices(db, due)
            # Only now: the locks may have been waited for, and the claims' lease runs from here.
            now = runtime.clock.now()
            gone = [n.id for n in notices if n.status == NoticeStatus.CANCELLED]
            if gone:
                await drop_deliveries(db, now, gone)
            live = [n for n in notices if n.status in (NoticeStatus.PENDING, NoticeStatus.DISPATCHED)]
            planned = [n.id for n in live if n.certificate_id is None]
            cancelled = await cancel_stale_notices(db, now, planned) if planned else set()
            ids = [n.id for n in live if n.id not in cancelled]
            claimed = await claim_held(db, ids, now, runtime.lease, limit=_BATCH, everything=everything) if ids else []
            events = await load_events(db, sorted({c.notice_id for c in claimed}), now) if claimed else {}
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
        async with db.transaction():
            # The notices first, in id order, as every writer of deliveries takes them: a
            # cancellation (which holds its notices, then fails their deliveries) is waited for
            # instead of deadlocked with, which would abort this record and repeat its sends.
            await lock_notices(db, sorted({c.notice_id for c in claimed}))
            done = runtime.clock.now()
            for batch, attempted in outcomes:
                for claim in batch:
                    await record(db, claim, attempted, started_at=now, now=done, **runtime.retries())
            for notice_id in sorted({c.notice_id for c in claimed}):
                await settle_notice(db, notice_id, done, runtime.lease)
    return len(outcomes)
