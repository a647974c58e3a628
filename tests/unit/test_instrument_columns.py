"""The instrument read model is built by position: its column list and its Struct must stay in step."""

from __future__ import annotations

import msgspec

from service.instruments.queries import _COLUMNS, InstrumentRow


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
