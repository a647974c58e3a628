"""API keys, the principal behind a request, and what each role may do.

A key looks like ``mr_<prefix>_<secret>``. The prefix finds the row; only the SHA-256 of the
secret is stored (the secret is 256 random bits, so a slow hash would add nothing). Scope rules
(design.md §5): an admin sees everything; an enterprise key one enterprise; a lab key one lab; a
regulator key every enterprise whose region code starts with its prefix. Outside its scope a
resource is reported as absent (404), an action the role may never take as 403.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import secrets
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import msgspec
from litestar import Request
from litestar.di import NamedDependency
from litestar.params import SkipValidation

from service import idempotency
from service.clock import Clock
from service.db import FairPool
from service.errors import ForbiddenError, UnauthorizedError

__all__ = (
    "AuthenticatedReader",
    "Principal",
    "Role",
    "act_as",
    "act_as_calendar",
    "act_as_public",
    "bearer_token",
    "hash_secret",
    "mint_key",
    "parse_key",
    "provide_admin",
    "provide_principal",
    "provide_reader",
    "refuse_labs",
    "request_context",
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


def bearer_token(authorization: str) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header value; None for any other."""
    scheme, _, token = authorization.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def parse_key(key: str) -> tuple[str, str] | None:
    """Split ``mr_<prefix>_<secret>`` into prefix and secret; None when it is not of that shape."""
    scheme, _, rest = key.partition("_")
    prefix, _, secret = rest.partition("_")
    if scheme != KEY_SCHEME or len(prefix) != 12 or not secret or len(key) > 200:
        return None
    return prefix, secret


# One round trip authenticates, records use (at most once a minute, skipping a row another request
# is touching) and makes the key the transaction's principal for row-level security and the audit
# trail (schema/0008_trust.sql). The hash is compared in SQL: it is the digest of 256 random bits,
# so its comparison leaks nothing worth timing.
# The key's row made the transaction's principal ($3: now, $4: request id, $5: action).
_PRINCIPAL = """set_config('metreg.key_id', id::text, true),
           set_config('metreg.role', role, true),
           set_config('metreg.enterprise_id', coalesce(enterprise_id::text, ''), true),
           set_config('metreg.lab_id', coalesce(lab_id::text, ''), true),
           set_config('metreg.region_code', coalesce(region_code, ''), true),
           set_config('metreg.request_id', $4, true),
           set_config('metreg.action', $5, true),
           set_config('metreg.now', $3::timestamptz::text, true)"""
_KEY = """SELECT id, role, enterprise_id, lab_id, region_code{principal} FROM api_keys
        WHERE prefix = $1 AND secret_sha256 = $2 AND revoked_at IS NULL
          AND (expires_at IS NULL OR expires_at > $3::timestamptz)"""
_USED = """used AS (
        UPDATE api_keys SET last_used_at = $3
        WHERE id = (SELECT k.id FROM api_keys k JOIN key USING (id)
                    WHERE k.last_used_at IS NULL OR k.last_used_at < $3 - interval '1 minute'
                    FOR NO KEY UPDATE OF k SKIP LOCKED)
    )"""
_AUTHENTICATE = f"""
    WITH key AS ({_KEY.format(principal="")}), {_USED}
    SELECT id, role, enterprise_id, lab_id, region_code, {_PRINCIPAL}
    FROM key
"""


# The same authentication as _AUTHENTICATE and a read as the key's principal, in one statement
# outside any transaction block: for a read, BEGIN and COMMIT are two of its four round trips.
# set_config(..., true) then lasts as long as the statement's own implicit transaction, so nothing
# outlives it on the pooled connection. The read sees the principal because it is the inner side
# of a nested loop over the key: LATERAL (kept a subquery by OFFSET 0) makes it a function of the
# key's row, which is computed, set_config calls included, before the read first runs. Were that
# order ever broken, the read would run with no principal and row-level security would show it
# nothing: it fails closed.
_AUTHENTICATED_READ = f"""
    WITH key AS MATERIALIZED ({_KEY.format(principal=f", concat({_PRINCIPAL}) AS principal")}), {_USED}
    SELECT r.*, key.id AS key_id, key.role AS key_role, key.enterprise_id AS key_enterprise_id,
           key.lab_id AS key_lab_id, key.region_code AS key_region_code
    FROM key LEFT JOIN LATERAL (SELECT * FROM ({{read}}) wanted WHERE key.principal IS NOT NULL OFFSET 0) r ON true
"""


