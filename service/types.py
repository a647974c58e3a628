"""Constrained scalar types shared by request bodies (their limits show in the OpenAPI document)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from msgspec import Meta

from service import dates
from service.errors import InvalidInputError

__all__ = (
    "NO_NUL",
    "CycleMonths",
    "LongText",
    "Name",
    "RegionCode",
    "RegionPrefix",
    "ShortText",
    "Text",
    "validate_date",
)

#: PostgreSQL text cannot hold NUL; refusing it here names the field instead of failing in SQL.
NO_NUL = r"^[^\x00]*$"


def Text(max_length: int, *, min_length: int = 0, description: str | None = None) -> Meta:  # noqa: N802
    """Constraints of a text field: length bounds and no NUL characters."""
    return Meta(min_length=min_length, max_length=max_length, pattern=NO_NUL, description=description)


Name = Annotated[str, Text(200, min_length=1)]
ShortText = Annotated[str, Text(100)]
LongText = Annotated[str, Text(500)]
RegionCode = Annotated[
    str, Meta(pattern=r"^[0-9]{6}$", description="Six-digit administrative division code (GB/T 2260).")
]
RegionPrefix = Annotated[
    str,
    Meta(pattern=r"^([0-9]{2}){1,3}$", description="Region code prefix: 2, 4 or 6 digits (31, 3101, 310101)."),
]
CycleMonths = Annotated[int, Meta(ge=1, le=1200, description="Verification or calibration cycle in months.")]


def validate_date(field: str, value: dt.date | None) -> None:
    """Refuse calendar dates outside 1900–2999, which no certificate carries.

    Raises:
        InvalidInputError: naming ``field``.
    """
    if value is not None and not dates.MIN_DATE <= value <= dates.MAX_DATE:
        raise InvalidInputError.for_field(field, f"{value} is outside the supported years 1900–2999")
