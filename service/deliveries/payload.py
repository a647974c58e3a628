"""What a notice says to its receiver: the webhook body, and the facts an e-mail is written from.

``notice_id`` is the receiver's idempotency key: a crash between sending and recording can deliver
the same notice twice (design.md §6), never two different notices under one id.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence

import asyncpg
import msgspec

from service.dates import local_today
from service.enterprises.queries import select_enterprise
from service.enterprises.schemas import Enterprise
from service.instruments.queries import (
    InstrumentRow,
    select_instrument,
    select_instruments_in_enterprises,
    to_instrument,
)
from service.instruments.rules import Lifecycle, RequiredAction, Status
from service.notices.rules import Audience, NoticeKind

__all__ = ("EnterpriseSummary", "InstrumentSummary", "NoticeEvent", "Ping", "load_event", "load_events")


class EnterpriseSummary(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    name: str
    credit_code: str
    region_code: str


class InstrumentSummary(msgspec.Struct, frozen=True, kw_only=True):
    """The instrument as it stands when the notice is sent (``status`` on the enterprise's local date)."""

    id: uuid.UUID
    name: str
    model: str
    serial_no: str
    management_no: str | None
    catalog_code: str | None
    location: str | None
    lifecycle: Lifecycle
    status: Status
    status_reason: str
    valid_until: dt.date | None
    days_until_due: int | None
    required_action: RequiredAction
    current_certificate_number: str | None


class NoticeEvent(msgspec.Struct, frozen=True, kw_only=True):
    """The JSON body of a webhook call about a notice."""

    notice_id: uuid.UUID
    kind: NoticeKind
    audience: Audience
    due_on: dt.date
    cycle: dt.date
    step: int
    certificate_id: uuid.UUID | None
    created_at: dt.datetime
    enterprise: EnterpriseSummary
    instrument: InstrumentSummary


class Ping(msgspec.Struct, frozen=True, kw_only=True):
    """The body of ``POST /v1/webhooks/{id}/ping``: proves the URL and the secret work."""

    kind: str
    webhook_id: uuid.UUID
    sent_at: dt.datetime


_NOTICE_COLUMNS = "id, enterprise_id, instrument_id, kind, audience, due_on, cycle, step, certificate_id, created_at"


async def load_event(db: asyncpg.Connection, notice_id: uuid.UUID, now: dt.datetime) -> NoticeEvent | None:
    """The body of notice ``notice_id`` as of ``now``; None if it does not exist."""
    notice = await db.fetchrow(f"SELECT {_NOTICE_COLUMNS} FROM notices WHERE id = $1", notice_id)
    if notice is None:
        return None
    enterprise = await select_enterprise(db, notice["enterprise_id"])
    row = await select_instrument(db, notice["instrument_id"])
    # Both are referenced by the notice.
    assert enterprise is not None
    assert row is not None
    return _event(notice, row, enterprise, now)


async def load_events(
    db: asyncpg.Connection, notice_ids: Sequence[uuid.UUID], now: dt.datetime
) -> dict[uuid.UUID, NoticeEvent]:
    """The bodies of many notices as of ``now``, in two statements whatever their number (one
    delivery job sends a batch of notices); a notice that does not exist is left out."""
    notices = await db.fetch(f"SELECT {_NOTICE_COLUMNS} FROM notices WHERE id = ANY ($1::uuid[])", list(notice_ids))
    instruments = await select_instruments_in_enterprises(db, list({n["instrument_id"] for n in notices}))
    events: dict[uuid.UUID, NoticeEvent] = {}
    for notice in notices:
        # Referenced by the notice, and the worker sees every enterprise.
        row, enterprise = instruments[notice["instrument_id"]]
        events[notice["id"]] = _event(notice, row, enterprise, now)
    return events


def _event(notice: asyncpg.Record, row: InstrumentRow, enterprise: Enterprise, now: dt.datetime) -> NoticeEvent:
    instrument = to_instrument(row, enterprise, local_today(now, enterprise.timezone))
    return NoticeEvent(
        notice_id=notice["id"],
        kind=NoticeKind(notice["kind"]),
        audience=Audience(notice["audience"]),
        due_on=notice["due_on"],
        cycle=notice["cycle"],
        step=notice["step"],
        certificate_id=notice["certificate_id"],
        created_at=notice["created_at"],
        enterprise=EnterpriseSummary(
            id=enterprise.id,
            name=enterprise.name,
            credit_code=enterprise.credit_code,
            region_code=enterprise.region_code,
        ),
        instrument=InstrumentSummary(
            id=instrument.id,
            name=instrument.name,
            model=instrument.model,
            serial_no=instrument.serial_no,
            management_no=instrument.management_no,
            catalog_code=instrument.catalog_code,
            location=instrument.location,
            lifecycle=instrument.lifecycle,
            status=instrument.status,
            status_reason=instrument.status_reason,
            valid_until=instrument.valid_until,
            days_until_due=instrument.days_until_due,
            required_action=instrument.required_action,
            current_certificate_number=instrument.current_certificate_number,
        ),
    )
