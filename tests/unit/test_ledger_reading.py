"""Reading ledger files (service/ledger/reading.py) from bytes: formats, encodings, delimiters,
the header search, spreadsheet row numbers, and files that are refused."""

from __future__ import annotations

import codecs
import datetime as dt
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.errors import InvalidInputError, PayloadTooLargeError, UnsupportedMediaError
from service.ledger.reading import FORMULA_START, HEADER_SEARCH_ROWS, read_table, unguard
from service.ledger.writing import guard_formula
from tests.ledger_files import PNG, XLS, csv_bytes, xlsx_bytes, zip_bomb

MB = 1 << 20
HEADER = ["序号", "计量器具名称", "出厂编号", "检定周期（月）", "上次检定日期"]
ROWS = [HEADER, ["1", "压力表", "A1", "6", "2026-01-15"], ["2", "电子天平", "B2", "12", "2026/1/5"]]


def read(data: bytes, *, max_rows: int = 1000, max_unpacked: int = 10 * MB):  # type: ignore[no-untyped-def]
    return read_table(data, max_rows=max_rows, max_unpacked=max_unpacked)


@pytest.mark.parametrize(
    ("encoding", "delimiter", "reported"),
    [
        ("utf-8", ",", "utf-8"),
        ("utf-8-sig", ",", "utf-8-sig"),
        ("gb18030", ",", "gb18030"),
        ("gbk", ",", "gb18030"),  # GBK is a subset of GB18030
        ("utf-16", "\t", "utf-16"),  # Excel's "Unicode text": BOM, tab-separated
        ("utf-8", ";", "utf-8"),
        ("utf-8", "\t", "utf-8"),
    ],
)
def test_csv_in_every_encoding_and_delimiter(encoding: str, delimiter: str, reported: str) -> None:
    table = read(csv_bytes(ROWS, encoding=encoding, delimiter=delimiter))
    assert (table.format, table.encoding, table.sheet, table.header_row) == ("csv", reported, None, 1)
    assert table.headers == HEADER  # the BOM is not part of the first header
    assert [(n, list(cells)) for n, cells in table.rows] == [(2, ROWS[1]), (3, ROWS[2])]


def test_utf16_big_endian_with_bom() -> None:
    text = "\r\n".join("\t".join(row) for row in ROWS) + "\r\n"
    table = read(codecs.BOM_UTF16_BE + text.encode("utf-16-be"))
    assert (table.encoding, table.headers, len(table.rows)) == ("utf-16", HEADER, 2)


def test_the_delimiter_is_the_one_the_header_line_uses_most() -> None:
    # Commas inside cells of a tab-separated file do not make it comma-separated.
    rows = [["计量器具名称", "出厂编号", "测量范围"], ["压力表", "A1", "0,1.6 MPa"]]
    table = read(csv_bytes(rows, delimiter="\t"))
    assert list(table.rows[0][1]) == ["压力表", "A1", "0,1.6 MPa"]


@pytest.mark.parametrize("title", [False, True])
def test_commas_in_the_cells_of_a_tab_separated_file(title: bool) -> None:
    """A multimeter's ranges ("200mV, 2V, …") have more commas than the row has tabs: still tab-separated."""
    header = ["计量器具名称", "出厂编号", "测量范围"]
    meters = [["数字多用表", f"F17-{n}", "200mV, 2V, 20V, 200V, 1000V"] for n in range(1, 4)]
    rows = [*([["XX公司计量器具台账"]] if title else []), header, *meters]
    table = read(csv_bytes(rows, encoding="utf-16", delimiter="\t"))
    assert (table.header_row, table.headers) == (1 + title, header)
    assert [list(cells) for _, cells in table.rows] == meters


def test_blank_rows_count_in_row_numbers_and_are_skipped() -> None:
    rows = [HEADER, [], ROWS[1], ["", "  ", ""], [], ROWS[2], []]
    table = read(csv_bytes(rows))
    assert [n for n, _ in table.rows] == [3, 6]


def test_a_title_row_above_the_header() -> None:
    rows = [["XX公司计量器具台账", "", "", "", ""], ["", "", "", "", ""], *ROWS]
    table = read(csv_bytes(rows))
    assert table.header_row == 3
    assert [n for n, _ in table.rows] == [4, 5]


def test_a_title_line_without_delimiters_above_a_tab_separated_header() -> None:
    """A title typed on a line of its own (no trailing tabs) does not decide the delimiter."""
    rows = [["XX公司计量器具台账"], *ROWS]
    table = read(csv_bytes(rows, encoding="utf-16", delimiter="\t"))
    assert (table.header_row, table.headers) == (2, HEADER)
    assert [n for n, _ in table.rows] == [3, 4]


def test_a_header_cell_on_two_lines_keeps_spreadsheet_row_numbers() -> None:
    """'检定周期\\n（月）' is one cell of row 1 (quoted over two lines in the CSV): data starts at row 2."""
    header = ["计量器具名称", "出 厂 编 号", "检定周期\n（月）"]
    table = read(csv_bytes([header, ["压力表", "A1", "6"], ["压力表", "A2", "6"]]))
    assert table.headers == header
    assert table.header_row == 1
    assert [n for n, _ in table.rows] == [2, 3]


def test_the_header_is_searched_in_the_first_ten_rows_only() -> None:
    assert HEADER_SEARCH_ROWS == 10
    above = [[f"第{i}行说明", ""] for i in range(1, HEADER_SEARCH_ROWS)]
    table = read(csv_bytes([*above, *ROWS]))
    assert table.header_row == HEADER_SEARCH_ROWS
    with pytest.raises(InvalidInputError) as refused:
        read(csv_bytes([["第0行说明", ""], *above, *ROWS]))
    assert [e.field for e in refused.value.errors] == ["file"]
    assert "first 10 rows" in refused.value.detail


