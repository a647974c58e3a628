"""Exporting the ledger (GET /v1/enterprises/{id}/ledger) and the filing table (…/filing).

Files are parsed back as a user's tools would read them: CSV with the csv module, XLSX with
python_calamine. The module's app reads two instruments at a time (METREG_EXPORT_BATCH_ROWS=2), so
every export here streams several batches. The round trips export a register of varied kinds and
import the file again, through the API: into a second enterprise, where every field must come
out equal, and as a dry run into the same one, where every row must be unchanged.
"""

from __future__ import annotations

import asyncio
import codecs
import csv
import datetime as dt
import io
import uuid
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import pytest
from click.testing import CliRunner, Result
from litestar import Litestar, Request, Response, get
from python_calamine import CalamineWorkbook

from service.app import create_app
from service.cli import main
from service.clock import FixedClock
from service.ledger.writing import XLSX_MEDIA_TYPE
from service.negotiation import vary_on
from tests.conftest import GAUGE, NOW, Api, MakeTenant, Tenant, app_settings, fields_of, mint, problem, running

BATCH_ROWS = 2
TODAY = "2026-06-15"  # NOW in Asia/Shanghai

ZH_HEADER = [
    "管理编号",
    "计量器具名称",
    "强检目录项",
    "型号规格",
    "准确度等级",
    "最大允许误差",
    "测量范围",
    "生产厂家",
    "出厂编号",
    "安装使用地点",
    "使用部门",
    "强检用途",
    "检定周期(月)",
    "上次检定日期",
    "有效期至",
    "使用状态",
    "是否强检",
    "溯源方式",
    "证书编号",
    "检定状态",
    "剩余天数",
]
EN_HEADER = [
    "Management No.",
    "Instrument name",
    "Catalogue item",
    "Model / specification",
    "Accuracy class",
    "MPE",
    "Measuring range",
    "Manufacturer",
    "Serial No.",
    "Location",
    "Department",
    "Legal use",
    "Cycle (months)",
    "Last verified on",
    "Valid until",
    "Lifecycle",
    "Compulsory",
    "Traceability",
    "Certificate No.",
    "Status",
    "Days until due",
]
#: The fields an import writes, and what the register computes from them.
FACTS = (
    "catalog_code",
    "name",
    "model",
    "serial_no",
    "manufacturer",
    "management_no",
    "measuring_range",
    "accuracy_class",
    "mpe",
    "location",
    "department",
    "legal_use",
    "lifecycle",
    "last_verified_on",
    "cycle_months",
    "valid_until",
    "regime",
    "compulsory",
    "traceability",
    "status",
    "days_until_due",
)


@pytest.fixture(scope="module")
async def app(database_url: str) -> AsyncIterator[Litestar]:
    """One app for the module that exports two rows a read."""
    app = create_app(app_settings(database_url, export_batch_rows=BATCH_ROWS), clock=FixedClock(NOW))
    async with running(app):
        yield app


