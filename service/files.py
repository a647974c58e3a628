"""Answers written whole before they are sent (an XLSX, a calendar read in one snapshot): kept in a
temporary file and sent from it in chunks, so that the client's pace holds neither memory nor a
database connection."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterable, AsyncIterator
from typing import IO, Final

__all__ = ("file_chunks", "spooled")

_CHUNK: Final = 256 * 1024


async def spooled(chunks: AsyncIterable[bytes], *, in_memory: int) -> IO[bytes]:
    """A temporary file holding ``chunks``, in memory up to ``in_memory`` bytes and on disk beyond
    (gone when closed, as :func:`file_chunks` does)."""
    file = tempfile.SpooledTemporaryFile(max_size=in_memory)  # noqa: SIM115  # closed by the stream that sends it
    try:
        async for chunk in chunks:
            await asyncio.to_thread(file.write, chunk)
    except BaseException:
        file.close()
        raise
    return file


async def file_chunks(file: IO[bytes]) -> AsyncIterator[bytes]:
    """``file`` from its start, a chunk at a time; closed at its end or when the client goes."""
    try:
        await asyncio.to_thread(file.seek, 0)
        while chunk := await asyncio.to_thread(file.read, _CHUNK):
            yield chunk
    finally:
        file.close()