def test_blank_rows_above_the_header_count_toward_the_ten() -> None:
    with pytest.raises(InvalidInputError):
        read(csv_bytes([*([[]] * HEADER_SEARCH_ROWS), *ROWS]))


def test_a_header_needs_two_ledger_columns() -> None:
    with pytest.raises(InvalidInputError) as refused:
        read(csv_bytes([["计量器具名称", "颜色"], ["压力表", "红"]]))
    assert "计量器具名称" in refused.value.detail


def test_xlsx_with_a_merged_title_date_cells_and_numbers() -> None:
    header = ["序号", "计量器具名称", "出 厂 编 号", "检定周期\n（月）", "上次检定日期"]
    data = xlsx_bytes(
        [
            header,
            [1, "压力表", "A1", 6.0, dt.date(2026, 1, 15)],
            [],
            [2, "电子天平", "B2", 12, 46027],
        ],
        title="XX公司计量器具台账",
        sheet="器具台账",
    )
    table = read(data)
    assert (table.format, table.encoding, table.sheet, table.header_row) == ("xlsx", None, "器具台账", 2)
    assert table.headers == header
    assert [n for n, _ in table.rows] == [3, 5]
    first = list(table.rows[0][1])
    assert first[1:4] == ["压力表", "A1", 6.0]
    assert first[4] in (dt.date(2026, 1, 15), dt.datetime(2026, 1, 15))
    assert list(table.rows[1][1])[4] == 46027.0


def test_xlsx_whose_first_rows_are_empty_keeps_spreadsheet_row_numbers() -> None:
    """A sheet used from row 3 (rows 1 and 2 empty): the header is row 3, as Excel shows it."""
    data = xlsx_bytes([[], [], ["计量器具名称", "出厂编号"], ["压力表", "A1"]])
    table = read(data)
    assert table.header_row == 3
    assert [n for n, _ in table.rows] == [4]


def test_too_many_rows_is_413_and_blank_rows_do_not_count() -> None:
    rows = [HEADER, *([["1", "压力表", "A", "6", ""], []] * 3)]
    assert len(read(csv_bytes(rows), max_rows=3).rows) == 3
    with pytest.raises(PayloadTooLargeError) as refused:
        read(csv_bytes(rows), max_rows=2)
    assert "METREG_MAX_IMPORT_ROWS" in refused.value.detail


def test_a_zip_bomb_is_refused_by_what_it_inflates_to() -> None:
    with pytest.raises(PayloadTooLargeError) as refused:
        read(zip_bomb(4), max_unpacked=MB)
    assert "unpacks to more than" in refused.value.detail
    assert "METREG_MAX_IMPORT_BYTES" in refused.value.detail


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (PNG, "binary"),
        (b"\x00\x01\x02\x03" + random.Random(6).randbytes(64), "binary"),
        (XLS, ".xls"),
        (b"PK\x03\x04" + bytes(60), "XLSX"),  # a zip header and nothing readable
        (b"\xff\xfe\x00\xd8", "utf-16"),  # a UTF-16 BOM, then a lone surrogate
        (b"\xef\xbb\xbf\xff\xfe\xfd", "utf-8-sig"),  # a UTF-8 BOM, then bytes that are not UTF-8
        (b"\x81\x30\x81", "neither UTF-8 nor GB18030"),
    ],
)
def test_files_that_are_not_ledgers_are_415(data: bytes, words: str) -> None:
    with pytest.raises(UnsupportedMediaError) as refused:
        read(data)
    assert words in refused.value.detail


@pytest.mark.parametrize("data", [b"", b"   ", b"\r\n\r\n", b"\t \n"])
def test_an_empty_file_is_400_naming_file(data: bytes) -> None:
    with pytest.raises(InvalidInputError) as refused:
        read(data)
    assert [e.field for e in refused.value.errors] == ["file"]
    assert "empty" in refused.value.detail


GUARD_CASES = [
    ("'=SUM(A1:A2)", "=SUM(A1:A2)"),
    ("'+86 10 1234", "+86 10 1234"),
    ("'-12", "-12"),
    ("'@home", "@home"),
    ("'\tA1", "\tA1"),
    ("''=x", "'=x"),  # a text that itself starts with '= was guarded once more
    ("'''+x", "''+x"),
    ("'A-12", "'A-12"),  # not a guard: kept whole
    ("'", "'"),
]


def test_one_formula_guard_apostrophe_comes_off_a_csv_cell() -> None:
    header = ["计量器具名称", "出厂编号"]
    table = read_table(csv_bytes([header, *([c, "S"] for c, _ in GUARD_CASES)]), max_rows=100, max_unpacked=10**6)
    assert [cells[0] for _, cells in table.rows] == [text for _, text in GUARD_CASES]


def test_an_xlsx_cell_keeps_its_apostrophe() -> None:
    # Excel stores text as text, so an XLSX needs no guard: an apostrophe there is the text's own.
    data = xlsx_bytes([["计量器具名称", "出厂编号"], ["'=x", "S"]])
    assert read_table(data, max_rows=100, max_unpacked=10**7).rows[0][1][0] == "'=x"


@given(st.text(alphabet="'=+-@\t\rAa1 ", max_size=8) | st.text(max_size=20))
def test_the_export_guard_and_the_import_unguard_give_back_any_text(text: str) -> None:
    guarded = guard_formula(text)
    assert unguard(guarded) == text
    # What a spreadsheet would run is always behind an apostrophe.
    assert guarded.lstrip("'")[:1] not in FORMULA_START or guarded.startswith("'")