@pytest.fixture(scope="module")
async def app_client(app: Litestar) -> AsyncIterator[httpx.AsyncClient]:
    """The module's client (``tenant`` and ``admin`` use it)."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://metreg.test") as client:
        yield client


async def body_events(app: Litestar, path: str, key: str) -> list[bytes]:
    """The bodies of the ASGI ``http.response.body`` events a GET is answered with, as sent.

    httpx's ASGI transport joins them; a stream's chunks are only visible at the ASGI interface.
    """
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"metreg.test"), (b"authorization", f"Bearer {key}".encode())],
        "client": ("127.0.0.1", 50000),
        "server": ("metreg.test", 80),
    }
    sent: list[dict[str, Any]] = []
    done = asyncio.Event()

    async def receive() -> dict[str, Any]:
        if not sent:
            return {"type": "http.request", "body": b"", "more_body": False}
        await done.wait()  # the client stays until the response is complete
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            done.set()

    await app(scope, receive, send)  # type: ignore[arg-type]
    assert (sent[0]["type"], sent[0].get("status")) == ("http.response.start", 200), sent
    return [m["body"] for m in sent[1:] if m["body"]]


def ledger_url(tenant: Tenant) -> str:
    return f"/v1/enterprises/{tenant.id}/ledger"


def read_csv(response: httpx.Response) -> list[list[str]]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.content.startswith(codecs.BOM_UTF8)
    return list(csv.reader(io.StringIO(response.content.decode("utf-8-sig"), newline="")))


def read_xlsx(response: httpx.Response) -> list[list[Any]]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == XLSX_MEDIA_TYPE
    sheet = CalamineWorkbook.from_filelike(io.BytesIO(response.content)).get_sheet_by_index(0)
    return [list(row) for row in sheet.to_python(skip_empty_area=False)]


def by_serial(header: list[Any], rows: list[list[Any]]) -> dict[str, dict[str, Any]]:
    serial = header.index("出厂编号") if "出厂编号" in header else header.index("Serial No.")
    return {str(r[serial]): dict(zip(header, r, strict=True)) for r in rows}


async def register_varied(tenant: Tenant, tag: str) -> dict[str, dict[str, Any]]:
    """A register of every kind of fact, by serial number.

    A gauge on the catalogue's cycle and a computed valid-until; a balance on its own shorter
    cycle with a printed valid-until; an uncatalogued multimeter calibrated on the enterprise's
    cycle; a glass thermometer verified once; a household water meter of limited life; a sealed
    weight; a taximeter never verified; and a scrapped sound level meter.
    """
    common = {"department": "设备部", "location": "一号车间"}
    made = [
        await tenant.register(
            **GAUGE,
            **common,
            name="一般压力表",
            serial_no=f"{tag}-G1",
            management_no=f"{tag}-001",
            model="Y-100",
            manufacturer="红旗仪表",
            accuracy_class="1.6级",
            measuring_range="0～1.6 MPa",
            last_verified_on="2026-01-15",
        ),
        await tenant.register(
            catalog_code="electronic_balance",
            legal_use="trade_settlement",
            name="电子天平",
            serial_no=f"{tag}-B2",
            management_no=f"{tag}-002",
            model="JA2003",
            manufacturer="上海精科",
            mpe="±0.5 e",
            cycle_months=6,
            last_verified_on="2026-03-01",
            valid_until="2026-08-31",
        ),
        await tenant.register(
            name="数字多用表",
            serial_no=f"{tag}-M3",
            model="F17B",
            manufacturer="Fluke",
            cycle_months=12,
            last_verified_on="2025-08-31",
            **common,
        ),
        await tenant.register(
            catalog_code="clinical_thermometer_glass",
            legal_use="medical",
            name="玻璃体温计",
            serial_no=f"{tag}-T4",
            management_no=f"{tag}-004",
            last_verified_on="2025-11-20",
        ),
        await tenant.register(
            catalog_code="water_meter_dn25",
            legal_use="trade_settlement",
            name="冷水水表",
            serial_no=f"{tag}-W5",
            management_no=f"{tag}-005",
            last_verified_on="2024-05-10",
        ),
        await tenant.register(
            catalog_code="weights",
            legal_use="trade_settlement",
            name="砝码",
            serial_no=f"{tag}-S6",
            management_no=f"{tag}-006",
            lifecycle="sealed",
            last_verified_on="2026-02-01",
        ),
        await tenant.register(
            catalog_code="taximeter",
            legal_use="trade_settlement",
            name="出租汽车计价器",
            serial_no=f"{tag}-X7",
            management_no=f"{tag}-007",
        ),
        await tenant.register(
            catalog_code="sound_level_meter",
            legal_use="environmental_monitoring",
            name="声级计",
            serial_no=f"{tag}-L8",
            management_no=f"{tag}-008",
            last_verified_on="2026-04-01",
        ),
    ]
    scrapped = await tenant.api.post(f"/v1/instruments/{made[-1]['id']}/scrap", json={"reason": "损坏"})
    assert scrapped.status_code == 200, scrapped.text
    listed = await tenant.api.get(tenant.instruments_url, params={"limit": 500})
    return {i["serial_no"]: i for i in listed.json()["items"]}


# ---------------------------------------------------------------------------------------------
# The ledger's contents


async def test_csv_in_chinese_holds_every_column_as_the_import_reads_it(tenant: Tenant) -> None:
    registered = await register_varied(tenant, "ZH")
    response = await tenant.api.get(ledger_url(tenant))
    header, *rows = read_csv(response)
    assert header == ZH_HEADER
    assert len(rows) == len(registered)
    found = by_serial(header, rows)
    assert found["ZH-G1"] == {
        "管理编号": "ZH-001",
        "计量器具名称": "一般压力表",
        "强检目录项": "压力表",
        "型号规格": "Y-100",
        "准确度等级": "1.6级",
        "最大允许误差": "",
        "测量范围": "0～1.6 MPa",
        "生产厂家": "红旗仪表",
        "出厂编号": "ZH-G1",
        "安装使用地点": "一号车间",
        "使用部门": "设备部",
        "强检用途": "安全防护",
        "检定周期(月)": "6",  # the catalogue's: the instrument has none of its own
        "上次检定日期": "2026-01-15",
        "有效期至": "2026-07-14",
        "使用状态": "在用",
        "是否强检": "是",
        "溯源方式": "检定",
        "证书编号": "",
        "检定状态": "即将到期",
        "剩余天数": "29",
    }
    meter = found["ZH-M3"]
    assert [meter[k] for k in ("强检目录项", "强检用途", "是否强检", "溯源方式")] == ["", "非强检", "否", "校准"]
    assert (meter["检定周期(月)"], meter["有效期至"], meter["检定状态"]) == ("12", "2026-08-30", "有效")
    assert (found["ZH-S6"]["使用状态"], found["ZH-S6"]["检定状态"]) == ("封存", "封存")
    never = found["ZH-X7"]
    assert (never["上次检定日期"], never["检定状态"], never["剩余天数"]) == ("", "未检定", "")
    assert found["ZH-L8"]["使用状态"] == "报废"
    thermometer = found["ZH-T4"]  # verified once, scrapped when it fails: no cycle, no end
    assert (thermometer["检定周期(月)"], thermometer["有效期至"]) == ("", "")
    # Ledger order: numbered instruments by number, then the rest.
    assert [r[0] for r in rows] == [*sorted(f"ZH-00{n}" for n in (1, 2, 4, 5, 6, 7, 8)), ""]
    disposition = response.headers["content-disposition"]
    assert disposition.startswith(f'attachment; filename="instrument-ledger-{TODAY}.csv"; ')
    assert unquote(disposition.partition("filename*=UTF-8''")[2]) == f"计量器具台账-{TODAY}.csv"


async def test_xlsx_in_english_has_date_cells_numbers_and_a_frozen_bold_header(tenant: Tenant) -> None:
    registered = await register_varied(tenant, "EN")
    response = await tenant.api.get(ledger_url(tenant), params={"format": "xlsx", "lang": "en"})
    header, *rows = read_xlsx(response)
    assert header == EN_HEADER
    assert len(rows) == len(registered)
    gauge = by_serial(header, rows)["EN-G1"]
    assert gauge["Catalogue item"] == "Pressure gauge"
    assert (gauge["Legal use"], gauge["Lifecycle"], gauge["Status"]) == ("safety_protection", "in_service", "due_soon")
    assert (gauge["Compulsory"], gauge["Traceability"]) == ("yes", "verification")
    assert gauge["Last verified on"] == dt.date(2026, 1, 15)
    assert gauge["Valid until"] == dt.date(2026, 7, 14)
    assert gauge["Cycle (months)"] == 6
    assert gauge["Days until due"] == 29
    assert gauge["MPE"] == ""
    with zipfile.ZipFile(io.BytesIO(response.content)) as book:
        sheet = book.read("xl/worksheets/sheet1.xml").decode()
        styles = book.read("xl/styles.xml").decode()
    assert 'ySplit="1"' in sheet
    assert 'state="frozen"' in sheet
    assert "<b/>" in styles
    assert sheet.count("<col ") == len(EN_HEADER)
    assert f"instrument-ledger-{TODAY}.xlsx" in response.headers["content-disposition"]


async def test_an_empty_register_exports_its_header(tenant: Tenant) -> None:
    header, *rows = read_csv(await tenant.api.get(ledger_url(tenant)))
    assert (header, rows) == (ZH_HEADER, [])
    header, *rows = read_xlsx(await tenant.api.get(ledger_url(tenant), params={"format": "xlsx"}))
    assert (header, rows) == (ZH_HEADER, [])


async def test_more_rows_than_a_read_stream_in_one_chunk_per_read(tenant: Tenant, app: Litestar) -> None:
    serials = [f"BATCH-{n}" for n in range(7)]
    for serial in serials:
        await tenant.register(name="数字温度计", serial_no=serial, cycle_months=12)
    assert tenant.api.key is not None
    chunks = await body_events(app, ledger_url(tenant), tenant.api.key)
    # The header, then one chunk for each read of two rows: 2, 2, 2 and 1.
    assert len(chunks) == 1 + 4
    assert [chunk.count(b"\r\n") for chunk in chunks] == [1, 2, 2, 2, 1]
    header, *rows = csv.reader(io.StringIO(b"".join(chunks).decode("utf-8-sig"), newline=""))
    assert sorted(r[header.index("出厂编号")] for r in rows) == serials


async def test_a_text_a_spreadsheet_would_run_gets_a_quote_in_csv_only(tenant: Tenant) -> None:
    await tenant.register(
        name='=HYPERLINK("http://evil","点击")',
        serial_no="F-1",
        cycle_months=12,
        mpe="-0.5%",
        location="@SUM(A1)",
        department="+86 工程部",
        model="'quoted",
        accuracy_class="'-0.5级",  # starts like a guarded cell: guarded once more, so it comes back whole
    )
    header, row = read_csv(await tenant.api.get(ledger_url(tenant)))
    cells = dict(zip(header, row, strict=True))
    assert cells["计量器具名称"] == '\'=HYPERLINK("http://evil","点击")'
    assert (cells["最大允许误差"], cells["安装使用地点"], cells["使用部门"]) == ("'-0.5%", "'@SUM(A1)", "'+86 工程部")
    assert (cells["型号规格"], cells["准确度等级"]) == ("'quoted", "''-0.5级")
    response = await tenant.api.get(ledger_url(tenant), params={"format": "xlsx"})
    header, row = read_xlsx(response)
    cells = dict(zip(header, row, strict=True))
    assert cells["计量器具名称"] == '=HYPERLINK("http://evil","点击")'  # text, never a formula
    assert cells["最大允许误差"] == "-0.5%"
    with zipfile.ZipFile(io.BytesIO(response.content)) as book:
        assert "<f>" not in book.read("xl/worksheets/sheet1.xml").decode()


# ---------------------------------------------------------------------------------------------
# Negotiation and bad input


@pytest.mark.parametrize(
    ("accept", "query", "kind"),
    [
        (None, {}, "csv"),
        ("*/*", {}, "csv"),
        ("text/csv", {}, "csv"),
        ("text/*", {}, "csv"),
        (XLSX_MEDIA_TYPE, {}, "xlsx"),
        (f"text/csv;q=0.5, {XLSX_MEDIA_TYPE}", {}, "xlsx"),
        (f"{XLSX_MEDIA_TYPE};q=0.9, text/csv;q=0.8", {}, "xlsx"),
        # q=0 refuses a type (RFC 9110 §12.4.2), even where a wider range would take it.
        (f"text/csv;q=0, {XLSX_MEDIA_TYPE}", {}, "xlsx"),
        ("text/csv;q=0, */*", {}, "xlsx"),
        ("text/csv;q=0", {"format": "csv"}, "csv"),
        ("text/html,application/xhtml+xml,*/*;q=0.8", {}, "csv"),
        ("application/json", {"format": "xlsx"}, "xlsx"),
        (XLSX_MEDIA_TYPE, {"format": "csv"}, "csv"),
    ],
)
async def test_format_wins_over_accept_which_wins_over_the_default(
    tenant: Tenant, accept: str | None, query: dict[str, str], kind: str
) -> None:
    headers = {"Accept": accept} if accept is not None else {}
    if accept is None:
        # httpx sends Accept: */* by itself; a request without the header is what this case is about.
        client = tenant.api.client
        request = client.build_request("GET", ledger_url(tenant), headers={"Authorization": f"Bearer {tenant.api.key}"})
        del request.headers["accept"]
        response = await client.send(request)
    else:
        response = await tenant.api.get(ledger_url(tenant), params=query, headers=headers)
    header = read_csv(response)[0] if kind == "csv" else read_xlsx(response)[0]
    assert header == ZH_HEADER
    # Chosen by Accept (its absence included), the answer says so to caches; ?format= chose alone.
    assert response.headers.get("vary") == (None if "format" in query else "Accept")


@pytest.mark.parametrize("accept", ["application/json", "text/csv;q=0", "*/*;q=0", "text/*;q=0.5, text/csv;q=0"])
async def test_an_accept_no_format_matches_is_a_406(tenant: Tenant, accept: str) -> None:
    refused = await tenant.api.get(ledger_url(tenant), headers={"Accept": accept})
    body = problem(refused, 406)
    assert refused.headers["vary"] == "Accept"
    assert body["type"] == "urn:metreg:problem:not-acceptable"
    assert "text/csv" in body["detail"]
    assert XLSX_MEDIA_TYPE in body["detail"]


@pytest.mark.parametrize("accept", ["text/csv", f"{XLSX_MEDIA_TYPE};q=0", f"text/csv, {XLSX_MEDIA_TYPE};q=0"])
async def test_an_accept_refusing_the_filing_is_a_406(tenant: Tenant, accept: str) -> None:
    filing = f"/v1/enterprises/{tenant.id}/filing"
    refused = await tenant.api.get(filing, headers={"Accept": accept})
    body = problem(refused, 406)
    assert body["detail"] == f"this operation writes {XLSX_MEDIA_TYPE}; the Accept header does not take it"
    assert refused.headers["vary"] == "Accept"
    taken = await tenant.api.get(filing, headers={"Accept": XLSX_MEDIA_TYPE})
    assert (taken.status_code, taken.headers["vary"]) == (200, "Accept")


@pytest.mark.parametrize(
    ("own", "sent"), [("Origin", "Origin, Accept"), ("Origin, accept", "Origin, accept"), ("*", "*")]
)
async def test_vary_accept_is_merged_with_a_vary_the_answer_has(database_url: str, own: str, sent: str) -> None:
    """As a negotiating route notes it (``vary_on``), on an answer that varies on something already."""

    @get("/v1/test-vary", opt={"public": True}, include_in_schema=False)
    async def varied(request: Request[Any, Any, Any]) -> Response[str]:
        vary_on(request.scope["state"], "Accept")
        return Response("negotiated", headers={"Vary": own})

    app = create_app(app_settings(database_url), clock=FixedClock(NOW))
    app.register(varied)
    async with running(app), httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        response = await client.get("/v1/test-vary")
    assert response.headers.get_list("vary") == [sent]


@pytest.mark.parametrize(("name", "value"), [("format", "pdf"), ("format", "CSV "), ("lang", "fr"), ("lang", "")])
async def test_a_bad_format_or_lang_is_a_400_naming_it(tenant: Tenant, name: str, value: str) -> None:
    body = problem(await tenant.api.get(ledger_url(tenant), params={name: value}), 400)
    assert fields_of(body) == [name]


async def test_another_tenants_ledger_and_filing_are_not_found(tenant: Tenant, make_tenant: MakeTenant) -> None:
    other = await make_tenant()
    await other.register(**GAUGE, serial_no="THEIRS-1", last_verified_on="2026-01-15")
    for path in ("ledger", "filing"):
        theirs = problem(await tenant.api.get(f"/v1/enterprises/{other.id}/{path}"), 404)
        nobody = uuid.uuid4()
        absent = problem(await tenant.api.get(f"/v1/enterprises/{nobody}/{path}"), 404)
        assert theirs["detail"].replace(other.id, "<id>") == absent["detail"].replace(str(nobody), "<id>")
        assert "THEIRS-1" not in theirs["detail"]


async def test_a_regulator_of_the_region_exports_and_one_of_another_does_not(
    tenant: Tenant, app_client: httpx.AsyncClient, pool: Any
) -> None:
    from service.auth import Role

    await tenant.register(**GAUGE, serial_no="REG-1", last_verified_on="2026-01-15")
    ours = Api(app_client, await mint(pool, Role.REGULATOR, region_code="3101"))
    header, *rows = read_csv(await ours.get(ledger_url(tenant)))
    assert [r[header.index("出厂编号")] for r in rows] == ["REG-1"]
    theirs = Api(app_client, await mint(pool, Role.REGULATOR, region_code="44"))
    problem(await theirs.get(ledger_url(tenant)), 404)


# ---------------------------------------------------------------------------------------------
# The filing table


async def test_the_filing_table_lists_the_compulsory_instruments_still_kept(tenant: Tenant) -> None:
    await register_varied(tenant, "FI")
    response = await tenant.api.get(f"/v1/enterprises/{tenant.id}/filing")
    grid = read_xlsx(response)
    text = [" ".join(str(c) for c in row if c not in ("", None)) for row in grid]
    assert text[0] == "强制检定计量器具备案表"
    assert text[1] == f"使用单位名称：{tenant.enterprise['name']}"
    assert text[2] == f"统一社会信用代码：{tenant.enterprise['credit_code']}"
    # The tenant keeps no address or contact: those lines are left to fill in by hand.
    assert text[3] == "单位地址："
    assert text[4].startswith("联系人：")
    assert text[4].endswith("联系电话：")
    header = grid[5]
    assert header == [
        "序号",
        "计量器具名称",
        "强检目录项",
        "规格型号",
        "准确度等级",
        "测量范围",
        "出厂编号",
        "数量",
        "强检用途",
        "安装使用地点",
        "生产厂家",
        "检定周期(月)",
        "检定机构",
    ]
    rows = [dict(zip(header, r, strict=True)) for r in grid[6:] if r[0] not in ("", None)]
    rows, footer = rows[:-1], rows[-1]
    # Not the uncatalogued multimeter (calibrated), nor the scrapped sound level meter.
    assert [r["出厂编号"] for r in rows] == ["FI-G1", "FI-B2", "FI-T4", "FI-W5", "FI-S6", "FI-X7"]
    assert [r["序号"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert rows[0] == {
        "序号": 1,
        "计量器具名称": "一般压力表",
        "强检目录项": "压力表",
        "规格型号": "Y-100",
        "准确度等级": "1.6级",
        "测量范围": "0～1.6 MPa",
        "出厂编号": "FI-G1",
        "数量": 1,
        "强检用途": "安全防护",
        "安装使用地点": "一号车间",
        "生产厂家": "红旗仪表",
        "检定周期(月)": 6,
        "检定机构": "",
    }
    assert rows[1]["检定周期(月)"] == 6  # the balance's own
    assert footer["序号"].startswith("共 6 台件")
    assert footer["序号"].endswith(f"填表日期：{TODAY}")
    with zipfile.ZipFile(io.BytesIO(response.content)) as book:
        assert 'ySplit="6"' in book.read("xl/worksheets/sheet1.xml").decode()
    assert unquote(response.headers["content-disposition"].partition("''")[2]) == f"强制检定计量器具备案表-{TODAY}.xlsx"


async def test_the_filing_leaves_out_types_under_type_approval_only_and_non_compulsory_uses(tenant: Tenant) -> None:
    """Compulsory verification needs a catalogue item whose regime is a verification one and one of
    its compulsory uses (domain.md §0 fact 1): a load cell (称重传感器, type approval only) weighing for
    trade, and a pressure gauge used for no compulsory purpose, are calibrated, not filed."""
    await tenant.register(
        catalog_code="load_cell", legal_use="trade_settlement", name="称重传感器", serial_no="TA-1", cycle_months=12
    )
    await tenant.register(**{**GAUGE, "legal_use": "none"}, name="一般压力表", serial_no="TA-2", cycle_months=12)
    await tenant.register(**GAUGE, name="一般压力表", serial_no="TA-3", last_verified_on="2026-05-01")
    response = await tenant.api.get(f"/v1/enterprises/{tenant.id}/filing")
    grid = read_xlsx(response)
    header = grid[5]
    rows = [dict(zip(header, r, strict=True)) for r in grid[6:] if r[0] not in ("", None)][:-1]
    assert [r["出厂编号"] for r in rows] == ["TA-3"]
    listed = (await tenant.api.get(tenant.instruments_url, params={"limit": 10})).json()["items"]
    assert {i["serial_no"]: i["compulsory"] for i in listed} == {"TA-1": False, "TA-2": False, "TA-3": True}


def title_block(response: httpx.Response) -> list[str]:
    """The filing table's lines above its header: title, name, credit code, address, contact."""
    grid = read_xlsx(response)
    assert grid[5][:2] == ["序号", "计量器具名称"]
    return [" ".join(str(c) for c in row if c not in ("", None)) for row in grid[:5]]


