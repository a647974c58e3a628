"""Webhooks in and out of the API."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated

import msgspec

from service.notices.rules import NoticeKind
from service.types import RegionPrefix, Text

__all__ = ("PingResult", "Webhook", "WebhookCreate", "WebhookCreated")


class WebhookCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A webhook endpoint. ``events`` are notice kinds (empty: all); ``secret`` signs every call
    (HMAC-SHA256; 16–200 characters; generated when absent and shown once). Admins name the owner:
    ``enterprise_id`` or ``region_code``."""

    url: Annotated[str, Text(2000, min_length=1)]
    events: Annotated[list[NoticeKind], msgspec.Meta(max_length=10)] = msgspec.field(default_factory=list)
    secret: Annotated[str, Text(200, min_length=16)] | None = None
    enterprise_id: uuid.UUID | None = None
    region_code: RegionPrefix | None = None


class Webhook(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    enterprise_id: uuid.UUID | None
    region_code: str | None
    url: str
    events: list[NoticeKind]
    active: bool
    created_at: dt.datetime


class WebhookCreated(msgspec.Struct, frozen=True, kw_only=True):
    """The new webhook and its signing secret, shown this once."""

    webhook: Webhook
    secret: str


class PingResult(msgspec.Struct, frozen=True, kw_only=True):
    """How a test call went: ``delivered`` when the receiver answered 2xx."""

    delivered: bool
    status_code: int | None
    error: str | None
    duration_ms: int
