"""The register over HTTP: register, list, read and change instruments."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated

import msgspec
from litestar import Controller, Response, get, patch, post
from litestar.params import FromPath, HeaderParameter, JSONBody, QueryParameter

from service import dates
from service.catalog.rules import LegalUse
from service.deps import ClockDep, Db, PrincipalDep, ReaderDep
from service.enterprises.access import writable_enterprise
from service.errors import InvalidInputError, StaleVersionError
from service.history.queries import record_event
from service.history.schemas import EventKind
from service.instruments.access import read_visible_instrument, readable_register, writable_instrument
from service.instruments.queries import (
    InstrumentFilters,
    select_instruments,
    to_instrument,
    update_instrument,
)
from service.instruments.registration import (
    RULE_INPUTS,
    catalog_rule,
    clean,
    rederive,
    refuse_certificate_facts,
    register,
)
from service.instruments.rules import Status
from service.instruments.schemas import Instrument, InstrumentCreate, InstrumentUpdate
from service.notices.queries import cancel_stale
from service.pagination import Cursor, Limit, Page
from service.policy import Actor, access
from service.problems import problem_responses
from service.types import NO_NUL, validate_date

__all__ = ("EnterpriseInstrumentController", "InstrumentController")

AsOf = Annotated[
    dt.date | None,
    QueryParameter(description="Compute statuses for this local date (YYYY-MM-DD) instead of today."),
]


def _etag(instrument: Instrument) -> dict[str, str]:
    return {"ETag": f'"{instrument.version}"'}


class EnterpriseInstrumentController(Controller):
    path = "/enterprises/{enterprise_id:str}/instruments"
    tags = ["Instruments"]

    @post(
        operation_id="RegisterInstrument",
        opt=access(Actor.ADMIN, Actor.OWNER),
        summary="Register an instrument",
        description="The enterprise or an admin. Compulsory determination, cycle limits and the "
        "valid-until date follow the catalogue and the enterprise's period rule; the response carries "
        "the computed status for today.",
        responses=problem_responses(400, 401, 403, 404, 409, 413, 422),
    )
    async def register_instrument(
        self,
        db: Db,
        clock: ClockDep,
        principal: PrincipalDep,
        enterprise_id: FromPath[uuid.UUID],
        data: JSONBody[InstrumentCreate],
    ) -> Response[Instrument]:
        enterprise = await writable_enterprise(db, principal, enterprise_id, lock="share")
        now = clock.now()
        row = await register(db, enterprise, data, actor=principal, now=now)
        instrument = to_instrument(row, enterprise, dates.local_today(now, enterprise.timezone))
        return Response(instrument, status_code=201, headers=_etag(instrument))

    @get(
        operation_id="ListInstruments",
        opt=access(Actor.ADMIN, Actor.OWNER, Actor.REGULATOR),
        summary="List an enterprise's register",
        description="In due order (what lapses first comes first), keyset-paged. Filters combine: "
        "`status` as computed for `as_of` (default: the enterprise's local today); `due_before` keeps "
        "instruments whose validity ends before that date (valid_until < due_before); `q` searches "
        "name, serial and management number.",
        responses=problem_responses(400, 401, 404),
    )
    async def list_instruments(
        self,
        reader: ReaderDep,
        enterprise_id: FromPath[uuid.UUID],
        status: Annotated[Status | None, QueryParameter(description="Computed status.")] = None,
        catalog_code: Annotated[str | None, QueryParameter(max_length=64, pattern=NO_NUL)] = None,
        legal_use: Annotated[LegalUse | None, QueryParameter()] = None,
        due_before: Annotated[dt.date | None, QueryParameter(description="valid_until before this date.")] = None,
        q: Annotated[str | None, QueryParameter(min_length=1, max_length=100, pattern=NO_NUL)] = None,
        as_of: AsOf = None,
        limit: Limit = 50,
        cursor: Cursor = None,
    ) -> Page[Instrument]:
        # One dependency, not db, clock and principal: BEGIN with the scan settings, the key with
        # the enterprise, the page and COMMIT are the page's four round trips.
        async with readable_register(reader, enterprise_id, ordered_scan=q is None) as (enterprise, db):
            validate_date("as_of", as_of)
            validate_date("due_before", due_before)
            if q is not None and not q.strip():
                raise InvalidInputError.for_field("q", "must not be blank")
            filters = InstrumentFilters(
                as_of=as_of or dates.local_today(reader.now, enterprise.timezone),
                status=status,
                catalog_code=catalog_code,
                legal_use=legal_use,
                due_before=due_before,
                q=q.strip() if q else None,
            )
            items, next_cursor = await select_instruments(
                db, enterprise, filters, limit=limit, cursor=cursor, steered=True
            )
        return Page(items=items, next_cursor=next_cursor)


class InstrumentController(Controller):
    path = "/instruments"
    tags = ["Instruments"]

    @get(
        "/{instrument_id:str}",
        operation_id="GetInstrument",
        opt=access(Actor.ADMIN, Actor.OWNER, Actor.REGULATOR, Actor.LAB),
        summary="Read an instrument and its legal status",
        description="Its enterprise, an admin, a regulator of the enterprise's region, or a lab that "
        "has or had a verification request for it. `as_of` computes the status for another local date.",
        responses=problem_responses(400, 401, 404),
    )
    async def get_instrument(
        self, reader: ReaderDep, instrument_id: FromPath[uuid.UUID], as_of: AsOf = None
    ) -> Response[Instrument]:
        # One statement authenticates and reads, outside a transaction: a third of the round trips.
        _, row, enterprise = await read_visible_instrument(reader, instrument_id)
        validate_date("as_of", as_of)
        instrument = to_instrument(row, enterprise, as_of or dates.local_today(reader.now, enterprise.timezone))
        return Response(instrument, headers=_etag(instrument))

    @patch(
        "/{instrument_id:str}",
        operation_id="UpdateInstrument",
        opt=access(Actor.ADMIN, Actor.OWNER),
        summary="Change an instrument's record",
        description="The enterprise or an admin. Send the `version` you read (or `If-Match`); a stale "
        "one is a 409. Changing the catalogue item, use, cycle or verification data re-applies the "
        "registration rules.",
        responses=problem_responses(400, 401, 403, 404, 409, 413, 422),
    )
    async def update_instrument(
        self,
        db: Db,
        clock: ClockDep,
        principal: PrincipalDep,
        instrument_id: FromPath[uuid.UUID],
        data: JSONBody[InstrumentUpdate],
        if_match: Annotated[str | None, HeaderParameter(name="If-Match", max_length=40)] = None,
    ) -> Response[Instrument]:
        current, enterprise = await writable_instrument(db, principal, instrument_id)
        expected = _expected_version(data.version, if_match)
        if expected != current.version:
            raise StaleVersionError(
                f"instrument is at version {current.version}, not {expected}: read it again and retry"
            )
        changes = clean({k: v for k, v in msgspec.structs.asdict(data).items() if v is not msgspec.UNSET})
        changes.pop("version", None)
        refuse_certificate_facts(current, changes)
        now = clock.now()
        today = dates.local_today(now, enterprise.timezone)
        changed = sorted(k for k, v in changes.items() if v != getattr(current, k))
        item = None
        if any(k in changes for k in RULE_INPUTS):
            item = await catalog_rule(db, changes.get("catalog_code", current.catalog_code))
        changes.update(await rederive(db, current, changes, item, enterprise, today))
        row = await update_instrument(db, instrument_id, changes, now)
        if row.valid_until != current.valid_until:  # the only notice fact a PATCH can change
            await cancel_stale(db, now, instrument_id=row.id)
        await record_event(
            db, instrument_id=row.id, kind=EventKind.UPDATED, actor=principal, now=now, detail={"fields": changed}
        )
        instrument = to_instrument(row, enterprise, today)
        return Response(instrument, headers=_etag(instrument))


def _expected_version(body_version: int | msgspec.UnsetType, if_match: str | None) -> int:
    if body_version is not msgspec.UNSET:
        return body_version
    if if_match is not None:
        tag = if_match.strip().removeprefix("W/").strip('"')
        if tag.isascii() and tag.isdigit():  # str.isdigit() alone takes '²', which int() refuses
            return int(tag)
        raise InvalidInputError.for_field("If-Match", 'must be the instrument\'s ETag, e.g. "3"')
    raise InvalidInputError.for_field(
        "version", "is required: send the version you read (or an If-Match header) so no change is lost"
    )