class AuthenticatedReader:
    """The request's key, checked for shape but not yet looked up, and the pool: :meth:`fetchrow`
    authenticates and reads in one round trip, :meth:`transaction` does so at the start of a
    transaction that further reads then share. Each holds a connection only while it runs, not
    while the answer is built and sent: fewer requests wait for one.

    For a handler that reads and writes nothing (``GET /v1/instruments/{id}``, a register page):
    asking for ``reader`` instead of ``principal`` authenticates as surely, since the reader
    offers no read but the authenticated ones.
    """

    def __init__(self, pool: FairPool, key: tuple[str, bytes], now: dt.datetime, context: tuple[str, str]):
        self._pool = pool
        self._key = key
        self._now = now
        self._context = context

    @property
    def now(self) -> dt.datetime:
        """The instant the key is checked at (the request's clock reading)."""
        return self._now

    async def fetchrow(self, read: str, *args: Any) -> tuple[Principal, asyncpg.Record | None]:
        """The principal and the row ``read`` returns as that principal (None: no row it may see).

        ``read`` is one SELECT of at most one row whose first column is never null (an id); its
        placeholders start at ``$6`` (``$1``–``$5`` are the key's). Its columns come first in the
        record, in its order, then ``key_*``.

        Raises:
            UnauthorizedError: a key that is unknown, expired or revoked.
        """
        async with self._pool.acquire() as db:
            return await self._fetchrow(db, read, *args)

    async def _fetchrow(self, db: asyncpg.Connection, read: str, *args: Any) -> tuple[Principal, asyncpg.Record | None]:
        record = await db.fetchrow(
            _AUTHENTICATED_READ.format(read=read), self._key[0], self._key[1], self._now, *self._context, *args
        )
        if record is None:
            raise UnauthorizedError("the API key is unknown, expired or revoked")
        principal = Principal(
            key_id=record["key_id"],
            role=Role(record["key_role"]),
            enterprise_id=record["key_enterprise_id"],
            lab_id=record["key_lab_id"],
            region_code=record["key_region_code"],
        )
        return principal, None if record[0] is None else record

    @asynccontextmanager
    async def transaction(
        self, read: str, *args: Any, setup: str = ""
    ) -> AsyncIterator[tuple[Principal, asyncpg.Record | None, asyncpg.Connection]]:
        """A transaction that starts with :meth:`fetchrow`'s authenticated read: the principal, the
        row, and the connection, whose further statements run as the principal until the block
        ends (COMMIT; ROLLBACK when it raises).

        ``setup`` is statements without parameters (``SET LOCAL`` planner settings) sent with BEGIN
        in one round trip: in force when the later statements are planned, as a setting made by a
        statement never is for that statement itself.

        Raises:
            UnauthorizedError: a key that is unknown, expired or revoked.
        """
        async with self._pool.acquire() as db:
            await db.execute(f"BEGIN; {setup}" if setup else "BEGIN")
            try:
                # The key's settings are transaction-local (set_config(..., true)): inside this
                # block they last until COMMIT, as provide_principal's do.
                principal, record = await self._fetchrow(db, read, *args)
                yield principal, record, db
            except BaseException:
                if not db.is_closed():
                    await db.execute("ROLLBACK")
                raise
            await db.execute("COMMIT")


def _presented_key(request: Request[Any, Any, Any]) -> tuple[str, str]:
    """The prefix and secret of the request's bearer key.

    Raises:
        UnauthorizedError: no ``Authorization: Bearer`` header, or a key that is malformed.
    """
    token = bearer_token(request.headers.get("authorization", ""))
    if token is None:
        raise UnauthorizedError("send an API key as 'Authorization: Bearer mr_…'")
    parsed = parse_key(token)
    if parsed is None:
        raise UnauthorizedError("the API key is unknown, expired or revoked")
    return parsed


