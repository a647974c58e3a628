"""Importing a ledger (POST /v1/enterprises/{id}/instruments/import, issue 6 point 1).

Real files written by the tests (tests/ledger_files.py) in every supported format: CSV in UTF-8,
UTF-8 with BOM, GB18030 and UTF-16 (tab-separated), and XLSX with a merged title row, date cells,
numbers and an Excel serial. The dry-run report is checked row by row; a real run is all or
nothing; re-imports match what is registered; the register is written with one audit entry per
import. Counts of instruments, events, imports and audit rows (read through the superuser pool)
prove what was and was not written.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import asyncpg
import httpx
import pytest

from service.app import create_app
from service.auth import Role
from service.clock import FixedClock
from service.ledger.reading import UNPACK_FACTOR
from tests.conftest import (
    GAUGE,
    NOW,
    Api,
    LabAccount,
    MakeTenant,
    Tenant,
    accepted_request,
    app_settings,
    fields_of,
    mint,
    problem,
    running,
)
from tests.ledger_files import PNG, XLS, csv_bytes, xlsx_bytes, zip_bomb

D = dt.date
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
#: The limits of this module's app: every file below is far smaller, except those that test them.
LIMIT_BYTES = 64 * 1024
LIMIT_ROWS = 12


@pytest.fixture(scope="module")
async def app_client(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """One app for the module (overriding conftest's per-test app, which ``tenant`` and ``admin``
    then use), with small import limits: files of at most 64 KiB and 12 data rows."""
    settings = app_settings(database_url, max_import_bytes=LIMIT_BYTES, max_import_rows=LIMIT_ROWS)
    app = create_app(settings, clock=FixedClock(NOW))
    async with running(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://metreg.test") as client:
            yield client


# A ledger as people keep it: a row-number column, a starred required column, spaced and
# full-width headers, a remarks column metreg does not keep and one it does not know.
HEADER = [
    "序号",
    "*计量器具名称",
    "管理编号",
    "强检目录项",
    "型号规格",
    "生产厂家",
    "出 厂 编 号",
    "强检用途",
    "检定周期（月）",
    "上次检定日期",
    "使用状态",
    "备注",
    "颜色",
]
# The same, with the cycle header on two lines, as Excel wraps it.
XLSX_HEADER = [*HEADER[:8], "检定周期\n（月）", *HEADER[9:]]
COLUMNS = [
    {"column": "序号", "field": None, "note": None},
    {"column": "*计量器具名称", "field": "name", "note": None},
    {"column": "管理编号", "field": "management_no", "note": None},
    {"column": "强检目录项", "field": "catalog_code", "note": None},
    {"column": "型号规格", "field": "model", "note": None},
    {"column": "生产厂家", "field": "manufacturer", "note": None},
    {"column": "出 厂 编 号", "field": "serial_no", "note": None},
    {"column": "强检用途", "field": "legal_use", "note": None},
    {"column": "检定周期（月）", "field": "cycle_months", "note": None},
    {"column": "上次检定日期", "field": "last_verified_on", "note": None},
    {"column": "使用状态", "field": "lifecycle", "note": None},
    {"column": "备注", "field": None, "note": "remarks are not stored"},
    {"column": "颜色", "field": None, "note": "unknown column: not imported"},
]

# Three good rows: a compulsory pressure gauge named by its Chinese catalogue name, with a
# full-width serial and trailing spaces; an electronic balance with a Chinese cycle and a
# full-width date; an uncatalogued multimeter without a management number.
GAUGE_ROW = ["1", "一般压力表 ", "PG-001", "压力表", "Y-100 ", "红旗仪表", "Ａ１２３", "安全防护", "", "2026-01-15"]
GAUGE_ROW += ["在用"]
BALANCE_ROW = ["2", "电子天平", "EB-002", "electronic_balance", "JA2003", "上海精科", " B-778 ", "贸易结算", "12个月"]
BALANCE_ROW += ["２０２６年１月５日", ""]
METER_ROW = ["3", "数字多用表", "", "", "F17B", "Fluke", "F17-0001", "", "1年", "2025/8/31", "合格", "台账外购", "黑"]
GOOD = [[*GAUGE_ROW, "锅炉房", "红"], [*BALANCE_ROW, "", ""], METER_ROW]

STORED = {
    "A123": {
        "name": "一般压力表",
        "model": "Y-100",
        "manufacturer": "红旗仪表",
        "management_no": "PG-001",
        "catalog_code": "pressure_gauge",
        "legal_use": "safety_protection",
        "regime": "periodic",
        "cycle_months": None,
        "lifecycle": "in_service",
        "last_verified_on": dt.date(2026, 1, 15),
        "valid_until": dt.date(2026, 7, 14),  # as POST computes it: + 6 months − 1 day
        "validity_source": "computed",
    },
    "B-778": {
        "name": "电子天平",
        "model": "JA2003",
        "manufacturer": "上海精科",
        "management_no": "EB-002",
        "catalog_code": "electronic_balance",
        "legal_use": "trade_settlement",
        "regime": "periodic",
        "cycle_months": None,  # 12个月 is the catalogue default: the balance follows the catalogue
        "lifecycle": "in_service",
        "last_verified_on": dt.date(2026, 1, 5),
        "valid_until": dt.date(2027, 1, 4),
        "validity_source": "computed",
    },
    "F17-0001": {
        "name": "数字多用表",
        "model": "F17B",
        "manufacturer": "Fluke",
        "management_no": None,
        "catalog_code": None,
        "legal_use": "none",
        "regime": "not_controlled",
        "cycle_months": 12,
        "lifecycle": "in_service",
        "last_verified_on": dt.date(2025, 8, 31),
        "valid_until": dt.date(2026, 8, 30),
        "validity_source": "computed",
    },
}


def import_url(enterprise_id: str) -> str:
    return f"/v1/enterprises/{enterprise_id}/instruments/import"


async def upload(
    api: Api,
    enterprise_id: str,
    data: bytes,
    *,
    dry_run: bool = False,
    content_type: str = "text/csv",
    file_name: str | None = None,
) -> httpx.Response:
    params = {"dry_run": "true"} if dry_run else {}
    if file_name is not None:
        params["file_name"] = file_name
    return await api.post(
        import_url(enterprise_id), content=data, params=params, headers={"Content-Type": content_type}
    )


async def counts(pool: asyncpg.Pool, enterprise_id: str) -> dict[str, int]:
    """What an import could write, for one enterprise."""
    async with pool.acquire() as conn:
        row = await conn.fetchrow(
            """SELECT
                 (SELECT count(*) FROM instruments WHERE enterprise_id = $1) AS instruments,
                 (SELECT count(*) FROM instrument_events e JOIN instruments i ON i.id = e.instrument_id
                   WHERE i.enterprise_id = $1) AS events,
                 (SELECT count(*) FROM instrument_imports WHERE enterprise_id = $1) AS imports,
                 (SELECT count(*) FROM audit_log WHERE enterprise_id = $1) AS audit""",
            uuid.UUID(enterprise_id),
        )
    return dict(row)


async def stored(pool: asyncpg.Pool, enterprise_id: str) -> dict[str, dict[str, Any]]:
    """The enterprise's instruments by serial number, with the fields an import writes."""
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            f"""SELECT serial_no, {", ".join(STORED["A123"])} FROM instruments WHERE enterprise_id = $1""",
            uuid.UUID(enterprise_id),
        )
    return {r["serial_no"]: {k: r[k] for k in STORED["A123"]} for r in rows}


