"""Certificate rows: the append-only table and the reads built on it."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping
from typing import Any

import asyncpg
import msgspec

from service import dates
from service.auth import Principal
from service.certificates.rules import Effect, public_status
from service.certificates.schemas import Certificate, PublicCertificate, PublicInstrument, PublicLab
from service.errors import ConflictError, DuplicateError
from service.pagination import decode_cursor, read_in_page_order, split_page

__all__ = (
    "insert_certificate",
    "lock_certificate",
    "revoke_certificate",
    "select_certificate",
    "select_instrument_certificates",
    "select_public_certificate",
)

_DOCUMENT = """c.id, c.instrument_id, c.enterprise_id, c.lab_id, l.name AS lab_name, c.issuer_region, c.request_id,
           c.kind, c.number, c.outcome, c.performed_on, c.issued_on, c.cycle_months, c.valid_until,
           c.failed_items, c.as_found, c.as_left, c.regulation_applied, c.standards_used, c.signatories,
           c.conclusion, c.legal_effect, c.effect_note, c.supersedes, s.id AS superseded_by,
           c.correction_reason, c.content_sha256, c.recorded_at, c.recorded_by_role,
           c.revoked_on, c.revoked_reason, c.revoked_at"""

_SELECT = f"""
    SELECT {_DOCUMENT}, i.current_certificate_id IS NOT DISTINCT FROM c.id AS is_current, e.timezone
    FROM certificates c
    JOIN instruments i ON i.id = c.instrument_id
    JOIN enterprises e ON e.id = c.enterprise_id
    LEFT JOIN labs l ON l.id = c.lab_id
    LEFT JOIN certificates s ON s.supersedes = c.id
"""

# One instrument's documents ($1), as _SELECT with the instrument and its enterprise read once for
# the page, where the joins read them, and their row-level security asked (a lab's: whether it
# sees the instrument, the enterprise), once per row. A document's enterprise is its instrument's
# (schema/0026), and no row comes unless both are visible, as with the joins.
_OF_INSTRUMENT = f"""
    WITH instrument AS MATERIALIZED (
        SELECT i.current_certificate_id, e.timezone
        FROM instruments i JOIN enterprises e ON e.id = i.enterprise_id WHERE i.id = $1
    )
    SELECT {_DOCUMENT}, i.current_certificate_id IS NOT DISTINCT FROM c.id AS is_current, i.timezone
    FROM certificates c
    CROSS JOIN instrument i
    LEFT JOIN labs l ON l.id = c.lab_id
    LEFT JOIN certificates s ON s.supersedes = c.id
    WHERE c.instrument_id = $1