async def test_the_filing_title_block_prints_the_stored_address_and_contact(
    make_tenant: MakeTenant, app_client: httpx.AsyncClient, pool: Any
) -> None:
    from service.auth import Role

    given = {
        "address": "上海市浦东新区川沙路 5588 号",
        "contact_name": "陈静",
        "contact_phone": "021-5012 3456 转 8012",
    }
    tenant = await make_tenant(region_code="310115", **given)
    await tenant.register(**GAUGE, serial_no="TB-1", last_verified_on="2026-01-15")
    expected = [
        "强制检定计量器具备案表",
        f"使用单位名称：{tenant.enterprise['name']}",
        f"统一社会信用代码：{tenant.enterprise['credit_code']}",
        "单位地址：上海市浦东新区川沙路 5588 号",
        "联系人：陈静　　　　联系电话：021-5012 3456 转 8012",
    ]
    assert title_block(await tenant.api.get(f"/v1/enterprises/{tenant.id}/filing")) == expected
    # A regulator of the region gets the same table.
    regulator = Api(app_client, await mint(pool, Role.REGULATOR, region_code="3101"))
    response = await regulator.get(f"/v1/enterprises/{tenant.id}/filing")
    assert title_block(response) == expected
    assert [row[6] for row in read_xlsx(response)[6:7]] == ["TB-1"]


