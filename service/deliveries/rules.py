"""How a delivery is tried, retried and settled: pure rules (design.md §6, issue 4).

- A webhook answer of 2xx delivers. 408, 429, 5xx and no answer at all (time-out, refused or reset
  connection, a name that does not resolve) are transient: tried again with exponential backoff and
  jitter. Any other answer (3xx: redirects are not followed; 4xx such as 410 Gone) fails at once.
- SMTP: a 2xx reply delivers, 4xx is transient (RFC 5321 §4.2.1), 5xx fails at once.
- A series has at most :data:`MAX_TRIES` tries spread over about a day (:func:`retry_delay`); a
  manual retry starts a new series. A cancelled notice's deliveries get no further try; one on
  the wire when it was cancelled is recorded as it went.
- A notice is settled from its deliveries (:func:`settle`): pending while one waits for its next
  try, delivered when one reached its target and none waits, failed when none did.
"""

from __future__ import annotations

import datetime as dt
import enum
import zoneinfo

import msgspec

from service.notices.rules import NoticeStatus

__all__ = (
    "DIGEST_HOUR",
    "FIRST_DELAY",
    "MAX_TRIES",
    "DeliveryStatus",
    "Outcome",
    "Settlement",
    "Tally",
    "next_digest_at",
    "next_status",
    "outcome_of_http",
    "outcome_of_smtp",
    "retry_delay",
    "settle",
)

#: Tries in one series: the delays of :func:`retry_delay` add up to about 24 hours before the last.
MAX_TRIES = 15
#: The wait after a series' first failed try, doubled after each further one.
FIRST_DELAY = dt.timedelta(seconds=30)
_LONGEST_DELAY = dt.timedelta(hours=4)
#: Longest wait a receiver may ask for with Retry-After before we decide for ourselves.
_MOST_RETRY_AFTER = dt.timedelta(hours=6)
#: Local hour at which an enterprise's daily digest e-mail goes out.
DIGEST_HOUR = 8


class Outcome(enum.StrEnum):
    DELIVERED = "delivered"
    RETRY = "retry"
    FAILED = "failed"


class DeliveryStatus(enum.StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


def outcome_of_http(status_code: int | None) -> Outcome:
    """The outcome of a webhook call that got ``status_code`` (None: no answer at all)."""
    if status_code is None or status_code in (408, 429) or status_code >= 500:
        return Outcome.RETRY
    if 200 <= status_code < 300:
        return Outcome.DELIVERED
    return Outcome.FAILED


def outcome_of_smtp(code: int | None) -> Outcome:
    """The outcome of an SMTP session whose decisive reply was ``code`` (None: no session)."""
    if code is None or 400 <= code < 500:
        return Outcome.RETRY
    if 200 <= code < 300:
        return Outcome.DELIVERED
    return Outcome.FAILED


def retry_delay(
    tries: int, jitter: float, retry_after: dt.timedelta | None = None, *, first: dt.timedelta = FIRST_DELAY
) -> dt.timedelta:
    """The wait before the next try, after ``tries`` tries of this series (≥ 1) failed transiently.

    ``first`` (30 s unless configured) doubled with every try, at most 4 hours, times a jitter
    factor between 0.8 and 1.2 (``jitter`` in [0, 1)) so that receivers that failed together are
    not retried together. A receiver's ``Retry-After`` is honoured when it asks for longer, up to
    6 hours.
    """
    if tries < 1:
        raise ValueError("tries counts from 1")
    if not 0 <= jitter < 1:
        raise ValueError("jitter is in [0, 1)")
    base: dt.timedelta = min(first * 2 ** min(tries - 1, 20), _LONGEST_DELAY)
    delay = base * (0.8 + 0.4 * jitter)
    if retry_after is not None:
        delay = max(delay, min(retry_after, _MOST_RETRY_AFTER))
    return delay


def next_status(outcome: Outcome, tries: int, *, max_tries: int = MAX_TRIES) -> DeliveryStatus:
    """The delivery's status after a try with ``outcome``, the ``tries``-th of its series of at
    most ``max_tries``."""
    if outcome is Outcome.DELIVERED:
        return DeliveryStatus.DELIVERED
    if outcome is Outcome.RETRY and tries < max_tries:
        return DeliveryStatus.PENDING
    return DeliveryStatus.FAILED


class Tally(msgspec.Struct, frozen=True, kw_only=True):
    """A notice's deliveries, counted."""

    live: int = 0
    """Pending deliveries sent one by one (webhooks, single e-mails)."""
    next_live: dt.datetime | None = None
    """When the earliest of them is tried next."""
    held: int = 0
    """Pending e-mails held for the digest."""
    next_held: dt.datetime | None = None
    """When the latest of them is sent."""
    delivered: int = 0
    failed: int = 0


class Settlement(msgspec.Struct, frozen=True, kw_only=True):
    status: NoticeStatus
    next_attempt_at: dt.datetime
    last_error: str | None
    closed: bool


def settle(tally: Tally, now: dt.datetime, sweep_after: dt.timedelta) -> Settlement:
    """A notice's status from its deliveries.

    While a delivery waits for its next try the notice is ``pending`` until then (PostgreSQL holds
    the schedule, not Redis). While only digest e-mails wait it is ``dispatched``, looked at again
    after the digest should have gone. Otherwise it is final: ``delivered`` when any target got it,
    ``failed`` when none did (or there was none).
    """
    if tally.live:
        return Settlement(
            status=NoticeStatus.PENDING, next_attempt_at=tally.next_live or now, last_error=None, closed=False
        )
    if tally.held:
        return Settlement(
            status=NoticeStatus.DISPATCHED,
            next_attempt_at=max(tally.next_held or now, now) + sweep_after,
            last_error=None,
            closed=False,
        )
    total = tally.delivered + tally.failed
    if total == 0:
        return Settlement(
            status=NoticeStatus.FAILED,
            next_attempt_at=now,
            last_error="no delivery target: the owner has no webhook for this event and no notify_emails",
            closed=True,
        )
    if tally.delivered:
        error = f"{tally.failed} of {total} deliveries failed" if tally.failed else None
        return Settlement(status=NoticeStatus.DELIVERED, next_attempt_at=now, last_error=error, closed=True)
    return Settlement(
        status=NoticeStatus.FAILED, next_attempt_at=now, last_error=f"all {total} deliveries failed", closed=True
    )


def next_digest_at(now: dt.datetime, timezone: str) -> dt.datetime:
    """When the digest that collects a notice made at ``now`` goes out: the next
    :data:`DIGEST_HOUR` o'clock in the enterprise's time zone (today's if it has not passed)."""
    zone = zoneinfo.ZoneInfo(timezone)
    local = now.astimezone(zone)
    day = local.date()
    send = dt.datetime.combine(day, dt.time(DIGEST_HOUR), tzinfo=zone)
    if send < local:
        send = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(DIGEST_HOUR), tzinfo=zone)
    return send.astimezone(dt.UTC)
