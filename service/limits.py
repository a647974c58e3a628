"""Abuse limits at the door: per-key and per-address rate limits, and slow request bodies.

Rate limits are token buckets in Redis, shared by every API process: each key (by its public
prefix, so that a flood of wrong secrets for one key is limited too) may make ``rate_burst``
requests at once and ``rate_limit`` a second on average; the public certificate check is limited
the same way per client address. Time comes from the injected clock. If Redis does not answer
within a few milliseconds the request goes through: a limit protects the service, and failing
closed would turn a Redis outage into an API outage.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Any

from litestar.exceptions import HTTPException
from litestar.types import Receive, ReceiveMessage
from redis.exceptions import RedisError

from service.clock import Clock

__all__ = ("RateLimiter", "SlowClientError", "receive_in_time")

log = logging.getLogger("metreg.limits")

# KEYS[1]: the bucket; ARGV: rate (tokens a second), burst, now (ms). Answers {1, 0} when a token
# was taken, else {0, milliseconds until one will be there}. A clock that steps back refills nothing.
_TAKE = """
local rate, burst, now = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens, at = tonumber(state[1]) or burst, tonumber(state[2]) or now
if now > at then
    tokens = math.min(burst, tokens + (now - at) * rate / 1000)
    at = now
end
local taken, wait = 0, 0
if tokens >= 1 then
    tokens = tokens - 1
    taken = 1
else
    wait = math.ceil((1 - tokens) * 1000 / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(at))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst * 1000 / rate) + 1000)
return {taken, wait}
"""
_REDIS_BUDGET_S = 0.05
_WARN_EVERY_S = 60.0


class RateLimiter:
    """Token buckets in Redis, named ``<namespace>:<bucket>``."""

    def __init__(self, redis: Any, clock: Clock, namespace: str) -> None:
        self._take = redis.register_script(_TAKE)
        self._clock = clock
        self._namespace = namespace
        self._warned_at = -math.inf

    async def retry_after(self, bucket: str, rate: float, burst: int) -> int | None:
        """Take a token from ``bucket``: None when one was there, else whole seconds to wait (≥ 1)."""
        now_ms = int(self._clock.now().timestamp() * 1000)
        try:
            async with asyncio.timeout(_REDIS_BUDGET_S):
                taken, wait_ms = await self._take(keys=[f"{self._namespace}:{bucket}"], args=[rate, burst, now_ms])
        except (TimeoutError, OSError, RedisError) as exc:
            # time.monotonic only paces this warning; it decides nothing.
            if time.monotonic() - self._warned_at > _WARN_EVERY_S:
                self._warned_at = time.monotonic()
                log.warning("rate limits are not applied: Redis did not answer (%s)", type(exc).__name__)
            return None
        return None if int(taken) else max(1, math.ceil(int(wait_ms) / 1000))


class SlowClientError(HTTPException):
    status_code = 408
    detail = "the request body did not arrive in time"


def receive_in_time(receive: Receive, timeout_s: float) -> Receive:
    """``receive`` that gives each part of the request body ``timeout_s`` to arrive (then 408).

    Once the body is complete the wait is no longer bounded: what follows is the wait for the
    client to disconnect, which is not the client's delay.
    """
    complete = False

    async def bounded() -> ReceiveMessage:
        nonlocal complete
        if complete:
            return await receive()
        try:
            async with asyncio.timeout(timeout_s):
                message = await receive()
        except TimeoutError:
            raise SlowClientError from None
        if message["type"] != "http.request" or not message.get("more_body", False):
            complete = True
        return message

    return bounded
