"""What the worker's jobs share: settings, clock, the PostgreSQL pool, the queue, the senders."""

from __future__ import annotations

import contextlib
import datetime as dt
import random
from collections.abc import AsyncIterator
from typing import cast

import asyncpg
import msgspec
from arq.connections import ArqRedis, RedisSettings, create_pool

from service.clock import Clock
from service.db import create_pool as create_db_pool
from service.deliveries.email import Mailer, SmtpConfig
from service.deliveries.webhook import WebhookClient, new_http_client
from service.settings import Settings

__all__ = ("PARALLEL_SENDS", "Runtime", "job_deserializer", "job_serializer", "open_queue")

#: Tries of one delivery job in flight at once: enough to hide a receiver's latency, few enough
#: that the job's HTTP client stays small (see :meth:`Runtime.webhook_client`).
PARALLEL_SENDS = 8

# Jobs travel as msgpack (not arq's default pickle): nothing from Redis is ever unpickled.
job_serializer = msgspec.msgpack.Encoder(enc_hook=repr).encode
job_deserializer = msgspec.msgpack.Decoder().decode


async def open_queue(settings: Settings) -> ArqRedis:
    """The arq connection that enqueues onto ``settings.queue_name``."""
    return await create_pool(
        RedisSettings.from_dsn(settings.redis_url),
        default_queue_name=settings.queue_name,
        job_serializer=job_serializer,
        job_deserializer=job_deserializer,
    )


class Runtime:
    """Opened once per worker process; the clock is injected so tests can stand on any instant."""

    def __init__(
        self,
        settings: Settings,
        clock: Clock,
        pool: asyncpg.Pool,
        queue: ArqRedis,
        mailer: Mailer,
        owns_queue: bool,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.pool = pool
        self.queue = queue
        self._idle_clients: list[WebhookClient] = []
        self._clients: list[WebhookClient] = []
        self.mailer = mailer
        self._owns_queue = owns_queue
        # Jitter only spreads retries; it decides nothing a test would assert on.
        self.rng = random.Random()  # noqa: S311

    @property
    def lease(self) -> dt.timedelta:
        """How long a dispatch or a claimed delivery is held before it is presumed lost."""
        return dt.timedelta(seconds=self.settings.dispatch_timeout_s)

    @classmethod
    async def open(cls, settings: Settings, clock: Clock, *, queue: ArqRedis | None = None) -> Runtime:
        """Open what the jobs share; ``queue``: an arq connection to borrow instead of opening one."""
        smtp = SmtpConfig.from_url(settings.smtp_url) if settings.smtp_url else None
        pool = await create_db_pool(settings, application_name="metreg-worker", role="metreg_worker")
        return cls(
            settings=settings,
            clock=clock,
            pool=pool,
            queue=queue or await open_queue(settings),
            owns_queue=queue is None,
            mailer=Mailer(smtp, sender=settings.mail_from, timeout_s=settings.send_timeout_s),
        )

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection (the pool hands out proxies that behave as connections)."""
        async with self.pool.acquire() as conn:
            yield cast(asyncpg.Connection, conn)

    @contextlib.asynccontextmanager
    async def webhook_client(self) -> AsyncIterator[WebhookClient]:
        """A webhook client for one job's sends, back to the runtime after, connections kept alive.

        Not one client for all jobs: a pool's upkeep grows with what is in flight through it
        (httpcore's, before this client, looked over every connection for each request: two thirds
        of the worker's time with 5 jobs × 64 sends on one client, when a job sent 64 at a time). A
        client per running job, with no more idle connections than the job has sends in flight
        (:data:`PARALLEL_SENDS`), keeps each pool small.
        """
        if self._idle_clients:
            client = self._idle_clients.pop()
        else:
            client = new_http_client(self.settings.send_timeout_s, connections=PARALLEL_SENDS)
            self._clients.append(client)
        try:
            yield client
        finally:
            self._idle_clients.append(client)

    async def close(self) -> None:
        for client in self._clients:
            await client.aclose()
        if self._owns_queue:  # arq's worker closes the connection it lent
            await self.queue.aclose()
        await self.pool.close()
