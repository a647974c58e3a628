"""Verification requests (work orders): who may create, read and move them, the rules an order must
keep, its state machine cell by cell, its due date in working days, completion and overdue, and the
lab's visibility of the instruments it was asked to verify (issue 3, item 1 and 8)."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from typing import Any

import asyncpg
import httpx

from service.auth import Role
from service.clock import FixedClock
from tests.conftest import (
    GAUGE,
    NOW,
    Api,
    LabAccount,
    MakeLab,
    MakeTenant,
    Tenant,
    accepted_request,
    fields_of,
    mint,
    problem,
)

URL = "/v1/verification-requests"
TRANSITION = "urn:metreg:problem:illegal-transition"
ITEM_FIELDS = {
    "instrument_id",
    "name",
    "serial_no",
    "management_no",
    "catalog_code",
    "certificate_id",
    "certificate_number",
    "outcome",
    "status",
}


# --- helpers --------------------------------------------------------------------------------------


async def _submit(api: Api, lab_id: str, ids: list[str], **extra: Any) -> httpx.Response:
    return await api.post(URL, json={"lab_id": lab_id, "instrument_ids": ids} | extra)


async def _created(tenant: Tenant, lab: LabAccount, *ids: str, **extra: Any) -> dict[str, Any]:
    response = await _submit(tenant.api, lab.id, list(ids), **extra)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def _gauge(tenant: Tenant, **fields: Any) -> str:
    return str((await tenant.register(**GAUGE, **fields))["id"])


async def _count(pool: asyncpg.Pool, enterprise_id: str) -> int:
    async with pool.acquire() as conn:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM verification_requests WHERE enterprise_id = $1", uuid.UUID(enterprise_id)
            )
        )


async def _row(pool: asyncpg.Pool, request_id: str) -> dict[str, Any]:
    async with pool.acquire() as conn:
        record = await conn.fetchrow(
            """SELECT status, reason, accepted_on, due_by, version, updated_at
               FROM verification_requests WHERE id = $1""",
            uuid.UUID(request_id),
        )
    assert record is not None
    return dict(record)


async def _read(api: Api, request_id: str) -> dict[str, Any]:
    response = await api.get(f"{URL}/{request_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def _ids(api: Api, **params: Any) -> list[str]:
    response = await api.get(URL, params=params)
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["items"]]


async def _in_state(state: str, tenant: Tenant, lab: LabAccount) -> str:
    """A fresh request of ``tenant`` to ``lab`` in ``state``, reached through the API."""
    instrument = await _gauge(tenant)
    request = await _created(tenant, lab, instrument)
    request_id: str = request["id"]
    if state in ("accepted", "completed"):
        await lab.accept(request_id)
    if state == "rejected":
        assert (
            await lab.api.post(f"{URL}/{request_id}/reject", json={"reason": "不在本所业务范围"})
        ).status_code == 200
    if state == "cancelled":
        assert (await tenant.api.post(f"{URL}/{request_id}/cancel")).status_code == 200
    if state == "completed":
        recorded = await lab.record(instrument)
        assert recorded.status_code == 201, recorded.text
    assert (await _read(tenant.api, request_id))["status"] == state
    return request_id


async def _act(action: str, request_id: str, tenant: Tenant, lab: LabAccount) -> httpx.Response:
    """``action`` taken by the party entitled to it: the lab accepts or rejects, the enterprise cancels."""
    if action == "accept":
        return await lab.api.post(f"{URL}/{request_id}/accept")
    if action == "reject":
        return await lab.api.post(f"{URL}/{request_id}/reject", json={"reason": "设备超出能力范围"})
    return await tenant.api.post(f"{URL}/{request_id}/cancel", json={"reason": "计划调整"})


async def _regulator(app_client: httpx.AsyncClient, pool: asyncpg.Pool, region_code: str) -> Api:
    return Api(app_client, await mint(pool, Role.REGULATOR, region_code=region_code))


# --- creating a request ---------------------------------------------------------------------------


async def test_enterprise_creates_a_submitted_request_with_its_items_in_order(tenant: Tenant, lab: LabAccount) -> None:
    """201: status submitted, one pending item per instrument in the order given, counts, not overdue."""
    gauge = await tenant.register(**GAUGE, name="一般压力表", serial_no="PG-A1", management_no="M-001")
    meter = await tenant.register(name="数字多用表", serial_no="DMM-7", cycle_months=12)
    response = await _submit(tenant.api, lab.id, [meter["id"], gauge["id"]], note="  请于月底前完成  ")
    assert response.status_code == 201, response.text
    body = response.json()
    expected = {
        "enterprise_id": tenant.id,
        "lab_id": lab.id,
        "lab_name": lab.lab["name"],
        "note": "请于月底前完成",
        "status": "submitted",
        "reason": None,
        "accepted_on": None,
        "due_by": None,
        "overdue": False,
        "items_total": 2,
        "items_done": 0,
        "version": 1,
    }
    assert {k: body[k] for k in expected} == expected
    assert [set(item) for item in body["items"]] == [ITEM_FIELDS, ITEM_FIELDS]
    assert [
        (i["instrument_id"], i["name"], i["serial_no"], i["management_no"], i["catalog_code"]) for i in body["items"]
    ] == [
        (meter["id"], "数字多用表", "DMM-7", None, None),
        (gauge["id"], "一般压力表", "PG-A1", "M-001", "pressure_gauge"),
    ]
    for item in body["items"]:
        assert (item["status"], item["certificate_id"], item["certificate_number"], item["outcome"]) == (
            "pending",
            None,
            None,
            None,
        )
    assert await _read(tenant.api, body["id"]) == body


async def test_who_may_create_a_request(
    admin: Api,
    anonymous: Api,
    tenant: Tenant,
    make_tenant: MakeTenant,
    lab: LabAccount,
    app_client: httpx.AsyncClient,
    pool: asyncpg.Pool,
) -> None:
    """An enterprise for itself, or an admin naming enterprise_id (400 naming it when missing); lab and
    regulator keys 403; no key 401; an enterprise naming another enterprise 404. Refusals write nothing."""
    instrument = await _gauge(tenant)
    other = await make_tenant()
    theirs = await _gauge(other)
    regulator = await _regulator(app_client, pool, "31")
    before, before_other = await _count(pool, tenant.id), await _count(pool, other.id)
    assert fields_of(problem(await _submit(admin, lab.id, [instrument]), 400)) == ["enterprise_id"]
    problem(await _submit(admin, lab.id, [instrument], enterprise_id=str(uuid.uuid4())), 404)
    problem(await _submit(lab.api, lab.id, [instrument], enterprise_id=tenant.id), 403)
    problem(await _submit(lab.api, lab.id, [instrument]), 403)
    problem(await _submit(regulator, lab.id, [instrument], enterprise_id=tenant.id), 403)
    problem(await _submit(anonymous, lab.id, [instrument]), 401)
    problem(await _submit(tenant.api, lab.id, [theirs], enterprise_id=other.id), 404)
    assert (await _count(pool, tenant.id), await _count(pool, other.id)) == (before, before_other)

    response = await _submit(admin, lab.id, [instrument], enterprise_id=tenant.id)
    assert response.status_code == 201, response.text
    assert (response.json()["enterprise_id"], response.json()["status"]) == (tenant.id, "submitted")
    assert await _count(pool, tenant.id) == before + 1
    assert await _ids(tenant.api) == [response.json()["id"]]


async def test_malformed_requests_are_400_and_an_unknown_lab_422(
    tenant: Tenant, lab: LabAccount, pool: asyncpg.Pool
) -> None:
    """A repeated id names the repeat (instrument_ids[2]); 1..500 ids; UUIDs; no unknown fields; a lab
    that does not exist is 422 naming lab_id. Nothing is written."""
    a, b = await _gauge(tenant), await _gauge(tenant)
    before = await _count(pool, tenant.id)
    assert fields_of(problem(await _submit(tenant.api, lab.id, [a, b, a]), 400)) == ["instrument_ids[2]"]
    assert fields_of(problem(await _submit(tenant.api, lab.id, []), 400)) == ["instrument_ids"]
    many = [str(uuid.uuid4()) for _ in range(501)]
    assert fields_of(problem(await _submit(tenant.api, lab.id, many), 400)) == ["instrument_ids"]
    assert fields_of(problem(await _submit(tenant.api, lab.id, ["not-a-uuid"]), 400))[0].startswith("instrument_ids")
    assert fields_of(problem(await _submit(tenant.api, lab.id, [a], priority="high"), 400)) == ["priority"]
    problem(await tenant.api.post(URL, json={"instrument_ids": [a]}), 400)
    assert fields_of(problem(await _submit(tenant.api, str(uuid.uuid4()), [a]), 422)) == ["lab_id"]
    assert await _count(pool, tenant.id) == before


async def test_instruments_must_be_the_enterprises_and_in_use(
    tenant: Tenant, make_tenant: MakeTenant, lab: LabAccount, pool: asyncpg.Pool
) -> None:
    """422 naming each position: an absent id and another enterprise's id get the same message (no leak);
    sealed, scrapped and replaced instruments are refused; in_service, failed and pending_verification go."""
    own = await _gauge(tenant)
    other = await make_tenant()
    theirs = await _gauge(other)
    absent = str(uuid.uuid4())
    before = await _count(pool, tenant.id)
    body = problem(await _submit(tenant.api, lab.id, [own, theirs, absent]), 422)
    assert fields_of(body) == ["instrument_ids[1]", "instrument_ids[2]"]
    first, second = body["errors"]
    assert first["message"].replace(theirs, "<id>") == second["message"].replace(absent, "<id>")
    assert await _count(pool, tenant.id) == before
    assert (await _created(other, lab, theirs))["items_total"] == 1  # still free for its owner

    sealed = await _gauge(tenant, lifecycle="sealed")
    scrapped = await _gauge(tenant, lifecycle="scrapped")
    old = await _gauge(tenant)
    replaced = await tenant.api.post(
        f"/v1/instruments/{old}/replace", json={"replacement": GAUGE | {"name": "新压力表", "serial_no": "NEW-1"}}
    )
    assert replaced.status_code in (200, 201), replaced.text
    assert replaced.json()["instrument"]["lifecycle"] == "replaced"
    body = problem(await _submit(tenant.api, lab.id, [own, sealed, scrapped, old]), 422)
    assert fields_of(body) == ["instrument_ids[1]", "instrument_ids[2]", "instrument_ids[3]"]
    assert "sealed" in body["errors"][0]["message"]
    assert await _count(pool, tenant.id) == before
    failed = await _gauge(tenant, lifecycle="failed")
    pending = await _gauge(tenant, lifecycle="pending_verification")
    assert (await _created(tenant, lab, own, failed, pending))["items_total"] == 3


async def test_an_admin_puts_no_other_enterprises_instrument_in_a_request(
    admin: Api, tenant: Tenant, make_tenant: MakeTenant, lab: LabAccount, pool: asyncpg.Pool
) -> None:
    """An admin sees every instrument, and is held to the named enterprise's all the same (an item
    naming another's would have shown the lab that instrument and its certificates): 422 naming
    its position, as for the enterprise's own key, and nothing is written. The database refuses
    such an item too (schema/0026, tests/integration/test_row_level_security.py)."""
    own = await _gauge(tenant)
    other = await make_tenant()
    theirs = await _gauge(other)
    before = (await _count(pool, tenant.id), await _count(pool, other.id))
    body = problem(await _submit(admin, lab.id, [own, theirs], enterprise_id=tenant.id), 422)
    assert fields_of(body) == ["instrument_ids[1]"]
    assert (await _count(pool, tenant.id), await _count(pool, other.id)) == before


async def test_a_compulsory_instrument_needs_the_lab_scope_others_go_anywhere(
    tenant: Tenant, make_lab: MakeLab, pool: asyncpg.Pool
) -> None:
    """Scope applies to compulsory instruments only: a gauge to a price-scale lab is 422 naming it;
    the same type in a non-compulsory use, and uncatalogued equipment, go to any lab."""
    scales_only = await make_lab(scope=["price_scale"])
    calibration_only = await make_lab(scope=[])
    gauge = await _gauge(tenant)
    free_gauge = (await tenant.register(catalog_code="pressure_gauge", legal_use="none", cycle_months=12))["id"]
    meter = (await tenant.register(name="数字多用表", cycle_months=12))["id"]
    before = await _count(pool, tenant.id)
    body = problem(await _submit(tenant.api, scales_only.id, [free_gauge, meter, gauge]), 422)
    assert fields_of(body) == ["instrument_ids[2]"]
    assert "pressure_gauge" in body["errors"][0]["message"]
    problem(await _submit(tenant.api, calibration_only.id, [gauge]), 422)
    assert await _count(pool, tenant.id) == before
    assert (await _created(tenant, scales_only, free_gauge))["items_total"] == 1
    assert (await _created(tenant, calibration_only, meter))["items_total"] == 1


async def test_an_instrument_waits_in_one_open_request_at_a_time(
    tenant: Tenant, lab: LabAccount, make_lab: MakeLab, pool: asyncpg.Pool
) -> None:
    """Submitted, or accepted without its result: another request (any lab) is 409 naming the position.
    After rejection, cancellation, or its own result (other items still open) it may be requested again."""
    other_lab = await make_lab()
    waiting, accepted, free = await _gauge(tenant), await _gauge(tenant), await _gauge(tenant)
    await _created(tenant, lab, waiting)
    await accepted_request(tenant, lab, accepted)
    before = await _count(pool, tenant.id)
    assert fields_of(problem(await _submit(tenant.api, other_lab.id, [free, waiting]), 409)) == ["instrument_ids[1]"]
    assert fields_of(problem(await _submit(tenant.api, lab.id, [accepted, free]), 409)) == ["instrument_ids[0]"]
    both = problem(await _submit(tenant.api, lab.id, [accepted, free, waiting]), 409)
    assert sorted(fields_of(both)) == ["instrument_ids[0]", "instrument_ids[2]"]
    assert await _count(pool, tenant.id) == before

    rejected, cancelled, done, still_open = [await _gauge(tenant) for _ in range(4)]
    r1 = await _created(tenant, lab, rejected)
    assert (await lab.api.post(f"{URL}/{r1['id']}/reject", json={"reason": "满负荷"})).status_code == 200
    r2 = await _created(tenant, lab, cancelled)
    assert (await tenant.api.post(f"{URL}/{r2['id']}/cancel")).status_code == 200
    r3 = await accepted_request(tenant, lab, done, still_open)
    assert (await lab.record(done)).status_code == 201
    assert (await _read(tenant.api, r3["id"]))["status"] == "accepted"
    assert (await _created(tenant, other_lab, rejected, cancelled, done))["items_total"] == 3
    assert fields_of(problem(await _submit(tenant.api, other_lab.id, [still_open]), 409)) == ["instrument_ids[0]"]


async def test_racing_requests_and_acceptances_end_in_one_winner(
    tenant: Tenant, lab: LabAccount, pool: asyncpg.Pool
) -> None:
    """Row locks, not luck: two requests for the same instruments at once give one 201 and one 409 (the
    instruments in one open request only); two acceptances of one request give one 200 and one 409."""
    ids = [await _gauge(tenant) for _ in range(3)]
    before = await _count(pool, tenant.id)
    responses = await asyncio.gather(_submit(tenant.api, lab.id, ids), _submit(tenant.api, lab.id, ids[::-1]))
    assert sorted(r.status_code for r in responses) == [201, 409]
    assert await _count(pool, tenant.id) == before + 1
    [winner] = [r.json() for r in responses if r.status_code == 201]
    url = f"{URL}/{winner['id']}/accept"
    accepts = await asyncio.gather(lab.api.post(url), lab.api.post(url))
    assert sorted(r.status_code for r in accepts) == [200, 409]
    assert (await _row(pool, winner["id"]))["version"] == 2


# --- reading and listing --------------------------------------------------------------------------


async def test_who_reads_a_request(
    tenant: Tenant,
    make_tenant: MakeTenant,
    lab: LabAccount,
    make_lab: MakeLab,
    admin: Api,
    anonymous: Api,
    app_client: httpx.AsyncClient,
    pool: asyncpg.Pool,
) -> None:
    """Its enterprise, its lab, a regulator of the region and an admin read it; others get 404; no key 401."""
    request = await _created(tenant, lab, await _gauge(tenant))
    url = f"{URL}/{request['id']}"
    other_tenant = await make_tenant()
    other_lab = await make_lab()
    for reader in (
        tenant.api,
        lab.api,
        admin,
        await _regulator(app_client, pool, "31"),
        await _regulator(app_client, pool, "310115"),
    ):
        body = await _read(reader, request["id"])
        assert (body["id"], len(body["items"])) == (request["id"], 1)
    for stranger in (other_tenant.api, other_lab.api, await _regulator(app_client, pool, "44")):
        problem(await stranger.get(url), 404)
    problem(await anonymous.get(url), 401)
    problem(await admin.get(f"{URL}/{uuid.uuid4()}"), 404)
    assert fields_of(problem(await admin.get(f"{URL}/not-a-uuid"), 400)) == ["request_id"]


async def test_lists_are_scoped_by_role(
    tenant: Tenant,
    make_tenant: MakeTenant,
    lab: LabAccount,
    make_lab: MakeLab,
    admin: Api,
    anonymous: Api,
    app_client: httpx.AsyncClient,
    pool: asyncpg.Pool,
) -> None:
    """Enterprise: its own; lab: addressed to it; regulator: its region's prefix; admin: all.
    A filter narrows the scope, never widens it."""
    shenzhen = await make_tenant(region_code="440300")
    other_lab = await make_lab()
    mine = (await _created(tenant, lab, await _gauge(tenant)))["id"]
    to_other_lab = (await _created(tenant, other_lab, await _gauge(tenant)))["id"]
    theirs = (await _created(shenzhen, lab, await _gauge(shenzhen)))["id"]

    assert set(await _ids(tenant.api)) == {mine, to_other_lab}
    assert await _ids(shenzhen.api) == [theirs]
    assert set(await _ids(lab.api)) == {mine, theirs}
    assert await _ids(other_lab.api) == [to_other_lab]
    assert await _ids(await _regulator(app_client, pool, "31"), lab_id=lab.id) == [mine]
    assert await _ids(await _regulator(app_client, pool, "4403"), lab_id=lab.id) == [theirs]
    assert set(await _ids(admin, lab_id=lab.id)) == {mine, theirs}
    assert await _ids(admin, lab_id=lab.id, enterprise_id=shenzhen.id) == [theirs]
    assert await _ids(tenant.api, enterprise_id=shenzhen.id) == []
    assert await _ids(other_lab.api, lab_id=lab.id) == []
    problem(await anonymous.get(URL), 401)


async def test_list_filters_and_entries_carry_counts_but_no_items(
    tenant: Tenant, lab: LabAccount, make_lab: MakeLab
) -> None:
    """status and lab_id filters; list entries have items = null but items_total / items_done."""
    other_lab = await make_lab()
    submitted = await _in_state("submitted", tenant, lab)
    rejected = await _in_state("rejected", tenant, lab)
    elsewhere = (await _created(tenant, other_lab, await _gauge(tenant)))["id"]
    a, b = await _gauge(tenant), await _gauge(tenant)
    accepted = await accepted_request(tenant, lab, a, b)
    assert (await lab.record(a)).status_code == 201

    assert await _ids(tenant.api, status="accepted") == [accepted["id"]]
    assert await _ids(tenant.api, status="rejected") == [rejected]
    assert set(await _ids(tenant.api, status="submitted")) == {submitted, elsewhere}
    assert await _ids(tenant.api, lab_id=other_lab.id) == [elsewhere]
    assert await _ids(lab.api, status="submitted") == [submitted]
    assert fields_of(problem(await tenant.api.get(URL, params={"status": "lost"}), 400)) == ["status"]
    [entry] = (await tenant.api.get(URL, params={"status": "accepted"})).json()["items"]
    assert (entry["items"], entry["items_total"], entry["items_done"]) == (None, 2, 1)
    assert (entry["accepted_on"], entry["due_by"]) == (accepted["accepted_on"], accepted["due_by"])


async def test_list_is_newest_first_with_keyset_paging(tenant: Tenant, lab: LabAccount, clock: FixedClock) -> None:
    """Newest first across pages; requests made at the same instant are each served exactly once."""
    created = []
    for minutes in range(3):
        clock.set(NOW + dt.timedelta(minutes=minutes))
        created.append((await _created(tenant, lab, await _gauge(tenant)))["id"])
    first = (await tenant.api.get(URL, params={"limit": 2})).json()
    assert [i["id"] for i in first["items"]] == created[:0:-1]
    assert first["next_cursor"]
    second = (await tenant.api.get(URL, params={"limit": 2, "cursor": first["next_cursor"]})).json()
    assert ([i["id"] for i in second["items"]], second["next_cursor"]) == ([created[0]], None)

    clock.set(NOW + dt.timedelta(minutes=3))
    same_instant = {(await _created(tenant, lab, await _gauge(tenant)))["id"] for _ in range(3)}
    seen: list[str] = []
    cursor = None
    while True:
        page = (await tenant.api.get(URL, params={"limit": 1} | ({"cursor": cursor} if cursor else {}))).json()
        seen += [i["id"] for i in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 6
    assert set(seen[:3]) == same_instant
    assert seen[3:] == created[::-1]
    assert seen == await _ids(tenant.api, limit=10)
    assert fields_of(problem(await tenant.api.get(URL, params={"cursor": "garbage!"}), 400)) == ["cursor"]
    problem(await tenant.api.get(URL, params={"limit": 0}), 400)


# --- accepting: accepted_on and due_by ------------------------------------------------------------

#: (instant of acceptance, the lab's sla_working_days or None for the default) -> (accepted_on, due_by)
DUE_DATES: dict[tuple[dt.datetime, int | None], tuple[str, str]] = {
    (NOW, None): ("2026-06-15", "2026-06-29"),  # Monday + 10 working days = Monday two weeks on
    (NOW, 1): ("2026-06-15", "2026-06-16"),  # the start day does not count
    (NOW, 5): ("2026-06-15", "2026-06-22"),
    (NOW, 250): ("2026-06-15", "2027-05-31"),
    (dt.datetime(2026, 6, 19, 4, tzinfo=dt.UTC), 1): ("2026-06-19", "2026-06-22"),  # Friday -> Monday
    (dt.datetime(2026, 6, 19, 4, tzinfo=dt.UTC), 6): ("2026-06-19", "2026-06-29"),
    (dt.datetime(2026, 6, 20, 4, tzinfo=dt.UTC), 1): ("2026-06-20", "2026-06-22"),  # Saturday
    (dt.datetime(2026, 6, 21, 4, tzinfo=dt.UTC), 2): ("2026-06-21", "2026-06-23"),  # Sunday
    # 16:30Z on Thursday is already 00:30 on Friday in Shanghai.
    (dt.datetime(2026, 6, 18, 16, 30, tzinfo=dt.UTC), 1): ("2026-06-19", "2026-06-22"),
}


async def test_accepting_sets_the_due_date_in_working_days(
    tenant: Tenant, make_tenant: MakeTenant, make_lab: MakeLab, admin: Api, clock: FixedClock
) -> None:
    """due_by = the enterprise-local accepted date + the lab's sla_working_days working days (weekends
    skipped, the start day not counted); sla_working_days defaults to 10 and must be 1..250."""
    observed = {}
    for (instant, sla), _ in DUE_DATES.items():
        lab = await make_lab(**({} if sla is None else {"sla_working_days": sla}))
        assert lab.lab["sla_working_days"] == (10 if sla is None else sla)
        request = await _created(tenant, lab, await _gauge(tenant))
        clock.set(instant)
        body = await lab.accept(request["id"])
        assert (body["status"], body["overdue"], body["version"]) == ("accepted", False, 2)
        observed[(instant, sla)] = (body["accepted_on"], body["due_by"])
        clock.set(NOW)
    assert observed == DUE_DATES

    # The same instant is Friday in Shanghai but still Thursday for an enterprise keeping UTC dates.
    utc = await make_tenant(timezone="UTC")
    lab = await make_lab(sla_working_days=1)
    request = await _created(utc, lab, await _gauge(utc))
    clock.set(dt.datetime(2026, 6, 18, 16, 30, tzinfo=dt.UTC))
    body = await lab.accept(request["id"])
    assert (body["accepted_on"], body["due_by"]) == ("2026-06-18", "2026-06-19")
    assert (await _read(utc.api, request["id"]))["due_by"] == "2026-06-19"

    for sla in (0, 251, -1):
        new_lab = {"name": "某计量所", "accreditation_no": "CNAS L9", "region_code": "310115", "sla_working_days": sla}
        assert fields_of(problem(await admin.post("/v1/labs", json=new_lab), 400)) == ["sla_working_days"], sla


async def test_who_may_accept(
    tenant: Tenant,
    lab: LabAccount,
    make_lab: MakeLab,
    admin: Api,
    anonymous: Api,
    app_client: httpx.AsyncClient,
    pool: asyncpg.Pool,
) -> None:
    """The request's lab or an admin; the enterprise and a regulator 403; another lab 404; no key 401."""
    other_lab = await make_lab()
    first = await _created(tenant, lab, await _gauge(tenant))
    url = f"{URL}/{first['id']}/accept"
    before = await _row(pool, first["id"])
    problem(await tenant.api.post(url), 403)
    problem(await (await _regulator(app_client, pool, "31")).post(url), 403)
    problem(await other_lab.api.post(url), 404)
    problem(await anonymous.post(url), 401)
    problem(await lab.api.post(f"{URL}/{uuid.uuid4()}/accept"), 404)
    assert await _row(pool, first["id"]) == before
    assert (await lab.accept(first["id"]))["status"] == "accepted"
    second = await _created(tenant, lab, await _gauge(tenant))
    by_admin = await admin.post(f"{URL}/{second['id']}/accept")
    assert by_admin.status_code == 200, by_admin.text
    assert (by_admin.json()["status"], by_admin.json()["due_by"]) == ("accepted", "2026-06-29")


