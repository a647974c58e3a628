"""The PostgreSQL pool and the per-request connection.

Connection state is transaction-scoped only (``SET LOCAL``, ``pg_advisory_xact_lock``): nothing a
request does may outlive its transaction on a pooled connection (design.md §7).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, cast

import asyncpg
import msgspec
from asyncpg.pool import PoolConnectionProxy
from litestar import Request
from litestar.datastructures import State

from service.errors import MetregError, UnavailableError
from service.idempotency import keep_refusal
from service.settings import Settings

__all__ = ("COMMAND_TIMEOUT_S", "Connection", "create_pool", "init_connection", "provide_connection", "provide_db")

#: Longest a statement of the pools may run before the client gives up on it (a statement that
#: waits longer on purpose, such as an Idempotency-Key's lock wait, sets its own).
COMMAND_TIMEOUT_S = 30.0

Connection = asyncpg.Connection
#: Longest a request waits for a connection (every one busy, or the server not answering a connect):
#: then it answers 503 rather than hang until the client gives up.
ACQUIRE_TIMEOUT_S = 10.0


def _encode_json(value: Any) -> str:
    return msgspec.json.encode(value).decode()


async def init_connection(conn: asyncpg.Connection) -> None:
    """Teach a new connection to speak JSON through msgspec (asyncpg returns ``str`` otherwise)."""
    for name in ("json", "jsonb"):
        await conn.set_type_codec(
            name, schema="pg_catalog", encoder=_encode_json, decoder=msgspec.json.decode, format="text"
        )


async def _keep_session(conn: asyncpg.Connection) -> None:
    """The pool's reset: nothing beyond what asyncpg always does (roll back an open transaction).

    asyncpg's default sends ``pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL`` on every
    release, a round trip per request that undoes nothing here: all connection state is
    transaction-scoped (``SET LOCAL``, ``set_config(..., true)``, ``pg_advisory_xact_lock``,
    ``ON COMMIT DROP``), and the role is the connection's own from its start. Measured here: the
    reset took ~0.25 ms a request, a third of what a read spent waiting on the database.
    """


async def create_pool(
    settings: Settings, *, application_name: str = "metreg-api", role: str = "metreg_api"
) -> asyncpg.Pool:
    """Open the pool; every session runs in UTC so that no server-side ``now()`` depends on a zone.

    Sessions run as ``role`` (``metreg_api`` or ``metreg_worker``, schema/0008_trust.sql), set at
    connection start so that the pool's reset returns to it: the API's row-level security and both
    processes' grants apply whatever login the DSN names (it must be a member of the role).
    """
    pool = await asyncpg.create_pool(
        settings.database_url,
        min_size=settings.db_pool_min,
        max_size=settings.db_pool_max,
        init=init_connection,
        reset=_keep_session,
        command_timeout=COMMAND_TIMEOUT_S,
        server_settings={"application_name": application_name, "timezone": "UTC", "role": role},
    )
    assert pool is not None
    return pool


async def _acquire(pool: asyncpg.Pool) -> asyncpg.Connection:
    try:
        # The pool hands out proxies that behave as connections; queries are typed for the latter.
        return cast(asyncpg.Connection, await pool.acquire(timeout=ACQUIRE_TIMEOUT_S))
    except (OSError, TimeoutError, asyncpg.PostgresConnectionError, asyncpg.CannotConnectNowError) as exc:
        raise UnavailableError("the database is not reachable; try again shortly") from exc


async def provide_connection(state: State) -> AsyncIterator[asyncpg.Connection]:
    """One connection for the request and no transaction: each statement commits on its own.

    For a handler whose whole work is one statement (the authenticated read,
    ``service.auth.AuthenticatedReader``), whose round trips BEGIN and COMMIT would double, and for
    one that runs transactions of its own (the calendar feed's, one of them repeatable read).
    """
    pool: asyncpg.Pool = state.db_pool
    conn = await _acquire(pool)
    try:
        yield conn
    finally:
        await pool.release(cast(PoolConnectionProxy, conn))


async def provide_db(request: Request[Any, Any, Any], state: State) -> AsyncIterator[asyncpg.Connection]:
    """One connection and one transaction for the whole request.

    Acquire and transaction live in a single generator because Litestar tears yield dependencies
    down concurrently (stack.md §1.3): split in two, the connection could be released while COMMIT
    is in flight. Commit happens before the response is sent; a raised error rolls back, except a
    refusal (4xx) of a request holding an ``Idempotency-Key``: its work is rolled back, but the
    refusal is committed as the key's answer (``service.idempotency.keep_refusal``) before the
    error goes on to its exception handler.
    """
    pool: asyncpg.Pool = state.db_pool
    conn = await _acquire(pool)
    try:
        async with conn.transaction():
            try:
                yield conn
            except MetregError as exc:
                if not await keep_refusal(request, exc):
                    raise
    finally:
        await pool.release(cast(PoolConnectionProxy, conn))
