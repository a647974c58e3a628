"""Notices through the API (issue 4 points 1, 2 and 4; design.md §6; domain.md §2.3 R3, R5, R7).

Reminder settings on the enterprise (PATCH /v1/enterprises/{id}), the event notice written with a
recorded result, cancellation of stale notices when an instrument changes, and GET /v1/notices and
/v1/notices/{id}: filters, keyset paging and who sees what. The planner plans for every enterprise
in the shared database, so each test looks only at its own enterprise's instruments.

The app's clock stands at NOW (2026-06-15, 12:00 in Shanghai). ``GAUGE`` verified 2026-01-15 is
valid until V = 2026-07-14, so on NOW it is inside its 30-day reminder window.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import asyncpg
import httpx
import pytest

from jobs.plan import plan
from service.auth import Role
from tests.conftest import (
    GAUGE,
    NOW,
    Api,
    LabAccount,
    MakeTenant,
    Tenant,
    accepted_request,
    fields_of,
    mint,
    problem,
)

V = dt.date(2026, 7, 14)
NOTICE = {"kind": "result_notice", "failed_items": ["示值误差"]}


def day(offset: int) -> dt.date:
    return V + dt.timedelta(days=offset)


def at(date: dt.date, hour_utc: int = 4) -> dt.datetime:
    """An instant on ``date`` (12:00 in Shanghai by default)."""
    return dt.datetime(date.year, date.month, date.day, hour_utc, tzinfo=dt.UTC)


async def _plan(pool: asyncpg.Pool, *, now: dt.datetime = NOW, today: dt.date | None = None) -> None:
    async with pool.acquire() as conn:
        result = await plan(conn, now, today=today)
    assert result.ran


async def _notices(pool: asyncpg.Pool, instrument_id: str) -> list[asyncpg.Record]:
    async with pool.acquire() as conn:
        return await conn.fetch(
            """SELECT id, kind, audience, cycle, step, due_on, status, last_error, certificate_id, created_at,
                      closed_at
               FROM notices WHERE instrument_id = $1 ORDER BY created_at, kind, step""",
            uuid.UUID(instrument_id),
        )


async def _planned(pool: asyncpg.Pool, instrument_id: str) -> set[tuple[str, int, dt.date, str]]:
    """The instrument's planned notices as (kind, step, due_on, status)."""
    return {
        (r["kind"], r["step"], r["due_on"], r["status"])
        for r in await _notices(pool, instrument_id)
        if r["certificate_id"] is None
    }


async def _gauge(tenant: Tenant, **fields: Any) -> str:
    instrument = await tenant.register(**(GAUGE | {"last_verified_on": "2026-01-15"} | fields))
    return str(instrument["id"])


