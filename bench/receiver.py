"""A local webhook receiver for the delivery figure: answers every POST 200 at once and counts them.

On asyncio protocols in the bench's own event loop (which only waits for the worker meanwhile), so
that it answers far faster than one worker delivers and the figure is the worker's.
"""

from __future__ import annotations

import asyncio
import time
from typing import cast

__all__ = ("Receiver",)

_OK = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"


class Receiver:
    """``async with Receiver() as r``: ``r.url`` to post to; ``r.received``, ``r.first``, ``r.last``."""

    def __init__(self) -> None:
        self.received = 0
        self.first: float | None = None
        self.last: float | None = None
        self.url = ""
        self._server: asyncio.Server | None = None

    def _count(self) -> None:
        now = time.perf_counter()
        self.received += 1
        self.first = self.first or now
        self.last = now

    async def __aenter__(self) -> Receiver:
        receiver = self

        class Handler(asyncio.Protocol):
            def __init__(self) -> None:
                self.buffer = bytearray()
                self.transport: asyncio.Transport | None = None

            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                # uvloop's transports are not subclasses of asyncio's, only alike.
                self.transport = cast(asyncio.Transport, transport)

            def data_received(self, data: bytes) -> None:
                self.buffer += data
                while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
                    length = 0
                    for line in bytes(self.buffer[:end]).split(b"\r\n")[1:]:
                        name, _, value = line.partition(b":")
                        if name.strip().lower() == b"content-length":
                            length = int(value)
                    if len(self.buffer) < end + 4 + length:
                        return
                    del self.buffer[: end + 4 + length]
                    receiver._count()
                    assert self.transport is not None
                    self.transport.write(_OK)

        self._server = await asyncio.get_running_loop().create_server(Handler, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/hooks/metreg"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()
