"""Ledger cells (service/ledger/values.py) and headers (service/ledger/columns.py), table-tested."""

from __future__ import annotations

import datetime as dt

import pytest

from service.catalog.rules import LegalUse
from service.instruments.rules import Lifecycle
from service.ledger.columns import COLUMNS, header_key, match_header
from service.ledger.values import (
    EXCEL_EPOCH,
    CellError,
    cell_text,
    parse_cycle_months,
    parse_date,
    parse_legal_use,
    parse_lifecycle,
)

D = dt.date

# ---------------------------------------------------------------------------------------------
# Dates


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        ("2026-01-05", D(2026, 1, 5)),
        ("2026/1/5", D(2026, 1, 5)),
        ("2026.1.5", D(2026, 1, 5)),
        ("2026年1月5日", D(2026, 1, 5)),
        ("2026年01月05日", D(2026, 1, 5)),
        ("2026年1月5", D(2026, 1, 5)),
        ("２０２６年１月５日", D(2026, 1, 5)),  # full-width digits, as a Chinese input method types them
        ("２０２６－０１－０５", D(2026, 1, 5)),
        (" 2026-01-05 ", D(2026, 1, 5)),
        ("2026 - 1 - 5", D(2026, 1, 5)),
        ("2026-01-05 00:00:00", D(2026, 1, 5)),  # what Excel appends to a date
        ("2026-01-05 0:00", D(2026, 1, 5)),
        ("2026-01-05 00:00:00.000", D(2026, 1, 5)),
        ("2024-02-29", D(2024, 2, 29)),
        ("1900-01-01", D(1900, 1, 1)),
        ("2999-12-31", D(2999, 12, 31)),
        (D(2026, 1, 15), D(2026, 1, 15)),  # an XLSX date cell
        (dt.datetime(2026, 1, 15), D(2026, 1, 15)),  # an XLSX date cell read as midnight
        # Excel serials: 61 is 1900-03-01, the first day after the fictitious 1900-02-29 (serial 60).
        (61, D(1900, 3, 1)),
        (61.0, D(1900, 3, 1)),
        ("61", D(1900, 3, 1)),
        (62, D(1900, 3, 2)),
        (25569, D(1970, 1, 1)),
        (46037, D(2026, 1, 15)),
        (46037.0, D(2026, 1, 15)),  # a number in a date column of an XLSX
        ("46037", D(2026, 1, 15)),  # the same, through a CSV
        ("46037.0", D(2026, 1, 15)),
        ("４６０３７", D(2026, 1, 15)),
        (401768, D(2999, 12, 31)),  # the last serial of the supported range
    ],
)
def test_dates_in_every_form(cell: object, expected: dt.date) -> None:
    assert parse_date(cell) == expected


def test_the_excel_epoch_is_the_one_after_the_1900_leap_bug() -> None:
    assert D(1899, 12, 30) == EXCEL_EPOCH
    assert EXCEL_EPOCH + dt.timedelta(days=61) == D(1900, 3, 1)


@pytest.mark.parametrize(
    ("cell", "words"),
    [
        ("2026-02-30", ["2026-02-30", "not a day of the calendar"]),
        ("2026年2月30日", ["2026-02-30", "not a day"]),
        ("2025-02-29", ["2025-02-29", "not a day"]),
        ("1900-02-29", ["1900-02-29", "not a day"]),  # the day Excel's 1900 system invents
        ("2026-13-01", ["not a day"]),
        ("2026-00-10", ["not a day"]),
        ("1899-12-31", ["outside the supported years"]),
        ("3000-01-01", ["outside the supported years"]),
        (D(1899, 12, 31), ["outside the supported years"]),
        (60, ["Excel date number", "61"]),  # 1900-02-29, which never was
        (59, ["Excel date number", "61"]),  # before it, serials are off by one day: refused
        ("60", ["Excel date number"]),
        (0, ["Excel date number"]),
        (-1, ["Excel date number"]),
        (401769, ["Excel date number"]),  # 3000-01-01
        (46037.5, ["whole number"]),  # a date and a time
        ("46037.5", ["not a date"]),
        (dt.datetime(2026, 1, 15, 8, 30), ["date and time", "day only"]),
        ("2026-01-05 08:30", ["not a date"]),
        ("20260105", ["not a date", "2026-01-05"]),
        ("5", ["not a date"]),
        ("明天", ["not a date", "2026年1月5日"]),
        ("", ["not a date"]),
        (True, ["not a date"]),
    ],
)
def test_dates_refused(cell: object, words: list[str]) -> None:
    with pytest.raises(CellError) as refused:
        parse_date(cell)
    for word in words:
        assert word in str(refused.value)


# ---------------------------------------------------------------------------------------------
# Cycles


