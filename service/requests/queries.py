"""Verification request rows: work orders, their items, and the link from items to results."""

from __future__ import annotations

import datetime as dt
import uuid

import asyncpg
import msgspec

from service import dates
from service.auth import Principal, Role
from service.pagination import Params, decode_cursor, read_in_page_order, split_page, walks_for_region
from service.requests.rules import RequestStatus, is_overdue
from service.requests.schemas import RequestItem, VerificationRequest

__all__ = (
    "RequestFilters",
    "StoredRequest",
    "attach_result",
    "claim_item",
    "insert_request",
    "open_requests_of",
    "select_request",
    "select_requests",
    "update_request",
    "withdraw_items",
)

_SELECT = """
    SELECT r.id, r.enterprise_id, r.lab_id, l.name AS lab_name, r.note, r.status, r.reason, r.accepted_on,
           r.due_by, r.version, r.created_at, r.updated_at, e.timezone, e.region_code,
           (SELECT count(*) FROM request_items ri WHERE ri.request_id = r.id) AS items_total,
           (SELECT count(ri.certificate_id) FROM request_items ri WHERE ri.request_id = r.id) AS items_done,
           (SELECT count(ri.withdrawn_on) FROM request_items ri
            WHERE ri.request_id = r.id AND ri.certificate_id IS NULL) AS items_withdrawn
    FROM verification_requests r
    JOIN labs l ON l.id = r.lab_id
    JOIN enterprises e ON e.id = r.enterprise_id
"""


class StoredRequest(msgspec.Struct, frozen=True, kw_only=True):
    """A request as the API shows it, with the enterprise facts that scope and date it."""

    request: VerificationRequest
    region_code: str
    timezone: str


def _stored(record: asyncpg.Record, now: dt.datetime, items: list[RequestItem] | None = None) -> StoredRequest:
    data = dict(record)
    region_code, timezone = data.pop("region_code"), data.pop("timezone")
    today = dates.local_today(now, timezone)
    data["overdue"] = is_overdue(RequestStatus(data["status"]), data["due_by"], today)
    data["items"] = items
    return StoredRequest(request=msgspec.convert(data, VerificationRequest), region_code=region_code, timezone=timezone)


async def select_request(
    db: asyncpg.Connection, request_id: uuid.UUID, now: dt.datetime, *, lock: bool = False
) -> StoredRequest | None:
    """One request with its items (locked for update when ``lock``)."""
    if lock:
        await db.execute("SELECT 1 FROM verification_requests WHERE id = $1 FOR UPDATE", request_id)
    record = await db.fetchrow(f"{_SELECT} WHERE r.id = $1", request_id)
    if record is None:
        return None
    items = await db.fetch(
        """SELECT ri.instrument_id, i.name, i.serial_no, i.management_no, i.catalog_code, ri.certificate_id,
                  c.number AS certificate_number, c.outcome,
                  CASE WHEN ri.certificate_id IS NOT NULL THEN 'done'
                       WHEN ri.withdrawn_on IS NOT NULL THEN 'withdrawn' ELSE 'pending' END AS status
           FROM request_items ri
           JOIN instruments i ON i.id = ri.instrument_id
           LEFT JOIN certificates c ON c.id = ri.certificate_id
           WHERE ri.request_id = $1 ORDER BY ri.position""",
        request_id,
    )
    return _stored(record, now, [msgspec.convert(dict(r), RequestItem) for r in items])


class RequestFilters(msgspec.Struct, frozen=True, kw_only=True):
    status: RequestStatus | None = None
    overdue: bool | None = None
    lab_id: uuid.UUID | None = None
    enterprise_id: uuid.UUID | None = None


class _PageKey(msgspec.Struct, frozen=True, array_like=True):
    created_at: dt.datetime
    id: uuid.UUID


def _scope(principal: Principal, bind: Params) -> str:
    """The rows the principal may see: its enterprise's, its lab's, its region's, or all."""
    if principal.role is Role.ENTERPRISE:
        return f"r.enterprise_id = {bind(principal.enterprise_id)}"
    if principal.role is Role.LAB:
        return f"r.lab_id = {bind(principal.lab_id)}"
    if principal.role is Role.REGULATOR:
        return f"e.region_code LIKE {bind(f'{principal.region_code}%')}"
    return "TRUE"


async def select_requests(
    db: asyncpg.Connection,
    principal: Principal,
    filters: RequestFilters,
    now: dt.datetime,
    *,
    limit: int,
    cursor: str | None,
) -> tuple[list[VerificationRequest], str | None]:
    """One page of the requests the principal may see, newest first: an enterprise's and a lab's
    in the order of their own index, a region's walking everyone's (verification_requests_all)."""
    bind = Params()
    where = [_scope(principal, bind)]
    if filters.status is not None:
        where.append(f"r.status = {bind(filters.status.value)}")
    if filters.lab_id is not None:
        where.append(f"r.lab_id = {bind(filters.lab_id)}")
    if filters.enterprise_id is not None:
        where.append(f"r.enterprise_id = {bind(filters.enterprise_id)}")
    if filters.overdue is not None:
        overdue = f"(r.status = 'accepted' AND r.due_by < ({bind(now)}::timestamptz AT TIME ZONE e.timezone)::date)"
        where.append(overdue if filters.overdue else f"NOT {overdue}")
    if cursor is not None:
        key = decode_cursor(cursor, _PageKey)
        where.append(f"(r.created_at, r.id) < ({bind(key.created_at)}::timestamptz, {bind(key.id)}::uuid)")
    walk = principal.role is not Role.REGULATOR or await walks_for_region(db, "verification_requests", limit)
    await read_in_page_order(db, walk=walk)
    records = await db.fetch(
        f"{_SELECT} WHERE {' AND '.join(where)} ORDER BY r.created_at DESC, r.id DESC LIMIT {bind(limit + 1)}",
        *bind.values,
    )
    return split_page(
        [_stored(r, now).request for r in records], limit, lambda last: _PageKey(created_at=last.created_at, id=last.id)
    )


