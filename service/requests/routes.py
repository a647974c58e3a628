"""``/v1/verification-requests``: enterprises ask labs to verify instruments; labs accept or reject."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated

from litestar import Controller, Response, get, post
from litestar.params import FromPath, JSONBody, QueryParameter

from service import dates
from service.auth import Principal, Role
from service.catalog.rules import Regime
from service.db import Connection
from service.deps import ClockDep, Db, PrincipalDep
from service.enterprises.access import writable_enterprise
from service.errors import (
    ConflictError,
    FieldError,
    ForbiddenError,
    InvalidInputError,
    NotFoundError,
    RuleViolationError,
)
from service.labs.queries import select_lab
from service.labs.schemas import Lab
from service.pagination import Cursor, Limit, Page
from service.policy import Actor, access
from service.problems import problem_responses
from service.requests import rules
from service.requests.queries import (
    RequestFilters,
    StoredRequest,
    insert_request,
    open_requests_of,
    select_request,
    select_requests,
    update_request,
)
from service.requests.rules import REQUESTABLE, RequestAction, RequestStatus
from service.requests.schemas import Cancellation, Rejection, RequestCreate, VerificationRequest

__all__ = ("VerificationRequestController",)


def _may_see(principal: Principal, stored: StoredRequest) -> bool:
    request = stored.request
    return principal.may_read_enterprise(request.enterprise_id, stored.region_code) or (
        principal.role is Role.LAB and principal.lab_id == request.lab_id
    )


async def _locked(db: Connection, principal: Principal, request_id: uuid.UUID, now: dt.datetime) -> StoredRequest:
    stored = await select_request(db, request_id, now, lock=True)
    if stored is None or not _may_see(principal, stored):
        raise NotFoundError(f"verification request {request_id} not found")
    return stored


async def _read(db: Connection, request_id: uuid.UUID, now: dt.datetime) -> VerificationRequest:
    stored = await select_request(db, request_id, now)
    assert stored is not None
    return stored.request


def _require_lab(principal: Principal, stored: StoredRequest, action: RequestAction) -> None:
    if not (principal.is_admin or (principal.role is Role.LAB and principal.lab_id == stored.request.lab_id)):
        raise ForbiddenError(f"only the request's lab (or an admin) may {action} it")


async def _check_instruments(db: Connection, enterprise_id: uuid.UUID, lab: Lab, ids: list[uuid.UUID]) -> None:
    """Every instrument belongs to the enterprise, is in use, is within the lab's scope when
    compulsory, and is in no other open request. Rows are locked (in id order, so two requests
    never deadlock) until the request is written.

    Raises:
        InvalidInputError: a repeated id.
        RuleViolationError: one entry per instrument at fault, named by its position.
        ConflictError: an instrument already waits in another open request.
    """
    seen: dict[uuid.UUID, int] = {}
    repeated = []
    for index, instrument_id in enumerate(ids):
        if instrument_id in seen:
            repeated.append(FieldError(field=f"instrument_ids[{index}]", message="is listed twice"))
        seen.setdefault(instrument_id, index)
    if repeated:
        raise InvalidInputError.for_fields(repeated)
    rows = {
        r["id"]: r
        for r in await db.fetch(
            """SELECT id, enterprise_id, name, lifecycle, regime, catalog_code FROM instruments
               WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE""",
            ids,
        )
    }
    problems = []
    for index, instrument_id in enumerate(ids):
        field = f"instrument_ids[{index}]"
        row = rows.get(instrument_id)
        if row is None or row["enterprise_id"] != enterprise_id:
            problems.append(FieldError(field=field, message=f"{instrument_id} is not in this enterprise's register"))
        elif row["lifecycle"] not in REQUESTABLE:
            hint = "; unseal it first" if row["lifecycle"] == "sealed" else ""
            problems.append(FieldError(field=field, message=f"{row['name']} is {row['lifecycle']}{hint}"))
        elif row["regime"] != Regime.NOT_CONTROLLED and row["catalog_code"] not in lab.scope:
            problems.append(
                FieldError(
                    field=field,
                    message=f"{row['name']} is under compulsory verification and {row['catalog_code']} is not "
                    f"in the scope of {lab.name}",
                )
            )
    if problems:
        raise RuleViolationError.for_fields(problems)
    waiting = await open_requests_of(db, ids)
    if waiting:
        raise ConflictError.for_fields(
            [
                FieldError(field=f"instrument_ids[{seen[i]}]", message=f"is already in open request {r}")
                for i, r in sorted(waiting.items(), key=lambda item: seen[item[0]])
            ]
        )


class VerificationRequestController(Controller):
    path = "/verification-requests"
    tags = ["Verification requests"]

    @post(
        operation_id="CreateVerificationRequest",
        opt=access(Actor.ADMIN, Actor.OWNER),
        summary="Ask a lab to verify instruments",
        description="An enterprise key (or an admin with `enterprise_id`). Every instrument must belong "
        "to the enterprise, be in use (in service, failed or pending verification), be in no other "
        "open request, and — when compulsory — have its catalogue code in the lab's scope; each "
        "instrument at fault is named by its position (`instrument_ids[3]`).",
        responses=problem_responses(400, 401, 403, 404, 409, 413, 422),
    )
    async def create_request(
        self, db: Db, clock: ClockDep, principal: PrincipalDep, data: JSONBody[RequestCreate]
    ) -> Response[VerificationRequest]:
        if principal.role not in (Role.ENTERPRISE, Role.ADMIN):
            raise ForbiddenError("only an enterprise (or an admin) requests verification")
        target = data.enterprise_id or principal.enterprise_id
        if target is None:
            raise InvalidInputError.for_field("enterprise_id", "is required with an admin key")
        enterprise = await writable_enterprise(db, principal, target, lock="share")
        lab = await select_lab(db, data.lab_id)
        if lab is None:
            raise RuleViolationError.for_field("lab_id", f"no lab {data.lab_id}")
        await _check_instruments(db, enterprise.id, lab, data.instrument_ids)
        now = clock.now()
        note = data.note.strip() if data.note else None
        request_id = await insert_request(
            db,
            enterprise_id=enterprise.id,
            lab_id=lab.id,
            note=note or None,
            instrument_ids=data.instrument_ids,
            now=now,
        )
        stored = await select_request(db, request_id, now)
        assert stored is not None
        return Response(stored.request, status_code=201)

    @get(
        operation_id="ListVerificationRequests",
        opt=access(Actor.ADMIN, Actor.OWNER, Actor.REGULATOR, Actor.LAB),
        summary="List verification requests",
        description="Newest first. An enterprise sees its own, a lab those addressed to it, a regulator "
        "those of its region, an admin all. `overdue=true` keeps accepted requests past `due_by`.",
        responses=problem_responses(400, 401),
    )
    async def list_requests(
        self,
        db: Db,
        clock: ClockDep,
        principal: PrincipalDep,
        status: Annotated[RequestStatus | None, QueryParameter()] = None,
        overdue: Annotated[bool | None, QueryParameter()] = None,
        lab_id: Annotated[uuid.UUID | None, QueryParameter()] = None,
        enterprise_id: Annotated[uuid.UUID | None, QueryParameter()] = None,
        limit: Limit = 50,
        cursor: Cursor = None,
    ) -> Page[VerificationRequest]:
        filters = RequestFilters(status=status, overdue=overdue, lab_id=lab_id, enterprise_id=enterprise_id)
        items, next_cursor = await select_requests(db, principal, filters, clock.now(), limit=limit, cursor=cursor)
        return Page(items=items, next_cursor=next_cursor)

    @get(
        "/{request_id:str}",
        operation_id="GetVerificationRequest",
        opt=access(Actor.ADMIN, Actor.OWNER, Actor.REGULATOR, Actor.LAB),
        summary="Read a verification request and its items",
        description="Its enterprise, its lab, a regulator of the enterprise's region, or an admin. Each "
        "item shows its result once the lab has recorded one.",
        responses=problem_responses(400, 401, 404),
    )
    async def get_request(
        self, db: Db, clock: ClockDep, principal: PrincipalDep, request_id: FromPath[uuid.UUID]
    ) -> VerificationRequest:
        stored = await select_request(db, request_id, clock.now())
        if stored is None or not _may_see(principal, stored):
            raise NotFoundError(f"verification request {request_id} not found")
        return stored.request

    @post(
        "/{request_id:str}/accept",
        operation_id="AcceptVerificationRequest",
        opt=access(Actor.ADMIN, Actor.LAB),
        summary="Accept a request (the lab)",
        description="Sets `accepted_on` to the enterprise's local today and `due_by` to that date plus the "
        "lab's `sla_working_days` in working days (weekends skipped). Only a submitted request.",
        responses=problem_responses(400, 401, 403, 404, 409),
        status_code=200,
    )
    async def accept_request(
        self, db: Db, clock: ClockDep, principal: PrincipalDep, request_id: FromPath[uuid.UUID]
    ) -> VerificationRequest:
        now = clock.now()
        stored = await _locked(db, principal, request_id, now)
        _require_lab(principal, stored, RequestAction.ACCEPT)
        status = rules.transition(RequestAction.ACCEPT, stored.request.status, results=stored.request.items_done)
        lab = await select_lab(db, stored.request.lab_id)
        assert lab is not None
        accepted_on = dates.local_today(now, stored.timezone)
        due_by = rules.due_by(accepted_on, lab.sla_working_days)
        await update_request(db, request_id, status=status, now=now, accepted_on=accepted_on, due_by=due_by)
        return await _read(db, request_id, now)

    @post(
        "/{request_id:str}/reject",
        operation_id="RejectVerificationRequest",
        opt=access(Actor.ADMIN, Actor.LAB),
        summary="Reject a request (the lab)",
        description="Only a submitted request; the `reason` is shown to the enterprise.",
        responses=problem_responses(400, 401, 403, 404, 409, 413),
        status_code=200,
    )
    async def reject_request(
        self,
        db: Db,
        clock: ClockDep,
        principal: PrincipalDep,
        request_id: FromPath[uuid.UUID],
        data: JSONBody[Rejection],
    ) -> VerificationRequest:
        now = clock.now()
        stored = await _locked(db, principal, request_id, now)
        _require_lab(principal, stored, RequestAction.REJECT)
        status = rules.transition(RequestAction.REJECT, stored.request.status, results=stored.request.items_done)
        reason = data.reason.strip()
        if not reason:
            raise InvalidInputError.for_field("reason", "must not be blank")
        await update_request(db, request_id, status=status, now=now, reason=reason)
        return await _read(db, request_id, now)

    @post(
        "/{request_id:str}/cancel",
        operation_id="CancelVerificationRequest",
        opt=access(Actor.ADMIN, Actor.OWNER),
        summary="Cancel a request (the enterprise)",
        description="The enterprise or an admin, while no result is recorded. The body (`reason`) is optional.",
        responses=problem_responses(400, 401, 403, 404, 409, 413),
        status_code=200,
    )
    async def cancel_request(
        self,
        db: Db,
        clock: ClockDep,
        principal: PrincipalDep,
        request_id: FromPath[uuid.UUID],
        data: JSONBody[Cancellation | None] = None,
    ) -> VerificationRequest:
        now = clock.now()
        stored = await _locked(db, principal, request_id, now)
        if not principal.may_write_enterprise(stored.request.enterprise_id):
            raise ForbiddenError("only the enterprise (or an admin) may cancel its request")
        status = rules.transition(RequestAction.CANCEL, stored.request.status, results=stored.request.items_done)
        reason = (data or Cancellation()).reason.strip()
        if not reason:
            raise InvalidInputError.for_field("reason", "must not be blank")
        await update_request(db, request_id, status=status, now=now, reason=reason)
        return await _read(db, request_id, now)
