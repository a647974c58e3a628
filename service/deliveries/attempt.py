"""What one try to reach a target came to."""

from __future__ import annotations

import datetime as dt

import msgspec

from service.deliveries.rules import Outcome

__all__ = ("Attempted",)


class Attempted(msgspec.Struct, frozen=True, kw_only=True):
    outcome: Outcome
    duration_ms: int
    status_code: int | None = None
    """The HTTP status, or the SMTP reply code."""
    error: str | None = None
    retry_after: dt.timedelta | None = None
    """How long the receiver asked us to wait (HTTP Retry-After in seconds)."""
