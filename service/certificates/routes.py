"""Recording results, revoking them, reading them, and the public authenticity check."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import PurePosixPath
from typing import Any

import msgspec
from litestar import Controller, Response, get, post
from litestar.params import FromPath, JSONBody

from service import dates
from service.auth import Principal, Role, act_as_public
from service.catalog.rules import Regime
from service.certificates.queries import (
    insert_certificate,
    lock_certificate,
    revoke_certificate,
    select_certificate,
    select_instrument_certificates,
    select_public_certificate,
)
from service.certificates.rules import (
    Decision,
    Effect,
    Kind,
    Standing,
    Submitted,
    canonical_content,
    content_sha256,
    decide,
    gives_validity,
)
from service.certificates.schemas import (
    Certificate,
    CertificateCreate,
    PublicCertificate,
    RecordedResult,
    Revocation,
)
from service.db import Connection
from service.deps import ClockDep, Db, PrincipalDep
from service.enterprises.schemas import Enterprise
from service.errors import (
    ConflictError,
    FieldError,
    ForbiddenError,
    InvalidInputError,
    NotFoundError,
    RuleViolationError,
)
from service.history.queries import record_event
from service.history.schemas import EventKind
from service.instruments.access import locked_instrument, visible_instrument
from service.instruments.queries import InstrumentRow, to_instrument, update_instrument
from service.instruments.rules import Lifecycle, ValiditySource
from service.labs.queries import select_lab
from service.notices.queries import cancel_stale, insert_event_notice
from service.notices.rules import NoticeKind
from service.pagination import Cursor, Limit, Page
from service.policy import Actor, access
from service.problems import problem_responses
from service.requests.queries import attach_result, claim_item
from service.types import validate_date

__all__ = ("CertificateController", "InstrumentCertificateController", "PublicCertificateController")


class _Issuer(msgspec.Struct, frozen=True, kw_only=True):
    lab_id: uuid.UUID | None = None
    region: str | None = None


async def _issuer(db: Connection, principal: Principal, data: CertificateCreate, enterprise: Enterprise) -> _Issuer:
    """Who issues the document: a lab (its own key, or an admin naming it), or for an in-service
    inspection a regulator of the enterprise's region (or an admin)."""
    inspection = data.kind is Kind.INSPECTION_RECORD
    if principal.role is Role.ENTERPRISE:
        raise ForbiddenError("results are recorded by the lab, or for inspections by the regulator")
    if principal.role is Role.REGULATOR:
        if not inspection:
            raise ForbiddenError("a regulator records in-service inspections (kind inspection_record) only")
        if not principal.may_read_enterprise(enterprise.id, enterprise.region_code):
            raise ForbiddenError("the instrument is outside the regulator's region")
        return _Issuer(region=principal.region_code)
    if principal.role is Role.LAB:
        if inspection:
            raise ForbiddenError("in-service inspections are recorded by a regulator")
        if data.lab_id is not None and data.lab_id != principal.lab_id:
            raise ForbiddenError("a lab records results under its own name only (omit lab_id)")
        return _Issuer(lab_id=principal.lab_id)
    if inspection:
        if data.lab_id is not None:
            raise RuleViolationError.for_field("lab_id", "an inspection record is issued by the regulator, not a lab")
        return _Issuer(region=enterprise.region_code)
    if data.lab_id is None:
        raise RuleViolationError.for_field("lab_id", "is required with an admin key: the lab that issued the result")
    return _Issuer(lab_id=data.lab_id)


async def _check_scope(db: Connection, issuer: _Issuer, data: CertificateCreate, row: InstrumentRow) -> None:
    """A verification of a compulsory instrument is the lab's only when the catalogue code is in its
    scope (its authorisation); calibration needs none. Checked again here because the instrument's
    use may have changed since the request was made."""
    if issuer.lab_id is None:
        return
    lab = await select_lab(db, issuer.lab_id)
    if lab is None:
        raise RuleViolationError.for_field("lab_id", f"no lab {issuer.lab_id}")
    verification = data.kind in (Kind.VERIFICATION_CERTIFICATE, Kind.RESULT_NOTICE)
    if verification and row.regime is not Regime.NOT_CONTROLLED and row.catalog_code not in lab.scope:
        raise RuleViolationError.for_field(
            "lab_id", f"{lab.name} is not authorised to verify {row.catalog_code} (not in its scope)"
        )


