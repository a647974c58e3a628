"""Reading the register: filters, keyset paging, PATCH with versions, and the time-zone rule."""

from __future__ import annotations

import asyncio
import datetime as dt

import asyncpg
import httpx
import pytest

from service.app import create_app
from service.auth import Role
from service.clock import FixedClock
from service.pagination import PAGE_ORDER
from tests.conftest import GAUGE, Api, MakeTenant, Tenant, app_settings, fields_of, mint, problem, running


async def _ids(api: Api, url: str, **params: object) -> list[str]:
    response = await api.get(url, params=params)
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["items"]]


async def test_filters(tenant: Tenant) -> None:
    overdue = await tenant.register(**GAUGE, name="锅炉压力表", last_verified_on="2025-11-01")  # until 2026-04-30
    soon = await tenant.register(**GAUGE, last_verified_on="2026-01-01")  # until 2026-06-30
    fresh = await tenant.register(**GAUGE, management_no="PG-777", last_verified_on="2026-06-01")  # 2026-11-30
    scale = await tenant.register(
        catalog_code="price_scale", legal_use="trade_settlement", name="电子计价秤", last_verified_on="2026-03-01"
    )  # until 2027-02-28
    never = await tenant.register(name="游标卡尺", cycle_months=12)
    url = tenant.instruments_url
    assert await _ids(tenant.api, url) == [overdue["id"], soon["id"], fresh["id"], scale["id"], never["id"]]
    assert await _ids(tenant.api, url, status="overdue") == [overdue["id"]]
    assert await _ids(tenant.api, url, status="due_soon") == [soon["id"]]
    assert await _ids(tenant.api, url, status="valid") == [fresh["id"], scale["id"]]
    assert await _ids(tenant.api, url, status="unverified") == [never["id"]]
    assert await _ids(tenant.api, url, catalog_code="price_scale") == [scale["id"]]
    assert await _ids(tenant.api, url, legal_use="none") == [never["id"]]
    assert await _ids(tenant.api, url, due_before="2026-07-01") == [overdue["id"], soon["id"]]
    assert await _ids(tenant.api, url, due_before="2026-06-30") == [overdue["id"]]
    assert await _ids(tenant.api, url, q="锅炉") == [overdue["id"]]
    assert await _ids(tenant.api, url, q="pg-777") == [fresh["id"]]
    assert await _ids(tenant.api, url, q="100%") == []
    # as_of moves every status, in filters as in reads.
    assert await _ids(tenant.api, url, status="overdue", as_of="2026-07-01") == [overdue["id"], soon["id"]]
    assert await _ids(tenant.api, url, status="due_soon", as_of="2026-11-01") == [fresh["id"]]
    assert await _ids(tenant.api, url, status="overdue", as_of="2026-04-30") == []
    assert await _ids(tenant.api, url, status="valid", due_before="2027-01-01") == [fresh["id"]]


async def test_filter_input_errors_name_the_parameter(tenant: Tenant) -> None:
    url = tenant.instruments_url
    for params, field in [
        ({"status": "lost"}, "status"),
        ({"as_of": "2026-13-01"}, "as_of"),
        ({"due_before": "tomorrow"}, "due_before"),
        ({"limit": 0}, "limit"),
        ({"limit": 501}, "limit"),
        ({"cursor": "%%%"}, "cursor"),
        ({"cursor": "bm9wZQ"}, "cursor"),
        ({"legal_use": "fun"}, "legal_use"),
        ({"as_of": "0900-01-01"}, "as_of"),
    ]:
        assert fields_of(problem(await tenant.api.get(url, params=params), 400)) == [field], params