async def test_a_title_line_is_left_blank_only_for_what_is_not_stored(tenant: Tenant) -> None:
    url, filing = f"/v1/enterprises/{tenant.id}", f"/v1/enterprises/{tenant.id}/filing"
    assert (await tenant.api.patch(url, json={"contact_phone": "+86 21 5012 3456"})).status_code == 200
    lines = title_block(await tenant.api.get(filing))
    # No name: room to write one in, then the phone that is kept.
    assert lines[3:] == ["单位地址：", "联系人：" + "　" * 8 + "联系电话：+86 21 5012 3456"]
    changed = {"address": "上海市徐汇区漕宝路 88 号", "contact_name": "李娜", "contact_phone": None}
    assert (await tenant.api.patch(url, json=changed)).status_code == 200
    lines = title_block(await tenant.api.get(filing))
    assert lines[3:] == ["单位地址：上海市徐汇区漕宝路 88 号", "联系人：李娜　　　　联系电话："]


# ---------------------------------------------------------------------------------------------
# Round trips: export, then import the file again


async def _export(tenant: Tenant, kind: str, lang: str) -> bytes:
    response = await tenant.api.get(ledger_url(tenant), params={"format": kind, "lang": lang})
    assert response.status_code == 200, response.text
    return response.content


async def _import(tenant: Tenant, data: bytes, *, dry_run: bool) -> dict[str, Any]:
    response = await tenant.api.post(
        f"{tenant.instruments_url}/import",
        content=data,
        params={"dry_run": str(dry_run).lower()},
        headers={"Content-Type": "application/octet-stream"},
    )
    assert response.status_code == (200 if dry_run else 201), response.text
    report: dict[str, Any] = response.json()
    assert report["problems"] == []
    return report