# --- rejecting and cancelling ---------------------------------------------------------------------


async def test_the_lab_rejects_with_a_reason_that_is_kept(
    tenant: Tenant,
    lab: LabAccount,
    make_lab: MakeLab,
    admin: Api,
    app_client: httpx.AsyncClient,
    pool: asyncpg.Pool,
) -> None:
    """reject needs a non-blank reason (400), only the lab or an admin (enterprise and regulator 403,
    another lab 404)."""
    other_lab = await make_lab()
    request = await _created(tenant, lab, await _gauge(tenant))
    url = f"{URL}/{request['id']}/reject"
    before = await _row(pool, request["id"])
    assert fields_of(problem(await lab.api.post(url, json={}), 400)) == ["reason"]
    assert fields_of(problem(await lab.api.post(url, json={"reason": "   "}), 400)) == ["reason"]
    problem(await lab.api.post(url), 400)
    problem(await tenant.api.post(url, json={"reason": "自己拒绝"}), 403)
    problem(await (await _regulator(app_client, pool, "31")).post(url, json={"reason": "监管"}), 403)
    problem(await other_lab.api.post(url, json={"reason": "不是我的"}), 404)
    assert await _row(pool, request["id"]) == before
    body = (await lab.api.post(url, json={"reason": "  标准器送检中，暂停受理  "})).json()
    assert (body["status"], body["reason"], body["accepted_on"], body["due_by"]) == (
        "rejected",
        "标准器送检中，暂停受理",
        None,
        None,
    )
    assert (await _read(tenant.api, request["id"]))["reason"] == "标准器送检中，暂停受理"
    second = await _created(tenant, lab, await _gauge(tenant))
    assert (await admin.post(f"{URL}/{second['id']}/reject", json={"reason": "平台代办"})).json()[
        "status"
    ] == "rejected"


