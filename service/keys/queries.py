"""API key rows: creation, listing, rotation, revocation. Authentication reads them in ``service.auth``."""

from __future__ import annotations

import datetime as dt
import uuid

import asyncpg
import msgspec

from service.auth import Role, mint_key
from service.errors import ConflictError, FieldError, RuleViolationError
from service.keys.schemas import ApiKey, ApiKeyCreate, ApiKeyRotation, CreatedApiKey
from service.pagination import Params, decode_cursor, read_in_page_order, split_page

__all__ = ("create_key", "revoke_key", "rotate_key", "select_key", "select_keys")

_COLUMNS = (
    "id, prefix, role, name, enterprise_id, lab_id, region_code, created_at, expires_at, revoked_at, "
    "last_used_at, rotated_to"
)
_SCOPE_FIELD = {Role.ENTERPRISE: "enterprise_id", Role.LAB: "lab_id", Role.REGULATOR: "region_code"}


def _check(data: ApiKeyCreate, now: dt.datetime) -> None:
    """Each role carries exactly its own scope field; an end lies ahead."""
    needed = _SCOPE_FIELD.get(data.role)
    errors = []
    for field in ("enterprise_id", "lab_id", "region_code"):
        given = getattr(data, field) is not None
        if field == needed and not given:
            errors.append(FieldError(field=field, message=f"is required for a {data.role} key"))
        elif field != needed and given:
            errors.append(FieldError(field=field, message=f"does not apply to a {data.role} key"))
    errors.extend(_expiry_errors(data.expires_at, now))
    if errors:
        raise RuleViolationError.for_fields(errors)


def _expiry_errors(expires_at: dt.datetime | None, now: dt.datetime) -> list[FieldError]:
    if expires_at is None:
        return []
    if expires_at.tzinfo is None:
        return [FieldError(field="expires_at", message="needs a time zone offset, such as 2027-01-01T00:00:00Z")]
    if expires_at <= now:
        return [FieldError(field="expires_at", message="must be in the future")]
    return []


async def _insert(db: asyncpg.Connection, data: ApiKeyCreate, now: dt.datetime) -> CreatedApiKey:
    key, prefix, digest = mint_key()
    try:
        row = await db.fetchrow(
            f"""INSERT INTO api_keys (prefix, secret_sha256, role, name, enterprise_id, lab_id, region_code,
                                      created_at, expires_at)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING {_COLUMNS}""",
            prefix,
            digest,
            data.role.value,
            data.name.strip() or data.role.value,
            data.enterprise_id,
            data.lab_id,
            data.region_code,
            now,
            data.expires_at,
        )
    except asyncpg.ForeignKeyViolationError:
        field = "enterprise_id" if data.enterprise_id is not None else "lab_id"
        raise RuleViolationError.for_field(field, f"no such {field.removesuffix('_id')}") from None
    assert row is not None
    return msgspec.convert({**dict(row), "key": key}, CreatedApiKey)


async def create_key(db: asyncpg.Connection, data: ApiKeyCreate, now: dt.datetime) -> CreatedApiKey:
    """Mint and store a key; the returned ``key`` is the only copy of the secret."""
    _check(data, now)
    return await _insert(db, data, now)


async def select_key(db: asyncpg.Connection, key_id: uuid.UUID, *, for_update: bool = False) -> ApiKey | None:
    row = await db.fetchrow(
        f"SELECT {_COLUMNS} FROM api_keys WHERE id = $1{' FOR UPDATE' if for_update else ''}", key_id
    )
    return msgspec.convert(dict(row), ApiKey) if row else None


class _PageKey(msgspec.Struct, frozen=True, array_like=True):
    created_at: dt.datetime
    id: uuid.UUID