async def events(pool: asyncpg.Pool, enterprise_id: str) -> list[dict[str, Any]]:
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            """SELECT i.serial_no, e.kind, e.detail, e.to_lifecycle, e.actor_role, e.occurred_at
               FROM instrument_events e JOIN instruments i ON i.id = e.instrument_id
               WHERE i.enterprise_id = $1 ORDER BY e.seq""",
            uuid.UUID(enterprise_id),
        )
    return [dict(r) for r in rows]


def shown(problems: Sequence[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """Each problem without its message: (row, column, field, value)."""
    return [(p["row"], p["column"], p["field"], p["value"]) for p in problems]


# ---------------------------------------------------------------------------------------------
# Every format and encoding, imported for real


@pytest.mark.parametrize(
    ("encoding", "delimiter"),
    [("utf-8", ","), ("utf-8-sig", ","), ("gb18030", ","), ("utf-16", "\t")],
)
async def test_csv_in_every_encoding_is_imported(
    tenant: Tenant, pool: asyncpg.Pool, encoding: str, delimiter: str
) -> None:
    blank = [""] * len(HEADER)
    spaces = ["  "] * len(HEADER)
    data = csv_bytes([HEADER, GOOD[0], blank, GOOD[1], [], spaces, GOOD[2]], encoding=encoding, delimiter=delimiter)
    report = (await upload(tenant.api, tenant.id, data)).json()
    assert report["problems"] == []
    assert {k: report[k] for k in ("dry_run", "format", "encoding", "sheet", "header_row")} == {
        "dry_run": False,
        "format": "csv",
        "encoding": encoding,
        "sheet": None,
        "header_row": 1,
    }
    assert (report["rows"], report["created"], report["updated"], report["unchanged"]) == (3, 3, 0, 0)
    assert report["columns"] == COLUMNS
    assert await stored(pool, tenant.id) == STORED


async def test_xlsx_with_title_row_date_cells_numbers_and_an_excel_serial(tenant: Tenant, pool: asyncpg.Pool) -> None:
    rows: list[list[object]] = [
        XLSX_HEADER,
        [
            1,
            "一般压力表 ",
            "PG-001",
            "压力表",
            "Y-100",
            "红旗仪表",
            "Ａ１２３",
            "安全防护",
            None,
            D(2026, 1, 15),
            "在用",
        ],
        [],
        # cycle 12.0 as Excel stores it; the date as a plain number (Excel serial 46027 = 2026-01-05)
        [2, "电子天平", "EB-002", "electronic_balance", "JA2003", "上海精科", "B-778 ", "贸易结算", 12.0, 46027],
        [3, "数字多用表", None, None, "F17B", "Fluke", "F17-0001", None, 12, dt.date(2025, 8, 31), "合格", "台账外购"],
    ]
    data = xlsx_bytes(rows, title="XX公司计量器具台账", sheet="器具台账")
    response = await upload(tenant.api, tenant.id, data, content_type=XLSX, file_name="台账.xlsx")
    assert response.status_code == 201, response.text
    report = response.json()
    assert report["problems"] == []
    assert {k: report[k] for k in ("format", "encoding", "sheet", "header_row", "rows", "created")} == {
        "format": "xlsx",
        "encoding": None,
        "sheet": "器具台账",
        "header_row": 2,
        "rows": 3,
        "created": 3,
    }
    assert report["columns"][8] == {"column": "检定周期\n（月）", "field": "cycle_months", "note": None}
    assert await stored(pool, tenant.id) == STORED


async def test_xlsx_dry_run_reports_spreadsheet_rows_below_the_title(tenant: Tenant, pool: asyncpg.Pool) -> None:
    gauge = ["压力表", None, "pressure_gauge", "Y-100", "红旗仪表"]
    rows: list[list[object]] = [
        XLSX_HEADER,
        [1, *gauge, "G1", "安全防护", None, dt.date(2026, 1, 15)],  # row 3
        [],  # row 4
        [2, *gauge, "G2", "安全防护", 24.0, dt.date(2026, 1, 15)],  # row 5: over the legal 6 months
        [3, *gauge, "G3", "安全防护", None, dt.datetime(2026, 1, 15, 8, 30)],  # row 6: a time of day
        [4, *gauge, "G4", "安全防护", None, 60],  # row 7: Excel's 1900-02-29
        [5, *gauge, "G5", "是", 6, 46037],  # row 8
    ]
    before = await counts(pool, tenant.id)
    response = await upload(tenant.api, tenant.id, xlsx_bytes(rows, title="XX公司计量器具台账"), dry_run=True)
    assert response.status_code == 200, response.text
    report = response.json()
    assert (report["header_row"], report["rows"], report["created"], report["import_id"]) == (2, 5, 1, None)
    assert shown(report["problems"]) == [
        (5, "检定周期\n（月）", "cycle_months", "24"),
        (6, "上次检定日期", "last_verified_on", "2026-01-15 08:30:00"),
        (7, "上次检定日期", "last_verified_on", "60"),
        (8, "强检用途", "legal_use", "是"),
    ]
    messages = [p["message"] for p in report["problems"]]
    assert "legal maximum of 6 months" in messages[0]
    assert "date and time" in messages[1]
    assert "Excel date number" in messages[2]
    assert "贸易结算" in messages[3]
    assert await counts(pool, tenant.id) == before


# ---------------------------------------------------------------------------------------------
# The dry-run report, row by row; the real run, all or nothing

MESSY = [
    HEADER,
    GOOD[0],  # 2
    [],  # 3
    ["4", "压力表", "PG-004", "pressure_gauge", "Y-100", "红旗仪表", "A200", "安全防护", "24", "2026-01-15"],  # 4
    ["5", "压力表", "PG-005", "压力表", "Y-100", "红旗仪表", "A201", "安全防护", "", "2026-07-01"],  # 5
    ["6", "压力表", "PG-006", "压力表", "Y-100", "红旗仪表", "A202", "安全防护", "", "2026-02-30"],  # 6
    [" ", "  ", "", "", "", "", "", "", "", ""],  # 7
    ["8", "压力表", "PG-008", "压力表", "Y-100", "红旗仪表", "A203", "是", "0", "2026-01-15"],  # 8
    ["9", "压力表", "PG-009", "压力表", "Y-100", "红旗仪表", "  ", "安全防护", "", "2026-01-15"],  # 9
    ["10", "压力表", "PG-001", "压力表", "Y-100", "红旗仪表", "A300", "安全防护", "", "2026-01-15"],  # 10
    ["11", "压力表", "", "压力表", "Y-100", "红旗仪表", "A123", "安全防护", "", "2026-01-15"],  # 11
    ["12", "压力表", "PG-012", "压力表", "Y-100", "红旗仪表", "A212", "安全防护", "", "2026-01-15", "已更换"],  # 12
    ["13", "卡尺", "PG-013", "游标卡尺", "0-150", "", "A213", "", "12", "2026-01-15"],  # 13
    METER_ROW,  # 14
]
MESSY_PROBLEMS = [
    ((4, "检定周期（月）", "cycle_months", "24"), ["24 months", "legal maximum of 6 months", "JJG 52-2013"]),
    ((5, "上次检定日期", "last_verified_on", "2026-07-01"), ["in the future", "2026-06-15"]),
    ((6, "上次检定日期", "last_verified_on", "2026-02-30"), ["2026-02-30", "not a day of the calendar"]),
    ((8, "强检用途", "legal_use", "是"), ["not for which use", "贸易结算", "安全防护", "医疗卫生", "环境监测"]),
    ((8, "检定周期（月）", "cycle_months", "0"), ["from 1 to 1200"]),
    ((9, "出 厂 编 号", "serial_no", ""), ["must not be blank"]),
    ((10, "管理编号", "management_no", "PG-001"), ["row 2", "same management number"]),
    ((11, "出 厂 编 号", "serial_no", "A123"), ["row 2", "same manufacturer, model and serial number"]),
    ((12, "使用状态", "lifecycle", "已更换"), ["replace operation"]),  # the cell as written
    ((13, "强检目录项", "catalog_code", "游标卡尺"), ["not in the catalogue", "GET /v1/catalog"]),
]


async def test_dry_run_reports_every_problem_by_row_and_column_and_writes_nothing(
    tenant: Tenant, pool: asyncpg.Pool
) -> None:
    before = await counts(pool, tenant.id)
    response = await upload(tenant.api, tenant.id, csv_bytes(MESSY), dry_run=True)
    assert response.status_code == 200, response.text
    report = response.json()
    assert (report["import_id"], report["dry_run"], report["header_row"]) == (None, True, 1)
    # 11 data rows (rows 3 and 7 are blank); rows 2 and 14 would be created, the rest are rejected.
    assert (report["rows"], report["created"], report["updated"], report["unchanged"]) == (11, 2, 0, 0)
    assert report["columns"] == COLUMNS
    assert shown(report["problems"]) == [where for where, _ in MESSY_PROBLEMS]
    for found, (where, words) in zip(report["problems"], MESSY_PROBLEMS, strict=True):
        for word in words:
            assert word in found["message"], (where, found["message"])
    assert await counts(pool, tenant.id) == before
    assert (await tenant.api.get(f"/v1/enterprises/{tenant.id}/imports")).json()["items"] == []


async def test_a_problem_of_the_rules_shows_the_cell_as_written(tenant: Tenant) -> None:
    header = ["计量器具名称", "出厂编号", "强检目录项", "强检用途", "检定周期", "管理编号"]
    rows = [
        header,
        ["压力表", "S1", "压力表", "安全防护", "１年", "ＰＧ-1"],
        ["压力表", "S2", "压力表", "安全防护", "", "PG-1"],
    ]
    report = (await upload(tenant.api, tenant.id, csv_bytes(rows), dry_run=True)).json()
    # Read as 12 months and as PG-1, the cells are shown as the ledger has them.
    assert shown(report["problems"]) == [
        (2, "检定周期", "cycle_months", "１年"),
        (3, "管理编号", "management_no", "PG-1"),
    ]
    assert "12 months exceeds the legal maximum of 6 months" in report["problems"][0]["message"]


async def test_the_same_file_for_real_is_422_listing_the_same_problems(tenant: Tenant, pool: asyncpg.Pool) -> None:
    before = await counts(pool, tenant.id)
    body = problem(await upload(tenant.api, tenant.id, csv_bytes(MESSY)), 422)
    assert body["type"] == "urn:metreg:problem:rows-rejected"
    assert "nothing was imported" in body["detail"]
    assert shown(body["rows"]) == [where for where, _ in MESSY_PROBLEMS]
    assert await counts(pool, tenant.id) == before


async def test_one_bad_row_in_a_real_run_writes_nothing(tenant: Tenant, pool: asyncpg.Pool) -> None:
    bad = ["4", "压力表", "PG-004", "压力表", "Y-100", "红旗仪表", "A200", "安全防护", "24", "2026-01-15"]
    before = await counts(pool, tenant.id)
    body = problem(await upload(tenant.api, tenant.id, csv_bytes([HEADER, *GOOD, bad])), 422)
    assert shown(body["rows"]) == [(5, "检定周期（月）", "cycle_months", "24")]
    assert "cycle_months" not in fields_of(body)  # the problems are in `rows`, by row
    assert await counts(pool, tenant.id) == before
    # Without the bad row the same file goes in.
    created = await upload(tenant.api, tenant.id, csv_bytes([HEADER, *GOOD]))
    assert created.status_code == 201, created.text
    assert (await counts(pool, tenant.id))["instruments"] == before["instruments"] + 3


async def test_a_csv_header_cell_on_two_lines_keeps_spreadsheet_row_numbers(tenant: Tenant) -> None:
    """The wrapped header of XLSX_HEADER saved as CSV: row 1 still, and the data below it rows 2, 3."""
    bad = ["2", "压力表", "PG-002", "压力表", "Y-100", "红旗仪表", "A200", "安全防护", "24", "2026-01-15"]
    report = (await upload(tenant.api, tenant.id, csv_bytes([XLSX_HEADER, GOOD[0], bad]), dry_run=True)).json()
    assert report["header_row"] == 1
    assert shown(report["problems"]) == [(3, "检定周期\n（月）", "cycle_months", "24")]


# ---------------------------------------------------------------------------------------------
# Importing again; rows matched to the register


async def test_reimport_is_unchanged_and_a_changed_cell_is_one_update(tenant: Tenant, pool: asyncpg.Pool) -> None:
    first = (await upload(tenant.api, tenant.id, csv_bytes([HEADER, *GOOD]))).json()
    assert first["created"] == 3
    before = await counts(pool, tenant.id)
    again = await upload(tenant.api, tenant.id, csv_bytes([HEADER, *GOOD]))
    assert again.status_code == 201, again.text
    report = again.json()
    assert (report["created"], report["updated"], report["unchanged"], report["problems"]) == (0, 0, 3, [])
    after = await counts(pool, tenant.id)
    # Only the import's own entry: no instrument, no event, one audit row.
    assert after == before | {"imports": before["imports"] + 1, "audit": before["audit"] + 1}

    # The balance's cycle goes from 12 to 6 months: its valid-until date is computed again.
    changed = [[*BALANCE_ROW[:8], "6", *BALANCE_ROW[9:], "", ""] if row is GOOD[1] else row for row in GOOD]
    response = await upload(tenant.api, tenant.id, csv_bytes([HEADER, *changed]))
    assert response.status_code == 201, response.text
    report = response.json()
    assert (report["created"], report["updated"], report["unchanged"]) == (0, 1, 2)
    balance = (await stored(pool, tenant.id))["B-778"]
    assert (balance["cycle_months"], balance["valid_until"]) == (6, dt.date(2026, 7, 4))
    updated = [e for e in await events(pool, tenant.id) if e["kind"] == "updated"]
    assert len(updated) == 1
    assert updated[0]["serial_no"] == "B-778"
    assert updated[0]["detail"] == {
        "import_id": report["import_id"],
        "fields": ["cycle_months", "valid_until"],
        "before": {"cycle_months": None, "valid_until": "2027-01-04"},
    }
    async with pool.acquire() as conn:
        version = await conn.fetchval(
            "SELECT version FROM instruments WHERE enterprise_id = $1 AND serial_no = 'B-778'", uuid.UUID(tenant.id)
        )
        instrument_audit = await conn.fetchval(
            "SELECT count(*) FROM audit_log WHERE enterprise_id = $1 AND entity = 'instruments'", uuid.UUID(tenant.id)
        )
    assert version == 2
    assert instrument_audit == 0


async def test_a_row_matches_by_management_number(tenant: Tenant, pool: asyncpg.Pool) -> None:
    registered = await tenant.register(
        **GAUGE, name="一般压力表", model="Y-100", manufacturer="红旗仪表", serial_no="OLD-1", management_no="PG-001"
    )
    data = csv_bytes([HEADER, GOOD[0]])  # PG-001, now with serial Ａ１２３
    dry = (await upload(tenant.api, tenant.id, data, dry_run=True)).json()
    assert (dry["created"], dry["updated"], dry["problems"]) == (0, 1, [])
    report = (await upload(tenant.api, tenant.id, data)).json()
    assert (report["created"], report["updated"]) == (0, 1)
    read = (await tenant.api.get(f"/v1/instruments/{registered['id']}")).json()
    assert (read["serial_no"], read["last_verified_on"], read["valid_until"]) == ("A123", "2026-01-15", "2026-07-14")
    update = [e for e in await events(pool, tenant.id) if e["kind"] == "updated"]
    assert update[0]["detail"]["fields"] == ["last_verified_on", "serial_no", "valid_until"]
    assert update[0]["detail"]["before"] == {"last_verified_on": None, "serial_no": "OLD-1", "valid_until": None}


async def test_a_row_without_management_number_matches_by_maker_model_and_serial(
    tenant: Tenant, pool: asyncpg.Pool
) -> None:
    registered = await tenant.register(
        **GAUGE,
        name="压力表",
        model="Y-100",
        manufacturer="红旗仪表",
        serial_no="A123",
        management_no="PG-777",
        last_verified_on="2026-01-15",
    )
    # No management number column at all: the register's number stays; the full-width serial matches.
    header = ["计量器具名称", "生产厂家", "型号规格", "出厂编号", "强检目录项", "强检用途", "上次检定日期"]
    row = ["一般压力表", "红旗仪表 ", "Y-100", "Ａ１２３", "压力表", "安全防护", "2026/1/15"]
    report = (await upload(tenant.api, tenant.id, csv_bytes([header, row]))).json()
    assert (report["created"], report["updated"], report["unchanged"], report["problems"]) == (0, 1, 0, [])
    read = (await tenant.api.get(f"/v1/instruments/{registered['id']}")).json()
    assert (read["name"], read["management_no"], read["version"]) == ("一般压力表", "PG-777", 2)
    assert (await counts(pool, tenant.id))["instruments"] == 1
    # Another serial of the same maker and model is another instrument.
    other = (await upload(tenant.api, tenant.id, csv_bytes([header, [*row[:3], "A124", *row[4:]]]))).json()
    assert (other["created"], other["updated"]) == (1, 0)


async def test_conflicting_rows_are_reported(tenant: Tenant, pool: asyncpg.Pool) -> None:
    common = {**GAUGE, "name": "压力表", "model": "Y-100", "manufacturer": "红旗仪表", "last_verified_on": "2026-01-15"}
    await tenant.register(**common, serial_no="S1", management_no="PG-001")
    await tenant.register(**common, serial_no="S2", management_no="PG-002")
    await tenant.register(**common, serial_no="S3", management_no="PG-003")
    header = ["管理编号", "计量器具名称", "型号", "生产厂家", "出厂编号", "强检目录项", "强检用途"]
    gauge = ["压力表", "Y-100", "红旗仪表"]
    rows = [
        header,
        ["PG-001", *gauge, "S2", "压力表", "安全防护"],  # 2: PG-001 is one instrument, S2 another
        ["PG-009", *gauge, "S3", "压力表", "安全防护"],  # 3: S3 is registered as PG-003
        ["PG-002", *gauge, "S2-NEW", "压力表", "安全防护"],  # 4: PG-002, new serial: fine
        ["", *gauge, "S2-NEW", "压力表", "安全防护"],  # 5: the same maker, model and serial as row 4
        ["PG-001", *gauge, "S1", "压力表", "安全防护"],  # 6: PG-001 again
    ]
    before = await counts(pool, tenant.id)
    report = (await upload(tenant.api, tenant.id, csv_bytes(rows), dry_run=True)).json()
    assert shown(report["problems"]) == [
        (2, "出厂编号", "serial_no", "S2"),
        (3, "管理编号", "management_no", "PG-009"),
        (5, "出厂编号", "serial_no", "S2-NEW"),
        (6, "管理编号", "management_no", "PG-001"),
    ]
    messages = [p["message"] for p in report["problems"]]
    assert "another instrument of the register has this manufacturer, model and serial number" in messages[0]
    assert "'PG-003'" in messages[1]
    assert "row 4" in messages[2]
    assert "row 2" in messages[3]
    assert report["updated"] == 1
    assert await counts(pool, tenant.id) == before


async def test_a_row_and_another_naming_the_same_instrument_two_ways(tenant: Tenant) -> None:
    await tenant.register(
        **GAUGE, name="压力表", model="Y-100", manufacturer="红旗仪表", serial_no="S1", management_no="PG-001"
    )
    header = ["管理编号", "计量器具名称", "型号", "生产厂家", "出厂编号", "强检目录项", "强检用途"]
    rows = [
        header,
        ["PG-001", "压力表", "Y-100", "红旗仪表", "S1-NEW", "压力表", "安全防护"],  # by number
        ["", "压力表", "Y-100", "红旗仪表", "S1", "压力表", "安全防护"],  # by identity: the same one
    ]
    report = (await upload(tenant.api, tenant.id, csv_bytes(rows), dry_run=True)).json()
    assert shown(report["problems"]) == [(3, "出厂编号", "serial_no", "S1")]
    assert "row 2 is the same instrument" in report["problems"][0]["message"]


async def test_a_file_without_a_manufacturer_column_matches_by_model_and_serial(
    tenant: Tenant, pool: asyncpg.Pool
) -> None:
    common = {**GAUGE, "name": "压力表", "model": "Y-100", "last_verified_on": "2026-01-15"}
    await tenant.register(**common, manufacturer="红旗仪表", serial_no="A123")
    header = ["计量器具名称", "型号规格", "出厂编号", "强检目录项", "强检用途", "上次检定日期"]
    row = ["压力表", "Y-100", "A123", "压力表", "安全防护", "2026-01-15"]
    report = (await upload(tenant.api, tenant.id, csv_bytes([header, row]))).json()
    # Not a new instrument without a manufacturer: the registered one, whose maker the file does not name.
    assert (report["created"], report["updated"], report["unchanged"], report["problems"]) == (0, 0, 1, [])
    assert (await counts(pool, tenant.id))["instruments"] == 1

    # With a second maker's Y-100 of the same serial, the file cannot say which one it means.
    await tenant.register(**common, manufacturer="上海仪表", serial_no="A123")
    before = await counts(pool, tenant.id)
    refused = await upload(tenant.api, tenant.id, csv_bytes([header, row]))
    assert refused.status_code == 422, refused.text
    assert shown(refused.json()["rows"]) == [(2, "出厂编号", "serial_no", "A123")]
    message = refused.json()["rows"][0]["message"]
    assert "2 instruments of the register have this model and serial number" in message
    assert "生产厂家" in message
    assert await counts(pool, tenant.id) == before
    # The management number tells them apart.
    await tenant.register(**common, manufacturer="北京仪表", serial_no="A124", management_no="PG-9")
    numbered = await upload(
        tenant.api, tenant.id, csv_bytes([["管理编号", *header], ["PG-9", *row[:2], "A124", *row[3:]]])
    )
    assert numbered.json()["unchanged"] == 1, numbered.text


async def test_the_cycle_and_valid_until_a_ledger_lists_are_kept_as_the_register_computes_them(
    tenant: Tenant, pool: asyncpg.Pool
) -> None:
    # A ledger lists the cycle in force and the date in force (metreg's export does): the gauge's
    # 6 months are the catalogue default, and 2026-07-14 is the date metreg computes from 2026-01-15.
    header = ["计量器具名称", "出厂编号", "强检目录项", "强检用途", "检定周期", "上次检定日期", "有效期至", "型号规格"]
    rows = [
        header,
        ["压力表", "S1", "压力表", "安全防护", "6", "2026-01-15", "2026-07-14", "'+B-1"],
        ["压力表", "S2", "压力表", "安全防护", "3", "2026-01-15", "2026-04-14", "'=1+2"],
        ["压力表", "S3", "压力表", "安全防护", "6", "2026-01-15", "2026-07-10", "'@x"],
    ]
    report = (await upload(tenant.api, tenant.id, csv_bytes(rows))).json()
    assert (report["created"], report["problems"]) == (3, [])
    got = await stored(pool, tenant.id)
    shown_fields = ("model", "cycle_months", "valid_until", "validity_source")
    assert {serial: tuple(got[serial][k] for k in shown_fields) for serial in got} == {
        "S1": ("+B-1", None, D(2026, 7, 14), "computed"),  # the default cycle, the computed date
        "S2": ("=1+2", 3, D(2026, 4, 14), "computed"),  # its own shorter cycle, computed from it
        "S3": ("@x", None, D(2026, 7, 10), "printed"),  # a date metreg would not compute: as printed
    }
    # The same file again changes nothing; an instrument with its own cycle set back to the
    # catalogue's 6 months follows the catalogue again.
    again = (await upload(tenant.api, tenant.id, csv_bytes(rows))).json()
    assert (again["updated"], again["unchanged"]) == (0, 3)
    back = [header, ["压力表", "S2", "压力表", "安全防护", "6", "2026-01-15", "2026-07-14", "'=1+2"]]
    changed = (await upload(tenant.api, tenant.id, csv_bytes(back))).json()
    assert changed["updated"] == 1, changed
    s2 = (await stored(pool, tenant.id))["S2"]
    assert tuple(s2[k] for k in shown_fields) == ("=1+2", None, D(2026, 7, 14), "computed")


async def test_an_import_does_not_change_the_recorded_state(tenant: Tenant) -> None:
    gauge = await tenant.register(
        **GAUGE, name="压力表", model="Y-100", manufacturer="红旗仪表", serial_no="A123", management_no="PG-001"
    )
    sealed = await tenant.api.post(f"/v1/instruments/{gauge['id']}/seal")
    assert sealed.status_code == 200, sealed.text
    header = ["管理编号", "计量器具名称", "型号", "生产厂家", "出厂编号", "使用状态"]
    in_service = [["PG-001", "压力表", "Y-100", "红旗仪表", "A123", "在用"]]
    report = (await upload(tenant.api, tenant.id, csv_bytes([header, *in_service]), dry_run=True)).json()
    assert shown(report["problems"]) == [(2, "使用状态", "lifecycle", "在用")]
    assert "not by an import" in report["problems"][0]["message"]
    same = [["PG-001", "压力表", "Y-100", "红旗仪表", "A123", "封存"]]
    assert (await upload(tenant.api, tenant.id, csv_bytes([header, *same]), dry_run=True)).json()["unchanged"] == 1


# ---------------------------------------------------------------------------------------------
# The history and the audit trail


async def test_an_import_is_one_audit_entry_and_each_instrument_names_it(tenant: Tenant, pool: asyncpg.Pool) -> None:
    data = csv_bytes([HEADER, *GOOD], encoding="utf-8-sig")
    before = await counts(pool, tenant.id)
    response = await upload(tenant.api, tenant.id, data, file_name="计量器具台账.csv")
    assert response.status_code == 201, response.text
    report = response.json()
    import_id = report["import_id"]
    assert response.headers["location"] == f"/v1/imports/{import_id}"
    assert await counts(pool, tenant.id) == {
        "instruments": before["instruments"] + 3,
        "events": before["events"] + 3,
        "imports": before["imports"] + 1,
        "audit": before["audit"] + 1,
    }
    async with pool.acquire() as conn:
        audit = await conn.fetch(
            "SELECT entity, entity_id, operation, action, actor_role FROM audit_log WHERE enterprise_id = $1 "
            "AND entity IN ('instrument_imports', 'instruments')",
            uuid.UUID(tenant.id),
        )
    assert [dict(a) for a in audit] == [
        {
            "entity": "instrument_imports",
            "entity_id": import_id,
            "operation": "insert",
            "action": "ImportInstruments",
            "actor_role": "enterprise",
        }
    ]
    registered = await events(pool, tenant.id)
    assert sorted(e["serial_no"] for e in registered) == sorted(STORED)
    for event in registered:
        assert (event["kind"], event["detail"], event["to_lifecycle"]) == (
            "registered",
            {"import_id": import_id},
            "in_service",
        )
        assert (event["actor_role"], event["occurred_at"]) == ("enterprise", NOW)

    record = {
        "id": import_id,
        "enterprise_id": tenant.id,
        "file_name": "计量器具台账.csv",
        "file_sha256": hashlib.sha256(data).hexdigest(),
        "format": "csv",
        "encoding": "utf-8-sig",
        "rows": 3,
        "created": 3,
        "updated": 0,
        "unchanged": 0,
        "actor_role": "enterprise",
        "request_id": response.headers["x-request-id"],
    }
    one = await tenant.api.get(f"/v1/imports/{import_id}")
    assert one.status_code == 200, one.text
    assert {k: one.json()[k] for k in record} == record
    assert one.json()["actor_key_id"] is not None
    assert dt.datetime.fromisoformat(one.json()["imported_at"]) == NOW
    listed = (await tenant.api.get(f"/v1/enterprises/{tenant.id}/imports")).json()
    assert [{k: i[k] for k in record} for i in listed["items"]] == [record]

    # A second import of the same file: pages of one. (The clock stands still, so both imports have
    # the same imported_at and their order is by id.)
    again = (await upload(tenant.api, tenant.id, data)).json()
    first = (await tenant.api.get(f"/v1/enterprises/{tenant.id}/imports", params={"limit": 1})).json()
    cursor = {"limit": 1, "cursor": first["next_cursor"]}
    second = (await tenant.api.get(f"/v1/enterprises/{tenant.id}/imports", params=cursor)).json()
    assert second["next_cursor"] is None
    pages = {i["id"]: i for i in [*first["items"], *second["items"]]}
    assert sorted(pages) == sorted([import_id, again["import_id"]])
    assert [i["id"] for i in first["items"]] == [max(pages)]
    assert (pages[again["import_id"]]["unchanged"], pages[again["import_id"]]["file_name"]) == (3, None)


async def test_unknown_import_is_404(tenant: Tenant) -> None:
    problem(await tenant.api.get(f"/v1/imports/{uuid.uuid4()}"), 404)
    problem(await tenant.api.get("/v1/imports/not-a-uuid"), 400)


# ---------------------------------------------------------------------------------------------
# Files that are not ledgers


@pytest.mark.parametrize(
    ("data", "content_type", "words"),
    [
        (PNG + bytes(100), "image/png", "binary"),
        (b"\x00\x13\x7f\x00" + bytes(range(256)), "text/csv", "binary"),
        (XLS, "application/vnd.ms-excel", "legacy Excel (.xls)"),
        (b"PK\x03\x04" + bytes(200), XLSX, "XLSX"),
    ],
)
async def test_a_file_that_is_not_csv_or_xlsx_is_415(
    tenant: Tenant, pool: asyncpg.Pool, data: bytes, content_type: str, words: str
) -> None:
    before = await counts(pool, tenant.id)
    body = problem(await upload(tenant.api, tenant.id, data, content_type=content_type), 415)
    assert words in body["detail"]
    assert await counts(pool, tenant.id) == before


@pytest.mark.parametrize("data", [b"", b" \r\n\r\n "])
async def test_an_empty_file_is_400_naming_file(tenant: Tenant, data: bytes) -> None:
    body = problem(await upload(tenant.api, tenant.id, data), 400)
    assert fields_of(body) == ["file"]
    assert "empty" in body["detail"]


async def test_a_file_without_a_header_row_is_400(tenant: Tenant) -> None:
    rows = [["XX公司计量器具台账"], ["压力表", "A123", "2026-01-15"], ["电子天平", "B778", "2026-01-05"]]
    body = problem(await upload(tenant.api, tenant.id, csv_bytes(rows)), 400)
    assert fields_of(body) == ["file"]
    assert "no header row" in body["detail"]


async def test_a_form_upload_is_415_with_a_hint(tenant: Tenant) -> None:
    response = await tenant.api.post(
        import_url(tenant.id), files={"file": ("ledger.csv", csv_bytes([HEADER, *GOOD]), "text/csv")}
    )
    body = problem(response, 415)
    assert "not as a form" in body["detail"]
    assert "--data-binary" in body["detail"]


async def test_a_csv_without_the_serial_column(tenant: Tenant, pool: asyncpg.Pool) -> None:
    data = csv_bytes([["计量器具名称", "管理编号", "检定周期"], ["数字多用表", "M-1", "12"]])
    report = (await upload(tenant.api, tenant.id, data, dry_run=True)).json()
    assert shown(report["problems"]) == [(1, None, "serial_no", None)]
    assert "no serial_no column" in report["problems"][0]["message"]
    assert "出厂编号" in report["problems"][0]["message"]
    before = await counts(pool, tenant.id)
    body = problem(await upload(tenant.api, tenant.id, data), 422)
    assert shown(body["rows"]) == [(1, None, "serial_no", None)]
    assert await counts(pool, tenant.id) == before


async def test_two_columns_for_one_field_are_a_problem_of_the_header(tenant: Tenant) -> None:
    data = csv_bytes([["计量器具名称", "出厂编号", "型号", "规格", "周期"], ["数字多用表", "F1", "F17B", "3½", "12"]])
    report = (await upload(tenant.api, tenant.id, data, dry_run=True)).json()
    assert shown(report["problems"]) == [(1, "规格", "model", "规格")]
    assert "two columns hold model" in report["problems"][0]["message"]


# ---------------------------------------------------------------------------------------------
# Limits (those of this module's app)


def _meter(n: int) -> list[str]:
    return [str(n), "数字多用表", "", "", "F17B", "Fluke", f"F-{n}", "", "12", "2025-08-31"]


async def test_a_file_over_the_byte_limit_is_413(tenant: Tenant, pool: asyncpg.Pool) -> None:
    data = csv_bytes([HEADER, _meter(1)]) + b"\r\n" * LIMIT_BYTES
    before = await counts(pool, tenant.id)
    body = problem(await upload(tenant.api, tenant.id, data), 413)
    assert "METREG_MAX_IMPORT_BYTES" in body["detail"]
    assert str(LIMIT_BYTES) in body["detail"]
    assert await counts(pool, tenant.id) == before


async def test_a_chunked_file_over_the_byte_limit_is_413(tenant: Tenant) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield csv_bytes([HEADER, _meter(1)])
        for _ in range(LIMIT_BYTES // 4096 + 1):
            yield b"\r\n" * 2048

    response = await tenant.api.post(import_url(tenant.id), content=chunks(), headers={"Content-Type": "text/csv"})
    assert "content-length" not in response.request.headers
    assert response.request.headers["transfer-encoding"] == "chunked"
    body = problem(response, 413)
    assert "METREG_MAX_IMPORT_BYTES" in body["detail"]


async def test_a_zip_bomb_disguised_as_xlsx_is_413(tenant: Tenant, pool: asyncpg.Pool) -> None:
    bomb = zip_bomb(32)  # 32 MiB of zeros in some 32 KiB: a small file that inflates past the limit
    assert len(bomb) < LIMIT_BYTES < LIMIT_BYTES * UNPACK_FACTOR < 32 << 20
    before = await counts(pool, tenant.id)
    body = problem(await upload(tenant.api, tenant.id, bomb, content_type=XLSX), 413)
    assert "unpacks to more than" in body["detail"]
    assert await counts(pool, tenant.id) == before


async def test_too_many_rows_is_413_and_blank_rows_do_not_count(tenant: Tenant) -> None:
    rows: list[list[str]] = [HEADER]
    for n in range(1, LIMIT_ROWS + 1):
        rows += [_meter(n), []]
    report = (await upload(tenant.api, tenant.id, csv_bytes(rows), dry_run=True)).json()
    assert (report["rows"], report["created"], report["problems"]) == (LIMIT_ROWS, LIMIT_ROWS, [])
    body = problem(await upload(tenant.api, tenant.id, csv_bytes([*rows, _meter(99)]), dry_run=True), 413)
    assert "METREG_MAX_IMPORT_ROWS" in body["detail"]
    assert f"more than {LIMIT_ROWS} data rows" in body["detail"]


async def test_a_small_real_workbook_passes_the_unpack_limit(tenant: Tenant) -> None:
    rows: list[list[object]] = [XLSX_HEADER, *([_meter(n) for n in range(1, LIMIT_ROWS + 1)])]
    response = await upload(tenant.api, tenant.id, xlsx_bytes(rows, title="XX公司计量器具台账"), dry_run=True)
    assert response.status_code == 200, response.text
    assert response.json()["rows"] == LIMIT_ROWS


# ---------------------------------------------------------------------------------------------
# Who may import


async def test_other_callers_may_not_import(
    make_tenant: MakeTenant, lab: LabAccount, app_client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    owner, stranger = await make_tenant(), await make_tenant()
    data = csv_bytes([HEADER, *GOOD])
    before = await counts(pool, owner.id)
    body = problem(await upload(stranger.api, owner.id, data), 404)
    assert owner.id in body["detail"]
    problem(await upload(stranger.api, owner.id, data, dry_run=True), 404)
    regulator = Api(app_client, await mint(pool, Role.REGULATOR, region_code="31"))
    problem(await upload(regulator, owner.id, data), 403)
    far = Api(app_client, await mint(pool, Role.REGULATOR, region_code="44"))
    problem(await upload(far, owner.id, data), 404)
    problem(await upload(lab.api, owner.id, data), 404)  # as for RegisterInstrument: labs do not see it
    problem(await upload(Api(app_client, None), owner.id, data), 401)
    assert await counts(pool, owner.id) == before
    # The stranger's own register is untouched too.
    assert (await counts(pool, stranger.id))["instruments"] == 0


async def test_an_admin_imports_and_the_history_is_read_by_owner_and_regulator_only(
    make_tenant: MakeTenant, admin: Api, app_client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    owner, stranger = await make_tenant(), await make_tenant()
    response = await upload(admin, owner.id, csv_bytes([HEADER, *GOOD]))
    assert response.status_code == 201, response.text
    import_id = response.json()["import_id"]
    assert (await owner.api.get(f"/v1/imports/{import_id}")).json()["actor_role"] == "admin"
    regulator = Api(app_client, await mint(pool, Role.REGULATOR, region_code="31"))
    assert (await regulator.get(f"/v1/imports/{import_id}")).status_code == 200
    listed = (await regulator.get(f"/v1/enterprises/{owner.id}/imports")).json()
    assert [i["id"] for i in listed["items"]] == [import_id]
    far = Api(app_client, await mint(pool, Role.REGULATOR, region_code="44"))
    for caller in (stranger.api, far):
        problem(await caller.get(f"/v1/imports/{import_id}"), 404)
        problem(await caller.get(f"/v1/enterprises/{owner.id}/imports"), 404)
    assert (await stranger.api.get(f"/v1/enterprises/{stranger.id}/imports")).json()["items"] == []


async def test_dates_set_by_a_certificate_are_not_changed_by_an_import(tenant: Tenant, lab: LabAccount) -> None:
    gauge = await tenant.register(
        **GAUGE, name="压力表", model="Y-100", manufacturer="红旗仪表", serial_no="A123", management_no="PG-001"
    )
    await accepted_request(tenant, lab, gauge["id"])
    recorded = await lab.record(gauge["id"])
    assert recorded.status_code == 201, recorded.text
    read = (await tenant.api.get(f"/v1/instruments/{gauge['id']}")).json()
    header = [
        "管理编号",
        "计量器具名称",
        "型号",
        "生产厂家",
        "出厂编号",
        "强检目录项",
        "强检用途",
        "上次检定日期",
        "有效期至",
    ]
    same = ["PG-001", "压力表", "Y-100", "红旗仪表", "A123", "压力表", "安全防护", read["last_verified_on"]]
    # The ledger's empty valid-until cell leaves the certificate's date; its own dates are refused.
    unchanged = (await upload(tenant.api, tenant.id, csv_bytes([header, [*same, ""]]), dry_run=True)).json()
    assert (unchanged["unchanged"], unchanged["problems"]) == (1, [])
    older = [*same[:7], "2026-01-15", ""]
    report = (await upload(tenant.api, tenant.id, csv_bytes([header, older]), dry_run=True)).json()
    assert shown(report["problems"]) == [(2, "上次检定日期", "last_verified_on", "2026-01-15")]
    assert "is set by certificate" in report["problems"][0]["message"]
