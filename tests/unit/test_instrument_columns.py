"""The instrument read model is built by position: its column list and its Struct must stay in step."""

from __future__ import annotations

import enum
import typing

import msgspec

from service.instruments.queries import _COLUMNS, InstrumentRow
from service.ledger.queries import STAGED


def _names(columns: str) -> list[str]:
    """The output names of a SELECT list: the alias after AS, else the column after the table's dot."""
    names = []
    for column in columns.split(","):
        column = column.strip()
        names.append(column.split(" AS ")[1] if " AS " in column else column.split(".")[-1])
    return names


def test_columns_are_in_the_order_of_the_row_struct() -> None:
    fields = [f.name for f in msgspec.structs.fields(InstrumentRow) if f.name != "rule"]
    names = _names(_COLUMNS)
    assert names[: len(fields)] == fields
    assert names[len(fields) :] == [
        "c_regime",
        "c_compulsory_uses",
        "c_legal_max_cycle_months",
        "c_default_cycle_months",
        "c_regulation",
    ]


def test_every_enum_an_import_stages_is_a_str_enum() -> None:
    """The import copies enum members as they are (service/ledger/queries.py ``_record``): asyncpg
    writes a StrEnum as its text, but any other enum would fail the COPY."""
    staged = {f.name: f.type for f in msgspec.structs.fields(InstrumentRow) if f.name in STAGED}
    assert set(staged) == set(STAGED)
    enums = [
        t
        for hint in staged.values()
        for t in (typing.get_args(hint) or (hint,))
        if isinstance(t, type) and issubclass(t, enum.Enum)
    ]
    assert enums, "the staged fields include the lifecycle, use, regime and validity-source enums"
    assert all(issubclass(t, enum.StrEnum) for t in enums), enums
