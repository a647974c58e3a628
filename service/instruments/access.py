"""Who may see and change an instrument.

An instrument is visible to whoever may read its enterprise (the enterprise, a regulator of its
region, an admin) and to a lab while it has or had a request item for it (issue 3). Outside that
it is absent (404); visible but not the caller's to change is 403. A lab also sees the instruments
it issued documents for.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from service.auth import AuthenticatedReader, Principal, Role
from service.enterprises.queries import select_enterprise
from service.enterprises.schemas import Enterprise
from service.errors import ForbiddenError, NotFoundError
from service.instruments.queries import (
    InstrumentRow,
    instrument_in_enterprise,
    instrument_in_enterprise_sql,
    register_enterprise,
    register_enterprise_sql,
    select_enterprise_id,
    select_instrument,
    select_instrument_in_enterprise,
)
from service.pagination import PAGE_ORDER

__all__ = (
    "lab_knows_instrument",
    "locked_instrument",
    "read_visible_instrument",
    "readable_register",
    "visible_instrument",
    "writable_instrument",
)


def _lab_knows(instrument: str, lab: str) -> str:
    """SQL: whether the lab ``lab`` has or had a request item for ``instrument`` or issued one of its
    documents (both SQL expressions)."""
    return f"""EXISTS (SELECT 1 FROM request_items ri JOIN verification_requests r ON r.id = ri.request_id
                       WHERE ri.instrument_id = {instrument} AND r.lab_id = {lab})
               OR EXISTS (SELECT 1 FROM certificates WHERE instrument_id = {instrument} AND lab_id = {lab})"""


# The instrument $6 with its enterprise, and for a lab key the check lab_knows_instrument makes,
# for AuthenticatedReader: all of GET /v1/instruments/{id} in one statement.
_READ_VISIBLE = instrument_in_enterprise_sql(
    "$6", f", CASE WHEN principal_role() = 'lab' THEN {_lab_knows('i.id', 'principal_lab()')} END AS lab_knows"
)

# The enterprise $6 of a register page, for AuthenticatedReader.transaction.
_REGISTER_ENTERPRISE = register_enterprise_sql("$6")


async def lab_knows_instrument(db: asyncpg.Connection, principal: Principal, instrument_id: uuid.UUID) -> bool:
    """Whether ``principal`` is a lab that has or had a request item for the instrument, or issued
    one of its documents (an admin may record on a lab's behalf)."""
    if principal.role is not Role.LAB:
        return False
    known: bool = await db.fetchval(f"SELECT {_lab_knows('$1', '$2')}", instrument_id, principal.lab_id)
    return known


@asynccontextmanager
async def readable_register(
    reader: AuthenticatedReader, enterprise_id: uuid.UUID, *, ordered_scan: bool
) -> AsyncIterator[tuple[Enterprise, asyncpg.Connection]]:
    """The enterprise, if the caller may read its register, and a connection whose transaction
    runs as the caller until the block ends: BEGIN with the page's scan settings
    (:data:`~service.pagination.PAGE_ORDER`, if ``ordered_scan``) in one round trip, then the key and the enterprise
    in one statement.

    Raises:
        UnauthorizedError: the key is unknown, expired or revoked.
        NotFoundError: absent, or outside the caller's scope.
    """
    setup = PAGE_ORDER if ordered_scan else ""
    async with reader.transaction(_REGISTER_ENTERPRISE, enterprise_id, setup=setup) as (principal, record, db):
        found = register_enterprise(record)
        if found is None or not principal.may_read_enterprise(found.id, found.region_code):
            raise NotFoundError(f"enterprise {enterprise_id} not found")
        yield found, db


async def _visible(
    db: asyncpg.Connection, principal: Principal, enterprise: Enterprise | None, instrument_id: uuid.UUID
) -> Enterprise:
    if enterprise is not None and (
        principal.may_read_enterprise(enterprise.id, enterprise.region_code)
        or await lab_knows_instrument(db, principal, instrument_id)
    ):
        return enterprise
    raise NotFoundError(f"instrument {instrument_id} not found")


async def visible_instrument(
    db: asyncpg.Connection, principal: Principal, instrument_id: uuid.UUID
) -> tuple[InstrumentRow, Enterprise]:
    """The instrument and its enterprise, if the principal may see them (no locks).

    Raises:
        NotFoundError: absent, or not visible to the principal.
    """
    found = await select_instrument_in_enterprise(db, instrument_id)
    if found is None:
        raise NotFoundError(f"instrument {instrument_id} not found")
    row, enterprise = found
    return row, await _visible(db, principal, enterprise, instrument_id)


async def read_visible_instrument(
    reader: AuthenticatedReader, instrument_id: uuid.UUID
) -> tuple[Principal, InstrumentRow, Enterprise]:
    """The caller, and the instrument and its enterprise if the caller may see them: what
    :func:`visible_instrument` finds, with the authentication, in one round trip.

    Raises:
        UnauthorizedError: the key is unknown, expired or revoked.
        NotFoundError: absent, or not visible to the caller.
    """
    principal, record = await reader.fetchrow(_READ_VISIBLE, instrument_id)
    if record is not None:
        row, enterprise = instrument_in_enterprise(record)
        if enterprise is not None and (
            principal.may_read_enterprise(enterprise.id, enterprise.region_code) or record["lab_knows"] is True
        ):
            return principal, row, enterprise
    raise NotFoundError(f"instrument {instrument_id} not found")


async def locked_instrument(
    db: asyncpg.Connection, principal: Principal, instrument_id: uuid.UUID
) -> tuple[InstrumentRow, Enterprise]:
    """The instrument locked for update and its enterprise locked for share, if visible.

    Locks go enterprise first, then instrument: the order a settings change takes them in, so the
    two never deadlock. The caller decides whether the principal may write.

    Raises:
        NotFoundError: absent, or not visible to the principal.
    """
    enterprise_id = await select_enterprise_id(db, instrument_id)
    if enterprise_id is None:
        raise NotFoundError(f"instrument {instrument_id} not found")
    enterprise = await _visible(db, principal, await select_enterprise(db, enterprise_id, lock="share"), instrument_id)
    row = await select_instrument(db, instrument_id, for_update=True)
    assert row is not None  # instruments are never deleted
    return row, enterprise


async def writable_instrument(
    db: asyncpg.Connection, principal: Principal, instrument_id: uuid.UUID
) -> tuple[InstrumentRow, Enterprise]:
    """The instrument, locked, if the principal may change its record (the enterprise or an admin).

    Raises:
        NotFoundError: absent, or not visible to the principal.
        ForbiddenError: visible (a regulator, a lab) but not the principal's to change.
    """
    row, enterprise = await locked_instrument(db, principal, instrument_id)
    if not principal.may_write_enterprise(enterprise.id):
        raise ForbiddenError(f"a {principal.role} key may read this instrument but not change its record")
    return row, enterprise
