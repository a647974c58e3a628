"""Calendar feeds: made, listed and revoked with a key; read by calendar apps with the token in the
URL, as iCalendar that a standard parser (``icalendar``) reads back.

The tests' clock stands at 2026-06-15 (Asia/Shanghai); the enterprise reminds 30 and 7 days ahead
(90 and 30 for limited-life meters) unless a test says otherwise.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import icalendar
import pytest

from service.app import create_app
from service.auth import Role
from service.calendars import routes as calendar_routes
from service.calendars.queries import open_feed, token_sha256
from service.clock import FixedClock
from service.db import create_pool
from service.settings import Settings
from tests.conftest import GAUGE, NOW, Api, MakeTenant, Tenant, app_settings, mint, problem, running

FEED_URL = re.compile(r"^http://metreg\.test/v1/calendar/([A-Za-z0-9_-]{43})\.ics$")
WATER_METER = {"catalog_code": "water_meter_dn25", "legal_use": "trade_settlement"}
CALIBRATED = {"legal_use": "none", "cycle_months": 12}


async def create_feed(tenant: Tenant, name: str = "设备科日历") -> dict[str, Any]:
    response = await tenant.api.post(f"/v1/enterprises/{tenant.id}/calendar-feeds", json={"name": name})
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


async def read_feed(client: httpx.AsyncClient, url: str, **kw: Any) -> httpx.Response:
    return await client.get(url.removeprefix("http://metreg.test"), **kw)


def parsed(response: httpx.Response) -> icalendar.Calendar:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/calendar; charset=utf-8"
    return icalendar.Calendar.from_ical(response.content)


def events(calendar: icalendar.Calendar) -> dict[str, icalendar.Event]:
    """The feed's events by instrument id (taken from the UID)."""
    found = {}
    for component in calendar.walk("VEVENT"):
        uid = str(component["UID"])
        assert uid.endswith("@instruments.metreg"), uid
        found[uid.removesuffix("@instruments.metreg")] = component
    return found


def alarm_days(event: icalendar.Event) -> list[int]:
    days = []
    for alarm in event.walk("VALARM"):
        assert str(alarm["ACTION"]) == "DISPLAY"
        assert alarm["DESCRIPTION"]
        trigger = alarm["TRIGGER"].dt
        assert trigger.seconds == 0
        assert trigger.days < 0
        days.append(-trigger.days)
    return days


# ---------------------------------------------------------------------------------------------
# Create, list, revoke


async def test_create_list_and_revoke(app_client: httpx.AsyncClient, tenant: Tenant, admin: Api) -> None:
    created = await create_feed(tenant, "  设备科 Outlook  ")
    token = FEED_URL.match(created["url"])
    assert token, created["url"]
    assert created["name"] == "设备科 Outlook"
    assert created["enterprise_id"] == tenant.id
    assert created["created_at"] == "2026-06-15T04:00:00Z"
    assert created["revoked_at"] is None
    assert created["last_fetched_at"] is None

    # An admin may make one too; the list shows both, newest first, never a URL or a token.
    by_admin = await admin.post(f"/v1/enterprises/{tenant.id}/calendar-feeds", json={"name": "admin's"})
    assert by_admin.status_code == 201, by_admin.text
    listed = await tenant.api.get(f"/v1/enterprises/{tenant.id}/calendar-feeds")
    assert listed.status_code == 200, listed.text
    assert {f["id"] for f in listed.json()["items"]} == {created["id"], by_admin.json()["id"]}
    assert token.group(1) not in listed.text
    assert by_admin.json()["url"].rsplit("/", 1)[1].removesuffix(".ics") not in listed.text
    assert all("url" not in f and "token" not in f for f in listed.json()["items"])

    # Reading it records when (to the minute).
    parsed(await read_feed(app_client, created["url"]))
    listed = await tenant.api.get(f"/v1/enterprises/{tenant.id}/calendar-feeds")
    mine = next(f for f in listed.json()["items"] if f["id"] == created["id"])
    assert mine["last_fetched_at"] == "2026-06-15T04:00:00Z"

    assert (await tenant.api.delete(f"/v1/calendar-feeds/{created['id']}")).status_code == 204
    problem(await read_feed(app_client, created["url"]), 404)
    # Revoking twice is harmless and keeps the first instant.
    assert (await tenant.api.delete(f"/v1/calendar-feeds/{created['id']}")).status_code == 204
    first = await tenant.api.get(f"/v1/enterprises/{tenant.id}/calendar-feeds", params={"limit": 1})
    assert first.json()["next_cursor"] is not None
    second = await tenant.api.get(
        f"/v1/enterprises/{tenant.id}/calendar-feeds", params={"limit": 1, "cursor": first.json()["next_cursor"]}
    )
    assert second.json()["next_cursor"] is None
    paged = {f["id"]: f for f in first.json()["items"] + second.json()["items"]}
    assert set(paged) == {created["id"], by_admin.json()["id"]}
    assert paged[created["id"]]["revoked_at"] == "2026-06-15T04:00:00Z"
    assert paged[by_admin.json()["id"]]["revoked_at"] is None
    # The other feed still works.
    parsed(await read_feed(app_client, by_admin.json()["url"]))


