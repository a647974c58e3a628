"""Audit rows as the API shows them."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any, Literal

import msgspec

__all__ = ("AuditEntry",)


class AuditEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One changed row of the register: who, through which operation, what it was and became.

    ``before`` is null for an insert; secrets (key hashes, webhook secrets) are never recorded.
    ``hash`` covers ``prev_hash`` and every other field: ``metreg audit verify`` checks the chain."""

    seq: int
    at: dt.datetime
    request_id: str | None
    actor_key_id: uuid.UUID | None
    actor_role: str
    action: str
    entity: str
    entity_id: str
    operation: Literal["insert", "update", "delete"]
    enterprise_id: uuid.UUID | None
    region_code: str | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    prev_hash: str
    hash: str
