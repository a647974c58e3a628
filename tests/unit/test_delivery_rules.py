"""How deliveries are classified, retried and settled (service/deliveries/rules.py, design.md §6)."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from service.deliveries.rules import (
    DIGEST_HOUR,
    MAX_TRIES,
    DeliveryStatus,
    Outcome,
    Tally,
    next_digest_at,
    next_status,
    outcome_of_http,
    outcome_of_smtp,
    retry_delay,
    settle,
)
from service.notices.rules import NoticeStatus

NOW = dt.datetime(2026, 6, 15, 4, 0, tzinfo=dt.UTC)
SWEEP = dt.timedelta(minutes=10)
# The largest float below 1: the top of the jitter range.
JITTER_TOP = 1 - 2**-53


def s(seconds: float) -> dt.timedelta:
    return dt.timedelta(seconds=seconds)


# --- outcome_of_http ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status_code", "expected"),
    [
        pytest.param(200, Outcome.DELIVERED, id="2xx-delivers-200"),
        pytest.param(201, Outcome.DELIVERED, id="2xx-delivers-201"),
        pytest.param(204, Outcome.DELIVERED, id="2xx-delivers-204"),
        pytest.param(299, Outcome.DELIVERED, id="2xx-delivers-299"),
        pytest.param(408, Outcome.RETRY, id="408-request-timeout-is-transient"),
        pytest.param(429, Outcome.RETRY, id="429-too-many-requests-is-transient"),
        pytest.param(500, Outcome.RETRY, id="5xx-is-transient-500"),
        pytest.param(502, Outcome.RETRY, id="5xx-is-transient-502"),
        pytest.param(503, Outcome.RETRY, id="5xx-is-transient-503"),
        pytest.param(599, Outcome.RETRY, id="5xx-is-transient-599"),
        pytest.param(None, Outcome.RETRY, id="no-answer-is-transient"),
        pytest.param(301, Outcome.FAILED, id="3xx-redirect-not-followed-301"),
        pytest.param(302, Outcome.FAILED, id="3xx-redirect-not-followed-302"),
        pytest.param(304, Outcome.FAILED, id="3xx-fails-304"),
        pytest.param(400, Outcome.FAILED, id="4xx-fails-at-once-400"),
        pytest.param(401, Outcome.FAILED, id="4xx-fails-at-once-401"),
        pytest.param(403, Outcome.FAILED, id="4xx-fails-at-once-403"),
        pytest.param(404, Outcome.FAILED, id="4xx-fails-at-once-404"),
        pytest.param(410, Outcome.FAILED, id="4xx-fails-at-once-410-gone"),
        pytest.param(422, Outcome.FAILED, id="4xx-fails-at-once-422"),
        pytest.param(100, Outcome.FAILED, id="1xx-is-not-a-delivery"),
    ],
)
def test_outcome_of_http(status_code: int | None, expected: Outcome) -> None:
    assert outcome_of_http(status_code) is expected


# --- outcome_of_smtp ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        pytest.param(250, Outcome.DELIVERED, id="2xx-delivers-250"),
        pytest.param(421, Outcome.RETRY, id="4xx-transient-421-service-unavailable"),
        pytest.param(450, Outcome.RETRY, id="4xx-transient-450-mailbox-unavailable"),
        pytest.param(451, Outcome.RETRY, id="4xx-transient-451-local-error"),
        pytest.param(452, Outcome.RETRY, id="4xx-transient-452-insufficient-storage"),
        pytest.param(None, Outcome.RETRY, id="no-session-is-transient"),
        pytest.param(550, Outcome.FAILED, id="5xx-permanent-550"),
        pytest.param(551, Outcome.FAILED, id="5xx-permanent-551"),
        pytest.param(552, Outcome.FAILED, id="5xx-permanent-552"),
        pytest.param(553, Outcome.FAILED, id="5xx-permanent-553"),
        pytest.param(554, Outcome.FAILED, id="5xx-permanent-554"),
    ],
)
def test_outcome_of_smtp(code: int | None, expected: Outcome) -> None:
    assert outcome_of_smtp(code) is expected


# --- retry_delay -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tries", "jitter", "expected"),
    [
        pytest.param(1, 0.0, s(24), id="first-try-jitter-0-is-30s-times-0.8"),
        pytest.param(1, 0.5, s(30), id="first-try-jitter-half-is-30s"),
        pytest.param(2, 0.5, s(60), id="doubles-after-second-try"),
        pytest.param(3, 0.5, s(120), id="doubles-after-third-try"),
        pytest.param(9, 0.5, s(30 * 2**8), id="doubles-until-the-cap"),
        pytest.param(10, 0.5, dt.timedelta(hours=4), id="capped-at-4h-tenth-try"),
        pytest.param(14, 0.5, dt.timedelta(hours=4), id="capped-at-4h-late-try"),
        pytest.param(10, 0.0, dt.timedelta(hours=4) * 0.8, id="cap-times-low-jitter-factor"),
        pytest.param(1000, 0.0, dt.timedelta(hours=4) * 0.8, id="huge-tries-stay-capped"),
    ],
)
def test_retry_delay_schedule(tries: int, jitter: float, expected: dt.timedelta) -> None:
    assert retry_delay(tries, jitter) == expected


def test_retry_delay_first_try_top_jitter_is_just_under_36s() -> None:
    assert retry_delay(1, 0.999) == s(35.988)
    # At the very top of [0, 1) the factor rounds to 1.2 in floating point, and timedelta keeps
    # microseconds, so the wait reaches 36 s but never goes beyond it.
    assert s(35.999) < retry_delay(1, JITTER_TOP) <= s(36)


def test_retry_delay_cap_top_jitter_is_just_under_4h_times_1_2() -> None:
    delay = retry_delay(12, JITTER_TOP)
    assert dt.timedelta(hours=4) * 1.2 - s(1) < delay <= dt.timedelta(hours=4) * 1.2


@pytest.mark.parametrize("tries", range(1, MAX_TRIES + 1))
@pytest.mark.parametrize("jitter", [0.0, 0.25, 0.5, 0.75, JITTER_TOP])
def test_retry_delay_within_jitter_band(tries: int, jitter: float) -> None:
    base = min(s(30 * 2 ** (tries - 1)), dt.timedelta(hours=4))
    delay = retry_delay(tries, jitter)
    assert base * 0.8 <= delay <= base * 1.2


@pytest.mark.parametrize("tries", range(1, MAX_TRIES))
def test_retry_delay_never_shrinks_as_tries_grow(tries: int) -> None:
    assert retry_delay(tries + 1, 0.5) >= retry_delay(tries, 0.5)


@pytest.mark.parametrize(
    ("tries", "jitter", "complaint"),
    [
        pytest.param(0, 0.5, "tries counts from 1", id="tries-count-from-1-zero"),
        pytest.param(-1, 0.5, "tries counts from 1", id="tries-count-from-1-negative"),
        pytest.param(1, -0.001, "jitter is in", id="jitter-below-0"),
        pytest.param(1, 1.0, "jitter is in", id="jitter-1-is-out-of-range"),
        pytest.param(1, 1.5, "jitter is in", id="jitter-above-1"),
    ],
)
def test_retry_delay_refuses_invalid_arguments(tries: int, jitter: float, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        retry_delay(tries, jitter)


@pytest.mark.parametrize(
    ("tries", "jitter", "retry_after", "expected"),
    [
        pytest.param(1, 0.5, s(120), s(120), id="retry-after-longer-is-honoured"),
        pytest.param(1, 0.5, s(10), s(30), id="retry-after-shorter-is-ignored"),
        pytest.param(1, 0.5, s(30), s(30), id="retry-after-equal-is-the-same"),
        pytest.param(1, 0.5, dt.timedelta(0), s(30), id="retry-after-zero-is-ignored"),
        pytest.param(1, 0.5, dt.timedelta(hours=5), dt.timedelta(hours=5), id="retry-after-5h-honoured"),
        pytest.param(1, 0.5, dt.timedelta(hours=6), dt.timedelta(hours=6), id="retry-after-exactly-6h"),
        pytest.param(1, 0.5, dt.timedelta(hours=7), dt.timedelta(hours=6), id="retry-after-capped-at-6h"),
        pytest.param(1, 0.5, dt.timedelta(days=30), dt.timedelta(hours=6), id="retry-after-30d-capped-at-6h"),
        pytest.param(
            12, JITTER_TOP, dt.timedelta(hours=5), dt.timedelta(hours=5), id="retry-after-beats-jittered-4h-cap"
        ),
        pytest.param(
            12, 0.5, dt.timedelta(hours=2), dt.timedelta(hours=4), id="retry-after-shorter-than-own-backoff-ignored"
        ),
    ],
)
def test_retry_delay_honours_retry_after(
    tries: int, jitter: float, retry_after: dt.timedelta, expected: dt.timedelta
) -> None:
    assert retry_delay(tries, jitter, retry_after) == expected


def _series_total(jitter: float) -> dt.timedelta:
    """The waits between the first and the last of MAX_TRIES tries."""
    return sum((retry_delay(tries, jitter) for tries in range(1, MAX_TRIES)), dt.timedelta())


def test_series_of_max_tries_spans_about_a_day() -> None:
    # 30 s … 7680 s (nine doublings, 15 330 s) and five capped 4-hour waits: 87 330 s ≈ 24.26 h.
    total = _series_total(0.5)
    assert total == s(30 * (2**9 - 1) + (MAX_TRIES - 1 - 9) * 4 * 3600)
    assert dt.timedelta(hours=20) <= total <= dt.timedelta(hours=28)


@pytest.mark.parametrize(
    ("jitter", "low", "high"),
    [
        pytest.param(0.0, 16, 20, id="all-low-jitter-about-19.4h"),
        pytest.param(JITTER_TOP, 28, 32, id="all-high-jitter-about-29.1h"),
    ],
)
def test_series_of_max_tries_with_jitter_extremes(jitter: float, low: int, high: int) -> None:
    total = _series_total(jitter)
    assert dt.timedelta(hours=low) <= total <= dt.timedelta(hours=high)


# --- next_status -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("outcome", "tries", "expected"),
    [
        pytest.param(Outcome.DELIVERED, 1, DeliveryStatus.DELIVERED, id="delivered-on-first-try"),
        pytest.param(Outcome.DELIVERED, MAX_TRIES, DeliveryStatus.DELIVERED, id="delivered-on-last-try"),
        pytest.param(Outcome.RETRY, 1, DeliveryStatus.PENDING, id="retry-below-max-waits"),
        pytest.param(Outcome.RETRY, MAX_TRIES - 1, DeliveryStatus.PENDING, id="retry-just-below-max-waits"),
        pytest.param(Outcome.RETRY, MAX_TRIES, DeliveryStatus.FAILED, id="retry-at-max-gives-up"),
        pytest.param(Outcome.RETRY, MAX_TRIES + 1, DeliveryStatus.FAILED, id="retry-past-max-gives-up"),
        pytest.param(Outcome.FAILED, 1, DeliveryStatus.FAILED, id="failed-on-first-try-is-final"),
        pytest.param(Outcome.FAILED, MAX_TRIES, DeliveryStatus.FAILED, id="failed-on-last-try-is-final"),
    ],
)
def test_next_status(outcome: Outcome, tries: int, expected: DeliveryStatus) -> None:
    assert next_status(outcome, tries) is expected


def test_max_tries_is_fifteen() -> None:
    assert MAX_TRIES == 15


# --- settle ------------------------------------------------------------------------------------------

LIVE_AT = NOW + dt.timedelta(minutes=3)
HELD_AT = NOW + dt.timedelta(hours=5)


@pytest.mark.parametrize(
    ("tally", "status", "next_attempt_at", "error", "closed"),
    [
        pytest.param(
            Tally(live=1, next_live=LIVE_AT),
            NoticeStatus.PENDING,
            LIVE_AT,
            None,
            False,
            id="live-pending-waits-for-next-live",
        ),
        pytest.param(
            Tally(live=2, next_live=LIVE_AT, held=1, next_held=HELD_AT, delivered=1, failed=1),
            NoticeStatus.PENDING,
            LIVE_AT,
            None,
            False,
            id="live-pending-wins-over-held-and-final",
        ),
        pytest.param(
            Tally(live=1),
            NoticeStatus.PENDING,
            NOW,
            None,
            False,
            id="live-pending-without-time-is-now",
        ),
        pytest.param(
            Tally(held=1, next_held=HELD_AT),
            NoticeStatus.DISPATCHED,
            HELD_AT + SWEEP,
            None,
            False,
            id="only-held-dispatched-after-digest-plus-sweep",
        ),
        pytest.param(
            Tally(held=3, next_held=HELD_AT, delivered=1),
            NoticeStatus.DISPATCHED,
            HELD_AT + SWEEP,
            None,
            False,
            id="held-with-some-delivered-still-dispatched",
        ),
        pytest.param(
            Tally(held=1, next_held=NOW - dt.timedelta(hours=1)),
            NoticeStatus.DISPATCHED,
            NOW + SWEEP,
            None,
            False,
            id="held-in-the-past-looked-at-from-now",
        ),
        pytest.param(
            Tally(held=1),
            NoticeStatus.DISPATCHED,
            NOW + SWEEP,
            None,
            False,
            id="held-without-time-looked-at-from-now",
        ),
        pytest.param(
            Tally(delivered=2),
            NoticeStatus.DELIVERED,
            NOW,
            None,
            True,
            id="all-delivered-closes-without-error",
        ),
        pytest.param(
            Tally(delivered=1, failed=1),
            NoticeStatus.DELIVERED,
            NOW,
            "1 of 2 deliveries failed",
            True,
            id="some-delivered-some-failed-is-delivered-with-error",
        ),
        pytest.param(
            Tally(failed=3),
            NoticeStatus.FAILED,
            NOW,
            "all 3 deliveries failed",
            True,
            id="all-failed-is-failed",
        ),
    ],
)
def test_settle(
    tally: Tally, status: NoticeStatus, next_attempt_at: dt.datetime, error: str | None, closed: bool
) -> None:
    settled = settle(tally, NOW, SWEEP)
    assert settled.status is status
    assert settled.next_attempt_at == next_attempt_at
    assert settled.last_error == error
    assert settled.closed is closed


def test_settle_without_any_delivery_fails_for_lack_of_target() -> None:
    settled = settle(Tally(), NOW, SWEEP)
    assert settled.status is NoticeStatus.FAILED
    assert settled.closed is True
    assert settled.next_attempt_at == NOW
    assert settled.last_error is not None
    assert "no delivery target" in settled.last_error


# --- next_digest_at ----------------------------------------------------------------------------------


def utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("now", "zone", "expected"),
    [
        pytest.param(
            utc(2026, 6, 14, 17, 0), "Asia/Shanghai", utc(2026, 6, 15, 0, 0), id="shanghai-01h-local-same-day-08h"
        ),
        pytest.param(
            utc(2026, 6, 14, 23, 59, 59),
            "Asia/Shanghai",
            utc(2026, 6, 15, 0, 0),
            id="shanghai-07h59m59s-local-same-day-08h",
        ),
        pytest.param(
            utc(2026, 6, 15, 0, 0), "Asia/Shanghai", utc(2026, 6, 15, 0, 0), id="shanghai-exactly-08h-is-that-instant"
        ),
        pytest.param(
            dt.datetime(2026, 6, 15, 0, 0, 0, 1, tzinfo=dt.UTC),
            "Asia/Shanghai",
            utc(2026, 6, 16, 0, 0),
            id="shanghai-just-after-08h-is-next-day",
        ),
        pytest.param(utc(2026, 6, 15, 4, 0), "Asia/Shanghai", utc(2026, 6, 16, 0, 0), id="shanghai-noon-is-next-day"),
        pytest.param(
            utc(2026, 12, 31, 15, 0), "Asia/Shanghai", utc(2027, 1, 1, 0, 0), id="shanghai-year-end-rolls-over"
        ),
        pytest.param(utc(2026, 6, 15, 7, 0), "UTC", utc(2026, 6, 15, 8, 0), id="utc-before-08h-same-day"),
        pytest.param(utc(2026, 6, 15, 8, 0), "UTC", utc(2026, 6, 15, 8, 0), id="utc-exactly-08h"),
        pytest.param(utc(2026, 6, 15, 9, 0), "UTC", utc(2026, 6, 16, 8, 0), id="utc-after-08h-next-day"),
        # New York: EST (UTC-5) until 2026-03-08 02:00, EDT (UTC-4) until 2026-11-01 02:00.
        pytest.param(
            utc(2026, 3, 7, 14, 0), "America/New_York", utc(2026, 3, 8, 12, 0), id="ny-eve-of-spring-dst-edt-08h"
        ),
        pytest.param(
            utc(2026, 3, 8, 6, 0), "America/New_York", utc(2026, 3, 8, 12, 0), id="ny-spring-dst-night-edt-08h"
        ),
        pytest.param(
            utc(2026, 3, 7, 12, 0), "America/New_York", utc(2026, 3, 7, 13, 0), id="ny-before-spring-dst-est-08h"
        ),
        pytest.param(
            utc(2026, 10, 31, 13, 0), "America/New_York", utc(2026, 11, 1, 13, 0), id="ny-eve-of-fall-dst-est-08h"
        ),
        pytest.param(
            utc(2026, 11, 1, 5, 30), "America/New_York", utc(2026, 11, 1, 13, 0), id="ny-fall-dst-night-est-08h"
        ),
        pytest.param(
            utc(2026, 10, 31, 11, 0), "America/New_York", utc(2026, 10, 31, 12, 0), id="ny-before-fall-dst-edt-08h"
        ),
    ],
)
def test_next_digest_at(now: dt.datetime, zone: str, expected: dt.datetime) -> None:
    sent = next_digest_at(now, zone)
    assert sent == expected
    assert sent.tzinfo is dt.UTC
    assert sent >= now


@pytest.mark.parametrize(
    "now",
    [
        pytest.param(utc(2026, 3, 7, 14, 0), id="spring-eve"),
        pytest.param(utc(2026, 3, 8, 6, 0), id="spring-night"),
        pytest.param(utc(2026, 3, 8, 7, 30), id="spring-after-gap"),
        pytest.param(utc(2026, 10, 31, 13, 0), id="fall-eve"),
        pytest.param(utc(2026, 11, 1, 5, 30), id="fall-first-1am"),
        pytest.param(utc(2026, 11, 1, 6, 30), id="fall-second-1am"),
    ],
)
def test_next_digest_at_is_digest_hour_wall_time_across_dst(now: dt.datetime) -> None:
    sent = next_digest_at(now, "America/New_York")
    local = sent.astimezone(ZoneInfo("America/New_York"))
    assert (local.hour, local.minute, local.second, local.microsecond) == (DIGEST_HOUR, 0, 0, 0)
    # Never more than a (25-hour) day ahead, counted in real time.
    assert dt.timedelta(0) <= sent - now <= dt.timedelta(hours=25)


def test_next_digest_at_accepts_a_non_utc_now() -> None:
    shanghai_now = dt.datetime(2026, 6, 15, 7, 0, tzinfo=dt.timezone(dt.timedelta(hours=8)))
    assert next_digest_at(shanghai_now, "Asia/Shanghai") == utc(2026, 6, 15, 0, 0)


def test_digest_hour_is_eight() -> None:
    assert DIGEST_HOUR == 8


def test_a_configured_series_is_shorter_and_starts_sooner() -> None:
    """METREG_RETRY_TRIES and METREG_RETRY_DELAY: 3 tries, 1 s before the second."""
    assert retry_delay(1, 0.5, first=s(1)) == s(1)
    assert retry_delay(2, 0.5, first=s(1)) == s(2)
    assert next_status(Outcome.RETRY, 2, max_tries=3) is DeliveryStatus.PENDING
    assert next_status(Outcome.RETRY, 3, max_tries=3) is DeliveryStatus.FAILED
    assert next_status(Outcome.DELIVERED, 3, max_tries=3) is DeliveryStatus.DELIVERED
