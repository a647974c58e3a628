"""``GET /v1/audit``: the audit trail, newest first."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated

from litestar import Controller, get
from litestar.params import QueryParameter

from service.audit.queries import AuditFilter, select_entries
from service.audit.schemas import AuditEntry
from service.auth import Role
from service.deps import Db, PrincipalDep
from service.errors import ForbiddenError, InvalidInputError
from service.pagination import Cursor, Limit, Page
from service.policy import Actor, access
from service.problems import problem_responses
from service.types import NO_NUL

__all__ = ("AuditController",)

Text = Annotated[str | None, QueryParameter(min_length=1, max_length=200, pattern=NO_NUL)]


class AuditController(Controller):
    path = "/audit"
    tags = ["Audit"]

    @get(
        operation_id="ListAuditEntries",
        summary="The audit trail",
        description="Every change to the register (enterprises, labs, keys, instruments, requests, "
        "certificates, webhooks), newest first: the key and role that made it, the operation "
        "(`action`), the row before and after, the request id and the time. Admins see all of it, a "
        "regulator the rows of its region, an enterprise its own; labs may not list it. Filters: "
        "`entity` (a table name such as `instruments`) with `entity_id`, `action` (an operation id "
        "such as `SealInstrument`), `actor_key_id`, `enterprise_id`, and `since` / `until` on `at`. "
        "Rows are hash-chained; `metreg audit verify` checks the chain.",
        responses=problem_responses(400, 401, 403),
        opt=access(Actor.ADMIN, Actor.OWNER, Actor.REGULATOR),
    )
    async def list_audit(
        self,
        db: Db,
        principal: PrincipalDep,
        entity: Text = None,
        entity_id: Text = None,
        action: Text = None,
        actor_key_id: Annotated[uuid.UUID | None, QueryParameter()] = None,
        enterprise_id: Annotated[uuid.UUID | None, QueryParameter()] = None,
        since: Annotated[dt.datetime | None, QueryParameter(description="At or after this instant.")] = None,
        until: Annotated[dt.datetime | None, QueryParameter(description="Before this instant.")] = None,
        limit: Limit = 50,
        cursor: Cursor = None,
    ) -> Page[AuditEntry]:
        if principal.role is Role.LAB:
            raise ForbiddenError("the audit trail is for admins, regulators and enterprises")
        for name, instant in (("since", since), ("until", until)):
            if instant is not None and instant.tzinfo is None:
                raise InvalidInputError.for_field(name, "needs a time zone offset, such as 2026-06-15T00:00:00Z")
        where = AuditFilter(
            entity=entity,
            entity_id=entity_id,
            action=action,
            actor_key_id=actor_key_id,
            enterprise_id=enterprise_id,
            since=since,
            until=until,
        )
        items, next_cursor = await select_entries(db, principal, where, limit=limit, cursor=cursor)
        return Page(items=items, next_cursor=next_cursor)