async def test_keyset_paging_visits_every_row_once(tenant: Tenant, pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await conn.executemany(
            """INSERT INTO instruments (enterprise_id, name, serial_no, regime, cycle_months, last_verified_on,
                                        valid_until)
               VALUES ($1, 'gauge', $2, 'not_controlled', 12, $3, $4)""",
            [
                (
                    tenant.enterprise["id"],
                    f"P{n:03d}",
                    dt.date(2026, 1, 1) if n % 3 else None,
                    dt.date(2026, 1, 1) + dt.timedelta(days=n % 7) if n % 3 else None,
                )
                for n in range(57)
            ],
        )
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, object] = {"limit": 10} | ({"cursor": cursor} if cursor else {})
        page = (await tenant.api.get(tenant.instruments_url, params=params)).json()
        seen += [item["id"] for item in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 6
    assert len(seen) == len(set(seen)) == 57
    everything = await _ids(tenant.api, tenant.instruments_url, limit=500)
    assert seen == everything
    unverified = await _ids(tenant.api, tenant.instruments_url, status="unverified", limit=500)
    assert everything[-len(unverified) :] == unverified  # never-expiring rows sort last


async def test_update_with_version_and_if_match(tenant: Tenant) -> None:
    gauge = await tenant.register(**GAUGE, last_verified_on="2026-01-15")
    url = f"/v1/instruments/{gauge['id']}"
    missing = problem(await tenant.api.patch(url, json={"location": "锅炉房"}), 400)
    assert fields_of(missing) == ["version"]
    moved = await tenant.api.patch(url, json={"location": "锅炉房", "version": 1})
    assert moved.status_code == 200, moved.text
    assert (moved.json()["location"], moved.json()["version"]) == ("锅炉房", 2)
    assert moved.headers["etag"] == '"2"'
    problem(await tenant.api.patch(url, json={"location": "x", "version": 1}), 409)
    by_header = await tenant.api.patch(url, json={"cycle_months": 3}, headers={"If-Match": '"2"'})
    assert (by_header.json()["cycle_months"], by_header.json()["valid_until"]) == (3, "2026-04-14")
    assert fields_of(problem(await tenant.api.patch(url, json={"name": "x"}, headers={"If-Match": "abc"}), 400)) == [
        "If-Match"
    ]


@pytest.mark.parametrize("tag", ['"²"', "¹²³", 'W/"³"'])
async def test_an_if_match_of_superscript_digits_is_a_400(tenant: Tenant, tag: str) -> None:
    """Found by fuzzing: ``²`` passes ``str.isdigit()`` but not ``int()``, and the PATCH answered 500."""
    gauge = await tenant.register(**GAUGE)
    response = await tenant.api.patch(
        f"/v1/instruments/{gauge['id']}", json={"name": "x"}, headers={"If-Match": tag.encode("latin-1")}
    )
    assert fields_of(problem(response, 400)) == ["If-Match"]


async def test_update_reapplies_the_rules_and_writes_nothing_on_failure(tenant: Tenant) -> None:
    gauge = await tenant.register(**GAUGE, last_verified_on="2026-01-15", valid_until="2026-07-10")
    url = f"/v1/instruments/{gauge['id']}"
    body = problem(await tenant.api.patch(url, json={"cycle_months": 12, "location": "x", "version": 1}), 422)
    assert fields_of(body) == ["cycle_months"]
    unchanged = (await tenant.api.get(url)).json()
    assert (unchanged["version"], unchanged["location"]) == (1, None)
    # Moving the verification date drops the printed date of the old certificate.
    moved = (await tenant.api.patch(url, json={"last_verified_on": "2026-02-01", "version": 1})).json()
    assert (moved["valid_until"], moved["basis"]["rule"]) == ("2026-07-31", "inclusive_minus_one")
    # A non-compulsory use needs an own cycle; with one it becomes calibration.
    problem(await tenant.api.patch(url, json={"legal_use": "none", "version": 2}), 422)
    calibrated = (await tenant.api.patch(url, json={"legal_use": "none", "cycle_months": 12, "version": 2})).json()
    assert (calibrated["traceability"], calibrated["valid_until"]) == ("calibration", "2027-01-31")
    other = await tenant.register(**GAUGE, management_no="PG-9")
    clash = await tenant.api.patch(url, json={"management_no": "PG-9", "version": 3})
    assert fields_of(problem(clash, 409)) == ["management_no"]
    assert other["management_no"] == "PG-9"


async def test_reads_are_scoped(tenant: Tenant, make_tenant: MakeTenant, admin: Api, pool: asyncpg.Pool) -> None:
    gauge = await tenant.register(**GAUGE, last_verified_on="2026-01-15")
    url = f"/v1/instruments/{gauge['id']}"
    stranger = await make_tenant()
    problem(await stranger.api.get(url), 404)
    problem(await stranger.api.patch(url, json={"name": "x", "version": 1}), 404)
    problem(await stranger.api.get(tenant.instruments_url), 404)
    problem(await stranger.api.post(tenant.instruments_url, json={"name": "x", "serial_no": "S"}), 404)
    regulator = Api(admin.client, await mint(pool, Role.REGULATOR, region_code="3101"))
    assert (await regulator.get(url)).status_code == 200
    assert (await regulator.get(tenant.instruments_url)).status_code == 200
    problem(await regulator.patch(url, json={"name": "x", "version": 1}), 403)
    problem(await regulator.post(tenant.instruments_url, json={"name": "x", "serial_no": "S"}), 403)
    elsewhere = Api(admin.client, await mint(pool, Role.REGULATOR, region_code="44"))
    problem(await elsewhere.get(url), 404)
    lab = (await admin.post("/v1/labs", json={"name": "L", "accreditation_no": "A", "region_code": "310000"})).json()
    lab_api = Api(admin.client, await mint(pool, Role.LAB, lab_id=lab["id"]))
    problem(await lab_api.get(url), 404)
    assert (await admin.get(url)).status_code == 200
    problem(await tenant.api.get("/v1/instruments/6b0f7a5e-0000-4000-8000-000000000000"), 404)


async def test_today_is_the_enterprise_local_date(tenant: Tenant, make_tenant: MakeTenant, clock: FixedClock) -> None:
    """R7: at 2026-07-14T17:30Z Shanghai is on 2026-07-15, so the §5 gauge is overdue there."""
    gauge = await tenant.register(**GAUGE, last_verified_on="2026-01-15")
    berlin = await make_tenant(timezone="Europe/Berlin")
    twin = await berlin.register(**GAUGE, last_verified_on="2026-01-15")
    clock.set(dt.datetime(2026, 7, 14, 17, 30, tzinfo=dt.UTC))
    shanghai_read = (await tenant.api.get(f"/v1/instruments/{gauge['id']}")).json()
    assert (shanghai_read["as_of"], shanghai_read["status"], shanghai_read["days_until_due"]) == (
        "2026-07-15",
        "overdue",
        -1,
    )
    berlin_read = (await berlin.api.get(f"/v1/instruments/{twin['id']}")).json()
    assert (berlin_read["as_of"], berlin_read["status"]) == ("2026-07-14", "due_soon")
    assert await _ids(tenant.api, tenant.instruments_url, status="overdue") == [gauge["id"]]


async def test_a_read_is_one_statement_and_leaves_no_principal_on_the_connection(
    tenant: Tenant, database_url: str, clock: FixedClock
) -> None:
    """Authentication and the read are one round trip (design.md §9), outside a transaction, and the
    principal it set is gone with the statement: the next user of the pooled connection has none."""
    gauge = await tenant.register(**GAUGE, last_verified_on="2026-01-15")
    app = create_app(app_settings(database_url, db_pool_min=1, db_pool_max=1), clock=clock)
    async with running(app), httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        statements: list[str] = []
        async with app.state.db_pool.acquire() as conn:  # the pool's only connection
            conn.add_query_logger(lambda logged: statements.append(logged.query))
        api = Api(client, tenant.api.key)
        assert (await api.get(f"/v1/instruments/{gauge['id']}")).status_code == 200
        await asyncio.sleep(0)
        statements.clear()  # the first use of a statement also looks its types up, once per connection
        read = await api.get(f"/v1/instruments/{gauge['id']}")
        assert read.status_code == 200, read.text
        assert read.json()["id"] == gauge["id"]
        await asyncio.sleep(0)  # query loggers are called soon, not at once
        assert len(statements) == 1
        assert "api_keys" in statements[0]
        assert "instruments" in statements[0]
        async with app.state.db_pool.acquire() as conn:
            assert not conn.is_in_transaction()
            left = await conn.fetchrow(
                "SELECT current_setting('metreg.role', true) AS role, current_setting('metreg.key_id', true) AS key"
            )
            assert (left["role"] or "", left["key"] or "") == ("", "")
            assert await conn.fetchval("SELECT count(*) FROM instruments") == 0  # no principal: RLS shows nothing
        # A wrong key costs that one statement too, and is a 401 like everywhere else.
        problem(await Api(client, tenant.api.key[:-4] + "AAAA").get(f"/v1/instruments/{gauge['id']}"), 401)


async def test_a_page_is_four_round_trips_its_scan_settings_sent_with_begin(
    tenant: Tenant, database_url: str, clock: FixedClock
) -> None:
    """BEGIN with the ordered-scan settings, the key with the enterprise, the page, COMMIT: no round
    trip of its own for the settings, and no settings for a search page, which keeps bitmap scans
    and sorts. Nothing outlives the page on the pooled connection: no transaction, no principal,
    no setting."""
    await tenant.register(**GAUGE, name="锅炉压力表", last_verified_on="2026-01-15")
    app = create_app(app_settings(database_url, db_pool_min=1, db_pool_max=1), clock=clock)
    async with running(app), httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        statements: list[str] = []
        async with app.state.db_pool.acquire() as conn:
            conn.add_query_logger(lambda logged: statements.append(logged.query))
        api = Api(client, tenant.api.key)
        for params, begin in [({"due_before": "2100-01-01"}, f"BEGIN; {PAGE_ORDER}"), ({"q": "锅炉"}, "BEGIN")]:
            assert (await api.get(tenant.instruments_url, params=params)).status_code == 200
            await asyncio.sleep(0)
            statements.clear()  # past the first use's type look-ups
            page = await api.get(tenant.instruments_url, params=params)
            assert page.status_code == 200, page.text
            assert len(page.json()["items"]) == 1
            await asyncio.sleep(0)
            assert len(statements) == 4, statements
            assert statements[0] == begin
            assert "api_keys" in statements[1]
            assert "enterprises" in statements[1]
            assert "FROM instruments" in statements[2]
            assert statements[3] == "COMMIT"
            async with app.state.db_pool.acquire() as conn:
                assert not conn.is_in_transaction()
                left = await conn.fetchrow(
                    """SELECT current_setting('metreg.role', true) AS role, current_setting('enable_sort') AS sort,
                              current_setting('enable_bitmapscan') AS bitmap"""
                )
                assert (left["role"] or "", left["sort"], left["bitmap"]) == ("", "on", "on")
        # A wrong key is a 401 and leaves no transaction open either.
        problem(await Api(client, tenant.api.key[:-4] + "AAAA").get(tenant.instruments_url), 401)
        async with app.state.db_pool.acquire() as conn:
            assert not conn.is_in_transaction()
