"""Metrology labs (检定机构 / calibration labs)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated

import msgspec

from service.types import Name, RegionCode, Text

__all__ = ("Lab", "LabCreate")


SlaDays = Annotated[
    int,
    msgspec.Meta(
        ge=1,
        le=250,
        description="Working days the lab has to complete an accepted verification request (default 10).",
    ),
]


class LabCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A new lab. ``scope`` lists the catalogue codes it may verify; empty means calibration only."""

    name: Name
    accreditation_no: Annotated[str, Text(100, min_length=1)]
    region_code: RegionCode
    scope: Annotated[list[Annotated[str, Text(64)]], msgspec.Meta(max_length=200)] = msgspec.field(default_factory=list)
    sla_working_days: SlaDays = 10


class Lab(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    name: str
    accreditation_no: str
    region_code: str
    scope: list[str]
    sla_working_days: int
    created_at: dt.datetime
    updated_at: dt.datetime
