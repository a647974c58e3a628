"""Keyset pagination: ``?limit=`` and an opaque ``?cursor=``, answered as ``Page[T]``.

A cursor is the sort key of the last row served, base64url-encoded JSON. It is opaque to clients
but not secret; a tampered cursor is a 400 naming ``cursor``, never a 500.

Every list has an index in its page order for its scope (an enterprise's, a lab's, an
instrument's rows, or everyone's, which a regulator's lists walk keeping its region's, or gather
where its region holds too few: :func:`walks_for_region`); the audit trail's filters and the API
keys' scopes have theirs (a time span of the trail: bounds of one), so a page reads the rows it
returns and stops: :func:`read_in_page_order` keeps PostgreSQL to that plan
(tests/integration/test_list_plans.py).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import Annotated, Any, Generic, TypeVar

import asyncpg
import msgspec
from litestar.params import QueryParameter

from service.errors import InvalidInputError

__all__ = (
    "FOR_ITS_VALUES",
    "PAGE_ORDER",
    "Cursor",
    "Limit",
    "Page",
    "Params",
    "decode_cursor",
    "encode_cursor",
    "read_in_page_order",
    "split_page",
    "walks_for_region",
)

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


# What read_in_page_order sets, as statements of their own (no parameters): the register sends
# them with BEGIN (service.instruments.access.readable_register).
PAGE_ORDER = (
    "SET LOCAL enable_bitmapscan = off; SET LOCAL enable_sort = off; SET LOCAL jit = off; "
    "SET LOCAL max_parallel_workers_per_gather = 0"
)


#: What a page read that gathers its scope's rows and sorts them sets (:func:`walks_for_region`):
#: the misestimate that prices a walk as a whole index draws JIT and workers to a sort too.
GATHER = "SET LOCAL jit = off; SET LOCAL max_parallel_workers_per_gather = 0"


_NO_BITMAPS = "SET LOCAL enable_bitmapscan = off"

#: What a page read planned for its values on every run sets (:func:`read_in_page_order`).
FOR_ITS_VALUES = "SET LOCAL plan_cache_mode = force_custom_plan"


async def read_in_page_order(
    db: asyncpg.Connection, *, walk: bool = True, for_its_values: bool = False, bitmaps: bool = True
) -> None:
    """Steer the rest of the transaction's reads to an index scan in page order: for a list whose
    page read is the last statement of its transaction, and whose filters have no index narrower
    than the one in page order (the read would walk that one, filtering, where the planner would
    rather sort the few rows the narrower index finds).

    Row-level security's policies are functions of the principal's settings, which PostgreSQL
    cannot see through when it plans: it expects a handful of visible rows, and then prefers to
    read every row of the scope and sort them over walking the ordered index until the page is
    full. The plan it keeps from a statement's sixth run on a connection (generic, for any values)
    does the same, so bitmap scans and sorts go. The same estimate prices the walk as if it read
    the whole index, which draws JIT and parallel workers to a page read: an admin's page of
    notices, 0.2 ms in order, spent 8 to 70 ms compiling, and a regulator's page of the audit
    trail 20 ms starting two workers for a 0.3 ms walk. Both go too. Figures: bench/explain_lists.py.

    ``walk=False`` keeps only JIT and parallel workers off, for a page that is cheaper gathered
    and sorted (:func:`walks_for_region`); with ``bitmaps=False``, bitmap scans too, for a
    gathered page whose own index a bitmap would AND with the primary key's below the cursor
    (the audit trail's region: every row below the cursor read).

    ``for_its_values``: plan the read for its values on every run, not once for any values from
    the sixth run on. For a filter on a column of a few values, one of which fills most of the
    table (the audit trail's action and entity): a plan for any value expects one of a few, so a
    large share of the rows, and walks the scope's index for it, reading most of the table for a
    rare one. Planned for the value, the rare one is read from the filter's own index.
    """
    settings = [PAGE_ORDER if walk else GATHER]
    if not walk and not bitmaps:
        settings.append(_NO_BITMAPS)
    if for_its_values:
        settings.append(FOR_ITS_VALUES)
    await db.execute("; ".join(settings))


# The visible enterprises are the region's (row-level security); the totals are the planner's
# estimates, which are all a choice of plan needs and cost nothing to read.
_REGION_SHARE = """
SELECT count(*) AS region,
       greatest((SELECT reltuples FROM pg_class WHERE oid = 'enterprises'::regclass), count(*), 1) AS enterprises,
       greatest((SELECT reltuples FROM pg_class WHERE oid = $1::regclass), 0) AS listed
FROM enterprises
"""


async def walks_for_region(db: asyncpg.Connection, table: str, limit: int) -> bool:
    """Whether a regulator's page of ``table`` should walk everyone's rows in page order, keeping its
    region's (:func:`read_in_page_order`), rather than gather its region's rows and sort them.

    A walk reads about ``limit / share`` rows to fill a page, where ``share`` is the region's part
    of the table; gathering reads ``share × rows``. The walk wins when ``share² × rows > limit``:
    a province's page of two million notices walks about 500 rows instead of sorting 160,000, while
    a district holding a hundredth of a percent gathers its 200 rather than walk half a million, and
    a region with no enterprise reads nothing. The share is taken as the region's part of the
    enterprises, which the caller's principal sees (a regulator: its region's).
    """
    row = await db.fetchrow(_REGION_SHARE, table)
    assert row is not None
    share = row["region"] / row["enterprises"]
    return bool(row["region"]) and share * share * row["listed"] > limit
