"""``GET /v1/instruments/{id}/history``."""

from __future__ import annotations

import uuid

from litestar import Controller, get
from litestar.params import FromPath

from service.deps import Db, PrincipalDep
from service.history.queries import select_events
from service.history.schemas import Event
from service.instruments.access import visible_instrument
from service.pagination import Cursor, Limit, Page
from service.policy import Actor, access
from service.problems import problem_responses

__all__ = ("HistoryController",)


class HistoryController(Controller):
    path = "/instruments/{instrument_id:str}/history"
    tags = ["Instruments"]

    @get(
        operation_id="GetInstrumentHistory",
        opt=access(Actor.ADMIN, Actor.OWNER, Actor.REGULATOR, Actor.LAB),
        summary="An instrument's history",
        description="Every registration, change, result, revocation and lifecycle step, with the key "
        "and role that made it and when, newest first. Whoever may read the instrument.",
        responses=problem_responses(400, 401, 404),
    )
    async def get_history(
        self,
        db: Db,
        principal: PrincipalDep,
        instrument_id: FromPath[uuid.UUID],
        limit: Limit = 50,
        cursor: Cursor = None,
    ) -> Page[Event]:
        row, _ = await visible_instrument(db, principal, instrument_id)
        items, next_cursor = await select_events(db, row.id, limit=limit, cursor=cursor)
        return Page(items=items, next_cursor=next_cursor)