@pytest.mark.parametrize(
    ("cell", "months"),
    [
        ("12", 12),
        (12, 12),
        (12.0, 12),  # Excel stores 12 as 12.0
        ("12.0", 12),
        ("12个月", 12),
        ("12 个月", 12),
        ("12月", 12),
        ("6个月", 6),
        ("1年", 12),
        ("2年", 24),
        ("半年", 6),
        ("一年", 12),
        ("两年", 24),
        ("半年一次", 6),
        ("12 months", 12),
        ("1 Month", 1),
        ("2 years", 24),
        ("1 YEAR", 12),
        ("１２", 12),
        ("１２个月", 12),
        (" 24 ", 24),
        ("1200", 1200),
        ("100年", 1200),
        ("1", 1),
    ],
)
def test_cycles(cell: object, months: int) -> None:
    assert parse_cycle_months(cell) == months


@pytest.mark.parametrize(
    ("cell", "words"),
    [
        ("0", ["from 1 to 1200"]),
        (0, ["from 1 to 1200"]),
        ("0个月", ["from 1 to 1200"]),
        ("0年", ["from 1 to 1200"]),
        ("1201", ["from 1 to 1200"]),
        ("101年", ["from 1 to 1200"]),
        (12.5, ["whole number of months"]),
        ("12.5", ["not a cycle"]),
        ("1.5年", ["not a cycle"]),
        ("-6", ["not a cycle"]),
        ("每年", ["not a cycle", "12个月"]),
        ("12天", ["not a cycle"]),
        ("", ["not a cycle"]),
        (True, ["not a cycle"]),
    ],
)
def test_cycles_refused(cell: object, words: list[str]) -> None:
    with pytest.raises(CellError) as refused:
        parse_cycle_months(cell)
    for word in words:
        assert word in str(refused.value)


# ---------------------------------------------------------------------------------------------
# Legal uses and lifecycle states


@pytest.mark.parametrize(
    ("cell", "use"),
    [
        ("贸易结算", LegalUse.TRADE_SETTLEMENT),
        ("贸易结算用", LegalUse.TRADE_SETTLEMENT),
        ("贸易", LegalUse.TRADE_SETTLEMENT),
        ("trade_settlement", LegalUse.TRADE_SETTLEMENT),
        ("TRADE_SETTLEMENT", LegalUse.TRADE_SETTLEMENT),
        ("安全防护", LegalUse.SAFETY_PROTECTION),
        (" 安全防护 ", LegalUse.SAFETY_PROTECTION),
        ("安全", LegalUse.SAFETY_PROTECTION),
        ("safety_protection", LegalUse.SAFETY_PROTECTION),
        ("医疗卫生", LegalUse.MEDICAL),
        ("医疗", LegalUse.MEDICAL),
        ("medical", LegalUse.MEDICAL),
        ("环境监测", LegalUse.ENVIRONMENTAL_MONITORING),
        ("environmental_monitoring", LegalUse.ENVIRONMENTAL_MONITORING),
        ("非强检", LegalUse.NONE),
        ("否", LegalUse.NONE),
        ("无", LegalUse.NONE),
        ("-", LegalUse.NONE),
        ("/", LegalUse.NONE),
        ("none", LegalUse.NONE),
        ("No", LegalUse.NONE),
        ("ＮＯ", LegalUse.NONE),  # full-width letters fold
        ("", LegalUse.NONE),
        (None, LegalUse.NONE),
    ],
)
def test_legal_uses(cell: object, use: LegalUse) -> None:
    assert parse_legal_use(cell) is use


@pytest.mark.parametrize("cell", ["是", " 是 ", "yes", "YES", "强检"])
def test_a_bare_yes_is_refused_naming_the_uses(cell: str) -> None:
    with pytest.raises(CellError) as refused:
        parse_legal_use(cell)
    message = str(refused.value)
    assert "not for which use" in message
    for use in ("贸易结算", "安全防护", "医疗卫生", "环境监测"):
        assert use in message


@pytest.mark.parametrize("cell", ["工业", "计量", "safety"])
def test_an_unknown_use_is_refused_naming_the_uses(cell: str) -> None:
    with pytest.raises(CellError) as refused:
        parse_legal_use(cell)
    message = str(refused.value)
    assert "is not a legal use" in message
    for use in ("贸易结算", "安全防护", "医疗卫生", "环境监测", "非强检"):
        assert use in message


@pytest.mark.parametrize(
    ("cell", "state"),
    [
        ("在用", Lifecycle.IN_SERVICE),
        ("合格", Lifecycle.IN_SERVICE),
        ("准用", Lifecycle.IN_SERVICE),
        ("正常", Lifecycle.IN_SERVICE),
        ("使用中", Lifecycle.IN_SERVICE),
        ("in_service", Lifecycle.IN_SERVICE),
        ("", Lifecycle.IN_SERVICE),
        (None, Lifecycle.IN_SERVICE),
        ("封存", Lifecycle.SEALED),
        ("停用", Lifecycle.SEALED),
        ("禁用", Lifecycle.FAILED),
        ("不合格", Lifecycle.FAILED),
        ("报废", Lifecycle.SCRAPPED),
        (" 报废 ", Lifecycle.SCRAPPED),
        ("已更换", Lifecycle.REPLACED),
        ("待检", Lifecycle.PENDING_VERIFICATION),
        ("待检定", Lifecycle.PENDING_VERIFICATION),
        ("pending_verification", Lifecycle.PENDING_VERIFICATION),
    ],
)
def test_lifecycle_labels(cell: object, state: Lifecycle) -> None:
    assert parse_lifecycle(cell) is state


