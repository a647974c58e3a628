"""The daily digest: an enterprise that asked for one gets one e-mail per address a day.

E-mail deliveries of such an enterprise are held (``digest``) until its next 08:00 local time;
this job, run every few minutes, claims the held ones whose hour has come, sends one message per
enterprise and address listing them, records the try on each, and settles their notices. As the
delivery job does (``jobs.tries``), a run claims the e-mails of only as many messages as it can
send before it is stopped (the others stay held and due for the next run), sends
:data:`PARALLEL_SESSIONS` at a time and records each message as soon as it is sent: a crash or a
stop repeats only the messages on the wire.

A notice's cycle may have stopped governing in the hours its e-mails were held. So, as the
delivery job does, the job first locks their notices: a planned notice whose cycle no longer
governs is cancelled instead of sent (its held e-mails failed with it, schema/0014), a cancelled
notice's e-mails left by a lost claim are failed unsent, and only the other notices' e-mails are
claimed.
"""

from __future__ import annotations

import itertools

from jobs.runtime import Runtime
from jobs.tries import claim_limit, record_tries, send_recording
from service.deliveries.attempt import Attempted
from service.deliveries.email import digest_message
from service.deliveries.payload import load_events
from service.deliveries.queries import Claimed, claim_held, held_notices, lock_notices
from service.notices.queries import cancel_stale_notices, drop_deliveries
from service.notices.rules import NoticeStatus

__all__ = ("PARALLEL_SESSIONS", "send_digests")

#: SMTP sessions open at once: one digest per enterprise and address, sent side by side.
PARALLEL_SESSIONS = 20
#: Held e-mails one run looks at, at most; more wait for the next run.
_BATCH = 5000


async def send_digests(runtime: Runtime, *, everything: bool = False) -> int:
    """Send the digests whose hour has come (``everything``: all held ones), as many as fit in the
    run's time (the rest wait for the next run); returns messages sent."""
    # The run's own time (arq's timeout, the dispatch timeout) runs from its start, waits included.
    started = runtime.clock.now()
    settings = runtime.settings
    async with runtime.connection() as db:
        async with db.transaction():
            due = await held_notices(db, started, limit=_BATCH, everything=everything)
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
            # The claims hold for a whole lease from now, but the run is stopped a lease after it
            # started: it claims the e-mails of only as many messages (one SMTP session each) as
            # it can send in the time it has left.
            time_left = runtime.lease - (now - started)
            messages = claim_limit(
                lease_s=time_left.total_seconds(), send_timeout_s=settings.send_timeout_s, parallel=PARALLEL_SESSIONS
            )
            claimed = (
                await claim_held(db, ids, now, runtime.lease, limit=_BATCH, messages=messages, everything=everything)
                if ids and messages
                else []
            )
            events = await load_events(db, sorted({c.notice_id for c in claimed}), now) if claimed else {}
        if not claimed:
            return 0

        def group(c: Claimed) -> tuple[str, str]:
            return (str(c.enterprise_id), c.target)

        batches = [list(m) for _, m in itertools.groupby(sorted(claimed, key=group), key=group)]

        async def send(batch: list[Claimed]) -> Attempted:
            listed = sorted((events[c.notice_id] for c in batch), key=lambda e: (e.due_on, e.kind, e.instrument.name))
            message = digest_message(
                listed, sender=settings.mail_from, to=batch[0].target, reference=f"digest-{batch[0].id}"
            )
            return await runtime.mailer.send(message)

        async def record(sent: list[tuple[list[Claimed], Attempted]]) -> None:
            # Each message's try is the try of every e-mail it carried.
            await record_tries(
                runtime, db, [(claim, attempted) for batch, attempted in sent for claim in batch], started_at=now
            )

        # Each message is recorded as soon as it is sent (with whatever else was sent meanwhile), so
        # a crash or a stop repeats only the messages on the wire, not the run's.
        await send_recording(batches, send, record, parallel=PARALLEL_SESSIONS)
    return len(batches)
