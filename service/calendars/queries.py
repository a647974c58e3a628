"""Calendar feed rows, and the reads a feed makes under its own principal (``act_as_calendar``)."""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
import uuid
from collections.abc import AsyncIterator

import asyncpg
import msgspec

from service.auth import act_as_calendar
from service.calendars.rules import DueEntry
from service.calendars.schemas import CalendarFeed
from service.pagination import Params, decode_cursor, read_in_page_order, split_page

__all__ = (
    "FeedVersion",
    "due_batches",
    "feed_token",
    "feed_version",
    "insert_feed",
    "open_feed",
    "revoke_feed",
    "select_feed",
    "select_feeds",
    "token_sha256",
)

_COLUMNS = "id, enterprise_id, name, created_at, created_by, revoked_at, last_fetched_at"


def feed_token() -> str:
    """A new feed token: 256 random bits, URL-safe (43 characters)."""
    return secrets.token_urlsafe(32)


def token_sha256(token: str) -> bytes:
    # The token is 256 random bits: a fast hash is as good as a slow one.
    return hashlib.sha256(token.encode()).digest()


def _feed(row: asyncpg.Record) -> CalendarFeed:
    return msgspec.convert(dict(row), CalendarFeed)


async def insert_feed(
    db: asyncpg.Connection,
    *,
    enterprise_id: uuid.UUID,
    name: str,
    digest: bytes,
    created_by: uuid.UUID,
    now: dt.datetime,
) -> CalendarFeed:
    row = await db.fetchrow(
        f"""INSERT INTO calendar_feeds (enterprise_id, name, token_sha256, created_at, created_by)
            VALUES ($1, $2, $3, $4, $5) RETURNING {_COLUMNS}""",
        enterprise_id,
        name,
        digest,
        now,
        created_by,
    )
    assert row is not None
    return _feed(row)


class _PageKey(msgspec.Struct, frozen=True, array_like=True):
    created_at: dt.datetime
    id: uuid.UUID


async def select_feeds(
    db: asyncpg.Connection, enterprise_id: uuid.UUID, *, limit: int, cursor: str | None
) -> tuple[list[CalendarFeed], str | None]:
    """One page of the enterprise's feeds, revoked ones too, newest first."""
    params = Params(enterprise_id)
    after = ""
    if cursor:
        last = decode_cursor(cursor, _PageKey)
        after = f"AND (created_at, id) < ({params(last.created_at)}, {params(last.id)})"
    await read_in_page_order(db)
    rows = await db.fetch(
        f"""SELECT {_COLUMNS} FROM calendar_feeds WHERE enterprise_id = $1 {after}
            ORDER BY created_at DESC, id DESC LIMIT {params(limit + 1)}""",
        *params.values,
    )
    return split_page([_feed(r) for r in rows], limit, lambda last: _PageKey(created_at=last.created_at, id=last.id))


async def select_feed(db: asyncpg.Connection, feed_id: uuid.UUID) -> CalendarFeed | None:
    row = await db.fetchrow(f"SELECT {_COLUMNS} FROM calendar_feeds WHERE id = $1 FOR UPDATE", feed_id)
    return _feed(row) if row else None


async def revoke_feed(db: asyncpg.Connection, feed_id: uuid.UUID, now: dt.datetime) -> None:
    """End the feed's URL; a feed revoked already keeps the instant it was revoked at."""
    await db.execute("UPDATE calendar_feeds SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL", feed_id, now)


async def open_feed(
    db: asyncpg.Connection, digest: bytes, *, request_id: str, now: dt.datetime
) -> tuple[uuid.UUID, uuid.UUID] | None:
    """Make the feed whose token hashes to ``digest`` the transaction's principal and record the
    read: ``(feed id, enterprise id)``, or None when no standing feed has that token."""
    await act_as_calendar(db, digest, request_id, now)
    row = await db.fetchrow("SELECT id, enterprise_id FROM calendar_feed_opened($1)", now)
    return (row["id"], row["enterprise_id"]) if row else None


# The instruments a feed shows (service.calendars.rules): in service, with a valid_until. In due
# order, which the instruments_lifecycle_due index serves, page by page.
_DUE = """
    SELECT id, name, model, serial_no, management_no, location, department, regime, valid_until, version, updated_at
    FROM instruments
    WHERE enterprise_id = $1 AND lifecycle = 'in_service' AND due_key < 'infinity'::date
      AND (due_key, id) > ($2, $3)
    ORDER BY due_key, id
    LIMIT $4
"""


class FeedVersion(msgspec.Struct, frozen=True, kw_only=True):
    """What the feed's instruments are as a whole: their number and a digest of their ids and
    versions (every change of an instrument raises its version)."""

    count: int
    digest: str


async def feed_version(db: asyncpg.Connection, enterprise_id: uuid.UUID) -> FeedVersion:
    # One pass over the feed's rows (a few hundred milliseconds for 100,000), once per read.
    row = await db.fetchrow(
        """SELECT count(*) AS count, coalesce(bit_xor(hashtextextended(id::text, version)), 0) AS digest
           FROM instruments
           WHERE enterprise_id = $1 AND lifecycle = 'in_service' AND due_key < 'infinity'::date""",
        enterprise_id,
    )
    assert row is not None
    return FeedVersion(count=row["count"], digest=f"{row['digest'] & (2**64 - 1):016x}")


async def due_batches(db: asyncpg.Connection, enterprise_id: uuid.UUID, *, size: int) -> AsyncIterator[list[DueEntry]]:
    """The feed's instruments in due order, ``size`` at a time, all read in the caller's
    transaction: a repeatable-read one, so that they are one snapshot (a due date that moved
    between two batches would otherwise put its instrument in both, or in neither)."""
    after: tuple[dt.date, uuid.UUID] = (dt.date.min, uuid.UUID(int=0))
    while True:
        rows = await db.fetch(_DUE, enterprise_id, *after, size)
        if rows:
            yield [msgspec.convert(dict(r), DueEntry) for r in rows]
        if len(rows) < size:
            return
        after = (rows[-1]["valid_until"], rows[-1]["id"])