def _facts(instrument: dict[str, Any]) -> dict[str, Any]:
    return {k: instrument[k] for k in FACTS}


@pytest.mark.parametrize("lang", ["zh", "en"])
@pytest.mark.parametrize("kind", ["csv", "xlsx"])
async def test_an_export_imports_into_another_enterprise_with_every_fact_equal(
    make_tenant: MakeTenant, kind: str, lang: str
) -> None:
    source, target = await make_tenant(), await make_tenant()
    registered = await register_varied(source, f"RT{kind}{lang}")
    # A scrapped instrument is imported as scrapped; a replaced one could not be (replacement is
    # an operation), and the varied register has none.
    report = await _import(target, await _export(source, kind, lang), dry_run=False)
    assert (report["rows"], report["created"]) == (len(registered), len(registered))
    listed = (await target.api.get(target.instruments_url, params={"limit": 500})).json()["items"]
    copied = {i["serial_no"]: i for i in listed}
    assert {s: _facts(i) for s, i in copied.items()} == {s: _facts(i) for s, i in registered.items()}


#: Instruments whose every fact is their own: a cycle other than the catalogue's, a printed
#: valid-until, or no verification at all.
async def _own_facts(tenant: Tenant, tag: str) -> int:
    await tenant.register(
        **GAUGE,
        name="精密压力表",
        serial_no=f"{tag}-1",
        management_no=f"{tag}-1",
        cycle_months=3,
        last_verified_on="2026-05-01",
        valid_until="2026-07-31",
        model="=A1",  # text that CSV would guard; XLSX needs no guard
    )
    await tenant.register(
        name="游标卡尺", serial_no=f"{tag}-2", cycle_months=12, department="'=质检部", model="0-150mm"
    )
    await tenant.register(
        catalog_code="taximeter", legal_use="trade_settlement", name="计价器", serial_no=f"{tag}-3", cycle_months=6
    )
    return 3


