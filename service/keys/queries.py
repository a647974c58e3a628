"""API key rows: creation, revocation. Authentication reads them in ``service.auth``."""

from __future__ import annotations

import datetime as dt
import uuid

import asyncpg
import msgspec

from service.auth import Role, mint_key
from service.errors import FieldError, RuleViolationError
from service.keys.schemas import ApiKey, ApiKeyCreate, CreatedApiKey

__all__ = ("create_key", "revoke_key")

_COLUMNS = "id, prefix, role, name, enterprise_id, lab_id, region_code, created_at, revoked_at"
_SCOPE_FIELD = {Role.ENTERPRISE: "enterprise_id", Role.LAB: "lab_id", Role.REGULATOR: "region_code"}


def _check_scope(data: ApiKeyCreate) -> None:
    """Each role carries exactly its own scope field."""
    needed = _SCOPE_FIELD.get(data.role)
    errors = []
    for field in ("enterprise_id", "lab_id", "region_code"):
        given = getattr(data, field) is not None
        if field == needed and not given:
            errors.append(FieldError(field=field, message=f"is required for a {data.role} key"))
        elif field != needed and given:
            errors.append(FieldError(field=field, message=f"does not apply to a {data.role} key"))
    if errors:
        raise RuleViolationError.for_fields(errors)


async def create_key(db: asyncpg.Connection, data: ApiKeyCreate, now: dt.datetime) -> CreatedApiKey:
    """Mint and store a key; the returned ``key`` is the only copy of the secret."""
    _check_scope(data)
    key, prefix, digest = mint_key()
    try:
        row = await db.fetchrow(
            f"""INSERT INTO api_keys (prefix, secret_sha256, role, name, enterprise_id, lab_id, region_code,
                                      created_at)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {_COLUMNS}""",
            prefix,
            digest,
            data.role.value,
            data.name.strip() or data.role.value,
            data.enterprise_id,
            data.lab_id,
            data.region_code,
            now,
        )
    except asyncpg.ForeignKeyViolationError:
        field = "enterprise_id" if data.enterprise_id is not None else "lab_id"
        raise RuleViolationError.for_field(field, f"no such {field.removesuffix('_id')}") from None
    assert row is not None
    return msgspec.convert({**dict(row), "key": key}, CreatedApiKey)


async def revoke_key(db: asyncpg.Connection, key_id: uuid.UUID, now: dt.datetime) -> ApiKey | None:
    """Revoke a key (idempotent: revoking twice keeps the first time); None when there is no such key."""
    row = await db.fetchrow(
        f"UPDATE api_keys SET revoked_at = coalesce(revoked_at, $2) WHERE id = $1 RETURNING {_COLUMNS}",
        key_id,
        now,
    )
    return msgspec.convert(dict(row), ApiKey) if row else None
