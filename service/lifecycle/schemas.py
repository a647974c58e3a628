"""Lifecycle actions in and out of the API."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import msgspec

from service.instruments.schemas import Instrument, InstrumentCreate
from service.types import Text

__all__ = ("LifecycleChange", "Replaced", "Replacement")

Reason = Annotated[str, Text(2000, min_length=1)]


class LifecycleChange(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """When the change took effect (a local date, default today, not in the future) and why."""

    effective_on: dt.date | None = None
    reason: Reason | None = None


class Replacement(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The instrument that takes the old one's place, registered in the same transaction.

    A meter verified once (limited-life, scrap-on-failure) must arrive with its initial
    verification (``last_verified_on``).
    """

    replacement: InstrumentCreate
    effective_on: dt.date | None = None
    reason: Reason | None = None


class Replaced(msgspec.Struct, frozen=True, kw_only=True):
    """The replaced instrument and its successor, linked both ways (``replaced_by`` / ``replaces``)."""

    instrument: Instrument
    replacement: Instrument