async def open_requests_of(db: asyncpg.Connection, instrument_ids: list[uuid.UUID]) -> dict[uuid.UUID, uuid.UUID]:
    """instrument id -> the open request (submitted or accepted) still waiting for its result."""
    rows = await db.fetch(
        """SELECT ri.instrument_id, ri.request_id FROM request_items ri
           JOIN verification_requests r ON r.id = ri.request_id
           WHERE ri.instrument_id = ANY($1::uuid[]) AND ri.certificate_id IS NULL AND ri.withdrawn_on IS NULL
             AND r.status IN ('submitted', 'accepted')""",
        instrument_ids,
    )
    return {r["instrument_id"]: r["request_id"] for r in rows}


async def insert_request(
    db: asyncpg.Connection,
    *,
    enterprise_id: uuid.UUID,
    lab_id: uuid.UUID,
    note: str | None,
    instrument_ids: list[uuid.UUID],
    now: dt.datetime,
) -> uuid.UUID:
    request_id: uuid.UUID = await db.fetchval(
        """INSERT INTO verification_requests (enterprise_id, lab_id, note, created_at, updated_at)
           VALUES ($1, $2, $3, $4, $4) RETURNING id""",
        enterprise_id,
        lab_id,
        note,
        now,
    )
    # The item carries the request's enterprise: its keys hold its request and its instrument to it
    # (schema/0026), whoever writes it.
    await db.execute(
        """INSERT INTO request_items (request_id, enterprise_id, instrument_id, position)
           SELECT $1, $2, u.id, u.position FROM unnest($3::uuid[]) WITH ORDINALITY AS u(id, position)""",
        request_id,
        enterprise_id,
        instrument_ids,
    )
    return request_id


async def update_request(
    db: asyncpg.Connection,
    request_id: uuid.UUID,
    *,
    status: RequestStatus,
    now: dt.datetime,
    reason: str | None = None,
    accepted_on: dt.date | None = None,
    due_by: dt.date | None = None,
) -> None:
    """Move the request to ``status`` (the caller holds its lock and checked the transition)."""
    await db.execute(
        """UPDATE verification_requests
           SET status = $2, reason = coalesce($3, reason), accepted_on = coalesce($4, accepted_on),
               due_by = coalesce($5, due_by), version = version + 1, updated_at = $6
           WHERE id = $1""",
        request_id,
        status.value,
        reason,
        accepted_on,
        due_by,
        now,
    )


async def claim_item(db: asyncpg.Connection, instrument_id: uuid.UUID, lab_id: uuid.UUID) -> uuid.UUID | None:
    """The lab's oldest accepted request still waiting for this instrument's result, locked."""
    found: uuid.UUID | None = await db.fetchval(
        """SELECT r.id FROM request_items ri JOIN verification_requests r ON r.id = ri.request_id
           WHERE ri.instrument_id = $1 AND r.lab_id = $2 AND r.status = 'accepted' AND ri.certificate_id IS NULL
             AND ri.withdrawn_on IS NULL
           ORDER BY r.accepted_on, r.created_at, r.id LIMIT 1
           FOR UPDATE OF r""",
        instrument_id,
        lab_id,
    )
    return found


async def attach_result(
    db: asyncpg.Connection, request_id: uuid.UUID, instrument_id: uuid.UUID, certificate_id: uuid.UUID, now: dt.datetime
) -> None:
    """Record the item's result; the request is completed when its last item has one."""
    await db.execute(
        "UPDATE request_items SET certificate_id = $3 WHERE request_id = $1 AND instrument_id = $2",
        request_id,
        instrument_id,
        certificate_id,
    )
    await db.execute(
        """UPDATE verification_requests SET status = 'completed', version = version + 1, updated_at = $2
           WHERE id = $1 AND status = 'accepted'
             AND NOT EXISTS (SELECT 1 FROM request_items
                             WHERE request_id = $1 AND certificate_id IS NULL AND withdrawn_on IS NULL)""",
        request_id,
        now,
    )


async def withdraw_items(db: asyncpg.Connection, instrument_id: uuid.UUID, on: dt.date, now: dt.datetime) -> None:
    """Withdraw the instrument's items still waiting in open requests (it was scrapped or replaced).

    A request left with nothing to wait for is completed if accepted, or cancelled if the lab had not
    accepted it yet; so no request is stranded by an instrument that is gone.
    """
    requests = await db.fetch(
        """UPDATE request_items ri SET withdrawn_on = $2
           FROM verification_requests r
           WHERE r.id = ri.request_id AND ri.instrument_id = $1 AND ri.certificate_id IS NULL
             AND ri.withdrawn_on IS NULL AND r.status IN ('submitted', 'accepted')
           RETURNING ri.request_id""",
        instrument_id,
        on,
    )
    if not requests:
        return
    await db.execute(
        """UPDATE verification_requests r
           SET status = CASE WHEN r.status = 'accepted' THEN 'completed' ELSE 'cancelled' END,
               reason = CASE WHEN r.status = 'accepted' THEN r.reason
                             ELSE 'every instrument was withdrawn (scrapped or replaced)' END,
               version = r.version + 1, updated_at = $2
           WHERE r.id = ANY($1::uuid[])
             AND NOT EXISTS (SELECT 1 FROM request_items
                             WHERE request_id = r.id AND certificate_id IS NULL AND withdrawn_on IS NULL)""",
        [row["request_id"] for row in requests],
        now,
    )
