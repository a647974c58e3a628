"""Metrology labs (检定机构 / calibration labs)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated

import msgspec

from service.types import Name, RegionCode

__all__ = ("Lab", "LabCreate")


class LabCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A new lab. ``scope`` lists the catalogue codes it may verify; empty means calibration only."""

    name: Name
    accreditation_no: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
    region_code: RegionCode
    scope: Annotated[list[str], msgspec.Meta(max_length=200)] = msgspec.field(default_factory=list)


class Lab(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    name: str
    accreditation_no: str
    region_code: str
    scope: list[str]
    created_at: dt.datetime
    updated_at: dt.datetime
