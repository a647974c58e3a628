"""Webhook signatures: ``t=<unix seconds>,v1=<hex HMAC-SHA256 of "t.body">`` (service/webhooks/signing.py)."""

from __future__ import annotations

import hashlib
import hmac
import re

import pytest

from service.webhooks.signing import SIGNATURE_HEADER, sign, verify

SECRET = "whsec_0123456789abcdef"
OTHER_SECRET = "whsec_fedcba9876543210"
T = 1_781_496_000  # 2026-06-15T04:00:00Z
BODY = '{"notice_id":"8d1c…","kind":"overdue","instrument":{"name":"压力表"}}'.encode()


def by_hand(secret: str, timestamp: int, body: bytes) -> str:
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def test_header_name() -> None:
    assert SIGNATURE_HEADER == "Metreg-Signature"


@pytest.mark.parametrize(
    ("secret", "timestamp", "body"),
    [
        pytest.param(SECRET, T, BODY, id="json-with-utf8"),
        pytest.param(SECRET, T, b"", id="empty-body"),
        pytest.param(OTHER_SECRET, 0, b"x", id="epoch-timestamp"),
        pytest.param("密钥", T, b"\x00\xff binary", id="non-ascii-secret-binary-body"),
    ],
)
def test_sign_is_hmac_sha256_of_timestamp_dot_body(secret: str, timestamp: int, body: bytes) -> None:
    header = sign(secret, timestamp, body)
    match = re.fullmatch(r"t=(\d+),v1=([0-9a-f]{64})", header)
    assert match is not None, header
    assert int(match[1]) == timestamp
    assert match[2] == by_hand(secret, timestamp, body)
    assert header == f"t={timestamp},v1={by_hand(secret, timestamp, body)}"


def test_sign_is_deterministic_and_depends_on_every_input() -> None:
    header = sign(SECRET, T, BODY)
    assert sign(SECRET, T, BODY) == header
    assert sign(OTHER_SECRET, T, BODY) != header
    assert sign(SECRET, T + 1, BODY) != header
    assert sign(SECRET, T, BODY + b" ") != header


def test_verify_accepts_its_own_signature() -> None:
    assert verify(SECRET, sign(SECRET, T, BODY), BODY, now=T) is True


def test_verify_accepts_a_hand_made_header() -> None:
    assert verify(SECRET, f"t={T},v1={by_hand(SECRET, T, BODY)}", BODY, now=T) is True


def test_verify_tolerates_spaces_after_commas() -> None:
    assert verify(SECRET, f"t={T}, v1={by_hand(SECRET, T, BODY)}", BODY, now=T) is True


def test_verify_refuses_tampered_body() -> None:
    header = sign(SECRET, T, BODY)
    assert verify(SECRET, header, BODY.replace(b"overdue", b"due_soo"), now=T) is False
    assert verify(SECRET, header, BODY + b"\n", now=T) is False
    assert verify(SECRET, header, b"", now=T) is False


def test_verify_refuses_wrong_secret() -> None:
    assert verify(OTHER_SECRET, sign(SECRET, T, BODY), BODY, now=T) is False


def test_verify_refuses_a_timestamp_swapped_into_the_header() -> None:
    # The timestamp is inside the signed text: moving it forward to pass the replay check breaks the MAC.
    digest = by_hand(SECRET, T, BODY)
    assert verify(SECRET, f"t={T + 1000},v1={digest}", BODY, now=T + 1000) is False


@pytest.mark.parametrize(
    ("now", "accepted"),
    [
        pytest.param(T, True, id="same-second"),
        pytest.param(T + 300, True, id="300s-late-is-the-edge"),
        pytest.param(T - 300, True, id="300s-early-is-the-edge"),
        pytest.param(T + 301, False, id="too-old-a-replay"),
        pytest.param(T - 301, False, id="too-far-in-the-future"),
        pytest.param(T + 86_400, False, id="a-day-old"),
        pytest.param(T - 86_400, False, id="a-day-ahead"),
    ],
)
def test_verify_default_tolerance_both_directions(now: int, accepted: bool) -> None:
    assert verify(SECRET, sign(SECRET, T, BODY), BODY, now=now) is accepted


@pytest.mark.parametrize(
    ("tolerance", "now", "accepted"),
    [
        pytest.param(10, T + 10, True, id="custom-edge-late"),
        pytest.param(10, T + 11, False, id="custom-past-edge-late"),
        pytest.param(10, T - 11, False, id="custom-past-edge-early"),
        pytest.param(0, T, True, id="zero-tolerance-same-second"),
        pytest.param(0, T + 1, False, id="zero-tolerance-one-second-off"),
    ],
)
def test_verify_custom_tolerance(tolerance: int, now: int, accepted: bool) -> None:
    assert verify(SECRET, sign(SECRET, T, BODY), BODY, now=now, tolerance=tolerance) is accepted


@pytest.mark.parametrize(
    "header",
    [
        pytest.param("", id="empty"),
        pytest.param("v1=abc", id="no-timestamp"),
        pytest.param("t=x,v1=y", id="non-numeric-timestamp"),
        pytest.param(f"t={T}", id="no-v1"),
        pytest.param(f"t={T},v1=", id="empty-v1"),
        pytest.param(f"t={T},v1=abc", id="short-v1"),
        pytest.param(f"t={T},v0={'0' * 64}", id="unknown-scheme-only"),
        pytest.param("garbage", id="no-fields"),
        pytest.param(",,,", id="only-commas"),
    ],
)
def test_verify_refuses_garbage_headers(header: str) -> None:
    assert verify(SECRET, header, BODY, now=T) is False


def test_verify_refuses_a_garbage_header_whose_v1_is_right() -> None:
    # A correct digest does not help when the timestamp cannot be read.
    assert verify(SECRET, f"t=soon,v1={by_hand(SECRET, T, BODY)}", BODY, now=T) is False


@pytest.mark.parametrize(
    "header",
    [
        pytest.param(f"t={T},v1={by_hand(OTHER_SECRET, T, BODY)},v1={by_hand(SECRET, T, BODY)}", id="match-second"),
        pytest.param(f"t={T},v1={by_hand(SECRET, T, BODY)},v1={by_hand(OTHER_SECRET, T, BODY)}", id="match-first"),
        pytest.param(f"t={T},v1=deadbeef,v1={'0' * 64},v1={by_hand(SECRET, T, BODY)}", id="match-among-junk"),
        pytest.param(f"t={T},v0=ignored,v1={by_hand(SECRET, T, BODY)}", id="unknown-scheme-ignored"),
    ],
)
def test_verify_accepts_when_one_of_several_v1_matches(header: str) -> None:
    assert verify(SECRET, header, BODY, now=T) is True


def test_secret_rotation_either_secret_verifies_a_doubly_signed_header() -> None:
    header = f"t={T},v1={by_hand(OTHER_SECRET, T, BODY)},v1={by_hand(SECRET, T, BODY)}"
    assert verify(SECRET, header, BODY, now=T) is True
    assert verify(OTHER_SECRET, header, BODY, now=T) is True
    assert verify("whsec_neither", header, BODY, now=T) is False


def test_verify_refuses_when_no_v1_matches() -> None:
    header = f"t={T},v1={by_hand(OTHER_SECRET, T, BODY)},v1={by_hand('whsec_third', T, BODY)}"
    assert verify(SECRET, header, BODY, now=T) is False
