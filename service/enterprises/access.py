"""Who may see and change an enterprise: absent and out of scope look the same (404)."""

from __future__ import annotations

import uuid
from typing import Literal

import asyncpg

from service.auth import Principal
from service.enterprises.queries import select_enterprise
from service.enterprises.schemas import Enterprise
from service.errors import ForbiddenError, NotFoundError

__all__ = ("readable_enterprise", "writable_enterprise")


async def readable_enterprise(
    db: asyncpg.Connection,
    principal: Principal,
    enterprise_id: uuid.UUID,
    *,
    lock: Literal["share", "update"] | None = None,
) -> Enterprise:
    """The enterprise, if the principal may read it (locked as ``lock`` says).

    Raises:
        NotFoundError: absent, or outside the principal's scope.
    """
    found = await select_enterprise(db, enterprise_id, lock=lock)
    if found is None or not principal.may_read_enterprise(found.id, found.region_code):
        raise NotFoundError(f"enterprise {enterprise_id} not found")
    return found


async def writable_enterprise(
    db: asyncpg.Connection, principal: Principal, enterprise_id: uuid.UUID, *, lock: Literal["share", "update"]
) -> Enterprise:
    """The enterprise, locked for this transaction, if the principal may change it or its register.

    ``lock="update"`` for changes to the enterprise itself; ``lock="share"`` for changes to its
    register, which read its settings (period rule) and must not interleave with a settings change.

    Raises:
        NotFoundError: absent, or outside the principal's scope.
        ForbiddenError: visible to the principal (a regulator) but not its to change.
    """
    found = await readable_enterprise(db, principal, enterprise_id, lock=lock)
    if not principal.may_write_enterprise(found.id):
        raise ForbiddenError(f"a {principal.role} key may read this enterprise but not change it")
    return found