async def provide_reader(request: Request[Any, Any, Any]) -> AuthenticatedReader:
    """The request's :class:`AuthenticatedReader` on the app's pool.

    The clock comes from the app's state, not as the ``clock`` dependency: two dependencies at one
    level are resolved in a task group of their own, a task apiece (under cProfile, about a tenth
    of a read's time).

    Raises:
        UnauthorizedError: no ``Authorization: Bearer`` header, or a malformed key (before any query).
    """
    prefix, secret = _presented_key(request)
    state = request.app.state
    clock: Clock = state.clock
    return AuthenticatedReader(state.db_pool, (prefix, hash_secret(secret)), clock.now(), request_context(request))


def request_context(request: Request[Any, Any, Any]) -> tuple[str, str]:
    """The request id and the operation, as the audit trail names them."""
    request_id = str(request.scope.get("state", {}).get("request_id", ""))
    operation = request.route_handler.operation_id
    return request_id, operation if isinstance(operation, str) else request.route_handler.handler_name


async def provide_principal(
    request: Request[Any, Any, Any],
    db: NamedDependency[SkipValidation[asyncpg.Connection]],
    clock: NamedDependency[SkipValidation[Clock]],
) -> Principal:
    """Authenticate the request's bearer key on the request's own connection and make it the
    transaction's principal; then claim the request's ``Idempotency-Key``, if it is a write that
    sent one (``service.idempotency.claim``).

    Raises:
        UnauthorizedError: no ``Authorization: Bearer`` header, or a key that is malformed, unknown,
            expired or revoked. The message never repeats the key.
        MetregError, IdempotentReplay: what ``service.idempotency.claim`` raises.
    """
    parsed = _presented_key(request)
    now = clock.now()
    row = await db.fetchrow(_AUTHENTICATE, parsed[0], hash_secret(parsed[1]), now, *request_context(request))
    if row is None:
        raise UnauthorizedError("the API key is unknown, expired or revoked")
    # Every write of the API authenticates here, on its own transaction: the one place where its
    # Idempotency-Key, which belongs to this key, can be claimed before the handler runs.
    await idempotency.claim(request, db, now)
    return Principal(
        key_id=row["id"],
        role=Role(row["role"]),
        enterprise_id=row["enterprise_id"],
        lab_id=row["lab_id"],
        region_code=row["region_code"],
    )


async def act_as(
    db: asyncpg.Connection, principal: Principal, *, request_id: str, action: str, now: dt.datetime
) -> None:
    """Make ``principal`` the principal of the transaction ``db`` is in, as :func:`provide_principal`
    does for the request's own transaction.

    For work that outlives the request's transaction (a streamed response reads after the handler
    has committed): the settings are transaction-local, so a new transaction starts with none and
    row-level security shows it nothing until this runs.
    """
    await db.execute(
        """SELECT set_config('metreg.key_id', $1, true), set_config('metreg.role', $2, true),
                  set_config('metreg.enterprise_id', $3, true), set_config('metreg.lab_id', $4, true),
                  set_config('metreg.region_code', $5, true), set_config('metreg.request_id', $6, true),
                  set_config('metreg.action', $7, true), set_config('metreg.now', $8, true)""",
        str(principal.key_id),
        principal.role.value,
        str(principal.enterprise_id or ""),
        str(principal.lab_id or ""),
        principal.region_code or "",
        request_id,
        action,
        now.isoformat(),
    )


async def act_as_public(db: asyncpg.Connection, lab_id: uuid.UUID, number: str) -> None:
    """Make an anonymous certificate check the transaction's principal: row-level security then
    shows it that one document, what supersedes it, its instrument and enterprise, and nothing else."""
    await db.execute(
        """SELECT set_config('metreg.role', 'public', true), set_config('metreg.lab_id', $1::text, true),
                  set_config('metreg.number', $2, true)""",
        str(lab_id),
        number,
    )


async def act_as_calendar(db: asyncpg.Connection, token_sha256: bytes, request_id: str, now: dt.datetime) -> None:
    """Make a calendar feed's read the transaction's principal: row-level security then shows it
    the enterprise of the standing feed whose token hashes to ``token_sha256``, and that
    enterprise's instruments, nothing else (schema/0011_calendar_feeds.sql)."""
    await db.execute(
        """SELECT set_config('metreg.role', 'calendar', true), set_config('metreg.calendar_token', $1, true),
                  set_config('metreg.request_id', $2, true), set_config('metreg.action', 'GetCalendarFeed', true),
                  set_config('metreg.now', $3::timestamptz::text, true)""",
        token_sha256.hex(),
        request_id,
        now,
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
