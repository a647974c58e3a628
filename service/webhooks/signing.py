"""Webhook signatures: ``Metreg-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "t.body">``.

The scheme Stripe made familiar: the timestamp inside the signed text lets a receiver refuse
replays older than a few minutes, and the ``v1`` label leaves room for another scheme later.
"""

from __future__ import annotations

import hashlib
import hmac

__all__ = ("SIGNATURE_HEADER", "sign", "verify")

SIGNATURE_HEADER = "Metreg-Signature"


def _digest(secret: str, timestamp: int, body: bytes) -> str:
    return hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``Metreg-Signature`` header value for ``body`` sent at ``timestamp`` (unix seconds)."""
    return f"t={timestamp},v1={_digest(secret, timestamp, body)}"


def verify(secret: str, header: str, body: bytes, *, now: int, tolerance: int = 300) -> bool:
    """Whether ``header`` signs ``body`` with ``secret`` no more than ``tolerance`` seconds from ``now``.

    What a receiver does; metreg's tests use it on what they receive.
    """
    fields: dict[str, list[str]] = {}
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        fields.setdefault(name, []).append(value)
    try:
        timestamp = int(fields["t"][0])
    except (KeyError, ValueError):
        return False
    if abs(now - timestamp) > tolerance:
        return False
    expected = _digest(secret, timestamp, body)
    return any(hmac.compare_digest(expected, candidate) for candidate in fields.get("v1", []))
