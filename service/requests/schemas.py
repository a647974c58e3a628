"""Verification requests in and out of the API."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated

import msgspec

from service.certificates.rules import Outcome
from service.requests.rules import RequestStatus
from service.types import Text

__all__ = ("Cancellation", "Rejection", "RequestCreate", "RequestItem", "VerificationRequest")

Note = Annotated[str, Text(2000, min_length=1)]


class RequestCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A request to a lab to verify (or calibrate) instruments of one enterprise.

    Every instrument must belong to the enterprise and be in use (in service, failed, or pending
    verification) and in no other open request; for compulsory instruments the lab's scope must
    include the catalogue code. ``enterprise_id`` is for admins (an enterprise key implies it).
    """

    lab_id: uuid.UUID
    instrument_ids: Annotated[list[uuid.UUID], msgspec.Meta(min_length=1, max_length=500)]
    note: Note | None = None
    enterprise_id: uuid.UUID | None = None


class Rejection(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    reason: Note


class Cancellation(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    reason: Note = "cancelled by the enterprise"


class RequestItem(msgspec.Struct, frozen=True, kw_only=True):
    """One instrument of a request and its result (null until the lab records one)."""

    instrument_id: uuid.UUID
    name: str
    serial_no: str
    management_no: str | None
    catalog_code: str | None
    certificate_id: uuid.UUID | None
    certificate_number: str | None
    outcome: Outcome | None
    status: str
    """``pending`` until a result is recorded, then ``done``; ``withdrawn`` when the instrument was
    scrapped or replaced before its result."""


class VerificationRequest(msgspec.Struct, frozen=True, kw_only=True):
    """A work order. ``due_by`` = accepted date + the lab's service level in working days;
    ``overdue`` is true while it is accepted and the enterprise's local today is past ``due_by``.
    It is ``completed`` when every item has a result or was withdrawn. ``items`` is listed when one
    request is read (null in lists, which carry the counts)."""

    id: uuid.UUID
    enterprise_id: uuid.UUID
    lab_id: uuid.UUID
    lab_name: str
    note: str | None
    status: RequestStatus
    reason: str | None
    accepted_on: dt.date | None
    due_by: dt.date | None
    overdue: bool
    items_total: int
    items_done: int
    """Items with a result."""
    items_withdrawn: int
    """Items whose instrument was scrapped or replaced before its result."""
    items: list[RequestItem] | None = None
    version: int
    created_at: dt.datetime
    updated_at: dt.datetime