async def test_the_enterprise_cancels_before_any_result(
    tenant: Tenant,
    make_tenant: MakeTenant,
    lab: LabAccount,
    admin: Api,
    app_client: httpx.AsyncClient,
    pool: asyncpg.Pool,
) -> None:
    """cancel with no body, an empty body or a reason; by the enterprise or an admin (lab and regulator
    403, another enterprise 404); from submitted or accepted; once a result is recorded, 409 and nothing changes."""
    other = await make_tenant()
    no_body = await _in_state("submitted", tenant, lab)
    url = f"{URL}/{no_body}/cancel"
    before = await _row(pool, no_body)
    problem(await lab.api.post(url), 403)
    problem(await (await _regulator(app_client, pool, "31")).post(url), 403)
    problem(await other.api.post(url), 404)
    assert await _row(pool, no_body) == before
    response = await tenant.api.post(url)
    assert response.status_code == 200, response.text
    assert (response.json()["status"], bool(response.json()["reason"])) == ("cancelled", True)

    with_reason = await _in_state("submitted", tenant, lab)
    response = await tenant.api.post(f"{URL}/{with_reason}/cancel", json={"reason": "仪表已停用"})
    assert (response.json()["status"], response.json()["reason"]) == ("cancelled", "仪表已停用")
    by_admin = await _in_state("submitted", tenant, lab)
    assert fields_of(problem(await tenant.api.post(f"{URL}/{by_admin}/cancel", json={"why": "x"}), 400)) == ["why"]
    assert (await admin.post(f"{URL}/{by_admin}/cancel")).json()["status"] == "cancelled"

    a, b = await _gauge(tenant), await _gauge(tenant)
    partly_done = await accepted_request(tenant, lab, a, b)
    assert (await lab.record(a)).status_code == 201
    before = await _row(pool, partly_done["id"])
    problem(await tenant.api.post(f"{URL}/{partly_done['id']}/cancel", json={"reason": "不要了"}), 409)
    assert await _row(pool, partly_done["id"]) == before

    accepted = await _in_state("accepted", tenant, lab)
    response = await tenant.api.post(f"{URL}/{accepted}/cancel", json={})
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "cancelled"