def _cleaned(data: CertificateCreate) -> CertificateCreate:
    """Dates in range, and the number and failed items trimmed and not blank (400 naming them)."""
    for name in ("performed_on", "issued_on", "valid_until"):
        validate_date(name, getattr(data, name))
    problems = []
    number = data.number.strip()
    if not number:
        problems.append(FieldError(field="number", message="must not be blank"))
    items = [item.strip() for item in data.failed_items]
    problems += [
        FieldError(field=f"failed_items[{i}]", message="must not be blank") for i, x in enumerate(items) if not x
    ]
    if problems:
        raise InvalidInputError.for_fields(problems)
    return msgspec.structs.replace(data, number=number, failed_items=items)


async def _corrected(
    db: Connection, data: CertificateCreate, row: InstrumentRow, issuer: _Issuer, now: dt.datetime
) -> Certificate | None:
    """The document a correction supersedes, checked: same instrument, same issuer, same kind,
    still standing."""
    if data.supersedes is None:
        if data.correction_reason is not None:
            raise RuleViolationError.for_field("correction_reason", "goes with supersedes: the document corrected")
        return None
    if data.correction_reason is None or not data.correction_reason.strip():
        raise RuleViolationError.for_field("correction_reason", "is required: say what the correction changes")
    old = await select_certificate(db, data.supersedes, now)
    if old is None or old.instrument_id != row.id:
        raise RuleViolationError.for_field("supersedes", f"{data.supersedes} is not a document of this instrument")
    if (old.lab_id, old.issuer_region) != (issuer.lab_id, issuer.region):
        raise ForbiddenError("only the issuer of a document may correct it")
    if old.kind is not data.kind:
        raise RuleViolationError.for_field(
            "kind", f"a correction keeps the kind of the document it corrects ({old.kind}); record a new result instead"
        )
    if old.revoked_at is not None:
        raise ConflictError.for_field("supersedes", f"{old.number} is revoked: record a new result instead")
    if old.superseded_by is not None:
        raise ConflictError.for_field("supersedes", f"{old.number} is already corrected by {old.superseded_by}")
    return old


async def _request_for(
    db: Connection, principal: Principal, instrument_id: uuid.UUID, issuer: _Issuer, *, correction: bool
) -> uuid.UUID | None:
    """The accepted request the result answers. A lab needs one (corrections excepted); an admin's
    result is attached to one when there is one."""
    if issuer.lab_id is None or correction:
        return None
    request_id = await claim_item(db, instrument_id, issuer.lab_id)
    if request_id is None and principal.role is Role.LAB:
        raise ForbiddenError(
            "the lab holds no accepted verification request awaiting a result for this instrument: accept one first"
        )
    return request_id


async def _void_current(
    db: Connection,
    governing: Certificate | None,
    old: Certificate | None,
    data: CertificateCreate,
    principal: Principal,
    now: dt.datetime,
) -> uuid.UUID | None:
    """Void the governing passing certificate from the failure's date (注销原检定证书, [S-SEAL])."""
    if governing is None or (old is not None and old.id == governing.id):
        return None
    if governing.revoked_at is not None or not gives_validity(governing.kind, governing.outcome, governing.valid_until):
        return None
    await lock_certificate(db, governing.id)
    await revoke_certificate(
        db,
        governing.id,
        effective_on=max(data.performed_on, governing.performed_on),
        reason=f"void from {data.performed_on}: {data.kind} {data.number} failed",
        actor=principal,
        now=now,
    )
    return governing.id


def _instrument_changes(decision: Decision, data: CertificateCreate, certificate_id: uuid.UUID) -> dict[str, Any]:
    changes: dict[str, Any] = {
        "current_certificate_id": certificate_id,
        "valid_until": decision.valid_until,
        "validity_source": ValiditySource.CERTIFICATE,
    }
    if data.kind is not Kind.INSPECTION_RECORD:  # an inspection is not a verification
        changes["last_verified_on"] = data.performed_on
    if decision.lifecycle is not None:
        changes["lifecycle"] = decision.lifecycle
    if decision.instrument_cycle is not None:
        changes["cycle_months"] = decision.instrument_cycle
    return changes