@pytest.mark.parametrize("cell", ["维修", "lost", "是"])
def test_an_unknown_state_is_refused_naming_the_states(cell: str) -> None:
    with pytest.raises(CellError) as refused:
        parse_lifecycle(cell)
    message = str(refused.value)
    assert "is not a state" in message
    for state in ("在用", "封存", "禁用", "报废", "待检"):
        assert state in message


@pytest.mark.parametrize(
    ("cell", "text"),
    [
        (None, ""),
        ("  A123  ", "A123"),
        (12.0, "12"),
        (12.5, "12.5"),
        (1001, "1001"),
        (dt.datetime(2026, 1, 5), "2026-01-05"),
        (dt.datetime(2026, 1, 5, 8, 30), "2026-01-05 08:30:00"),
        (D(2026, 1, 5), "2026-01-05"),
    ],
)
def test_cell_text(cell: object, text: str) -> None:
    assert cell_text(cell) == text


# ---------------------------------------------------------------------------------------------
# Headers


@pytest.mark.parametrize(
    ("header", "key"),
    [
        ("出厂编号", "出厂编号"),
        ("出 厂 编 号", "出厂编号"),
        (" 出 厂\n编号 ", "出厂编号"),
        ("*出厂编号", "出厂编号"),
        ("＊出厂编号", "出厂编号"),  # a full-width star
        ("出厂编号：", "出厂编号"),
        ("检定周期\n（月）", "检定周期(月)"),  # full-width parentheses fold to half-width
        ("Serial No.", "serialno"),
        ("serial_no", "serialno"),
        ("SERIAL-NO", "serialno"),
        ("ＳＥＲＩＡＬ　ＮＯ", "serialno"),  # full-width letters and the ideographic space
        ("", ""),
    ],
)
def test_header_key(header: str, key: str) -> None:
    assert header_key(header) == key


@pytest.mark.parametrize(
    ("header", "field"),
    [
        ("管理编号", "management_no"),
        ("资产编号", "management_no"),
        ("*计量器具名称", "name"),
        ("器具名称", "name"),
        ("Instrument name", "name"),
        ("强检目录项", "catalog_code"),
        ("规格型号", "model"),
        ("型号规格", "model"),
        ("准确度等级", "accuracy_class"),
        ("最大允许误差", "mpe"),
        ("测量范围", "measuring_range"),
        ("量程", "measuring_range"),
        ("生产厂家", "manufacturer"),
        ("制造单位", "manufacturer"),
        ("出 厂 编 号", "serial_no"),
        ("出厂编号", "serial_no"),
        ("Serial No.", "serial_no"),
        ("serial_no", "serial_no"),
        ("安装使用地点", "location"),
        ("使用部门", "department"),
        ("使用部门/责任人", "department"),
        ("强检用途", "legal_use"),
        ("检定周期\n（月）", "cycle_months"),
        ("检定周期(月)", "cycle_months"),
        ("检定周期", "cycle_months"),
        ("检定周期（个月）", "cycle_months"),  # a unit in parentheses is tried without it
        ("Cycle (months)", "cycle_months"),
        ("上次检定日期", "last_verified_on"),
        ("检定日期", "last_verified_on"),
        ("有效期至", "valid_until"),
        ("有效期至（年/月/日）", "valid_until"),
        ("下次检定日期", "valid_until"),
        ("使用状态", "lifecycle"),
        ("状态", "lifecycle"),
    ],
)
def test_match_header_fields(header: str, field: str) -> None:
    assert match_header(header) == (field, None)


def test_every_column_matches_by_field_and_both_labels() -> None:
    for column in COLUMNS:
        for label in (column.field, column.zh, column.en, *column.aliases):
            assert match_header(label) == (column.field, None), label


@pytest.mark.parametrize(
    "header",
    ["序号", "No.", "#", "", "   ", "是否强检", "溯源方式", "证书编号", "检定状态", "剩余天数", "Days until due"],
)
def test_row_numbers_and_computed_columns_are_read_past_silently(header: str) -> None:
    assert match_header(header) == (None, None)


@pytest.mark.parametrize(
    ("header", "words"),
    [
        ("备注", "remarks are not stored"),
        ("Remarks", "remarks are not stored"),
        ("管理类别", "management grade"),
        ("ABC分类", "management grade"),
        ("检定机构", "verifying institution"),
        ("责任人", "custodian is not stored"),
        ("购置日期", "purchase date"),
        ("颜色", "unknown column: not imported"),
        ("Colour", "unknown column: not imported"),
    ],
)
def test_columns_metreg_does_not_keep_have_a_note(header: str, words: str) -> None:
    field, note = match_header(header)
    assert field is None
    assert note is not None
    assert words in note
