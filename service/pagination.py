"""Keyset pagination: ``?limit=`` and an opaque ``?cursor=``, answered as ``Page[T]``.

A cursor is the sort key of the last row served, base64url-encoded JSON. It is opaque to clients
but not secret; a tampered cursor is a 400 naming ``cursor``, never a 500.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import Annotated, Any, Generic, TypeVar

import msgspec
from litestar.params import QueryParameter

from service.errors import InvalidInputError

__all__ = ("Cursor", "Limit", "Page", "Params", "decode_cursor", "encode_cursor", "split_page")

T = TypeVar("T")
C = TypeVar("C")

Limit = Annotated[int, QueryParameter(ge=1, le=500, description="Items per page (1–500).")]
Cursor = Annotated[
    str | None,
    QueryParameter(max_length=512, description="`next_cursor` of the previous page; omit for the first."),
]


class Page(msgspec.Struct, Generic[T], kw_only=True):
    """One page of a list, and where the next one starts (null on the last page)."""

    items: list[T]
    next_cursor: str | None = None


def encode_cursor(key: msgspec.Struct) -> str:
    """Encode the sort key of the last row served."""
    return base64.urlsafe_b64encode(msgspec.json.encode(key)).rstrip(b"=").decode()


def split_page(rows: list[T], limit: int, key: Callable[[T], msgspec.Struct]) -> tuple[list[T], str | None]:
    """The page among ``limit + 1`` fetched rows, and the cursor after its last row (None: no more)."""
    if len(rows) <= limit:
        return rows, None
    page = rows[:limit]
    return page, encode_cursor(key(page[-1]))


class Params:
    """Positional parameters of a query built piece by piece: ``params(value)`` adds ``value`` and
    returns its placeholder (``$3``); ``params.values`` are the arguments in order."""

    def __init__(self, *values: Any) -> None:
        self.values = list(values)

    def __call__(self, value: Any) -> str:
        self.values.append(value)
        return f"${len(self.values)}"


def decode_cursor(cursor: str, shape: type[C]) -> C:
    """Decode a cursor made by :func:`encode_cursor` for a key of type ``shape``.

    Raises:
        InvalidInputError: naming ``cursor`` when it was not made by this API for this list.
    """
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        return msgspec.json.decode(raw, type=shape)
    except (binascii.Error, ValueError, msgspec.DecodeError):
        raise InvalidInputError.for_field("cursor", "is not a cursor this list produced") from None
