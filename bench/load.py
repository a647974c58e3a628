"""A load generator: N keep-alive HTTP/1.1 connections, each sending its next request as soon as the
previous answer is in, for a fixed time; counts answers by status and keeps every latency.

Written on raw asyncio protocols (not an HTTP client library) so that the client spends a few
microseconds a request and the server, not the client, is what is measured. It understands what
the servers under test send: a status line, headers and a ``Content-Length`` body.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import cast

import msgspec

__all__ = ("LoadResult", "percentile", "request_bytes", "run_load")


def request_bytes(host: str, path: str, headers: dict[str, str] | None = None) -> bytes:
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}", *(f"{k}: {v}" for k, v in (headers or {}).items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile of ``values`` (0 for none)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    # The rank rounded to 1e-9 first: 0.99 * 100 is 99.00000000000001 in floating point.
    rank = math.ceil(round(fraction * len(ordered), 9))
    return ordered[min(len(ordered), max(1, rank)) - 1]


class LoadResult(msgspec.Struct, frozen=True, kw_only=True):
    connections: int
    seconds: float
    responses: int
    statuses: dict[int, int]
    """Answers by HTTP status."""
    errors: int
    """Connections lost or answers that could not be read (each ends that connection's run)."""
    rps: float
    p50_ms: float
    p99_ms: float


class _Connection(asyncio.Protocol):
    """One keep-alive connection: ``exchange(request)`` sends it and waits for the whole answer."""

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._waiter: asyncio.Future[int] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not subclasses of asyncio's, only alike.
        self._transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc or ConnectionResetError("the server closed the connection"))

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if self._waiter is None or self._waiter.done():
            return
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        try:
            status, length = _parse_head(bytes(self._buffer[:end]))
        except ValueError as exc:
            self._waiter.set_exception(exc)
            return
        if len(self._buffer) < end + 4 + length:
            return
        del self._buffer[: end + 4 + length]
        self._waiter.set_result(status)

    async def exchange(self, request: bytes) -> int:
        assert self._transport is not None
        self._waiter = asyncio.get_running_loop().create_future()
        self._transport.write(request)
        return await self._waiter

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


def _parse_head(head: bytes) -> tuple[int, int]:
    lines = head.split(b"\r\n")
    if not lines[0].startswith(b"HTTP/1.1 "):
        raise ValueError(f"not an HTTP/1.1 answer: {lines[0][:40]!r}")
    status = int(lines[0][9:12])
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        lowered = name.strip().lower()
        if lowered == b"content-length":
            return status, int(value)
        if lowered == b"transfer-encoding":
            raise ValueError("chunked answers are not supported by this load generator")
    return status, 0


async def run_load(
    host: str, port: int, requests: Sequence[bytes], *, connections: int = 32, seconds: float = 10.0
) -> LoadResult:
    """Send ``requests`` round-robin over ``connections`` connections for ``seconds``.

    Every answer that arrives before the end counts, whatever its status; a connection that breaks
    counts one error and stops (the run goes on with the others).
    """
    loop = asyncio.get_running_loop()
    shared: Iterator[bytes] = itertools.cycle(requests)
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    errors = 0
    opened = [
        (await loop.create_connection(_Connection, host, port))[1] for _ in range(connections)
    ]  # all connected before the clock starts
    started = time.perf_counter()
    deadline = started + seconds

    async def client(conn: _Connection) -> None:
        nonlocal errors
        clock = time.perf_counter
        try:
            while (sent := clock()) < deadline:
                status = await conn.exchange(next(shared))
                latencies.append(clock() - sent)
                statuses[status] += 1
        except (OSError, ValueError):
            errors += 1

    try:
        await asyncio.gather(*(client(c) for c in opened))
    finally:
        for conn in opened:
            conn.close()
    elapsed = time.perf_counter() - started
    return LoadResult(
        connections=connections,
        seconds=elapsed,
        responses=len(latencies),
        statuses=dict(sorted(statuses.items())),
        errors=errors,
        rps=len(latencies) / elapsed,
        p50_ms=percentile(latencies, 0.50) * 1000,
        p99_ms=percentile(latencies, 0.99) * 1000,
    )