class InstrumentCertificateController(Controller):
    path = "/instruments/{instrument_id:str}/certificates"
    tags = ["Certificates"]

    @post(
        operation_id="RecordResult",
        opt=access(Actor.ADMIN, Actor.REGULATOR, Actor.LAB),
        summary="Record a verification or calibration result",
        description="A lab holding an accepted request for the instrument, an admin on a lab's behalf "
        "(`lab_id`), or for `inspection_record` a regulator of the enterprise's region. The "
        "certificate and its effect on the instrument are written in one transaction; "
        "`legal_effect` says what it did (`governs`: a new period from its own `performed_on`; "
        "`voids`: the governing certificate is void and the instrument failed; `history`: dated "
        "before the governing document; `none`: e.g. a calibration of a compulsory instrument). "
        "A correction names the document it `supersedes`.",
        responses=problem_responses(400, 401, 403, 404, 409, 413, 422),
    )
    async def record_result(
        self,
        db: Db,
        clock: ClockDep,
        principal: PrincipalDep,
        instrument_id: FromPath[uuid.UUID],
        data: JSONBody[CertificateCreate],
    ) -> Response[RecordedResult]:
        data = _cleaned(data)
        row, enterprise = await locked_instrument(db, principal, instrument_id)
        now = clock.now()
        today = dates.local_today(now, enterprise.timezone)
        issuer = await _issuer(db, principal, data, enterprise)
        old = await _corrected(db, data, row, issuer, now)
        request_id = await _request_for(db, principal, row.id, issuer, correction=old is not None)
        await _check_scope(db, issuer, data, row)
        current = row.current_certificate_id
        governing = await select_certificate(db, current, now) if current is not None else None
        submitted = Submitted(
            kind=data.kind,
            outcome=data.outcome,
            performed_on=data.performed_on,
            issued_on=data.issued_on,
            cycle_months=data.cycle_months,
            valid_until=data.valid_until,
            failed_items=data.failed_items,
            as_found=data.as_found,
            as_left=data.as_left,
            corrects_current=old is not None and old.id == row.current_certificate_id,
        )
        standing = Standing(
            item=row.rule,
            regime=row.regime,
            lifecycle=row.lifecycle,
            own_cycle_months=row.cycle_months,
            governing_on=governing.performed_on if governing else row.last_verified_on,
        )
        decision = decide(submitted, standing, rule=enterprise.period_rule, today=today)
        raw: dict[str, Any] = {
            "instrument_id": row.id,
            "enterprise_id": enterprise.id,
            "lab_id": issuer.lab_id,
            "issuer_region": issuer.region,
            "kind": data.kind,
            "number": data.number,
            "outcome": decision.outcome,
            "performed_on": data.performed_on,
            "issued_on": data.issued_on,
            "cycle_months": decision.cycle_months,
            "valid_until": decision.valid_until,
            "failed_items": data.failed_items,
            "as_found": data.as_found,
            "as_left": data.as_left,
            "regulation_applied": data.regulation_applied,
            "standards_used": data.standards_used,
            "signatories": data.signatories,
            "conclusion": data.conclusion,
            "supersedes": data.supersedes,
            "correction_reason": data.correction_reason.strip() if data.correction_reason else None,
        }
        content = canonical_content(**raw)
        certificate_id = await insert_certificate(
            db,
            raw,
            {
                "request_id": request_id,
                "legal_effect": decision.effect.value,
                "effect_note": decision.note,
                "content_sha256": content_sha256(content),
                "recorded_by_key": principal.key_id,
                "recorded_by_role": principal.role.value,
            },
            now,
        )
        voided = None
        if decision.governs:
            if decision.effect is Effect.VOIDS:
                voided = await _void_current(db, governing, old, data, principal, now)
            updated = await update_instrument(db, row.id, _instrument_changes(decision, data, certificate_id), now)
        else:
            updated = row
        if request_id is not None:
            await attach_result(db, request_id, row.id, certificate_id, now)
        await insert_event_notice(
            db,
            enterprise_id=enterprise.id,
            region_code=enterprise.region_code,
            instrument_id=row.id,
            certificate_id=certificate_id,
            kind=NoticeKind.VERIFICATION_FAILED if decision.effect is Effect.VOIDS else NoticeKind.RESULT_RECORDED,
            performed_on=data.performed_on,
            today=today,
            now=now,
        )
        await cancel_stale(db, now, instrument_id=row.id)
        if voided is not None:
            await record_event(
                db,
                instrument_id=row.id,
                kind=EventKind.CERTIFICATE_REVOKED,
                actor=principal,
                now=now,
                effective_on=data.performed_on,
                certificate_id=voided,
                reason=f"void from {data.performed_on}: {data.kind} {raw['number']} failed",
            )
        await record_event(
            db,
            instrument_id=row.id,
            kind=EventKind.RESULT_RECORDED,
            actor=principal,
            now=now,
            effective_on=data.performed_on,
            from_lifecycle=row.lifecycle,
            to_lifecycle=updated.lifecycle,
            certificate_id=certificate_id,
            reason=data.correction_reason,
            detail={
                "kind": data.kind.value,
                "number": raw["number"],
                "outcome": decision.outcome.value,
                "legal_effect": decision.effect.value,
                "note": decision.note,
                "voided_certificate_id": str(voided) if voided else None,
                "supersedes": str(data.supersedes) if data.supersedes else None,
            },
        )
        certificate = await select_certificate(db, certificate_id, now)
        assert certificate is not None
        instrument = to_instrument(updated, enterprise, today)
        return Response(RecordedResult(certificate=certificate, instrument=instrument), status_code=201)

    @get(
        operation_id="ListInstrumentCertificates",
        opt=access(Actor.ADMIN, Actor.OWNER, Actor.REGULATOR, Actor.LAB),
        summary="List an instrument's result documents",
        description="Newest verification date first, with each document's effect and whether it still "
        "stands. Whoever may read the instrument.",
        responses=problem_responses(400, 401, 404),
    )
    async def list_certificates(
        self,
        db: Db,
        clock: ClockDep,
        principal: PrincipalDep,
        instrument_id: FromPath[uuid.UUID],
        limit: Limit = 50,
        cursor: Cursor = None,
    ) -> Page[Certificate]:
        row, _ = await visible_instrument(db, principal, instrument_id)
        items, next_cursor = await select_instrument_certificates(db, row.id, clock.now(), limit=limit, cursor=cursor)
        return Page(items=items, next_cursor=next_cursor)