# --- the transition table, cell by cell -----------------------------------------------------------

STATES = ("submitted", "accepted", "rejected", "cancelled", "completed")
ACTIONS = ("accept", "reject", "cancel")
#: (state, action) -> the state reached, or the 409 illegal-transition with its `allowed` list.
TABLE: dict[tuple[str, str], Any] = {
    ("submitted", "accept"): "accepted",
    ("submitted", "reject"): "rejected",
    ("submitted", "cancel"): "cancelled",
    ("accepted", "accept"): (409, TRANSITION, ["cancel"]),
    ("accepted", "reject"): (409, TRANSITION, ["cancel"]),
    ("accepted", "cancel"): "cancelled",
} | {(state, action): (409, TRANSITION, []) for state in ("rejected", "cancelled", "completed") for action in ACTIONS}


async def test_transition_table_cell_by_cell(tenant: Tenant, lab: LabAccount, pool: asyncpg.Pool) -> None:
    """Each action from each state, by the party entitled to it: the state it leads to (version + 1), or a
    409 illegal-transition problem listing the actions allowed from that state, with nothing written."""
    observed: dict[tuple[str, str], Any] = {}
    for state in STATES:
        for action in ACTIONS:
            request_id = await _in_state(state, tenant, lab)
            before = await _row(pool, request_id)
            response = await _act(action, request_id, tenant, lab)
            after = await _row(pool, request_id)
            if response.status_code == 200:
                observed[(state, action)] = response.json()["status"]
                assert (after["status"], after["version"]) == (response.json()["status"], before["version"] + 1)
            else:
                body = response.json()
                observed[(state, action)] = (response.status_code, body.get("type"), body.get("allowed"))
                assert response.headers["content-type"].startswith("application/problem+json")
                assert after == before, (state, action)
    assert observed == TABLE


