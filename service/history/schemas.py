"""History events in and out of the API."""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from typing import Any

import msgspec

from service.auth import Role
from service.instruments.rules import Lifecycle

__all__ = ("Event", "EventKind")


class EventKind(enum.StrEnum):
    REGISTERED = "registered"
    UPDATED = "updated"
    RESULT_RECORDED = "result_recorded"
    CERTIFICATE_REVOKED = "certificate_revoked"
    SEALED = "sealed"
    UNSEALED = "unsealed"
    SCRAPPED = "scrapped"
    REPLACED = "replaced"


class Event(msgspec.Struct, frozen=True, kw_only=True):
    """One thing that happened to an instrument, who did it and when.

    ``seq`` orders events (higher is later); ``effective_on`` is the local date the event took effect
    when it differs from when it was recorded (``occurred_at``). ``actor_key_id`` is null for events
    written by a migration or the system.
    """

    seq: int
    instrument_id: uuid.UUID
    kind: EventKind
    effective_on: dt.date | None
    from_lifecycle: Lifecycle | None
    to_lifecycle: Lifecycle | None
    certificate_id: uuid.UUID | None
    related_instrument_id: uuid.UUID | None
    reason: str | None
    detail: dict[str, Any]
    actor_key_id: uuid.UUID | None
    actor_role: Role | None
    occurred_at: dt.datetime
