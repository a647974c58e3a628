"""Calendar feeds in and out of the API. The feed's URL (which holds its token) appears once, in
the creation response."""

from __future__ import annotations

import datetime as dt
import uuid

import msgspec

from service.types import Name

__all__ = ("CalendarFeed", "CalendarFeedCreate", "CreatedCalendarFeed")


class CalendarFeedCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A new feed; ``name`` says whose calendar it is for (``设备科 Outlook``)."""

    name: Name


class CalendarFeed(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    enterprise_id: uuid.UUID
    name: str
    created_at: dt.datetime
    created_by: uuid.UUID | None
    """The API key that made it."""
    revoked_at: dt.datetime | None
    """Its URL answers 404 from this instant on."""
    last_fetched_at: dt.datetime | None
    """When a calendar app last read it, to the minute."""


class CreatedCalendarFeed(CalendarFeed, frozen=True, kw_only=True):
    """A feed just made: ``url`` holds its secret token, shown this once and never stored. Anyone
    with the URL reads the enterprise's due dates until the feed is revoked."""

    url: str
