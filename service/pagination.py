"""Keyset pagination: ``?limit=`` and an opaque ``?cursor=``, answered as ``Page[T]``.

A cursor is the sort key of the last row served, base64url-encoded JSON. It is opaque to clients
but not secret; a tampered cursor is a 400 naming ``cursor``, never a 500.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Generic, TypeVar

import msgspec
from litestar.params import QueryParameter

from service.errors import InvalidInputError

__all__ = ("Cursor", "Limit", "Page", "decode_cursor", "encode_cursor")

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