"""


def _certificate(record: Mapping[str, Any], now: dt.datetime) -> Certificate:
    data = dict(record)
    is_current = data.pop("is_current")
    today = dates.local_today(now, data.pop("timezone"))
    data["status"] = public_status(
        revoked=data["revoked_at"] is not None,
        corrected=data["superseded_by"] is not None,
        effect=Effect(data["legal_effect"]),
        is_current=is_current,
        valid_until=data["valid_until"],
        today=today,
    )
    return msgspec.convert(data, Certificate)


# The content columns, in insert order; content_sha256 covers them (rules.canonical_content).
CONTENT = (
    "instrument_id",
    "enterprise_id",
    "lab_id",
    "issuer_region",
    "kind",
    "number",
    "outcome",
    "performed_on",
    "issued_on",
    "cycle_months",
    "valid_until",
    "failed_items",
    "as_found",
    "as_left",
    "regulation_applied",
    "standards_used",
    "signatories",
    "conclusion",
    "supersedes",
    "correction_reason",
)
_RECORD = ("request_id", "legal_effect", "effect_note", "content_sha256", "recorded_by_key", "recorded_by_role")


async def insert_certificate(
    db: asyncpg.Connection, content: dict[str, Any], record: dict[str, Any], now: dt.datetime
) -> uuid.UUID:
    """Append a document: ``content`` keyed by :data:`CONTENT`, ``record`` by what recording decided.

    Raises:
        DuplicateError: naming ``number`` when the issuer already used it.
        ConflictError: naming ``supersedes`` when that document was already corrected.
    """
    columns = [*CONTENT, *_RECORD]
    values = [content[c] for c in CONTENT] + [record[c] for c in _RECORD]
    placeholders = ", ".join(f"${i}" for i in range(2, len(columns) + 2))
    try:
        found: uuid.UUID = await db.fetchval(
            f"""INSERT INTO certificates (recorded_at, {", ".join(columns)}) VALUES ($1, {placeholders})
                RETURNING id""",
            now,
            *values,
        )
    except asyncpg.UniqueViolationError as exc:
        if exc.constraint_name == "certificates_supersedes":
            raise ConflictError.for_field("supersedes", "that document has already been corrected") from None
        raise DuplicateError.for_field("number", f"{content['number']!r} is already used by this issuer") from None
    return found


async def select_certificate(db: asyncpg.Connection, certificate_id: uuid.UUID, now: dt.datetime) -> Certificate | None:
    record = await db.fetchrow(f"{_SELECT} WHERE c.id = $1", certificate_id)
    return _certificate(dict(record), now) if record else None


async def lock_certificate(db: asyncpg.Connection, certificate_id: uuid.UUID) -> None:
    """Lock the row against a concurrent revocation (after its instrument: the lock order)."""
    await db.execute("SELECT 1 FROM certificates WHERE id = $1 FOR UPDATE", certificate_id)


class _PageKey(msgspec.Struct, frozen=True, array_like=True):
    performed_on: dt.date
    recorded_at: dt.datetime
    id: uuid.UUID


async def select_instrument_certificates(
    db: asyncpg.Connection, instrument_id: uuid.UUID, now: dt.datetime, *, limit: int, cursor: str | None
) -> tuple[list[Certificate], str | None]:
    """One page of an instrument's documents, newest verification date first."""
    args: list[Any] = [instrument_id, limit + 1]
    after = ""
    if cursor is not None:
        key = decode_cursor(cursor, _PageKey)
        args += [key.performed_on, key.recorded_at, key.id]
        after = " AND (c.performed_on, c.recorded_at, c.id) < ($3, $4, $5)"
    await read_in_page_order(db)
    records = await db.fetch(
        f"""{_OF_INSTRUMENT}{after}
            ORDER BY c.performed_on DESC, c.recorded_at DESC, c.id DESC LIMIT $2""",
        *args,
    )
    return split_page(
        [_certificate(dict(r), now) for r in records],
        limit,
        lambda last: _PageKey(performed_on=last.performed_on, recorded_at=last.recorded_at, id=last.id),
    )


async def revoke_certificate(
    db: asyncpg.Connection,
    certificate_id: uuid.UUID,
    *,
    effective_on: dt.date,
    reason: str,
    actor: Principal | None,
    now: dt.datetime,
) -> None:
    """Add the one-time revocation (the only change the database lets through)."""
    await db.execute(
        """UPDATE certificates SET revoked_on = $2, revoked_reason = $3, revoked_at = $4, revoked_by_key = $5,
                                   revoked_by_role = $6
           WHERE id = $1""",
        certificate_id,
        effective_on,
        reason,
        now,
        actor.key_id if actor else None,
        actor.role.value if actor else None,
    )


async def select_public_certificate(
    db: asyncpg.Connection, lab_id: uuid.UUID, number: str, now: dt.datetime
) -> PublicCertificate | None:
    """The authenticity check behind a QR label: a lab's document by its number."""
    record = await db.fetchrow(
        f"""SELECT x.*, l.accreditation_no, i.name AS instrument_name, i.model, i.serial_no
            FROM ({_SELECT} WHERE c.lab_id = $1 AND c.number = $2) x
            JOIN labs l ON l.id = x.lab_id JOIN instruments i ON i.id = x.instrument_id""",
        lab_id,
        number,
    )
    if record is None:
        return None
    data = dict(record)
    public = {k: data.pop(k) for k in ("accreditation_no", "instrument_name", "model", "serial_no")}
    full = _certificate(data, now)
    return PublicCertificate(
        lab=PublicLab(name=full.lab_name or "", accreditation_no=public["accreditation_no"]),
        kind=full.kind,
        number=full.number,
        instrument=PublicInstrument(
            name=public["instrument_name"], model=public["model"], serial_no=public["serial_no"]
        ),
        performed_on=full.performed_on,
        valid_until=full.valid_until,
        outcome=full.outcome,
        status=full.status,
        content_sha256=full.content_sha256,
    )