async def test_bad_input_names_the_field(tenant: Tenant) -> None:
    url = f"/v1/enterprises/{tenant.id}/calendar-feeds"
    for body in ({}, {"name": ""}, {"name": "x" * 201}, {"name": "a", "token": "mine"}):
        response = await tenant.api.post(url, json=body)
        assert response.status_code == 400, (body, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
    blank = problem(await tenant.api.post(url, json={"name": "   "}), 400)
    assert [e["field"] for e in blank["errors"]] == ["name"]
    problem(await tenant.api.get(url, params={"cursor": "not-a-cursor"}), 400)
    problem(await tenant.api.delete("/v1/calendar-feeds/not-a-uuid"), 400)
    problem(await tenant.api.delete(f"/v1/calendar-feeds/{uuid.uuid4()}"), 404)


async def test_only_the_enterprise_and_admins_manage_feeds(
    tenant: Tenant, make_tenant: MakeTenant, app_client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    created = await create_feed(tenant)
    other = await make_tenant()
    regulator = Api(app_client, await mint(pool, Role.REGULATOR, region_code="31"))
    url = f"/v1/enterprises/{tenant.id}/calendar-feeds"
    # The regulator of its region reads the enterprise, but its feeds are not the regulator's.
    problem(await regulator.post(url, json={"name": "x"}), 403)
    problem(await regulator.get(url), 403)
    problem(await regulator.delete(f"/v1/calendar-feeds/{created['id']}"), 404)
    problem(await other.api.post(url, json={"name": "x"}), 404)
    problem(await other.api.get(url), 404)
    problem(await other.api.delete(f"/v1/calendar-feeds/{created['id']}"), 404)
    # Nothing was revoked by them.
    parsed(await read_feed(app_client, created["url"]))


# ---------------------------------------------------------------------------------------------
# The feed


async def test_one_event_per_instrument_with_a_due_date(app_client: httpx.AsyncClient, make_tenant: MakeTenant) -> None:
    tenant = await make_tenant(name="上海某某计量器具使用单位", timezone="Asia/Shanghai")
    valid = await tenant.register(**GAUGE, management_no="PG-001", location="一号车间", last_verified_on="2026-06-01")
    due_soon = await tenant.register(**GAUGE, last_verified_on="2026-01-01")
    overdue = await tenant.register(**GAUGE, last_verified_on="2025-12-01")
    meter = await tenant.register(**WATER_METER, name="水表", last_verified_on="2026-01-10")
    calibrated = await tenant.register(**CALIBRATED, name="温度计", last_verified_on="2026-03-01")
    unverified = await tenant.register(**GAUGE)
    sealed = await tenant.register(**GAUGE, last_verified_on="2026-06-01")
    scrapped = await tenant.register(**GAUGE, last_verified_on="2026-06-01")
    for instrument, action in ((sealed, "seal"), (scrapped, "scrap")):
        response = await tenant.api.post(f"/v1/instruments/{instrument['id']}/{action}")
        assert response.status_code == 200, response.text
    created = await create_feed(tenant)

    response = await read_feed(app_client, created["url"])
    calendar = parsed(response)
    assert str(calendar["X-WR-CALNAME"]).startswith("上海某某计量器具使用单位")
    assert str(calendar["X-WR-TIMEZONE"]) == "Asia/Shanghai"
    assert str(calendar["VERSION"]) == "2.0"
    found = events(calendar)
    included = [valid, due_soon, overdue, meter, calibrated]
    assert set(found) == {i["id"] for i in included}
    for absent in (unverified, sealed, scrapped):
        assert absent["id"] not in found

    for instrument in included:
        event = found[instrument["id"]]
        valid_until = dt.date.fromisoformat(instrument["valid_until"])
        assert event["DTSTART"].dt == valid_until
        assert type(event["DTSTART"].dt) is dt.date  # all-day
        assert event["DTEND"].dt == valid_until + dt.timedelta(days=1)
        assert event["DTSTAMP"].dt == NOW
        assert instrument["name"] in str(event["SUMMARY"])
        description = str(event["DESCRIPTION"])
        assert instrument["serial_no"] in description
        assert f"/v1/instruments/{instrument['id']}" in description
        assert str(event["URL"]) == f"http://metreg.test/v1/instruments/{instrument['id']}"

    assert str(found[valid["id"]]["SUMMARY"]) == "检定到期：一般压力表（PG-001）"
    assert "一号车间" in str(found[valid["id"]]["DESCRIPTION"])
    assert "状态 Status: valid" in str(found[valid["id"]]["DESCRIPTION"])
    assert "状态 Status: due_soon" in str(found[due_soon["id"]]["DESCRIPTION"])
    assert "状态 Status: overdue" in str(found[overdue["id"]]["DESCRIPTION"])
    assert str(found[meter["id"]]["SUMMARY"]).startswith("到期轮换：")
    assert str(found[calibrated["id"]]["SUMMARY"]).startswith("校准到期：")
    # Alarms at the reminder days: limited-life meters on the rotation days.
    for instrument in (valid, due_soon, overdue, calibrated):
        assert alarm_days(found[instrument["id"]]) == [30, 7]
    assert alarm_days(found[meter["id"]]) == [90, 30]
    # The same instrument has the same UID in every read (so calendar apps update, not add).
    again = events(parsed(await read_feed(app_client, created["url"])))
    assert set(again) == set(found)


async def test_alarms_follow_the_enterprise_reminder_days(
    app_client: httpx.AsyncClient, make_tenant: MakeTenant
) -> None:
    tenant = await make_tenant(reminder_days=[60, 14, 3], rotation_reminder_days=[120])
    gauge = await tenant.register(**GAUGE, last_verified_on="2026-06-01")
    meter = await tenant.register(**WATER_METER, last_verified_on="2026-01-10")
    found = events(parsed(await read_feed(app_client, (await create_feed(tenant))["url"])))
    assert alarm_days(found[gauge["id"]]) == [60, 14, 3]
    assert alarm_days(found[meter["id"]]) == [120]


async def test_chinese_text_is_folded_and_escaped(app_client: httpx.AsyncClient, tenant: Tenant) -> None:
    name = "精密数字压力表（带温度补偿，量程0～60MPa；二级）" * 3
    location = "第三车间\\东区;二楼,靠窗\n第二行"
    instrument = await tenant.register(
        **GAUGE, name=name[:200], location=location, model="Y-100; 改", last_verified_on="2026-06-01"
    )
    response = await read_feed(app_client, (await create_feed(tenant))["url"])
    raw = response.content
    assert raw.endswith(b"END:VCALENDAR\r\n")
    assert b"\n" not in raw.replace(b"\r\n", b"")  # CRLF everywhere, no bare LF
    lines = raw.split(b"\r\n")[:-1]
    assert max(len(line) for line in lines) <= 75
    for line in lines:
        line.decode()  # no line ends or starts inside a character
    assert any(line.startswith(b" ") for line in lines)  # the long Chinese summary was folded
    event = events(parsed(response))[instrument["id"]]
    assert str(event["SUMMARY"]) == f"检定到期：{name[:200]}"
    description = str(event["DESCRIPTION"])
    assert f"位置 Location: {location}" in description
    assert "型号 Model: Y-100; 改" in description
    # Escaped on the wire as RFC 5545 says.
    unfolded = raw.replace(b"\r\n ", b"").decode()
    assert "第三车间\\\\东区\\;二楼\\,靠窗\\n第二行" in unfolded


async def test_another_enterprises_instruments_never_appear(
    app_client: httpx.AsyncClient, make_tenant: MakeTenant
) -> None:
    mine, theirs = await make_tenant(), await make_tenant()
    own = await mine.register(**GAUGE, last_verified_on="2026-06-01")
    foreign = [await theirs.register(**GAUGE, last_verified_on="2026-06-01") for _ in range(3)]
    their_feed = await create_feed(theirs)
    found = events(parsed(await read_feed(app_client, (await create_feed(mine))["url"])))
    assert set(found) == {own["id"]}
    assert set(events(parsed(await read_feed(app_client, their_feed["url"])))) == {f["id"] for f in foreign}


async def test_unknown_revoked_and_malformed_tokens_are_the_same_404(
    app_client: httpx.AsyncClient, tenant: Tenant
) -> None:
    created = await create_feed(tenant)
    token = FEED_URL.match(created["url"]).group(1)  # type: ignore[union-attr]
    assert (await tenant.api.delete(f"/v1/calendar-feeds/{created['id']}")).status_code == 204
    unknown = "A" * 43
    answers = [
        await app_client.get(f"/v1/calendar/{token}.ics"),  # revoked
        await app_client.get(f"/v1/calendar/{unknown}.ics"),  # never existed
        await app_client.get(f"/v1/calendar/{token}"),  # malformed: no .ics
        await app_client.get("/v1/calendar/short.ics"),
    ]
    bodies = [problem(r, 404) for r in answers]
    assert len({(b["type"], b["title"], b["detail"]) for b in bodies}) == 1
    for response in answers:
        assert token not in response.text
        assert unknown not in response.text


async def test_etag_answers_304_until_something_changes(app_client: httpx.AsyncClient, tenant: Tenant) -> None:
    instrument = await tenant.register(**GAUGE, last_verified_on="2026-06-01")
    url = (await create_feed(tenant))["url"]
    first = await read_feed(app_client, url)
    etag = first.headers["etag"]
    assert etag.startswith('W/"')
    assert first.headers["cache-control"] == "private, max-age=900"
    unchanged = await read_feed(app_client, url, headers={"If-None-Match": etag})
    assert unchanged.status_code == 304
    assert unchanged.content == b""
    assert unchanged.headers["etag"] == etag
    # Any change of an instrument in the feed makes a new one.
    patched = await tenant.api.patch(f"/v1/instruments/{instrument['id']}", json={"version": 1, "location": "二号"})
    assert patched.status_code == 200, patched.text
    changed = await read_feed(app_client, url, headers={"If-None-Match": etag})
    assert changed.status_code == 200
    assert changed.headers["etag"] != etag
    assert "二号" in str(events(parsed(changed))[instrument["id"]]["DESCRIPTION"])


async def test_a_large_register_streams_in_batches(app_client: httpx.AsyncClient, tenant: Tenant) -> None:
    rows = "".join(f"压力表{n},LARGE-{n:05d},6,2026-0{1 + n % 5}-{1 + n % 28:02d}\n" for n in range(1203))
    imported = await tenant.api.post(
        f"/v1/enterprises/{tenant.id}/instruments/import",
        content=f"计量器具名称,出厂编号,检定周期,检定日期\n{rows}".encode(),
        headers={"content-type": "text/csv"},
    )
    assert imported.status_code == 201, imported.text
    response = await read_feed(app_client, (await create_feed(tenant))["url"])
    found = events(parsed(response))
    assert len(found) == 1203
    starts = [e["DTSTART"].dt for e in parsed(response).walk("VEVENT")]
    assert starts == sorted(starts)  # in due order across batch boundaries, none twice


async def test_a_due_date_moved_between_batches_leaves_each_instrument_in_the_feed_once(
    app_client: httpx.AsyncClient, tenant: Tenant, pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Due on five days in a row, read two at a time: first, second | third, fourth | fifth.
    days = [dt.date(2026, 7, 1) + dt.timedelta(days=n) for n in range(5)]
    gauges = [
        await tenant.register(**GAUGE, last_verified_on="2026-03-01", valid_until=day.isoformat()) for day in days
    ]
    first, fifth = gauges[0]["id"], gauges[-1]["id"]
    url = (await create_feed(tenant))["url"]
    real_batches = calendar_routes.due_batches
    reads: list[int] = []

    async def a_change_after_the_first_batch(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        async for batch in real_batches(*args, **kwargs):
            yield batch
            if len(reads) == 0:
                # Committed by another transaction before the next batch is read: the first
                # instrument (read already) moves last, the fifth (not read yet) first.
                async with pool.acquire() as conn:
                    await conn.execute(
                        "UPDATE instruments SET valid_until = CASE id WHEN $1 THEN $3::date ELSE $4::date END"
                        " WHERE id IN ($1, $2)",
                        uuid.UUID(first),
                        uuid.UUID(fifth),
                        dt.date(2026, 7, 10),
                        dt.date(2026, 6, 20),
                    )
            reads.append(len(batch))

    monkeypatch.setattr(calendar_routes, "_BATCH", 2)
    monkeypatch.setattr(calendar_routes, "due_batches", a_change_after_the_first_batch)
    response = await read_feed(app_client, url)
    assert reads == [2, 2, 1]
    uids = [str(e["UID"]) for e in parsed(response).walk("VEVENT")]
    assert sorted(uids) == sorted(f"{g['id']}@instruments.metreg" for g in gauges)
    # As the register stood when the read began, the change included in none of its events.
    found = events(parsed(response))
    assert [found[g["id"]]["DTSTART"].dt for g in gauges] == days

    monkeypatch.undo()
    after = events(parsed(await read_feed(app_client, url)))
    assert set(after) == {g["id"] for g in gauges}
    assert (after[first]["DTSTART"].dt, after[fifth]["DTSTART"].dt) == (dt.date(2026, 7, 10), dt.date(2026, 6, 20))


# ---------------------------------------------------------------------------------------------
# Row-level security: what the feed's principal sees


async def test_the_feed_principal_sees_its_enterprise_and_instruments_only(
    database_url: str, tenant: Tenant, make_tenant: MakeTenant
) -> None:
    await tenant.register(**GAUGE, last_verified_on="2026-06-01")
    other = await make_tenant()
    await other.register(**GAUGE, last_verified_on="2026-06-01")
    created = await create_feed(tenant)
    await create_feed(other)
    token = FEED_URL.match(created["url"]).group(1)  # type: ignore[union-attr]
    api_pool = await create_pool(app_settings(database_url), application_name="test-calendar-rls")
    try:
        async with api_pool.acquire() as conn, conn.transaction():
            opened = await open_feed(conn, token_sha256(token), request_id="t", now=NOW)  # type: ignore[arg-type]
            assert opened is not None
            assert opened[1] == uuid.UUID(tenant.id)
            assert await conn.fetchval("SELECT array_agg(id::text) FROM enterprises") == [tenant.id]
            assert set(await conn.fetchval("SELECT array_agg(DISTINCT enterprise_id::text) FROM instruments")) == {
                tenant.id
            }
            for table in (
                "certificates", "notices", "deliveries", "webhooks", "api_keys", "audit_log", "instrument_events",
                "verification_requests", "request_items", "instrument_imports", "calendar_feeds",
            ):  # fmt: skip
                assert await conn.fetchval(f"SELECT count(*) FROM {table}") == 0, table
        # A wrong token is nobody: it sees nothing at all.
        async with api_pool.acquire() as conn, conn.transaction():
            assert await open_feed(conn, token_sha256("B" * 43), request_id="t", now=NOW) is None  # type: ignore[arg-type]
            assert await conn.fetchval("SELECT count(*) FROM instruments") == 0
            assert await conn.fetchval("SELECT count(*) FROM enterprises") == 0
    finally:
        await api_pool.close()


async def test_a_feed_is_audited_without_its_token(tenant: Tenant, pool: asyncpg.Pool) -> None:
    created = await create_feed(tenant)
    assert (await tenant.api.delete(f"/v1/calendar-feeds/{created['id']}")).status_code == 204
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT operation, action, after FROM audit_log WHERE entity = 'calendar_feeds' AND entity_id = $1 "
            "ORDER BY seq",
            created["id"],
        )
    assert [(r["operation"], r["action"]) for r in rows] == [
        ("insert", "CreateCalendarFeed"),
        ("update", "RevokeCalendarFeed"),
    ]
    assert all("token_sha256" not in r["after"] and "last_fetched_at" not in r["after"] for r in rows)


# ---------------------------------------------------------------------------------------------
# Logs and limits


@pytest.fixture
async def logged_client(
    database_url: str, app_client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> AsyncIterator[httpx.AsyncClient]:
    """An app that logs every access line (INFO), captured by caplog; made after the shared app,
    whose creation would have replaced the capture's handler."""
    app = create_app(app_settings(database_url, log_level="DEBUG"), clock=FixedClock(NOW))
    root = logging.getLogger()
    level = root.level
    root.addHandler(caplog.handler)  # create_app replaced the root handlers
    caplog.set_level(logging.DEBUG)
    try:
        async with (
            running(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://metreg.test") as client,
        ):
            yield client
    finally:
        root.removeHandler(caplog.handler)
        root.setLevel(level)


async def test_the_token_never_reaches_the_logs(
    logged_client: httpx.AsyncClient, tenant: Tenant, caplog: pytest.LogCaptureFixture
) -> None:
    tenant_here = Tenant(tenant.enterprise, Api(logged_client, tenant.api.key))
    created = await create_feed(tenant_here)
    token = FEED_URL.match(created["url"]).group(1)  # type: ignore[union-attr]
    path = f"/v1/calendar/{token}.ics"
    assert (await logged_client.get(path)).status_code == 200
    spellings = (path, f"/v1//calendar//{token}.ics", f"/v1/calendar/{token}", f"/v1/calendar/{token}.ics/x")
    for spelled in spellings:
        await logged_client.get(spelled)
    # A mistyped URL is no feed, but its token is still kept out.
    assert (await logged_client.get(f"/calendar/{token}.ics")).status_code == 404
    assert (await tenant_here.api.delete(f"/v1/calendar-feeds/{created['id']}")).status_code == 204
    assert (await logged_client.get(path)).status_code == 404

    access = [r for r in caplog.records if r.name == "metreg.access"]
    assert sum("calendar/…" in r.getMessage() for r in access) == 7, "\n".join(r.getMessage() for r in access)
    # Everything the server logged (httpx's lines are the test client's own).
    for record in (r for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))):
        assert token not in record.getMessage(), record.getMessage()
        assert token not in repr(vars(record)), record.name


async def test_feeds_are_rate_limited_per_client_address(database_url: str, tenant: Tenant) -> None:
    settings: Settings = app_settings(
        database_url, public_rate_limit=1, public_rate_burst=2, queue_name=f"test-calendar-{uuid.uuid4().hex}"
    )
    app = create_app(settings, clock=FixedClock(NOW))
    async with running(app):

        def client(address: str) -> httpx.AsyncClient:
            transport = httpx.ASGITransport(app=app, client=(address, 1234))
            return httpx.AsyncClient(transport=transport, base_url="http://metreg.test")

        async with client("10.1.2.3") as first, client("10.9.9.9") as second:
            created = await create_feed(Tenant(tenant.enterprise, Api(first, tenant.api.key)))
            path = created["url"].removeprefix("http://metreg.test")
            assert (await first.get(path)).status_code == 200
            assert (await first.get(f"/v1/calendar/{'C' * 43}.ics")).status_code == 404
            refused = problem(await first.get(path), 429)
            assert path.rsplit("/", 1)[1] not in str(refused)
            assert (await first.get(path.replace("/v1/", "/v1//"))).status_code == 429
            # Another address has its own bucket; keyed API calls are not limited by it.
            assert (await second.get(path)).status_code == 200
            assert (await Api(first, tenant.api.key).get(f"/v1/enterprises/{tenant.id}")).status_code == 200
