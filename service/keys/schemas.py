"""API keys in and out of the API. The secret appears once, in the creation response."""

from __future__ import annotations

import datetime as dt
import uuid

import msgspec

from service.auth import Role
from service.types import Name, RegionPrefix

__all__ = ("ApiKey", "ApiKeyCreate", "CreatedApiKey")


class ApiKeyCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A new key: ``enterprise_id`` for an enterprise key, ``lab_id`` for a lab key, ``region_code``
    (a prefix) for a regulator key, none of them for an admin key."""

    role: Role
    name: Name
    enterprise_id: uuid.UUID | None = None
    lab_id: uuid.UUID | None = None
    region_code: RegionPrefix | None = None


class ApiKey(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    prefix: str
    role: Role
    name: str
    enterprise_id: uuid.UUID | None
    lab_id: uuid.UUID | None
    region_code: str | None
    created_at: dt.datetime
    revoked_at: dt.datetime | None


class CreatedApiKey(ApiKey, frozen=True, kw_only=True):
    """A key just created: ``key`` is the secret, shown this once and never stored."""

    key: str
