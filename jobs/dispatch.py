"""The outbox relay: notices due for delivery are handed to arq in batches, one job per batch.

PostgreSQL holds the schedule: a notice is due when it is ``pending`` and its ``next_attempt_at``
has come, or when it has stayed ``dispatched`` past the dispatch timeout (its job was lost with a
worker or with Redis). Rows are claimed with ``FOR UPDATE SKIP LOCKED`` so several dispatchers
share the work, and enqueued :data:`BATCH` at a time under a job id made of the batch's notice
ids, which arq refuses to hold twice: a dispatch repeated after a crash does not queue the same
batch again. The enqueue happens before the commit: a crash in between leaves the rows due and
they are sent again, and the delivery job reads the rows' state first, so the worst case is a
repeated look.

A try whose job died before recording it is made again by its notice's next dispatch, once the
claim's lease has run out; a cancelled notice has no next dispatch (nothing more is sent for it),
so :func:`end_lost_tries` fails such tries instead, saying they went unrecorded, and nothing is
sent again.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from collections.abc import Sequence

import asyncpg
import msgspec
from arq.connections import ArqRedis

from service.deliveries.queries import lock_lost_to_cancelled
from service.notices.queries import drop_deliveries

__all__ = (
    "BATCH",
    "DELIVER_NOTICE",
    "DELIVER_NOTICES",
    "DeliverNotice",
    "DeliverNotices",
    "dispatch",
    "end_lost_tries",
    "job_id",
)

#: The arq function that delivers a batch of notices.
DELIVER_NOTICES = "deliver_notices"
#: The arq function that delivered one notice, before batches: still served, so that jobs an older
#: dispatcher queued before an upgrade are delivered rather than dropped.
DELIVER_NOTICE = "deliver_notice"
#: Notices in one delivery job. One job costs a fixed number of statements and arq's own
#: bookkeeping, so a batch spreads both; a dispatch of 500 still gives the worker several jobs to
#: run side by side.
BATCH = 100


class DeliverNotices(msgspec.Struct, frozen=True, kw_only=True):
    """The payload of a ``deliver_notices`` job."""

    notice_ids: list[uuid.UUID]


class DeliverNotice(msgspec.Struct, frozen=True, kw_only=True):
    """The payload of a ``deliver_notice`` job (queued before batches)."""

    notice_id: uuid.UUID


def job_id(notice_ids: Sequence[uuid.UUID]) -> str:
    """The job id of a batch: the same notices give the same id, in any order."""
    digest = hashlib.sha256(b"".join(i.bytes for i in sorted(notice_ids))).hexdigest()
    return f"notices:{digest[:32]}"


async def dispatch(
    db: asyncpg.Connection, queue: ArqRedis, now: dt.datetime, *, sweep_after: dt.timedelta, limit: int = 500
) -> int:
    """Hand up to ``limit`` due notices to arq; returns how many were handed over."""
    async with db.transaction():
        ids: list[uuid.UUID] = [
            r["id"]
            for r in await db.fetch(
                """SELECT id FROM notices
                   WHERE status IN ('pending', 'dispatched') AND next_attempt_at <= $1
                   ORDER BY next_attempt_at
                   LIMIT $2
                   FOR UPDATE SKIP LOCKED""",
                now,
                limit,
            )
        ]
        for start in range(0, len(ids), BATCH):
            batch = ids[start : start + BATCH]
            # None means the job is still queued or running: it will do the work.
            await queue.enqueue_job(
                DELIVER_NOTICES, msgspec.to_builtins(DeliverNotices(notice_ids=batch)), _job_id=job_id(batch)
            )
        await db.execute(
            """UPDATE notices SET status = 'dispatched', dispatched_at = $2, next_attempt_at = $3, updated_at = $2
               WHERE id = ANY ($1::uuid[])""",
            ids,
            now,
            now + sweep_after,
        )
    return len(ids)


async def end_lost_tries(db: asyncpg.Connection, now: dt.datetime, *, limit: int = 500) -> int:
    """Fail the tries of cancelled notices whose claims ran out unrecorded by ``now`` (their jobs
    died while the notices were cancelled), those of up to ``limit`` such tries; returns how many
    deliveries were failed. The digest does the same for held e-mails (``jobs.digest``)."""
    async with db.transaction():
        # The notices first, in id order, as every writer of deliveries takes them: a job that
        # still records one of these tries has either recorded it (and it is not found) or waits.
        notice_ids = await lock_lost_to_cancelled(db, now, limit=limit)
        return await drop_deliveries(db, now, notice_ids) if notice_ids else 0
