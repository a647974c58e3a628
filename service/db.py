"""The PostgreSQL pool and the per-request connection.

Connection state is transaction-scoped only (``SET LOCAL``, ``pg_advisory_xact_lock``): nothing a
request does may outlive its transaction on a pooled connection (design.md §7).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, cast

import asyncpg
import msgspec
from litestar import Request
from litestar.datastructures import State

from service.errors import MetregError, UnavailableError
from service.idempotency import keep_refusal
from service.settings import Settings

__all__ = (
    "COMMAND_TIMEOUT_S",
    "Connection",
    "FairPool",
    "create_pool",
    "init_connection",
    "provide_connection",
    "provide_db",
)

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


class FairPool:
    """asyncpg's pool, its connections handed out in the order they were asked for.

    asyncpg queues waiters on an ``asyncio.Queue``, where a connection put back for the first
    waiter can be taken by a newcomer before that waiter runs; the waiter then queues again at the
    back (MagicStack/asyncpg#1247). With more requests in flight than connections, as at the
    bench's 32 clients on a pool of 10, some requests lost that race several times over: reads'
    p99 was 4 to 6 times their median, where the bare handler's was under 2 (make bench,
    "Instrument read p99"). Here a request first takes a turn from a semaphore as large as the
    pool, and asyncio's semaphore gives a released turn to its first waiter, newcomers queueing
    behind it; at most ``max_size`` requests then ask asyncpg at once, and each finds a connection
    free or being put back.

    Every connection the API takes goes through :meth:`acquire`: one taken from :attr:`pool`
    directly would jump the queue.
    """

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self._turns = asyncio.Semaphore(pool.get_max_size())

    @asynccontextmanager
    async def acquire(self, *, wait_s: float = ACQUIRE_TIMEOUT_S) -> AsyncIterator[asyncpg.Connection]:
        """A connection until the block ends, after those asked for before it.

        Raises:
            UnavailableError: none came within ``wait_s`` seconds (every one busy, or the server
                not answering a connect).
        """
        try:
            async with asyncio.timeout(wait_s):
                await self._turns.acquire()
                try:
                    proxy = await self.pool.acquire()
                except BaseException:
                    self._turns.release()
                    raise
        except (OSError, TimeoutError, asyncpg.PostgresConnectionError, asyncpg.CannotConnectNowError) as exc:
            raise UnavailableError("the database is not reachable; try again shortly") from exc
        try:
            # The pool hands out proxies that behave as connections; queries are typed for the latter.
            yield cast(asyncpg.Connection, proxy)
        finally:
            try:
                await self.pool.release(proxy)
            finally:
                self._turns.release()

    async def close(self) -> None:
        await self.pool.close()


async def provide_connection(state: State) -> AsyncIterator[asyncpg.Connection]:
    """One connection for the request and no transaction: each statement commits on its own.

    For a handler that runs transactions of its own (the calendar feed's, one of them repeatable
    read).
    """
    pool: FairPool = state.db_pool
    async with pool.acquire() as conn:
        yield conn


async def provide_db(request: Request[Any, Any, Any], state: State) -> AsyncIterator[asyncpg.Connection]:
    """One connection and one transaction for the whole request.

    Acquire and transaction live in a single generator because Litestar tears yield dependencies
    down concurrently (stack.md §1.3): split in two, the connection could be released while COMMIT
    is in flight. Commit happens before the response is sent; a raised error rolls back, except a
    refusal (4xx) of a request holding an ``Idempotency-Key``: its work is rolled back, but the
    refusal is committed as the key's answer (``service.idempotency.keep_refusal``) before the
    error goes on to its exception handler.
    """
    pool: FairPool = state.db_pool
    async with pool.acquire() as conn, conn.transaction():
        try:
            yield conn
        except MetregError as exc:
            if not await keep_refusal(request, exc):
                raise
