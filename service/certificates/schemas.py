"""Result documents in and out of the API (design.md §3, domain.md §4.3)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated

import msgspec

from service.auth import Role
from service.certificates.rules import Effect, Kind, Outcome, Point, PublicStatus, Signatories
from service.instruments.schemas import Instrument
from service.types import CycleMonths, LongText, Text

__all__ = (
    "Certificate",
    "CertificateCreate",
    "PublicCertificate",
    "PublicInstrument",
    "PublicLab",
    "RecordedResult",
    "Revocation",
)

Number = Annotated[str, Text(100, min_length=1, description="The document's number, unique per issuer.")]
Reason = Annotated[str, Text(2000, min_length=1)]


class CertificateCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A result to record.

    ``performed_on`` is the verification or calibration date (检定日期), ``issued_on`` the date the
    document was issued: ``performed_on ≤ issued_on ≤ today``. ``cycle_months`` may shorten the
    legal cycle, never exceed it; a printed ``valid_until`` is accepted when it is not later than
    the computed one. ``outcome`` is implied by the kind for verification certificates (pass) and
    result notices (fail), and for calibration certificates and inspection records otherwise taken
    from the as-found errors against their MPE. A correction names the document it ``supersedes``
    and the ``correction_reason``. ``lab_id`` is for admins recording on a lab's behalf.
    """

    kind: Kind
    number: Number
    performed_on: dt.date
    issued_on: dt.date
    outcome: Outcome | None = None
    cycle_months: CycleMonths | None = None
    valid_until: dt.date | None = None
    failed_items: Annotated[list[Annotated[str, Text(500, min_length=1)]], msgspec.Meta(max_length=100)] = (
        msgspec.field(default_factory=list)
    )
    as_found: Annotated[list[Point], msgspec.Meta(max_length=500)] = msgspec.field(default_factory=list)
    as_left: Annotated[list[Point], msgspec.Meta(max_length=500)] = msgspec.field(default_factory=list)
    regulation_applied: Annotated[str, Text(200)] | None = None
    standards_used: Annotated[list[Annotated[str, Text(500, min_length=1)]], msgspec.Meta(max_length=50)] = (
        msgspec.field(default_factory=list)
    )
    signatories: Signatories = msgspec.field(default_factory=Signatories)
    conclusion: LongText | None = None
    supersedes: uuid.UUID | None = None
    correction_reason: Reason | None = None
    lab_id: uuid.UUID | None = None


class Certificate(msgspec.Struct, frozen=True, kw_only=True):
    """A recorded result document.

    ``legal_effect`` is what recording it did (``governs``, ``voids``, ``history`` or ``none``), and
    ``effect_note`` says why. ``status`` is whether it still stands on the enterprise's local today:
    ``valid``, ``expired``, ``revoked`` or ``superseded``. ``content_sha256`` covers its content
    (sorted-key canonical JSON); the document itself never changes, only a one-time revocation is
    added to it.
    """

    id: uuid.UUID
    instrument_id: uuid.UUID
    enterprise_id: uuid.UUID
    lab_id: uuid.UUID | None
    lab_name: str | None
    issuer_region: str | None
    request_id: uuid.UUID | None
    kind: Kind
    number: str
    outcome: Outcome
    performed_on: dt.date
    issued_on: dt.date
    cycle_months: int | None
    valid_until: dt.date | None
    failed_items: list[str]
    as_found: list[Point]
    as_left: list[Point]
    regulation_applied: str | None
    standards_used: list[str]
    signatories: Signatories
    conclusion: str | None
    legal_effect: Effect
    effect_note: str
    supersedes: uuid.UUID | None
    superseded_by: uuid.UUID | None
    correction_reason: str | None
    content_sha256: str
    status: PublicStatus
    recorded_at: dt.datetime
    recorded_by_role: Role
    revoked_on: dt.date | None
    revoked_reason: str | None
    revoked_at: dt.datetime | None


class RecordedResult(msgspec.Struct, frozen=True, kw_only=True):
    """The recorded document and the instrument as it now stands."""

    certificate: Certificate
    instrument: Instrument


class Revocation(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Why a certificate is revoked and from which local date (default: today; not in the future)."""

    reason: Reason
    effective_on: dt.date | None = None


class PublicLab(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    accreditation_no: str


class PublicInstrument(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    model: str
    serial_no: str


class PublicCertificate(msgspec.Struct, frozen=True, kw_only=True):
    """What a QR label check needs to know, and nothing about the enterprise."""

    lab: PublicLab
    kind: Kind
    number: str
    instrument: PublicInstrument
    performed_on: dt.date
    valid_until: dt.date | None
    outcome: Outcome
    status: PublicStatus
    content_sha256: str
