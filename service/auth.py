"""API keys, the principal behind a request, and what each role may do.

A key looks like ``mr_<prefix>_<secret>``. The prefix finds the row; only the SHA-256 of the
secret is stored (the secret is 256 random bits, so a slow hash would add nothing). Scope rules
(design.md §5): an admin sees everything; an enterprise key one enterprise; a lab key one lab; a
regulator key every enterprise whose region code starts with its prefix. Outside its scope a
resource is reported as absent (404), an action the role may never take as 403.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import secrets
import uuid
from typing import Any

import asyncpg
import msgspec
from litestar import Request
from litestar.di import NamedDependency
from litestar.params import SkipValidation

from service.errors import ForbiddenError, UnauthorizedError

__all__ = (
    "Principal",
    "Role",
    "hash_secret",
    "mint_key",
    "parse_key",
    "provide_admin",
    "provide_principal",
    "refuse_labs",
)

KEY_SCHEME = "mr"


class Role(enum.StrEnum):
    ADMIN = "admin"
    ENTERPRISE = "enterprise"
    LAB = "lab"
    REGULATOR = "regulator"


class Principal(msgspec.Struct, frozen=True, kw_only=True):
    """Who is calling: the key, its role and its scope."""

    key_id: uuid.UUID
    role: Role
    enterprise_id: uuid.UUID | None = None
    lab_id: uuid.UUID | None = None
    region_code: str | None = None

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN

    def may_read_enterprise(self, enterprise_id: uuid.UUID, region_code: str) -> bool:
        """Whether this principal may see the enterprise and its register."""
        if self.role is Role.ADMIN:
            return True
        if self.role is Role.ENTERPRISE:
            return self.enterprise_id == enterprise_id
        if self.role is Role.REGULATOR:
            return self.region_code is not None and region_code.startswith(self.region_code)
        return False

    def may_write_enterprise(self, enterprise_id: uuid.UUID) -> bool:
        """Whether this principal may change the enterprise's register and settings."""
        return self.role is Role.ADMIN or (self.role is Role.ENTERPRISE and self.enterprise_id == enterprise_id)


def mint_key() -> tuple[str, str, bytes]:
    """A new key: ``(full key, prefix, sha256 of the secret)``. Show the full key once."""
    prefix = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    return f"{KEY_SCHEME}_{prefix}_{secret}", prefix, hash_secret(secret)


def hash_secret(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def parse_key(key: str) -> tuple[str, str] | None:
    """Split ``mr_<prefix>_<secret>`` into prefix and secret; None when it is not of that shape."""
    scheme, _, rest = key.partition("_")
    prefix, _, secret = rest.partition("_")
    if scheme != KEY_SCHEME or len(prefix) != 12 or not secret or len(key) > 200:
        return None
    return prefix, secret


_SELECT_KEY = """
    SELECT id, secret_sha256, role, enterprise_id, lab_id, region_code
    FROM api_keys
    WHERE prefix = $1 AND revoked_at IS NULL
"""


async def provide_principal(
    request: Request[Any, Any, Any], db: NamedDependency[SkipValidation[asyncpg.Connection]]
) -> Principal:
    """Authenticate the request's bearer key, on the request's own connection.

    Raises:
        UnauthorizedError: no ``Authorization: Bearer`` header, or a key that is malformed, unknown or
            revoked. The message never repeats the key.
    """
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise UnauthorizedError("send an API key as 'Authorization: Bearer mr_…'")
    parsed = parse_key(token.strip())
    row = await db.fetchrow(_SELECT_KEY, parsed[0]) if parsed else None
    if parsed is None or row is None or not hmac.compare_digest(row["secret_sha256"], hash_secret(parsed[1])):
        raise UnauthorizedError("the API key is unknown or revoked")
    return Principal(
        key_id=row["id"],
        role=Role(row["role"]),
        enterprise_id=row["enterprise_id"],
        lab_id=row["lab_id"],
        region_code=row["region_code"],
    )


def refuse_labs(principal: Principal, what: str) -> None:
    """403 for a lab key: ``what`` (notices, webhooks) belong to enterprises and regulators."""
    if principal.role is Role.LAB:
        raise ForbiddenError(f"{what} belong to enterprises and regulators")


async def provide_admin(principal: NamedDependency[SkipValidation[Principal]]) -> Principal:
    """The principal, if it is an admin.

    Raises:
        ForbiddenError: any other role.
    """
    if not principal.is_admin:
        raise ForbiddenError("only an admin key may do this")
    return principal