# --- completion and overdue -----------------------------------------------------------------------


async def test_a_request_completes_when_every_item_has_a_result(tenant: Tenant, lab: LabAccount) -> None:
    """A lab records results only on an accepted request; each item shows its result once recorded; the
    last result makes the request completed."""
    a, b = await _gauge(tenant), await _gauge(tenant)
    submitted = await _created(tenant, lab, a, b)
    problem(await lab.record(a), 403)
    assert (await _read(tenant.api, submitted["id"]))["items_done"] == 0
    request = await lab.accept(submitted["id"])
    first = await lab.record(a, number="JD-2026-0001")
    assert first.status_code == 201, first.text
    halfway = await _read(tenant.api, request["id"])
    assert (halfway["status"], halfway["items_done"], halfway["items_total"]) == ("accepted", 1, 2)
    done, pending = halfway["items"]
    assert (done["status"], done["certificate_number"], done["outcome"]) == ("done", "JD-2026-0001", "pass")
    assert done["certificate_id"] is not None
    assert (pending["status"], pending["certificate_id"]) == ("pending", None)
    assert (await lab.record(b)).status_code == 201
    finished = await _read(lab.api, request["id"])
    assert (finished["status"], finished["items_done"], finished["overdue"]) == ("completed", 2, False)
    assert [i["status"] for i in finished["items"]] == ["done", "done"]
    assert finished["due_by"] == request["due_by"]
    assert await _ids(tenant.api, status="completed") == [request["id"]]