async def select_keys(
    db: asyncpg.Connection,
    *,
    role: Role | None,
    enterprise_id: uuid.UUID | None,
    lab_id: uuid.UUID | None,
    active_at: dt.datetime | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[ApiKey], str | None]:
    """One page of keys, newest first; ``active_at``: only those that work at that instant.

    The role, enterprise and lab each have an index in page order (schema/0027). ``active_at``
    walks the keys in page order, keeping those not revoked that have not ended: no index holds
    the keys that work at an instant, which end as the clock moves on.
    """
    params = Params()
    clauses = []
    if role is not None:
        clauses.append(f"role = {params(role.value)}")
    for column, value in (("enterprise_id", enterprise_id), ("lab_id", lab_id)):
        if value is not None:
            clauses.append(f"{column} = {params(value)}")
    if active_at is not None:
        at = params(active_at)
        clauses.append(f"revoked_at IS NULL AND (expires_at IS NULL OR expires_at > {at})")
    if cursor:
        last = decode_cursor(cursor, _PageKey)
        clauses.append(f"(created_at, id) < ({params(last.created_at)}, {params(last.id)})")
    await read_in_page_order(db)
    rows = await db.fetch(
        f"""SELECT {_COLUMNS} FROM api_keys {"WHERE " + " AND ".join(clauses) if clauses else ""}
            ORDER BY created_at DESC, id DESC LIMIT {params(limit + 1)}""",
        *params.values,
    )
    return split_page(
        [msgspec.convert(dict(r), ApiKey) for r in rows],
        limit,
        lambda last: _PageKey(created_at=last.created_at, id=last.id),
    )


async def rotate_key(
    db: asyncpg.Connection, old: ApiKey, data: ApiKeyRotation, now: dt.datetime, *, extend: bool
) -> CreatedApiKey:
    """A new key of the same role, scope, name and end; the old one ends after the grace period.

    ``data.expires_at`` sets another end for the new key: an earlier one, or with ``extend`` (an
    admin's rotation) a later one too, so that a key cannot renew itself beyond what it was given.

    ``old`` must have been read ``for_update`` in this transaction, so that two rotations of one key
    cannot both succeed.

    Raises:
        ConflictError: the old key is revoked, expired, or already rotated.
        RuleViolationError: the new key's ``expires_at`` is not in the future, or (without
            ``extend``) later than the old key's end.
    """
    if old.revoked_at is not None or (old.expires_at is not None and old.expires_at <= now):
        raise ConflictError(f"API key {old.id} no longer works: mint a new key instead of rotating it")
    if old.rotated_to is not None:
        raise ConflictError(f"API key {old.id} was already rotated to {old.rotated_to}: rotate that one")
    errors = _expiry_errors(data.expires_at, now)
    if errors:  # naive or past: not comparable with the old key's end
        raise RuleViolationError.for_fields(errors)
    expires_at = old.expires_at if data.expires_at is None else data.expires_at
    if old.expires_at is not None and expires_at is not None and expires_at > old.expires_at and not extend:
        raise RuleViolationError.for_field("expires_at", "may not be later than the old key's end")
    successor = ApiKeyCreate(
        role=old.role,
        name=old.name,
        enterprise_id=old.enterprise_id,
        lab_id=old.lab_id,
        region_code=old.region_code,
        expires_at=expires_at,
    )
    created = await _insert(db, successor, now)
    grace_end = now + dt.timedelta(seconds=data.grace_seconds)
    await db.execute(
        """UPDATE api_keys SET rotated_to = $2,
                  expires_at = CASE WHEN expires_at IS NULL OR expires_at > $3 THEN $3 ELSE expires_at END
           WHERE id = $1""",
        old.id,
        created.id,
        grace_end,
    )
    return created


async def revoke_key(db: asyncpg.Connection, key_id: uuid.UUID, now: dt.datetime) -> ApiKey | None:
    """Revoke a key and the keys it was rotated to (idempotent: revoking twice keeps the first
    time); None when there is no such key. Whoever held a leaked key may have rotated it.

    The chain stops at a key of another role or scope: a rotation never makes one (and since
    schema/0028 the database refuses such a link), and following it would revoke another
    tenant's key.
    """
    rows = await db.fetch(
        f"""WITH RECURSIVE chain AS (
                SELECT id, rotated_to, role, enterprise_id, lab_id, region_code FROM api_keys WHERE id = $1
                UNION SELECT k.id, k.rotated_to, k.role, k.enterprise_id, k.lab_id, k.region_code
                FROM api_keys k JOIN chain c ON k.id = c.rotated_to
                    AND (k.role, k.enterprise_id, k.lab_id, k.region_code)
                        IS NOT DISTINCT FROM (c.role, c.enterprise_id, c.lab_id, c.region_code)
            )
            UPDATE api_keys SET revoked_at = coalesce(revoked_at, $2)
            WHERE id IN (SELECT id FROM chain) RETURNING {_COLUMNS}""",
        key_id,
        now,
    )
    found = [r for r in rows if r["id"] == key_id]
    return msgspec.convert(dict(found[0]), ApiKey) if found else None
