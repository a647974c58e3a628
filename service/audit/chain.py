"""The audit trail's hash chain, recomputed outside the database that wrote it.

Each row's ``hash`` is SHA-256 over the previous row's hash followed by the row's fields, each
length-prefixed (``'-'`` for NULL) and joined by newlines: ``audit_digest`` in
``schema/0008_trust.sql`` computes it as rows are written, :func:`digest` here computes the same
to check them. A row edited, removed or slipped in breaks the chain at that row.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Sequence

import asyncpg
import msgspec

__all__ = ("GENESIS", "Break", "digest", "verify")

GENESIS = bytes(32)
"""The ``prev_hash`` of the first row."""

# The hashed fields as text, in the order audit_digest hashes them.
_FIELDS = """
    seq::text, ((extract(epoch FROM at) * 1000000)::bigint)::text, request_id, actor_key_id::text,
    actor_role, action, entity, entity_id, operation, enterprise_id::text, region_code,
    before::text, after::text
"""


def _field(value: str | None) -> str:
    return "-" if value is None else f"{len(value)}:{value}"


def digest(prev_hash: bytes, fields: Sequence[str | None]) -> bytes:
    """The hash of a row whose hashed fields (as text, in order) are ``fields``."""
    text = "\n".join(_field(value) for value in fields)
    return hashlib.sha256(prev_hash + text.encode()).digest()


class Break(msgspec.Struct, frozen=True, kw_only=True):
    """The first row at which the chain does not hold, and why."""

    seq: int
    reason: str


async def _rows(conn: asyncpg.Connection, batch: int) -> AsyncIterator[asyncpg.Record]:
    after = 0
    while True:
        rows = await conn.fetch(
            # Qualified: the text column `seq` of the select list would otherwise be what is sorted.
            f"""SELECT {_FIELDS}, prev_hash, hash FROM audit_log
                WHERE audit_log.seq > $1 ORDER BY audit_log.seq LIMIT $2""",
            after,
            batch,
        )
        for row in rows:
            yield row
        if len(rows) < batch:
            return
        after = int(rows[-1][0])


async def verify(conn: asyncpg.Connection, *, batch: int = 5000) -> tuple[int, Break | None]:
    """Walk the whole chain in order: ``(rows checked, the first break or None)``. The caller must
    be the owner of the trail (or a superuser): anyone else is refused.

    Runs in one repeatable-read transaction, so rows appended meanwhile are neither half seen nor
    taken for a break.
    """
    checked = 0
    prev_hash = GENESIS
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        # A login that row-level security holds would see part of the trail, or none, and find it
        # intact: make PostgreSQL refuse instead.
        await conn.execute("SET LOCAL row_security = off")
        async for row in _rows(conn, batch):
            seq = int(row[0])
            fields = [row[i] for i in range(13)]
            if seq != checked + 1:
                return checked, Break(seq=checked + 1, reason=f"row {checked + 1} is missing (the next is {seq})")
            if row["prev_hash"] != prev_hash:
                return checked, Break(seq=seq, reason=f"its prev_hash is not the hash of row {seq - 1}")
            if digest(prev_hash, fields) != row["hash"]:
                return checked, Break(seq=seq, reason="its hash does not match its content (the row was changed)")
            prev_hash = row["hash"]
            checked += 1
    return checked, None
