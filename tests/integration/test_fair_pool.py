"""The API's pool hands connections out first come, first served, and a read holds one only while
its statement runs (service.db.FairPool, service.auth.AuthenticatedReader)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import asyncpg
import pytest

from service.auth import AuthenticatedReader, Role, hash_secret, parse_key
from service.db import FairPool, create_pool
from service.errors import UnavailableError
from service.settings import Settings
from tests.conftest import NOW, mint


@pytest.fixture
async def single(database_url: str) -> AsyncIterator[FairPool]:
    """A pool of one connection: every other asker waits."""
    pool = FairPool(
        await create_pool(Settings(database_url=database_url, db_pool_min=1, db_pool_max=1, log_level="WARNING"))
    )
    try:
        yield pool
    finally:
        await pool.close()


async def _settle() -> None:
    """Let every task that can run do so until it waits."""
    for _ in range(10):
        await asyncio.sleep(0)


async def test_a_released_connection_goes_to_the_first_waiter_not_to_a_newcomer(single: FairPool) -> None:
    """While two requests wait, new ones keep arriving, one on every turn of the event loop, as on
    a busy server: when the connection comes back, those who waited get it first, in the order they
    asked. (asyncpg's own queue lets a newcomer that runs between the connection's return and the
    first waiter's wake-up take it, and the waiter queues again at the back: MagicStack/asyncpg#1247.)"""
    served: list[str] = []
    arrived: list[asyncio.Task[None]] = []

    async def ask(name: str) -> None:
        async with single.acquire():
            served.append(name)

    async def keep_arriving() -> None:
        while len(served) < 2:
            arrived.append(asyncio.create_task(ask(f"newcomer {len(arrived)}")))
            await asyncio.sleep(0)

    async with single.acquire():
        waiters = [asyncio.create_task(ask(name)) for name in ("first", "second")]
        await _settle()
        assert served == []
        arriving = asyncio.create_task(keep_arriving())
        await _settle()
    await asyncio.gather(*waiters, arriving)
    await asyncio.gather(*arrived)
    assert served[:2] == ["first", "second"]
    assert served[2:] == [f"newcomer {i}" for i in range(len(arrived))]


async def test_a_wait_that_times_out_is_a_503_and_leaves_its_turn_to_the_next(single: FairPool) -> None:
    async with single.acquire():
        with pytest.raises(UnavailableError) as refused:
            async with single.acquire(wait_s=0.01):
                pytest.fail("the only connection is held")
        assert isinstance(refused.value.__cause__, TimeoutError)
    # The timed-out wait took nothing with it: the connection is free for the next asker.
    async with single.acquire(wait_s=5) as conn:
        assert await conn.fetchval("SELECT 1") == 1


async def test_a_cancelled_waiter_leaves_no_turn_behind(single: FairPool) -> None:
    async with single.acquire():
        waiting = asyncio.create_task(single.acquire().__aenter__())
        await _settle()
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
    async with single.acquire(wait_s=5) as conn:
        assert await conn.fetchval("SELECT 1") == 1


async def test_a_connection_that_cannot_be_made_gives_its_turn_back() -> None:
    """asyncpg fails to connect (here nothing listens): the request is a 503 at once, and its turn
    goes back, so the next request meets the same refusal at once too instead of waiting its whole
    time for a turn nobody will ever return."""
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    unreachable = FairPool(
        await asyncpg.create_pool(f"postgresql://postgres@127.0.0.1:{port}/none", min_size=0, max_size=1)
    )
    try:
        for _ in range(3):
            with pytest.raises(UnavailableError) as refused:
                async with unreachable.acquire(wait_s=2):
                    pytest.fail("nothing listens")
            assert isinstance(refused.value.__cause__, ConnectionRefusedError), refused.value.__cause__
    finally:
        await unreachable.close()


async def test_a_read_holds_its_connection_only_while_it_runs(single: FairPool, pool: asyncpg.Pool) -> None:
    """The reader takes the connection for its statement, or for its transaction's block, and gives
    it back before the answer is built: a handler that is still building holds none."""
    parsed = parse_key(await mint(pool, Role.ADMIN))
    assert parsed is not None
    reader = AuthenticatedReader(single, (parsed[0], hash_secret(parsed[1])), NOW, ("request", "test"))

    principal, _ = await reader.fetchrow("SELECT id FROM enterprises LIMIT 1")
    assert principal.role is Role.ADMIN
    async with single.acquire(wait_s=0.01) as conn:  # free again: the read gave it back
        assert await conn.fetchval("SELECT 1") == 1

    async with reader.transaction("SELECT id FROM enterprises LIMIT 1") as (principal, _, db):
        assert db.is_in_transaction()
        with pytest.raises(UnavailableError):  # held for the block
            async with single.acquire(wait_s=0.01):
                pytest.fail("the block holds the only connection")
    async with single.acquire(wait_s=0.01) as conn:
        assert not conn.is_in_transaction()