async def _page(api: Api, **params: Any) -> dict[str, Any]:
    response = await api.get("/v1/notices", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def _all(api: Api, **params: Any) -> list[dict[str, Any]]:
    """Every notice the caller may see with ``params``, following next_cursor to the end."""
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        body = await _page(api, **params, **({"cursor": cursor} if cursor else {}))
        items += body["items"]
        cursor = body["next_cursor"]
        if cursor is None:
            return items


@pytest.fixture
async def regulator(pool: asyncpg.Pool, app_client: httpx.AsyncClient) -> Api:
    """A regulator of Shanghai ("31"), the region of every test enterprise (310115)."""
    return Api(app_client, await mint(pool, Role.REGULATOR, region_code="31"))


@pytest.fixture
async def far_regulator(pool: asyncpg.Pool, app_client: httpx.AsyncClient) -> Api:
    """A regulator of Guangdong ("44")."""
    return Api(app_client, await mint(pool, Role.REGULATOR, region_code="44"))


# --- reminder settings on the enterprise -------------------------------------------------------


async def test_settings_defaults_of_a_new_enterprise(tenant: Tenant) -> None:
    """Settings: reminder_days [30, 7], rotation_reminder_days [90, 30], overdue_repeat_days 7,
    escalate_after_days 30, no e-mails, no digest."""
    response = await tenant.api.get(f"/v1/enterprises/{tenant.id}")
    assert response.status_code == 200, response.text
    body = response.json()
    assert {
        k: body[k]
        for k in (
            "reminder_days",
            "rotation_reminder_days",
            "overdue_repeat_days",
            "escalate_after_days",
            "notify_emails",
            "digest",
        )
    } == {
        "reminder_days": [30, 7],
        "rotation_reminder_days": [90, 30],
        "overdue_repeat_days": 7,
        "escalate_after_days": 30,
        "notify_emails": [],
        "digest": False,
    }


async def test_settings_change_with_patch_and_emails_are_deduplicated_case_insensitively(
    tenant: Tenant, pool: asyncpg.Pool
) -> None:
    """Settings: the enterprise changes every reminder setting; the same address in another case is
    kept once (the first spelling), and what is stored is what is read back."""
    change = {
        "reminder_days": [60, 14, 1],
        "rotation_reminder_days": [120],
        "overdue_repeat_days": 366,
        "escalate_after_days": 3660,
        "notify_emails": ["Ops@Example.com", "qa@example.com", "ops@EXAMPLE.COM", "QA@example.com"],
        "digest": True,
    }
    response = await tenant.api.patch(f"/v1/enterprises/{tenant.id}", json=change)
    assert response.status_code == 200, response.text
    expected = change | {"notify_emails": ["Ops@Example.com", "qa@example.com"]}
    assert {k: response.json()[k] for k in change} == expected
    read = (await tenant.api.get(f"/v1/enterprises/{tenant.id}")).json()
    assert {k: read[k] for k in change} == expected
    async with pool.acquire() as conn:
        row = await conn.fetchrow("SELECT * FROM enterprises WHERE id = $1", uuid.UUID(tenant.id))
    assert {k: row[k] for k in change} == expected
    # The minimum values are accepted too, and twenty distinct addresses.
    twenty = [f"u{n}@example.com" for n in range(20)]
    low = {"overdue_repeat_days": 1, "escalate_after_days": 1, "notify_emails": twenty, "digest": False}
    response = await tenant.api.patch(f"/v1/enterprises/{tenant.id}", json=low)
    assert response.status_code == 200, response.text
    assert {k: response.json()[k] for k in low} == low


#: (change, the field the 400 names)
BAD_SETTINGS: list[tuple[dict[str, Any], str]] = [
    ({"reminder_days": [30, -7]}, "reminder_days"),
    ({"reminder_days": [-1]}, "reminder_days"),
    ({"reminder_days": [0]}, "reminder_days"),
    ({"reminder_days": [7, 30]}, "reminder_days"),
    ({"reminder_days": [30, 30]}, "reminder_days"),
    ({"reminder_days": [367]}, "reminder_days"),
    ({"rotation_reminder_days": [30, 90]}, "rotation_reminder_days"),
    ({"rotation_reminder_days": [90, -30]}, "rotation_reminder_days"),
    ({"overdue_repeat_days": 0}, "overdue_repeat_days"),
    ({"overdue_repeat_days": 400}, "overdue_repeat_days"),
    ({"overdue_repeat_days": -7}, "overdue_repeat_days"),
    ({"escalate_after_days": 0}, "escalate_after_days"),
    ({"escalate_after_days": 3661}, "escalate_after_days"),
    ({"notify_emails": ["ops@example.com", "not-an-address"]}, "notify_emails[1]"),
    ({"notify_emails": ["ops@example"]}, "notify_emails[0]"),
    ({"notify_emails": ["two words@example.com"]}, "notify_emails[0]"),
    ({"notify_emails": [f"u{n}@example.com" for n in range(21)]}, "notify_emails"),
    ({"notify_emails": "ops@example.com"}, "notify_emails"),
    ({"reminder_days": list(range(200, 189, -1))}, "reminder_days"),
    ({"digest": "yes"}, "digest"),
]


async def test_bad_settings_are_400_naming_the_field_and_change_nothing(tenant: Tenant) -> None:
    """Settings validation: negative, zero, unsorted or too large offsets, repeat days outside
    1–366, escalation days outside 1–3660, malformed or too many addresses: 400 naming the field,
    and the enterprise is unchanged."""
    before = (await tenant.api.get(f"/v1/enterprises/{tenant.id}")).json()
    for change, field in BAD_SETTINGS:
        body = problem(await tenant.api.patch(f"/v1/enterprises/{tenant.id}", json=change), 400)
        assert fields_of(body) == [field], change
    assert (await tenant.api.get(f"/v1/enterprises/{tenant.id}")).json() == before


async def test_settings_apply_from_the_next_planning_run(tenant: Tenant, pool: asyncpg.Pool) -> None:
    """Settings reach the planner: reminder_days [45, 10] (R5), overdue_repeat_days 2 (R3) and
    escalate_after_days 3 give due_soon on V − 45 and V − 10, overdue on V + 1 and V + 3, and the
    escalation on V + 4."""
    gauge = await _gauge(tenant)
    change = {"reminder_days": [45, 10], "overdue_repeat_days": 2, "escalate_after_days": 3}
    assert (await tenant.api.patch(f"/v1/enterprises/{tenant.id}", json=change)).status_code == 200
    for offset in (-45, -30, -10, -7, 1, 2, 3, 4):
        await _plan(pool, today=day(offset))
    assert await _planned(pool, gauge) == {
        ("due_soon", 45, day(-45), "cancelled"),
        ("due_soon", 10, day(-10), "cancelled"),
        ("overdue", 0, day(1), "pending"),
        ("overdue", 1, day(3), "pending"),
        ("escalation", 0, day(4), "pending"),
    }


# --- event notices with recorded results ---------------------------------------------------------


async def test_a_recorded_result_writes_its_result_recorded_notice(
    tenant: Tenant, lab: LabAccount, pool: asyncpg.Pool
) -> None:
    """Result events: a passing verification writes one notice result_recorded for the enterprise,
    naming the certificate, with the result's date as its cycle and today as its due date."""
    gauge = await _gauge(tenant)
    await accepted_request(tenant, lab, gauge)
    response = await lab.record(gauge, performed_on="2026-06-10", issued_on="2026-06-12")
    assert response.status_code == 201, response.text
    certificate = response.json()["certificate"]
    events = [r for r in await _notices(pool, gauge) if r["certificate_id"] is not None]
    assert len(events) == 1
    (event,) = events
    assert str(event["certificate_id"]) == certificate["id"]
    assert (event["kind"], event["audience"], event["status"]) == ("result_recorded", "enterprise", "pending")
    assert (event["cycle"], event["step"], event["due_on"], event["created_at"]) == (
        dt.date(2026, 6, 10),
        0,
        dt.date(2026, 6, 15),
        NOW,
    )
    listed = await _all(tenant.api, instrument_id=gauge, kind="result_recorded")
    assert [(n["id"], n["certificate_id"]) for n in listed] == [(str(event["id"]), certificate["id"])]


async def test_a_result_notice_writes_a_verification_failed_notice(
    tenant: Tenant, lab: LabAccount, pool: asyncpg.Pool
) -> None:
    """Result events: a failed verification (result notice, 检定结果通知书) writes verification_failed
    with its certificate, and no result_recorded; the failed gauge's pending reminder is cancelled
    in the same transaction."""
    gauge = await _gauge(tenant)
    await _plan(pool)
    await accepted_request(tenant, lab, gauge)
    response = await lab.record(gauge, **NOTICE)
    assert response.status_code == 201, response.text
    assert response.json()["instrument"]["lifecycle"] == "failed"
    rows = await _notices(pool, gauge)
    events = [(r["kind"], str(r["certificate_id"]), r["status"]) for r in rows if r["certificate_id"]]
    assert events == [("verification_failed", response.json()["certificate"]["id"], "pending")]
    assert [(r["kind"], r["status"], r["last_error"]) for r in rows if not r["certificate_id"]] == [
        ("due_soon", "cancelled", "cancelled: the instrument is failed")
    ]


async def test_a_refused_result_writes_no_notice(tenant: Tenant, lab: LabAccount, pool: asyncpg.Pool) -> None:
    """Result events share the certificate's transaction: a result refused (issued in the future)
    leaves neither a certificate nor a notice."""
    gauge = await _gauge(tenant)
    await accepted_request(tenant, lab, gauge)
    problem(await lab.record(gauge, issued_on="2026-06-20"), 422)
    problem(await lab.record(gauge, **(NOTICE | {"failed_items": []})), 422)
    assert await _notices(pool, gauge) == []
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM certificates WHERE instrument_id = $1", uuid.UUID(gauge)) == 0


# --- cancellation of stale notices when the instrument changes -----------------------------------


@pytest.mark.parametrize(("action", "lifecycle"), [("seal", "sealed"), ("scrap", "scrapped"), ("replace", "replaced")])
async def test_sealed_scrapped_or_replaced_instruments_have_pending_notices_cancelled_and_get_no_new_ones(
    tenant: Tenant, pool: asyncpg.Pool, action: str, lifecycle: str
) -> None:
    """Cancellation: the pending 30-day reminder of a gauge is cancelled, with the reason, in the
    transaction that seals, scraps or replaces it; planning later (on its 7-day, overdue and
    escalation days) gives it nothing new."""
    gauge = await _gauge(tenant)
    await _plan(pool)
    assert await _planned(pool, gauge) == {("due_soon", 30, day(-30), "pending")}
    body: dict[str, Any] | None = None
    if action == "replace":
        body = {
            "replacement": GAUGE
            | {"name": "新压力表", "serial_no": uuid.uuid4().hex[:10], "last_verified_on": "2026-06-01"}
        }
    response = await tenant.api.post(f"/v1/instruments/{gauge}/{action}", json=body)
    assert response.status_code in (200, 201), response.text
    (row,) = await _notices(pool, gauge)
    assert (row["status"], row["last_error"], row["closed_at"]) == (
        "cancelled",
        f"cancelled: the instrument is {lifecycle}",
        NOW,
    )
    for offset in (-7, 1, 31):
        await _plan(pool, today=day(offset))
    assert await _planned(pool, gauge) == {("due_soon", 30, day(-30), "cancelled")}


async def test_a_re_verified_instrument_has_the_old_cycle_cancelled_and_no_stale_notices(
    tenant: Tenant, lab: LabAccount, pool: asyncpg.Pool
) -> None:
    """Cancellation (R6): re-verified on 2026-06-10, the gauge is valid until 2026-12-09; its pending
    reminder of the old cycle is cancelled, planning on the old cycle's days gives nothing, and the
    new cycle is reminded on its own day (2026-11-09)."""
    gauge = await _gauge(tenant)
    await _plan(pool)
    await accepted_request(tenant, lab, gauge)
    response = await lab.record(gauge, performed_on="2026-06-10", issued_on="2026-06-12")
    assert response.status_code == 201, response.text
    assert response.json()["instrument"]["valid_until"] == "2026-12-09"
    assert await _planned(pool, gauge) == {("due_soon", 30, day(-30), "cancelled")}
    (old,) = [r for r in await _notices(pool, gauge) if r["kind"] == "due_soon"]
    assert (old["last_error"], old["closed_at"]) == ("cancelled: a newer result governs", NOW)
    for offset in (-7, 0, 1, 31):
        await _plan(pool, today=day(offset))
    assert await _planned(pool, gauge) == {("due_soon", 30, day(-30), "cancelled")}
    await _plan(pool, today=dt.date(2026, 11, 9))
    assert await _planned(pool, gauge) == {
        ("due_soon", 30, day(-30), "cancelled"),
        ("due_soon", 30, dt.date(2026, 11, 9), "pending"),
    }


async def test_re_verifying_an_overdue_instrument_cancels_its_overdue_notice_and_escalation(
    tenant: Tenant, lab: LabAccount, pool: asyncpg.Pool
) -> None:
    """Cancellation: a gauge valid until 2026-04-30 is 46 days overdue on NOW (overdue step 6, due
    05-01 + 42 = 06-12; escalation due 05-31); verified again, both are cancelled."""
    gauge = await _gauge(tenant, last_verified_on="2025-11-01")
    await _plan(pool)
    assert await _planned(pool, gauge) == {
        ("overdue", 6, dt.date(2026, 6, 12), "pending"),
        ("escalation", 0, dt.date(2026, 5, 31), "pending"),
    }
    await accepted_request(tenant, lab, gauge)
    assert (await lab.record(gauge)).status_code == 201
    await _plan(pool)
    rows = [r for r in await _notices(pool, gauge) if r["certificate_id"] is None]
    assert {(r["kind"], r["status"], r["last_error"]) for r in rows} == {
        ("overdue", "cancelled", "cancelled: a newer result governs"),
        ("escalation", "cancelled", "cancelled: a newer result governs"),
    }


# --- GET /v1/notices and /v1/notices/{id} -------------------------------------------------------


@pytest.fixture
async def history(tenant: Tenant, lab: LabAccount, pool: asyncpg.Pool) -> dict[str, str]:
    """Two gauges planned on three dates, and one recorded result:

    - A valid until 07-14: due_soon 30 (planned 06-15), due_soon 7 (07-08), overdue step 1 (07-25).
    - B valid until 06-20: due_soon 7 (06-15), overdue step 2 (07-08), overdue step 4 and the
      escalation (07-25).
    - C: a result recorded on 06-15 (result_recorded).
    """
    a = await _gauge(tenant)
    b = await _gauge(tenant, last_verified_on="2025-12-21")
    c = await _gauge(tenant, last_verified_on="2026-03-01")
    await _plan(pool)
    await accepted_request(tenant, lab, c)
    assert (await lab.record(c)).status_code == 201
    await _plan(pool, now=at(dt.date(2026, 7, 8)))
    await _plan(pool, now=at(dt.date(2026, 7, 25)))
    return {"a": a, "b": b, "c": c}


async def _rows_of(pool: asyncpg.Pool, tenant: Tenant) -> list[asyncpg.Record]:
    """The enterprise's notices, newest first (created_at, then id, descending)."""
    async with pool.acquire() as conn:
        return await conn.fetch(
            """SELECT id, instrument_id, kind, status, due_on, created_at FROM notices WHERE enterprise_id = $1
               ORDER BY created_at DESC, id DESC""",
            uuid.UUID(tenant.id),
        )


async def test_the_list_is_newest_first_and_pages_by_keyset(
    tenant: Tenant, history: dict[str, str], pool: asyncpg.Pool
) -> None:
    """List: newest first (created_at, then id), and pages of 1, 2 or 3 walk the same list once."""
    rows = await _rows_of(pool, tenant)
    assert {(r["instrument_id"], r["kind"], r["due_on"]) for r in rows} == {
        (uuid.UUID(history["a"]), "due_soon", day(-30)),
        (uuid.UUID(history["a"]), "due_soon", day(-7)),
        (uuid.UUID(history["a"]), "overdue", day(8)),
        (uuid.UUID(history["b"]), "due_soon", dt.date(2026, 6, 13)),
        (uuid.UUID(history["b"]), "overdue", dt.date(2026, 7, 5)),
        (uuid.UUID(history["b"]), "overdue", dt.date(2026, 7, 19)),
        (uuid.UUID(history["b"]), "escalation", dt.date(2026, 7, 21)),
        (uuid.UUID(history["c"]), "result_recorded", dt.date(2026, 6, 15)),
    }
    expected = [str(r["id"]) for r in rows]
    listed = await _page(tenant.api)
    assert [n["id"] for n in listed["items"]] == expected
    assert listed["next_cursor"] is None
    created = [dt.datetime.fromisoformat(n["created_at"]) for n in listed["items"]]
    assert created == sorted(created, reverse=True)
    assert created[0] == at(dt.date(2026, 7, 25))
    for limit in (1, 2, 3):
        assert [n["id"] for n in await _all(tenant.api, limit=limit)] == expected
    first = await _page(tenant.api, limit=3)
    assert len(first["items"]) == 3
    assert first["next_cursor"]


#: (parameters, which of the enterprise's notices they select)
FILTERS: list[tuple[dict[str, Any], Any]] = [
    ({"instrument_id": "a"}, lambda r, h: str(r["instrument_id"]) == h["a"]),
    ({"kind": "overdue"}, lambda r, h: r["kind"] == "overdue"),
    ({"kind": "result_recorded"}, lambda r, h: r["kind"] == "result_recorded"),
    ({"status": "cancelled"}, lambda r, h: r["status"] == "cancelled"),
    ({"status": "pending", "kind": "due_soon"}, lambda r, h: r["status"] == "pending" and r["kind"] == "due_soon"),
    (
        {"due_from": "2026-07-05", "due_to": "2026-07-19"},
        lambda r, h: "2026-07-05" <= str(r["due_on"]) <= "2026-07-19",
    ),
    ({"due_from": "2026-07-19"}, lambda r, h: str(r["due_on"]) >= "2026-07-19"),
    ({"due_to": "2026-06-15"}, lambda r, h: str(r["due_on"]) <= "2026-06-15"),
    (
        {"instrument_id": "b", "kind": "overdue", "status": "pending", "limit": 1},
        lambda r, h: str(r["instrument_id"]) == h["b"] and r["kind"] == "overdue" and r["status"] == "pending",
    ),
]


async def test_list_filters(tenant: Tenant, history: dict[str, str], pool: asyncpg.Pool) -> None:
    """List filters: instrument_id, kind, status, due_from / due_to (inclusive), combined, paged:
    exactly the enterprise's notices that match, newest first."""
    rows = await _rows_of(pool, tenant)
    for params, keep in FILTERS:
        query = {k: history.get(v, v) if k == "instrument_id" else v for k, v in params.items()}
        expected = [str(r["id"]) for r in rows if keep(r, history)]
        assert expected or params == {"status": "pending", "kind": "due_soon"}, params  # filters select something
        assert [n["id"] for n in await _all(tenant.api, **query)] == expected, params


BAD_FILTERS: list[tuple[dict[str, Any], str]] = [
    ({"kind": "reminder"}, "kind"),
    ({"status": "sent"}, "status"),
    ({"due_from": "2026-13-01"}, "due_from"),
    ({"due_to": "yesterday"}, "due_to"),
    ({"due_from": "0001-01-01"}, "due_from"),
    ({"instrument_id": "not-a-uuid"}, "instrument_id"),
    ({"limit": 0}, "limit"),
    ({"limit": 501}, "limit"),
]


async def test_bad_list_filters_are_400_naming_the_parameter(tenant: Tenant) -> None:
    """List parameters are checked: an unknown kind or status, a malformed or out-of-range date, a
    malformed instrument id or limit is 400 naming the parameter."""
    for params, field in BAD_FILTERS:
        assert fields_of(problem(await tenant.api.get("/v1/notices", params=params), 400)) == [field], params


async def test_who_sees_which_notices(
    tenant: Tenant,
    history: dict[str, str],
    make_tenant: MakeTenant,
    admin: Api,
    regulator: Api,
    far_regulator: Api,
    lab: LabAccount,
    anonymous: Api,
    pool: asyncpg.Pool,
) -> None:
    """Scope: the enterprise sees its own, a regulator those of its region (prefix "31" over
    310115, escalations included), an admin all; another enterprise and another region's regulator
    see none of them (a notice by id is 404), a lab is refused (403), no key is 401."""
    b_notices = {str(r["id"]) for r in await _notices(pool, history["b"])}
    escalation = next(str(r["id"]) for r in await _notices(pool, history["b"]) if r["kind"] == "escalation")
    for api in (tenant.api, regulator, admin):
        assert {n["id"] for n in await _all(api, instrument_id=history["b"])} == b_notices
        response = await api.get(f"/v1/notices/{escalation}")
        assert response.status_code == 200, response.text
        assert response.json()["audience"] == "regulator"
    assert escalation in {
        n["id"] for n in await _all(regulator, kind="escalation", due_from="2026-07-21", due_to="2026-07-21")
    }

    other = await make_tenant()
    assert (await _gauge(other)) is not None
    await _plan(pool)
    own_ids = {str(r["id"]) for r in await _rows_of(pool, tenant)}
    seen_by_other = {n["id"] for n in await _all(other.api, limit=500)}
    assert seen_by_other, "the other enterprise sees its own notices"
    assert not seen_by_other & own_ids
    assert await _all(other.api, instrument_id=history["b"]) == []
    assert await _all(far_regulator, instrument_id=history["b"]) == []
    for api in (other.api, far_regulator):
        problem(await api.get(f"/v1/notices/{escalation}"), 404)

    problem(await lab.api.get("/v1/notices"), 403)
    problem(await lab.api.get(f"/v1/notices/{escalation}"), 403)
    problem(await anonymous.get("/v1/notices"), 401)
    problem(await anonymous.get(f"/v1/notices/{escalation}"), 401)


async def test_one_notice_is_read_with_its_deliveries(
    tenant: Tenant, history: dict[str, str], pool: asyncpg.Pool
) -> None:
    """GET one: every field of the notice and its deliveries — an empty list before any delivery;
    an unknown id is 404, a malformed one 400."""
    row = next(r for r in await _notices(pool, history["a"]) if r["kind"] == "overdue")
    response = await tenant.api.get(f"/v1/notices/{row['id']}")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["deliveries"] == []
    assert {k: body[k] for k in ("id", "instrument_id", "kind", "audience", "cycle", "step", "due_on", "status")} == {
        "id": str(row["id"]),
        "instrument_id": history["a"],
        "kind": "overdue",
        "audience": "enterprise",
        "cycle": "2026-07-14",
        "step": 1,
        "due_on": "2026-07-22",
        "status": "pending",
    }
    assert body["instrument_name"] == "一般压力表"
    assert (body["attempts"], body["certificate_id"], body["closed_at"]) == (0, None, None)
    cancelled = next(r for r in await _notices(pool, history["a"]) if r["kind"] == "due_soon")
    read = (await tenant.api.get(f"/v1/notices/{cancelled['id']}")).json()
    assert (read["status"], read["last_error"]) == ("cancelled", "cancelled: the instrument is overdue")
    problem(await tenant.api.get(f"/v1/notices/{uuid.uuid4()}"), 404)
    problem(await tenant.api.get("/v1/notices/not-a-uuid"), 400)


async def test_one_notice_lists_every_delivery_with_its_attempts_in_order(
    tenant: Tenant, history: dict[str, str], pool: asyncpg.Pool
) -> None:
    """GET one with deliveries: each target (a webhook, an e-mail address) and every attempt, in
    attempt order, as the delivery rows record them."""
    notice = next(r for r in await _notices(pool, history["b"]) if r["kind"] == "escalation")
    t0 = at(dt.date(2026, 7, 25), 5)
    async with pool.acquire() as conn, conn.transaction():
        webhook = await conn.fetchval(
            """INSERT INTO webhooks (enterprise_id, url, secret, created_at)
               VALUES ($1, 'https://hooks.example.com/metreg', 'a-secret-of-sixteen', $2) RETURNING id""",
            uuid.UUID(tenant.id),
            t0,
        )
        hook = await conn.fetchval(
            """INSERT INTO deliveries (notice_id, channel, webhook_id, target, status, attempts, next_attempt_at,
                                       last_status, created_at, updated_at, delivered_at)
               VALUES ($1, 'webhook', $2, 'https://hooks.example.com/metreg', 'delivered', 2, $3, 200, $3, $4, $4)
               RETURNING id""",
            notice["id"],
            webhook,
            t0,
            t0 + dt.timedelta(minutes=1),
        )
        await conn.executemany(
            """INSERT INTO delivery_attempts (delivery_id, attempt, started_at, duration_ms, status_code, error,
                                             outcome)
               VALUES ($1, $2, $3, $4, $5, $6, $7)""",
            [
                (hook, 2, t0 + dt.timedelta(minutes=1), 80, 200, None, "delivered"),
                (hook, 1, t0, 1500, 500, "HTTP 500", "retry"),
            ],
        )
        await conn.execute(
            """INSERT INTO deliveries (notice_id, channel, target, next_attempt_at, created_at, updated_at)
               VALUES ($1, 'email', 'ops@example.com', $2, $2, $2)""",
            notice["id"],
            t0 + dt.timedelta(seconds=1),
        )
    body = (await tenant.api.get(f"/v1/notices/{notice['id']}")).json()
    deliveries = body["deliveries"]
    assert [(d["channel"], d["target"], d["status"], d["attempts"]) for d in deliveries] == [
        ("webhook", "https://hooks.example.com/metreg", "delivered", 2),
        ("email", "ops@example.com", "pending", 0),
    ]
    assert deliveries[0]["webhook_id"] == str(webhook)
    assert (deliveries[0]["last_status"], deliveries[0]["delivered_at"]) == (200, "2026-07-25T05:01:00Z")
    assert [
        (a["attempt"], a["status_code"], a["error"], a["outcome"], a["duration_ms"]) for a in deliveries[0]["history"]
    ] == [
        (1, 500, "HTTP 500", "retry", 1500),
        (2, 200, None, "delivered", 80),
    ]
    assert dt.datetime.fromisoformat(deliveries[0]["history"][0]["started_at"]) == t0
    assert deliveries[1]["history"] == []
    listed = await _all(tenant.api, instrument_id=history["b"], kind="escalation")
    assert [n["id"] for n in listed] == [str(notice["id"])]