async def _visible_certificate(
    db: Connection, principal: Principal, certificate_id: uuid.UUID, now: dt.datetime, *, lock: bool = False
) -> tuple[Certificate, InstrumentRow, Enterprise]:
    """The document, its instrument and enterprise, if the principal may see the instrument (locked
    for update when ``lock``); a 404 for the document otherwise."""
    certificate = await select_certificate(db, certificate_id, now)
    if certificate is None:
        raise NotFoundError(f"certificate {certificate_id} not found")
    try:
        found = locked_instrument if lock else visible_instrument
        row, enterprise = await found(db, principal, certificate.instrument_id)
    except NotFoundError:
        raise NotFoundError(f"certificate {certificate_id} not found") from None
    return certificate, row, enterprise


class CertificateController(Controller):
    path = "/certificates"
    tags = ["Certificates"]

    @get(
        "/{certificate_id:str}",
        operation_id="GetCertificate",
        opt=access(Actor.ADMIN, Actor.OWNER, Actor.REGULATOR, Actor.LAB),
        summary="Read a result document",
        description="Whoever may read its instrument.",
        responses=problem_responses(400, 401, 404),
    )
    async def get_certificate(
        self, db: Db, clock: ClockDep, principal: PrincipalDep, certificate_id: FromPath[uuid.UUID]
    ) -> Certificate:
        certificate, _, _ = await _visible_certificate(db, principal, certificate_id, clock.now())
        return certificate

    @post(
        "/{certificate_id:str}/revoke",
        operation_id="RevokeCertificate",
        opt=access(Actor.ADMIN, Actor.REGULATOR, Actor.LAB),
        summary="Revoke a certificate",
        description="The issuing lab, a regulator of the enterprise's region, or an admin. Only a passing "
        "document that still stands; `effective_on` (default today) may not be in the future or before "
        "the verification. Revoking the governing certificate makes the instrument `failed`.",
        responses=problem_responses(400, 401, 403, 404, 409, 413, 422),
        status_code=200,
    )
    async def revoke(
        self,
        db: Db,
        clock: ClockDep,
        principal: PrincipalDep,
        certificate_id: FromPath[uuid.UUID],
        data: JSONBody[Revocation],
    ) -> RecordedResult:
        now = clock.now()
        found, row, enterprise = await _visible_certificate(db, principal, certificate_id, now, lock=True)
        issuing_lab = principal.role is Role.LAB and principal.lab_id == found.lab_id
        regulator = principal.role is Role.REGULATOR
        if not (principal.is_admin or issuing_lab or regulator):
            raise ForbiddenError("only the issuing lab, a regulator of the region or an admin revokes a certificate")
        await lock_certificate(db, certificate_id)
        certificate = await select_certificate(db, certificate_id, now)
        assert certificate is not None
        today = dates.local_today(now, enterprise.timezone)
        effective_on = data.effective_on or today
        validate_date("effective_on", effective_on)
        reason = data.reason.strip()
        if not reason:
            raise InvalidInputError.for_field("reason", "must not be blank")
        if not gives_validity(certificate.kind, certificate.outcome, certificate.valid_until):
            raise RuleViolationError.for_field(
                "certificate", "only a document that lets the instrument be used is revoked; correct a failing one"
            )
        if certificate.revoked_at is not None:
            raise ConflictError(f"certificate {certificate.number} was already revoked on {certificate.revoked_on}")
        if certificate.superseded_by is not None:
            raise ConflictError(f"certificate {certificate.number} is superseded by {certificate.superseded_by}")
        if effective_on > today:
            raise RuleViolationError.for_field("effective_on", f"{effective_on} is in the future (today is {today})")
        if effective_on < certificate.performed_on:
            raise RuleViolationError.for_field(
                "effective_on", f"{effective_on} is before the verification of {certificate.performed_on}"
            )
        await revoke_certificate(db, certificate_id, effective_on=effective_on, reason=reason, actor=principal, now=now)
        updated = row
        if row.current_certificate_id == certificate_id and row.lifecycle in (
            Lifecycle.IN_SERVICE,
            Lifecycle.SEALED,
            Lifecycle.PENDING_VERIFICATION,
        ):
            updated = await update_instrument(db, row.id, {"lifecycle": Lifecycle.FAILED, "valid_until": None}, now)
        await cancel_stale(db, now, instrument_id=row.id)
        await record_event(
            db,
            instrument_id=row.id,
            kind=EventKind.CERTIFICATE_REVOKED,
            actor=principal,
            now=now,
            effective_on=effective_on,
            from_lifecycle=row.lifecycle,
            to_lifecycle=updated.lifecycle,
            certificate_id=certificate_id,
            reason=reason,
            detail={"number": certificate.number},
        )
        revoked = await select_certificate(db, certificate_id, now)
        assert revoked is not None
        return RecordedResult(certificate=revoked, instrument=to_instrument(updated, enterprise, today))


class PublicCertificateController(Controller):
    path = "/certificates"
    tags = ["Public"]
    opt = {"public": True}

    @get(
        "/{lab_id:str}/{number:path}",
        operation_id="CheckCertificate",
        summary="Check a certificate's authenticity (no key)",
        description="What a QR label needs: the lab, the document, the instrument's name, model and "
        "serial, its dates, outcome and whether it still stands (`valid`, `expired`, `revoked`, "
        "`superseded`), and `content_sha256`. Nothing about the enterprise. Unknown: 404.",
        responses=problem_responses(400, 404),
        security=[],
    )
    async def check_certificate(
        self, db: Db, clock: ClockDep, lab_id: FromPath[uuid.UUID], number: FromPath[PurePosixPath]
    ) -> PublicCertificate:
        # A path parameter, because numbers such as 沪计检/2026/001 hold slashes.
        await act_as_public(db, lab_id, str(number).lstrip("/"))
        found = await select_public_certificate(db, lab_id, str(number).lstrip("/"), clock.now())
        if found is None:
            raise NotFoundError("no such certificate from this lab")
        return found
