"""The clock, injected wherever "now" matters.

Logic never reads the time itself: handlers and jobs receive a :class:`Clock`, so that tests (and
``metreg plan --today``) can stand on any instant. All instants are aware UTC datetimes.
"""

from __future__ import annotations

import datetime as dt
from typing import Protocol

__all__ = ("Clock", "FixedClock", "SystemClock")


class Clock(Protocol):
    """Something that knows the current instant."""

    def now(self) -> dt.datetime:
        """Return the current instant as an aware UTC datetime."""
        ...


class SystemClock:
    """The machine's clock."""

    __slots__ = ()

    def now(self) -> dt.datetime:
        """Return the current instant in UTC."""
        return dt.datetime.now(dt.UTC)


class FixedClock:
    """A clock that stands still until moved: for tests and replays."""

    __slots__ = ("_now",)

    def __init__(self, now: dt.datetime) -> None:
        if now.tzinfo is None:
            raise ValueError("FixedClock needs an aware datetime")
        self._now = now.astimezone(dt.UTC)

    def now(self) -> dt.datetime:
        """Return the instant the clock was set to."""
        return self._now

    def set(self, now: dt.datetime) -> None:
        """Move the clock to ``now`` (aware)."""
        if now.tzinfo is None:
            raise ValueError("FixedClock needs an aware datetime")
        self._now = now.astimezone(dt.UTC)
