"""Notices and their deliveries in and out of the API."""

from __future__ import annotations

import datetime as dt
import uuid

import msgspec

from service.notices.rules import Audience, NoticeKind, NoticeStatus

__all__ = ("Delivery", "DeliveryAttempt", "Notice")


class DeliveryAttempt(msgspec.Struct, frozen=True, kw_only=True):
    attempt: int
    started_at: dt.datetime
    duration_ms: int
    status_code: int | None
    error: str | None
    outcome: str
    """``delivered``, ``retry`` (a transient failure, tried again later) or ``failed`` (final)."""


class Delivery(msgspec.Struct, frozen=True, kw_only=True):
    """One target of a notice (a webhook, an e-mail address) and every attempt to reach it."""

    id: uuid.UUID
    notice_id: uuid.UUID
    channel: str
    """``webhook`` or ``email``."""
    webhook_id: uuid.UUID | None
    target: str
    """The webhook URL or the e-mail address."""
    digest: bool
    """An e-mail held for the enterprise's daily digest (sent at 08:00 local time)."""
    status: str
    """``pending`` (``next_attempt_at`` says when it is tried next), ``delivered`` or ``failed``."""
    attempts: int
    next_attempt_at: dt.datetime
    last_status: int | None
    last_error: str | None
    delivered_at: dt.datetime | None
    history: list[DeliveryAttempt]


class Notice(msgspec.Struct, frozen=True, kw_only=True):
    """A reminder, overdue notice, escalation or result event.

    ``cycle`` is the valid-until date it is about (for result events, the result's date); ``step``
    the reminder offset in days, or the overdue repeat number; ``due_on`` the enterprise's local
    date it fell due. ``deliveries`` is listed when one notice is read.

    ``status``: ``pending`` (waiting for its first or next try), ``dispatched`` (handed to a worker,
    or only digest e-mails wait), ``delivered`` (at least one target got it; ``last_error`` counts
    the ones that failed), ``failed`` (none did, or there was no webhook or e-mail to send it to),
    ``cancelled`` (its cycle stopped governing before it was sent).
    """

    id: uuid.UUID
    enterprise_id: uuid.UUID
    instrument_id: uuid.UUID
    instrument_name: str
    kind: NoticeKind
    audience: Audience
    cycle: dt.date
    step: int
    certificate_id: uuid.UUID | None
    due_on: dt.date
    status: NoticeStatus
    attempts: int
    last_error: str | None
    created_at: dt.datetime
    updated_at: dt.datetime
    dispatched_at: dt.datetime | None
    closed_at: dt.datetime | None
    deliveries: list[Delivery] | None = None