async def test_overdue_once_the_enterprise_local_today_passes_due_by(
    tenant: Tenant, lab: LabAccount, clock: FixedClock
) -> None:
    """Accepted on Monday 2026-06-15 with 10 working days: due 2026-06-29, overdue from 2026-06-30 in
    Shanghai (16:00Z on the 29th). Only accepted requests are overdue; ?overdue= agrees with the flag."""
    late = (await accepted_request(tenant, lab, await _gauge(tenant)))["id"]
    a = await _gauge(tenant)
    finished = (await accepted_request(tenant, lab, a))["id"]
    assert (await lab.record(a)).status_code == 201
    waiting = (await _created(tenant, lab, await _gauge(tenant)))["id"]

    clock.set(dt.datetime(2026, 6, 29, 15, 59, tzinfo=dt.UTC))  # 23:59 on the due date in Shanghai
    assert (await _read(tenant.api, late))["overdue"] is False
    assert await _ids(tenant.api, overdue="true") == []
    assert set(await _ids(tenant.api, overdue="false")) == {late, finished, waiting}

    clock.set(dt.datetime(2026, 6, 29, 16, 0, tzinfo=dt.UTC))  # 00:00 the day after
    assert [(await _read(tenant.api, r))["overdue"] for r in (late, finished, waiting)] == [True, False, False]
    assert await _ids(tenant.api, overdue="true") == [late]
    assert await _ids(lab.api, overdue="true") == [late]
    assert set(await _ids(tenant.api, overdue="false")) == {finished, waiting}
    [entry] = (await tenant.api.get(URL, params={"overdue": "true"})).json()["items"]
    assert entry["overdue"] is True


