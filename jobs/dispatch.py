"""The outbox relay: notices due for delivery are handed to arq, exactly one job id per notice.

PostgreSQL holds the schedule: a notice is due when it is ``pending`` and its ``next_attempt_at``
has come, or when it has stayed ``dispatched`` past the dispatch timeout (its job was lost with a
worker or with Redis). Rows are claimed with ``FOR UPDATE SKIP LOCKED`` so several dispatchers
share the work, and enqueued under the job id ``notice:<id>``, which arq refuses to hold twice.
The enqueue happens before the commit: a crash in between leaves the row due and it is sent
again, and the delivery job reads the row's state first, so the worst case is a repeated look.
"""

from __future__ import annotations

import datetime as dt
import uuid

import asyncpg
import msgspec
from arq.connections import ArqRedis

__all__ = ("DELIVER_NOTICE", "DeliverNotice", "dispatch", "job_id")

#: The arq function that delivers one notice.
DELIVER_NOTICE = "deliver_notice"


class DeliverNotice(msgspec.Struct, frozen=True, kw_only=True):
    """The payload of a ``deliver_notice`` job."""

    notice_id: uuid.UUID


def job_id(notice_id: uuid.UUID) -> str:
    return f"notice:{notice_id}"


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
        for notice_id in ids:
            # None means the job is still queued or running: it will do the work.
            await queue.enqueue_job(
                DELIVER_NOTICE, msgspec.to_builtins(DeliverNotice(notice_id=notice_id)), _job_id=job_id(notice_id)
            )
        await db.execute(
            """UPDATE notices SET status = 'dispatched', dispatched_at = $2, next_attempt_at = $3, updated_at = $2
               WHERE id = ANY ($1::uuid[])""",
            ids,
            now,
            now + sweep_after,
        )
    return len(ids)
