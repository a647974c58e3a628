"""API keys in and out of the API. The secret appears once, in the creation response."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated

import msgspec

from service.auth import Role
from service.types import Name, RegionPrefix

__all__ = ("ApiKey", "ApiKeyCreate", "ApiKeyRotation", "CreatedApiKey")

# At most 30 days: a rotation is for switching over, not for keeping two keys alive.
GraceSeconds = Annotated[int, msgspec.Meta(ge=0, le=30 * 86400)]


class ApiKeyCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A new key: ``enterprise_id`` for an enterprise key, ``lab_id`` for a lab key, ``region_code``
    (a prefix) for a regulator key, none of them for an admin key."""

    role: Role
    name: Name
    enterprise_id: uuid.UUID | None = None
    lab_id: uuid.UUID | None = None
    region_code: RegionPrefix | None = None
    expires_at: dt.datetime | None = None
    """When the key stops working by itself (an instant with its offset, in the future); none by default."""


class ApiKeyRotation(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Rotate a key: the new one works at once, the old one for ``grace_seconds`` more (default one
    day, at most 30 days; 0 ends it now), so that its users can switch over without an outage."""

    grace_seconds: GraceSeconds = 86400
    expires_at: dt.datetime | None = None
    """Another end for the new key (default: the old key's end, if it had one). Only an admin may
    set it later than the old key's end."""


class ApiKey(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    prefix: str
    role: Role
    name: str
    enterprise_id: uuid.UUID | None
    lab_id: uuid.UUID | None
    region_code: str | None
    created_at: dt.datetime
    expires_at: dt.datetime | None
    """It stops working at this instant (set at creation, or by a rotation's grace period)."""
    revoked_at: dt.datetime | None
    last_used_at: dt.datetime | None
    """The last request it authenticated, to the minute."""
    rotated_to: uuid.UUID | None
    """The key a rotation replaced it with."""


class CreatedApiKey(ApiKey, frozen=True, kw_only=True):
    """A key just created: ``key`` is the secret, shown this once and never stored."""

    key: str
