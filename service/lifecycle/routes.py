"""``/v1/instruments/{id}/seal|unseal|scrap|replace``: the enterprise's lifecycle actions."""

from __future__ import annotations

import datetime as dt
import uuid

from litestar import Controller, Response, post
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath, JSONBody

from service import dates
from service.auth import Principal
from service.catalog.rules import Regime
from service.clock import Clock
from service.db import Connection
from service.deps import ClockDep, Db, PrincipalDep
from service.errors import InvalidInputError, MetregError, RuleViolationError
from service.history.queries import record_event
from service.history.schemas import EventKind
from service.instruments.access import writable_instrument
from service.instruments.queries import to_instrument, update_instrument
from service.instruments.registration import register
from service.instruments.rules import Lifecycle
from service.instruments.schemas import Instrument
from service.lifecycle.rules import Action, transition
from service.lifecycle.schemas import LifecycleChange, Replaced, Replacement
from service.notices.queries import cancel_stale
from service.policy import Actor, access
from service.problems import problem_responses
from service.requests.queries import withdraw_items
from service.types import validate_date

__all__ = ("LifecycleController",)

_EVENTS = {
    Action.SEAL: EventKind.SEALED,
    Action.UNSEAL: EventKind.UNSEALED,
    Action.SCRAP: EventKind.SCRAPPED,
    Action.REPLACE: EventKind.REPLACED,
}
_ONCE_VERIFIED = (Regime.INITIAL_ONLY_LIMITED_LIFE, Regime.INITIAL_ONLY_SCRAP_ON_FAILURE)


def _reason(given: str | None) -> str | None:
    if given is None:
        return None
    if not given.strip():
        raise InvalidInputError.for_field("reason", "must not be blank")
    return given.strip()


def _effective_on(given: dt.date | None, today: dt.date) -> dt.date:
    validate_date("effective_on", given)
    if given is not None and given > today:
        raise RuleViolationError.for_field("effective_on", f"{given} is in the future (today is {today})")
    return given or today


async def _apply(
    db: Connection,
    clock: Clock,
    principal: Principal,
    instrument_id: uuid.UUID,
    action: Action,
    change: LifecycleChange,
) -> Instrument:
    row, enterprise = await writable_instrument(db, principal, instrument_id)
    now = clock.now()
    today = dates.local_today(now, enterprise.timezone)
    effective_on = _effective_on(change.effective_on, today)
    reason = _reason(change.reason)
    target = transition(
        action,
        row.lifecycle,
        regime=row.regime,
        last_verified_on=row.last_verified_on,
        valid_until=row.valid_until,
        effective_on=effective_on,
    )
    updated = await update_instrument(db, row.id, {"lifecycle": target}, now)
    await cancel_stale(db, now, instrument_id=row.id)
    if target is Lifecycle.SCRAPPED:
        await withdraw_items(db, row.id, effective_on, now)
    await record_event(
        db,
        instrument_id=row.id,
        kind=_EVENTS[action],
        actor=principal,
        now=now,
        effective_on=effective_on,
        from_lifecycle=row.lifecycle,
        to_lifecycle=target,
        reason=reason,
    )
    return to_instrument(updated, enterprise, today)


def _route(action: Action, summary: str, description: str, *, status_code: int = 200) -> post:
    """The POST route of ``action`` with its OpenAPI entry."""
    return post(
        f"/{{instrument_id:str}}/{action}",
        operation_id=f"{action.value.capitalize()}Instrument",
        opt=access(Actor.ADMIN, Actor.OWNER),
        summary=summary,
        description=description
        + " The enterprise or an admin; `effective_on` defaults to today and may not be in the future. "
        "A change the current lifecycle does not allow is a 409 whose `allowed` lists what is.",
        responses=problem_responses(400, 401, 403, 404, 409, 413, 422),
        status_code=status_code,
    )


def _simple_action(action: Action, summary: str, description: str) -> HTTPRouteHandler:
    """The handler of an action that only moves the lifecycle (seal, unseal, scrap)."""

    async def handler(
        self: Controller,
        db: Db,
        clock: ClockDep,
        principal: PrincipalDep,
        instrument_id: FromPath[uuid.UUID],
        data: JSONBody[LifecycleChange | None] = None,
    ) -> Instrument:
        return await _apply(db, clock, principal, instrument_id, action, data or LifecycleChange())

    handler.__name__ = handler.__qualname__ = action.value
    return _route(action, summary, description)(handler)


class LifecycleController(Controller):
    path = "/instruments"
    tags = ["Lifecycle"]

    seal = _simple_action(
        Action.SEAL,
        "Seal an instrument (封存)",
        "Withdraws it from use: its valid-until date is kept (validity is not paused) and it gets no "
        "notices. From in service or pending verification.",
    )
    unseal = _simple_action(
        Action.UNSEAL,
        "Unseal an instrument",
        "Back in service while its validity still runs on `effective_on`; after its valid-until date "
        "(or with no verification on record) it is pending verification.",
    )
    scrap = _simple_action(
        Action.SCRAP,
        "Scrap an instrument (报废)",
        "Final: no results or notices afterwards; its items still waiting in open verification requests are withdrawn.",
    )

    @_route(
        Action.REPLACE,
        "Replace an instrument (轮换)",
        "Registers the `replacement` in the same transaction and links both (`replaced_by`, "
        "`replaces`); the old one becomes `replaced`. The usual end of a limited-life meter; a "
        "replacement verified only once (limited-life, scrap-on-failure) must come with its initial "
        "verification. Registration errors name `replacement.<field>`.",
        status_code=201,
    )
    async def replace(
        self,
        db: Db,
        clock: ClockDep,
        principal: PrincipalDep,
        instrument_id: FromPath[uuid.UUID],
        data: JSONBody[Replacement],
    ) -> Response[Replaced]:
        row, enterprise = await writable_instrument(db, principal, instrument_id)
        now = clock.now()
        today = dates.local_today(now, enterprise.timezone)
        effective_on = _effective_on(data.effective_on, today)
        reason = _reason(data.reason)
        target = transition(
            Action.REPLACE,
            row.lifecycle,
            regime=row.regime,
            last_verified_on=row.last_verified_on,
            valid_until=row.valid_until,
            effective_on=effective_on,
        )
        try:
            successor = await register(
                db, enterprise, data.replacement, actor=principal, now=now, extra={"replaces": row.id}
            )
        except MetregError as exc:
            raise exc.nested("replacement") from None
        if successor.regime in _ONCE_VERIFIED and successor.last_verified_on is None:
            raise RuleViolationError.for_field(
                "replacement.last_verified_on",
                "is required: a meter verified only once must be installed with its initial verification",
            )
        if (
            successor.lifecycle is not Lifecycle.IN_SERVICE
            and successor.lifecycle is not Lifecycle.PENDING_VERIFICATION
        ):
            raise RuleViolationError.for_field(
                "replacement.lifecycle", "a replacement goes into service (or waits for verification)"
            )
        updated = await update_instrument(db, row.id, {"lifecycle": target, "replaced_by": successor.id}, now)
        await cancel_stale(db, now, instrument_id=row.id)
        await withdraw_items(db, row.id, effective_on, now)
        await record_event(
            db,
            instrument_id=row.id,
            kind=EventKind.REPLACED,
            actor=principal,
            now=now,
            effective_on=effective_on,
            from_lifecycle=row.lifecycle,
            to_lifecycle=target,
            related_instrument_id=successor.id,
            reason=reason,
        )
        body = Replaced(
            instrument=to_instrument(updated, enterprise, today),
            replacement=to_instrument(successor, enterprise, today),
        )
        return Response(body, status_code=201)