@pytest.mark.parametrize("lang", ["zh", "en"])
async def test_an_xlsx_export_of_own_facts_imports_back_unchanged(tenant: Tenant, lang: str) -> None:
    rows = await _own_facts(tenant, f"OWN{lang}")
    report = await _import(tenant, await _export(tenant, "xlsx", lang), dry_run=True)
    assert (report["rows"], report["unchanged"], report["created"], report["updated"]) == (rows, rows, 0, 0)


async def test_a_csv_export_with_guarded_text_imports_back_unchanged(tenant: Tenant) -> None:
    rows = await _own_facts(tenant, "GUARD")
    report = await _import(tenant, await _export(tenant, "csv", "zh"), dry_run=True)
    assert (report["rows"], report["unchanged"]) == (rows, rows)


@pytest.mark.parametrize("kind", ["csv", "xlsx"])
async def test_an_export_of_the_varied_register_imports_back_unchanged(tenant: Tenant, kind: str) -> None:
    registered = await register_varied(tenant, f"BACK{kind}")
    report = await _import(tenant, await _export(tenant, kind, "zh"), dry_run=True)
    assert (report["rows"], report["unchanged"]) == (len(registered), len(registered))


# ---------------------------------------------------------------------------------------------
# The command


def _cli(database_url: str, *args: str) -> Result:
    return CliRunner().invoke(main, list(args), env={"DATABASE_URL": database_url})