# --- lab visibility of instruments ----------------------------------------------------------------


async def test_a_lab_sees_an_instrument_only_once_it_has_a_request_item_for_it(
    tenant: Tenant, lab: LabAccount, make_lab: MakeLab
) -> None:
    """404 before any request; 200 once requested, and still after rejection or cancellation; another lab 404."""
    other_lab = await make_lab()
    rejected, cancelled, never = await _gauge(tenant), await _gauge(tenant), await _gauge(tenant)
    for instrument in (rejected, cancelled, never):
        problem(await lab.api.get(f"/v1/instruments/{instrument}"), 404)
    r1 = await _created(tenant, lab, rejected)
    r2 = await _created(tenant, lab, cancelled)
    for instrument in (rejected, cancelled):
        response = await lab.api.get(f"/v1/instruments/{instrument}")
        assert response.status_code == 200, response.text
        assert response.json()["id"] == instrument
    assert (await lab.api.post(f"{URL}/{r1['id']}/reject", json={"reason": "满负荷"})).status_code == 200
    assert (await tenant.api.post(f"{URL}/{r2['id']}/cancel")).status_code == 200
    for instrument in (rejected, cancelled):
        assert (await lab.api.get(f"/v1/instruments/{instrument}")).status_code == 200
        problem(await other_lab.api.get(f"/v1/instruments/{instrument}"), 404)
    problem(await lab.api.get(f"/v1/instruments/{never}"), 404)
