"""History rows: written by every write to an instrument, read newest first."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import asyncpg
import msgspec

from service.auth import Principal
from service.history.schemas import Event, EventKind
from service.instruments.rules import Lifecycle
from service.pagination import decode_cursor, read_in_page_order, split_page

__all__ = ("record_event", "select_events")


async def record_event(
    db: asyncpg.Connection,
    *,
    instrument_id: uuid.UUID,
    kind: EventKind,
    actor: Principal | None,
    now: dt.datetime,
    effective_on: dt.date | None = None,
    from_lifecycle: Lifecycle | None = None,
    to_lifecycle: Lifecycle | None = None,
    certificate_id: uuid.UUID | None = None,
    related_instrument_id: uuid.UUID | None = None,
    reason: str | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    """Append one event, in the caller's transaction (so it exists exactly when the change does).

    An event naming a related instrument carries its own instrument's enterprise, which the
    related one must belong to (schema/0026).
    """
    await db.execute(
        """INSERT INTO instrument_events (instrument_id, kind, effective_on, from_lifecycle, to_lifecycle,
                                          certificate_id, related_instrument_id, related_enterprise_id, reason,
                                          detail, actor_key_id, actor_role, occurred_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7,
                   (SELECT enterprise_id FROM instruments WHERE id = $1 AND $7::uuid IS NOT NULL),
                   $8, $9, $10, $11, $12)""",
        instrument_id,
        kind.value,
        effective_on,
        from_lifecycle.value if from_lifecycle else None,
        to_lifecycle.value if to_lifecycle else None,
        certificate_id,
        related_instrument_id,
        reason,
        detail or {},
        actor.key_id if actor else None,
        actor.role.value if actor else None,
        now,
    )


class _PageKey(msgspec.Struct, frozen=True, array_like=True):
    seq: int


async def select_events(
    db: asyncpg.Connection, instrument_id: uuid.UUID, *, limit: int, cursor: str | None
) -> tuple[list[Event], str | None]:
    """One page of the instrument's events, newest first, and the cursor of the next page."""
    args: list[Any] = [instrument_id, limit + 1]
    after = ""
    if cursor:
        # A condition of its own, not "$3 IS NULL OR seq < $3": as planned from the statement's
        # sixth run on a connection (for any values), that one starts every page at the newest event.
        args.append(decode_cursor(cursor, _PageKey).seq)
        after = " AND seq < $3"
    await read_in_page_order(db)
    rows = await db.fetch(
        f"""SELECT seq, instrument_id, kind, effective_on, from_lifecycle, to_lifecycle, certificate_id,
                   related_instrument_id, reason, detail, actor_key_id, actor_role, occurred_at
            FROM instrument_events
            WHERE instrument_id = $1{after}
            ORDER BY seq DESC LIMIT $2""",
        *args,
    )
    return split_page([msgspec.convert(dict(r), Event) for r in rows], limit, lambda last: _PageKey(seq=last.seq))