async def test_metreg_export_writes_what_the_api_sends_and_it_imports_back(
    tenant: Tenant, database_url: str, tmp_path: Path
) -> None:
    await _own_facts(tenant, "CLI")
    ledger, filing = tmp_path / "ledger.xlsx", tmp_path / "备案表.xlsx"
    # The command runs its own event loop, so it runs beside the test's.
    told = []
    for args in (["-o", str(ledger)], ["--filing", "-o", str(filing)]):
        result = await asyncio.to_thread(_cli, database_url, "export", "--enterprise", tenant.id, *args)
        assert result.exit_code == 0, result.output
        told.append(result.stderr)
    assert told == [
        f"exported the ledger (xlsx, zh): 3 instruments to {ledger}\n",
        f"exported the filing table: 2 instruments to {filing}\n",
    ]
    api = await tenant.api.get(ledger_url(tenant), params={"format": "xlsx"})
    sheet = CalamineWorkbook.from_path(str(ledger)).get_sheet_by_index(0)
    # The same facts; status and days until due differ, the command's today being the real one.
    imported = len(ZH_HEADER) - 5
    assert [r[:imported] for r in sheet.to_python(skip_empty_area=False)] == [r[:imported] for r in read_xlsx(api)]
    filed = CalamineWorkbook.from_path(str(filing)).get_sheet_by_index(0).to_python(skip_empty_area=False)
    assert filed[0][0] == "强制检定计量器具备案表"
    assert [row[6] for row in filed[6:9]] == ["CLI-1", "CLI-3", ""]  # the calibrated calliper is not filed
    dry_run = await asyncio.to_thread(_cli, database_url, "import", str(ledger), "--enterprise", tenant.id, "--dry-run")
    assert dry_run.exit_code == 0, dry_run.output
    assert "0 would be created, 0 updated, 3 unchanged" in dry_run.output


