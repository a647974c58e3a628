"""``/v1/notices``: what was (or will be) sent, when, and how each delivery went."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated

from litestar import Controller, get
from litestar.params import FromPath, QueryParameter

from service.auth import refuse_labs
from service.deps import Db, PrincipalDep
from service.errors import NotFoundError
from service.notices.queries import NoticeFilters, select_notice, select_notices
from service.notices.rules import NoticeKind, NoticeStatus
from service.notices.schemas import Notice
from service.pagination import Cursor, Limit, Page
from service.policy import Actor, access
from service.problems import problem_responses
from service.types import validate_date

__all__ = ("NoticeController",)


class NoticeController(Controller):
    path = "/notices"
    tags = ["Notices"]

    @get(
        operation_id="ListNotices",
        opt=access(Actor.ADMIN, Actor.OWNER, Actor.REGULATOR),
        summary="List notices",
        description="Newest first. An enterprise sees its own, a regulator those of its region (escalations "
        "are addressed to it), an admin all. Filters: `instrument_id`, `kind`, `status`, and `due_from` / "
        "`due_to` on the local date each fell due.",
        responses=problem_responses(400, 401, 403),
    )
    async def list_notices(
        self,
        db: Db,
        principal: PrincipalDep,
        instrument_id: Annotated[uuid.UUID | None, QueryParameter()] = None,
        kind: Annotated[NoticeKind | None, QueryParameter()] = None,
        status: Annotated[NoticeStatus | None, QueryParameter()] = None,
        due_from: Annotated[dt.date | None, QueryParameter()] = None,
        due_to: Annotated[dt.date | None, QueryParameter()] = None,
        limit: Limit = 50,
        cursor: Cursor = None,
    ) -> Page[Notice]:
        refuse_labs(principal, "notices")
        validate_date("due_from", due_from)
        validate_date("due_to", due_to)
        filters = NoticeFilters(instrument_id=instrument_id, kind=kind, status=status, due_from=due_from, due_to=due_to)
        items, next_cursor = await select_notices(db, principal, filters, limit=limit, cursor=cursor)
        return Page(items=items, next_cursor=next_cursor)

    @get(
        "/{notice_id:str}",
        operation_id="GetNotice",
        opt=access(Actor.ADMIN, Actor.OWNER, Actor.REGULATOR),
        summary="Read a notice and its deliveries",
        description="Each delivery (a webhook, an e-mail address) with every attempt: when, how long, the "
        "status code or error, and whether it was delivered, will be retried, or failed for good. Only "
        "deliveries to the caller's own targets are listed (an enterprise does not see where the regulator "
        "receives an escalation).",
        responses=problem_responses(400, 401, 403, 404),
    )
    async def get_notice(self, db: Db, principal: PrincipalDep, notice_id: FromPath[uuid.UUID]) -> Notice:
        refuse_labs(principal, "notices")
        found = await select_notice(db, principal, notice_id)
        if found is None:
            raise NotFoundError(f"notice {notice_id} not found")
        return found