async def test_metreg_export_writes_csv_to_standard_output_and_refuses_a_csv_filing(
    tenant: Tenant, database_url: str
) -> None:
    await tenant.register(name="游标卡尺", serial_no="CLI-OUT", cycle_months=12)
    result = await asyncio.to_thread(_cli, database_url, "export", "--enterprise", tenant.id, "--lang", "en")
    assert result.exit_code == 0, result.output
    header, row = csv.reader(io.StringIO(result.stdout_bytes.decode("utf-8-sig"), newline=""))
    assert header == EN_HEADER
    assert row[header.index("Serial No.")] == "CLI-OUT"
    refused = await asyncio.to_thread(
        _cli, database_url, "export", "--enterprise", tenant.id, "--filing", "--format", "csv"
    )
    assert refused.exit_code == 2
    assert "the filing table is XLSX only" in refused.output
    unknown = await asyncio.to_thread(_cli, database_url, "export", "--enterprise", str(uuid.uuid4()))
    assert unknown.exit_code == 1
    assert "no enterprise" in unknown.output


async def test_csv_downloads_beyond_half_the_pool_are_503_and_each_stream_gives_its_slot_back(
    tenant: Tenant, app: Litestar, database_url: str
) -> None:
    """Each CSV stream holds a connection while the client reads: at most half the pool's may, so
    the rest of the API keeps its connections."""
    await tenant.register(**GAUGE, serial_no="SLOT-1")
    limit = max(1, app_settings(database_url).db_pool_max // 2)
    assert app.state.get("csv_exports", 0) == 0
    app.state.csv_exports = limit  # as many downloads as may run, still running
    try:
        busy = await tenant.api.get(ledger_url(tenant))
    finally:
        app.state.csv_exports = 0
    assert problem(busy, 503)["detail"].startswith(f"{limit} ledger downloads are running")
    assert busy.headers["retry-after"]
    done = await tenant.api.get(ledger_url(tenant))
    assert done.status_code == 200
    assert "SLOT-1" in done.content.decode("utf-8-sig")
    assert app.state.csv_exports == 0  # the finished stream gave its slot back
    # An XLSX is written inside the request and holds no connection after it: never refused so.
    app.state.csv_exports = limit
    try:
        assert (await tenant.api.get(ledger_url(tenant), params={"format": "xlsx"})).status_code == 200
    finally:
        app.state.csv_exports = 0
