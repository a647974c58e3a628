"""Seal, unseal, scrap, replace, and an instrument's history (issue 3 points 6–8; design.md §4).

The transition table is walked cell by cell through the API: an instrument in each lifecycle, each
action on it. A refused action is a 409 listing what is allowed and writes nothing.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import uuid
from typing import Any

import asyncpg
import httpx
import pytest

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

WATER = {"catalog_code": "water_meter_dn25", "legal_use": "trade_settlement"}
THERMOMETER = {"catalog_code": "clinical_thermometer_glass", "legal_use": "medical"}
ACTIONS = ("seal", "unseal", "scrap", "replace")
LIFECYCLES = ("in_service", "sealed", "failed", "scrapped", "replaced", "pending_verification")

#: action -> the lifecycles it is allowed from, and where it leads (unseal: validity still runs).
TARGETS: dict[str, dict[str, str]] = {
    "seal": {"in_service": "sealed", "pending_verification": "sealed"},
    "unseal": {"sealed": "in_service"},
    "scrap": dict.fromkeys(("in_service", "sealed", "failed", "pending_verification"), "scrapped"),
    "replace": dict.fromkeys(("in_service", "sealed", "failed", "pending_verification"), "replaced"),
}
ALLOWED: dict[str, list[str]] = {lc: [a for a in ACTIONS if lc in TARGETS[a]] for lc in LIFECYCLES}


def _url(instrument_id: str, action: str) -> str:
    return f"/v1/instruments/{instrument_id}/{action}"


def _replacement(**fields: Any) -> dict[str, Any]:
    return (
        GAUGE
        | {"name": "一般压力表（新）", "serial_no": uuid.uuid4().hex[:10], "last_verified_on": "2026-06-01"}
        | fields
    )


async def _act(api: Api, instrument_id: str, action: str, body: dict[str, Any] | None = None) -> httpx.Response:
    if action == "replace":
        return await api.post(_url(instrument_id, action), json={"replacement": _replacement()} | (body or {}))
    if body is None:
        return await api.post(_url(instrument_id, action))
    return await api.post(_url(instrument_id, action), json=body)


async def _history(api: Api, instrument_id: str, **params: Any) -> list[dict[str, Any]]:
    response = await api.get(f"/v1/instruments/{instrument_id}/history", params=params)
    assert response.status_code == 200, response.text
    page = response.json()
    assert page["next_cursor"] is None, "a test history fits in one page"
    items: list[dict[str, Any]] = page["items"]
    return items


async def _get(api: Api, instrument_id: str) -> dict[str, Any]:
    response = await api.get(f"/v1/instruments/{instrument_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def _in(tenant: Tenant, lifecycle: str) -> dict[str, Any]:
    """A GAUGE verified 2026-01-15 (valid until 2026-07-14) in ``lifecycle``."""
    if lifecycle != "replaced":
        return await tenant.register(**GAUGE, last_verified_on="2026-01-15", lifecycle=lifecycle)
    old = await tenant.register(**GAUGE, last_verified_on="2026-01-15")
    response = await tenant.api.post(_url(old["id"], "replace"), json={"replacement": _replacement()})
    assert response.status_code == 201, response.text
    replaced: dict[str, Any] = response.json()["instrument"]
    assert replaced["lifecycle"] == "replaced"
    return replaced


async def _instrument_count(pool: asyncpg.Pool, tenant: Tenant) -> int:
    async with pool.acquire() as conn:
        return int(
            await conn.fetchval("SELECT count(*) FROM instruments WHERE enterprise_id = $1", uuid.UUID(tenant.id))
        )


async def _event_count(pool: asyncpg.Pool, instrument_id: str) -> int:
    async with pool.acquire() as conn:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM instrument_events WHERE instrument_id = $1", uuid.UUID(instrument_id)
            )
        )


async def _key_id(pool: asyncpg.Pool, column: str, owner: str) -> str:
    assert column in ("enterprise_id", "lab_id")
    async with pool.acquire() as conn:
        return str(await conn.fetchval(f"SELECT id FROM api_keys WHERE {column} = $1", uuid.UUID(owner)))


# --- the transition table, cell by cell -------------------------------------------------------------


def test_the_api_table_matches_the_issue() -> None:
    assert ALLOWED == {
        "in_service": ["seal", "scrap", "replace"],
        "sealed": ["unseal", "scrap", "replace"],
        "failed": ["scrap", "replace"],
        "scrapped": [],
        "replaced": [],
        "pending_verification": ["seal", "scrap", "replace"],
    }


@pytest.mark.parametrize("lifecycle", LIFECYCLES)
async def test_every_action_from_each_lifecycle(tenant: Tenant, pool: asyncpg.Pool, lifecycle: str) -> None:
    """Each cell of the table: the allowed action moves the lifecycle and records its event; a refused
    one is a 409 illegal-transition whose ``allowed`` lists what is allowed, and writes nothing."""
    for action in ACTIONS:
        before = await _in(tenant, lifecycle)
        assert before["lifecycle"] == lifecycle
        events_before = await _event_count(pool, before["id"])
        response = await _act(tenant.api, before["id"], action)
        target = TARGETS[action].get(lifecycle)
        if target is None:
            body = problem(response, 409)
            assert body["type"] == "urn:metreg:problem:illegal-transition", (action, lifecycle)
            assert body["allowed"] == ALLOWED[lifecycle], (action, lifecycle)
            after = await _get(tenant.api, before["id"])
            assert (after["lifecycle"], after["version"]) == (lifecycle, before["version"]), (action, lifecycle)
            assert await _event_count(pool, before["id"]) == events_before, (action, lifecycle)
            continue
        if action == "replace":
            assert response.status_code == 201, response.text
            moved = response.json()["instrument"]
        else:
            assert response.status_code == 200, response.text
            moved = response.json()
        assert moved["lifecycle"] == target, (action, lifecycle)
        # Back in service 29 days before 2026-07-14: due soon (R5).
        assert moved["status"] == ("due_soon" if target == "in_service" else target)
        assert moved["version"] == before["version"] + 1
        assert await _get(tenant.api, before["id"]) | {"as_of": moved["as_of"]} == moved
        [event, *_] = await _history(tenant.api, before["id"])
        expected_kind = {"seal": "sealed", "unseal": "unsealed", "scrap": "scrapped", "replace": "replaced"}[action]
        assert (event["kind"], event["from_lifecycle"], event["to_lifecycle"]) == (expected_kind, lifecycle, target)
        assert await _event_count(pool, before["id"]) == events_before + 1


# --- seal and unseal: validity is not paused -----------------------------------------------------------


async def test_seal_keeps_valid_until_and_records_why(tenant: Tenant) -> None:
    gauge = await tenant.register(**GAUGE, last_verified_on="2026-01-15")
    response = await tenant.api.post(
        _url(gauge["id"], "seal"), json={"effective_on": "2026-06-10", "reason": "  停产检修  "}
    )
    assert response.status_code == 200, response.text
    sealed = response.json()
    assert {k: sealed[k] for k in ("lifecycle", "status", "valid_until", "next_due", "last_verified_on")} == {
        "lifecycle": "sealed",
        "status": "sealed",
        "valid_until": "2026-07-14",
        "next_due": "2026-07-15",
        "last_verified_on": "2026-01-15",
    }
    assert sealed["required_action"] == "none"
    assert sealed["days_until_due"] == 29
    [event, registered] = await _history(tenant.api, gauge["id"])
    assert registered["kind"] == "registered"
    assert {k: event[k] for k in ("kind", "effective_on", "from_lifecycle", "to_lifecycle", "reason")} == {
        "kind": "sealed",
        "effective_on": "2026-06-10",
        "from_lifecycle": "in_service",
        "to_lifecycle": "sealed",
        "reason": "停产检修",
    }


async def test_a_post_without_a_body_takes_effect_today(tenant: Tenant) -> None:
    """effective_on defaults to the enterprise's local today; no body, an empty object and null all work."""
    for body in (None, {}):
        gauge = await tenant.register(**GAUGE, last_verified_on="2026-01-15")
        assert (await _act(tenant.api, gauge["id"], "seal", body)).status_code == 200
        [event, _] = await _history(tenant.api, gauge["id"])
        assert (event["effective_on"], event["reason"]) == ("2026-06-15", None)
    gauge = await tenant.register(**GAUGE, last_verified_on="2026-01-15")
    response = await tenant.api.post(
        _url(gauge["id"], "seal"), content=b"null", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 200, response.text


async def test_today_is_the_enterprises_local_date(tenant: Tenant, make_tenant: MakeTenant, clock: FixedClock) -> None:
    """R7: at 17:30Z it is already tomorrow in Shanghai, and still yesterday in Los Angeles."""
    clock.set(dt.datetime(2026, 6, 15, 17, 30, tzinfo=dt.UTC))
    gauge = await tenant.register(**GAUGE, last_verified_on="2026-01-15")
    assert (await _act(tenant.api, gauge["id"], "seal")).status_code == 200
    [event, _] = await _history(tenant.api, gauge["id"])
    assert event["effective_on"] == "2026-06-16"
    assert event["occurred_at"] == "2026-06-15T17:30:00Z"

    clock.set(NOW)
    west = await make_tenant(timezone="America/Los_Angeles")
    meter = await west.register(**GAUGE, last_verified_on="2026-01-15")
    body = problem(await _act(west.api, meter["id"], "seal", {"effective_on": "2026-06-15"}), 422)
    assert fields_of(body) == ["effective_on"]
    assert (await _act(west.api, meter["id"], "seal")).status_code == 200
    [event, _] = await _history(west.api, meter["id"])
    assert event["effective_on"] == "2026-06-14"


@pytest.mark.parametrize("action", ACTIONS)
async def test_effective_on_in_the_future_is_422_and_writes_nothing(
    tenant: Tenant, pool: asyncpg.Pool, action: str
) -> None:
    gauge = await tenant.register(
        **GAUGE, last_verified_on="2026-01-15", lifecycle="sealed" if action == "unseal" else "in_service"
    )
    count = await _instrument_count(pool, tenant)
    body = problem(await _act(tenant.api, gauge["id"], action, {"effective_on": "2026-06-16"}), 422)
    assert fields_of(body) == ["effective_on"]
    assert "future" in body["detail"]
    assert await _get(tenant.api, gauge["id"]) == gauge
    assert await _event_count(pool, gauge["id"]) == 1
    assert await _instrument_count(pool, tenant) == count


@pytest.mark.parametrize(
    ("case", "body", "status", "field"),
    [
        ("unknown field", {"effective_on": "2026-06-10", "when": "now"}, 400, "when"),
        ("empty reason", {"reason": ""}, 400, "reason"),
        ("date outside the supported years", {"effective_on": "1899-12-31"}, 400, "effective_on"),
        ("not a date", {"effective_on": "2026-13-01"}, 400, "effective_on"),
    ],
)
async def test_bad_lifecycle_bodies_are_400_naming_the_field(
    tenant: Tenant, case: str, body: dict[str, Any], status: int, field: str
) -> None:
    gauge = await tenant.register(**GAUGE, last_verified_on="2026-01-15")
    found = problem(await _act(tenant.api, gauge["id"], "seal", body), status)
    assert any(f.endswith(field) for f in fields_of(found)), (case, fields_of(found))
    assert (await _get(tenant.api, gauge["id"]))["lifecycle"] == "in_service", case


async def test_unseal_after_valid_until_is_pending_verification(tenant: Tenant, clock: FixedClock) -> None:
    """design.md §4: sealing does not pause validity; unsealed after valid_until it waits for verification."""
    gauge = await tenant.register(**GAUGE, last_verified_on="2026-01-15")
    assert (await _act(tenant.api, gauge["id"], "seal")).status_code == 200
    clock.set(dt.datetime(2026, 7, 20, 4, 0, tzinfo=dt.UTC))
    sealed = await _get(tenant.api, gauge["id"])
    assert (sealed["status"], sealed["valid_until"], sealed["days_until_due"]) == ("sealed", "2026-07-14", -6)
    response = await _act(tenant.api, gauge["id"], "unseal", {"reason": "恢复生产"})
    assert response.status_code == 200, response.text
    unsealed = response.json()
    assert {k: unsealed[k] for k in ("lifecycle", "status", "required_action", "valid_until")} == {
        "lifecycle": "pending_verification",
        "status": "pending_verification",
        "required_action": "verify",
        "valid_until": "2026-07-14",
    }
    [event, *_] = await _history(tenant.api, gauge["id"])
    assert {k: event[k] for k in ("kind", "from_lifecycle", "to_lifecycle", "effective_on", "reason")} == {
        "kind": "unsealed",
        "from_lifecycle": "sealed",
        "to_lifecycle": "pending_verification",
        "effective_on": "2026-07-20",
        "reason": "恢复生产",
    }


async def test_unsealing_an_expired_limited_life_meter_calls_for_replacement(tenant: Tenant, clock: FixedClock) -> None:
    """design.md §4: a limited-life meter's action at expiry is *replace*, never *re-verify*; sealing it
    for a while must not turn that into "verify" (unsealed without sealing it would be overdue → replace)."""
    meter = await tenant.register(**WATER, name="冷水水表 DN20", last_verified_on="2020-06-16", lifecycle="sealed")
    twin = await tenant.register(**WATER, name="冷水水表 DN20", last_verified_on="2020-06-16")
    clock.set(dt.datetime(2026, 6, 20, 4, 0, tzinfo=dt.UTC))
    assert (
        (await _get(tenant.api, twin["id"]))["status"],
        (await _get(tenant.api, twin["id"]))["required_action"],
    ) == (
        "overdue",
        "replace",
    )
    unsealed = (await _act(tenant.api, meter["id"], "unseal")).json()
    assert unsealed["lifecycle"] == "pending_verification"
    assert unsealed["required_action"] == "replace"


async def test_a_blank_reason_is_400_like_every_other_reason(tenant: Tenant, pool: asyncpg.Pool) -> None:
    """Revocation, rejection and cancellation refuse a reason that is blank after trimming; so do these."""
    gauge = await tenant.register(**GAUGE, last_verified_on="2026-01-15")
    for action in ACTIONS:
        found = problem(await _act(tenant.api, gauge["id"], action, {"reason": "   "}), 400)
        assert fields_of(found) == ["reason"], action
    assert await _get(tenant.api, gauge["id"]) == gauge
    assert await _event_count(pool, gauge["id"]) == 1


async def test_unseal_on_the_last_valid_day_is_back_in_service(tenant: Tenant, clock: FixedClock) -> None:
    gauge = await tenant.register(**GAUGE, last_verified_on="2026-01-15", lifecycle="sealed")
    clock.set(dt.datetime(2026, 7, 14, 4, 0, tzinfo=dt.UTC))
    unsealed = (await _act(tenant.api, gauge["id"], "unseal")).json()
    assert (unsealed["lifecycle"], unsealed["status"], unsealed["days_until_due"]) == ("in_service", "due_soon", 0)
    # The day after, sealed again and unsealed: pending.
    assert (await _act(tenant.api, gauge["id"], "seal")).status_code == 200
    clock.set(dt.datetime(2026, 7, 15, 4, 0, tzinfo=dt.UTC))
    assert (await _act(tenant.api, gauge["id"], "unseal")).json()["lifecycle"] == "pending_verification"


async def test_unseal_backdated_within_validity_is_in_service(tenant: Tenant, clock: FixedClock) -> None:
    """The rule reads effective_on, not the day it is recorded: back in service on 2026-07-10, and now overdue."""
    gauge = await tenant.register(**GAUGE, last_verified_on="2026-01-15", lifecycle="sealed")
    clock.set(dt.datetime(2026, 7, 20, 4, 0, tzinfo=dt.UTC))
    unsealed = (await _act(tenant.api, gauge["id"], "unseal", {"effective_on": "2026-07-10"})).json()
    assert (unsealed["lifecycle"], unsealed["status"], unsealed["required_action"]) == (
        "in_service",
        "overdue",
        "verify",
    )


async def test_unseal_never_verified_is_pending(tenant: Tenant) -> None:
    gauge = await tenant.register(**GAUGE, lifecycle="sealed")
    unsealed = (await _act(tenant.api, gauge["id"], "unseal")).json()
    assert (unsealed["lifecycle"], unsealed["status"], unsealed["required_action"]) == (
        "pending_verification",
        "pending_verification",
        "verify",
    )


async def test_unseal_scrap_on_failure_never_expires(tenant: Tenant) -> None:
    thermometer = await tenant.register(
        **THERMOMETER, name="玻璃体温计", last_verified_on="2019-03-01", lifecycle="sealed"
    )
    unsealed = (await _act(tenant.api, thermometer["id"], "unseal")).json()
    assert (unsealed["lifecycle"], unsealed["status"], unsealed["valid_until"]) == ("in_service", "valid", None)


async def test_seal_a_pending_instrument_then_unseal_it_stays_pending(tenant: Tenant) -> None:
    gauge = await tenant.register(**GAUGE, lifecycle="pending_verification")
    assert (await _act(tenant.api, gauge["id"], "seal")).json()["lifecycle"] == "sealed"
    assert (await _act(tenant.api, gauge["id"], "unseal")).json()["lifecycle"] == "pending_verification"


async def test_scrapped_is_final(tenant: Tenant) -> None:
    gauge = await tenant.register(**GAUGE, last_verified_on="2026-01-15")
    scrapped = (await _act(tenant.api, gauge["id"], "scrap", {"reason": "损坏"})).json()
    assert (scrapped["lifecycle"], scrapped["status"], scrapped["required_action"]) == ("scrapped", "scrapped", "none")
    for action in ACTIONS:
        assert problem(await _act(tenant.api, gauge["id"], action), 409)["allowed"] == []


# --- replace ------------------------------------------------------------------------------------------


async def test_replace_a_limited_life_meter(tenant: Tenant, pool: asyncpg.Pool) -> None:
    """The usual end of a limited-life meter: the successor is registered and both are linked."""
    old = await tenant.register(**WATER, name="冷水水表 DN20", last_verified_on="2020-06-16")
    assert old["required_action"] == "replace"
    count = await _instrument_count(pool, tenant)
    body = {
        "replacement": WATER | {"name": "冷水水表 DN20", "serial_no": "W-NEW-1", "last_verified_on": "2026-06-01"},
        "effective_on": "2026-06-14",
        "reason": " 到期轮换 ",
    }
    response = await tenant.api.post(_url(old["id"], "replace"), json=body)
    assert response.status_code == 201, response.text
    replaced, replacement = response.json()["instrument"], response.json()["replacement"]
    assert (replaced["id"], replaced["lifecycle"], replaced["status"]) == (old["id"], "replaced", "replaced")
    assert replaced["replaced_by"] == replacement["id"]
    assert replaced["required_action"] == "none"
    assert replacement["replaces"] == old["id"]
    assert replacement["replaced_by"] is None
    assert replacement["enterprise_id"] == old["enterprise_id"] == tenant.id
    assert {k: replacement[k] for k in ("serial_no", "lifecycle", "last_verified_on", "valid_until", "status")} == {
        "serial_no": "W-NEW-1",
        "lifecycle": "in_service",
        "last_verified_on": "2026-06-01",
        "valid_until": "2032-05-31",
        "status": "valid",
    }
    assert await _instrument_count(pool, tenant) == count + 1
    assert await _get(tenant.api, old["id"]) | {"as_of": replaced["as_of"]} == replaced
    assert (await _get(tenant.api, replacement["id"]))["replaces"] == old["id"]

    [event, registered] = await _history(tenant.api, old["id"])
    assert registered["kind"] == "registered"
    assert {
        k: event[k]
        for k in ("kind", "from_lifecycle", "to_lifecycle", "related_instrument_id", "effective_on", "reason")
    } == {
        "kind": "replaced",
        "from_lifecycle": "in_service",
        "to_lifecycle": "replaced",
        "related_instrument_id": replacement["id"],
        "effective_on": "2026-06-14",
        "reason": "到期轮换",
    }
    [new_event] = await _history(tenant.api, replacement["id"])
    assert {k: new_event[k] for k in ("kind", "to_lifecycle", "related_instrument_id", "actor_role")} == {
        "kind": "registered",
        "to_lifecycle": "in_service",
        "related_instrument_id": old["id"],
        "actor_role": "enterprise",
    }


async def test_a_pending_replacement_is_allowed(tenant: Tenant) -> None:
    old = await tenant.register(**GAUGE, last_verified_on="2026-01-15", lifecycle="failed")
    response = await tenant.api.post(
        _url(old["id"], "replace"),
        json={"replacement": _replacement(last_verified_on=None, lifecycle="pending_verification")},
    )
    assert response.status_code == 201, response.text
    assert response.json()["replacement"]["lifecycle"] == "pending_verification"
    assert response.json()["instrument"]["lifecycle"] == "replaced"


async def _refused_replacement(
    tenant: Tenant, pool: asyncpg.Pool, old: dict[str, Any], body: dict[str, Any], status: int
) -> dict[str, Any]:
    """The replacement is refused with ``status`` and nothing is written."""
    count = await _instrument_count(pool, tenant)
    events = await _event_count(pool, old["id"])
    found = problem(await tenant.api.post(_url(old["id"], "replace"), json=body), status)
    assert await _instrument_count(pool, tenant) == count
    assert await _event_count(pool, old["id"]) == events
    assert await _get(tenant.api, old["id"]) == old
    return found


async def test_a_once_verified_replacement_needs_its_initial_verification(tenant: Tenant, pool: asyncpg.Pool) -> None:
    """domain.md §1.5: the replacement meter must itself carry a valid first verification."""
    old = await tenant.register(**WATER, name="冷水水表 DN20", last_verified_on="2020-06-16")
    for replacement in (
        WATER | {"name": "冷水水表 DN20", "serial_no": "W-NEW-2"},
        THERMOMETER | {"name": "玻璃体温计", "serial_no": "T-NEW-2"},
    ):
        found = await _refused_replacement(tenant, pool, old, {"replacement": replacement}, 422)
        assert fields_of(found) == ["replacement.last_verified_on"]
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM instruments WHERE serial_no IN ('W-NEW-2', 'T-NEW-2')") == 0
        assert await conn.fetchval("SELECT count(*) FROM instruments WHERE replaces = $1", uuid.UUID(old["id"])) == 0


@pytest.mark.parametrize(
    ("case", "fields", "status", "field"),
    [
        ("blank name after trimming", {"name": "   "}, 400, "replacement.name"),
        ("empty name", {"name": ""}, 400, "replacement.name"),
        ("blank serial", {"serial_no": " "}, 400, "replacement.serial_no"),
        ("cycle above the legal maximum", {"cycle_months": 12}, 422, "replacement.cycle_months"),
        ("unknown catalogue item", {"catalog_code": "no_such_item"}, 422, "replacement.catalog_code"),
        ("verified in the future", {"last_verified_on": "2026-06-16"}, 422, "replacement.last_verified_on"),
        ("a replacement cannot be replaced already", {"lifecycle": "replaced"}, 422, "replacement.lifecycle"),
        ("a replacement is not sealed", {"lifecycle": "sealed"}, 422, "replacement.lifecycle"),
        ("a replacement is not scrapped", {"lifecycle": "scrapped"}, 422, "replacement.lifecycle"),
        ("a replacement is not failed", {"lifecycle": "failed"}, 422, "replacement.lifecycle"),
        ("unknown field", {"colour": "red"}, 400, "replacement.colour"),
    ],
)
async def test_registration_errors_inside_the_replacement_name_replacement_fields(
    tenant: Tenant, pool: asyncpg.Pool, case: str, fields: dict[str, Any], status: int, field: str
) -> None:
    old = await tenant.register(**GAUGE, last_verified_on="2026-01-15")
    found = await _refused_replacement(tenant, pool, old, {"replacement": _replacement(**fields)}, status)
    assert fields_of(found) == [field], case


async def test_a_duplicate_serial_in_the_replacement_is_409(tenant: Tenant, pool: asyncpg.Pool) -> None:
    taken = await tenant.register(**GAUGE, serial_no="DUP-1", model="Y-100", manufacturer="红旗仪表")
    old = await tenant.register(**GAUGE, last_verified_on="2026-01-15")
    body = {"replacement": _replacement(serial_no="DUP-1", model="Y-100", manufacturer="红旗仪表")}
    found = await _refused_replacement(tenant, pool, old, body, 409)
    assert found["type"] == "urn:metreg:problem:duplicate"
    assert fields_of(found) == ["replacement.serial_no"]
    assert (await _get(tenant.api, taken["id"]))["replaces"] is None


@pytest.mark.parametrize(
    ("case", "body", "status", "field"),
    [
        ("no replacement", {"reason": "到期"}, 400, "replacement"),
        ("effective in the future", {"replacement": "GOOD", "effective_on": "2026-06-16"}, 422, "effective_on"),
        ("empty reason", {"replacement": "GOOD", "reason": ""}, 400, "reason"),
    ],
)
async def test_bad_replace_bodies(
    tenant: Tenant, pool: asyncpg.Pool, case: str, body: dict[str, Any], status: int, field: str
) -> None:
    old = await tenant.register(**GAUGE, last_verified_on="2026-01-15")
    if body.get("replacement") == "GOOD":
        body = body | {"replacement": _replacement()}
    found = await _refused_replacement(tenant, pool, old, body, status)
    assert fields_of(found) == [field], case


async def test_replace_with_no_body_is_400(tenant: Tenant) -> None:
    old = await tenant.register(**GAUGE, last_verified_on="2026-01-15")
    problem(await tenant.api.post(_url(old["id"], "replace")), 400)
    assert (await _get(tenant.api, old["id"]))["lifecycle"] == "in_service"


async def test_an_illegal_replace_is_refused_before_the_replacement_is_registered(
    tenant: Tenant, pool: asyncpg.Pool
) -> None:
    old = await tenant.register(**GAUGE, last_verified_on="2026-01-15", lifecycle="scrapped")
    found = await _refused_replacement(tenant, pool, old, {"replacement": _replacement(serial_no="NEVER-1")}, 409)
    assert found["allowed"] == []


async def test_concurrent_actions_on_one_instrument_are_serialised(tenant: Tenant, pool: asyncpg.Pool) -> None:
    """The row lock: two seals at once give one seal and one 409; two replaces give one replacement."""
    gauge = await tenant.register(**GAUGE, last_verified_on="2026-01-15")
    first, second = await asyncio.gather(_act(tenant.api, gauge["id"], "seal"), _act(tenant.api, gauge["id"], "seal"))
    assert sorted([first.status_code, second.status_code]) == [200, 409]
    refused = first if first.status_code == 409 else second
    assert problem(refused, 409)["allowed"] == ["unseal", "scrap", "replace"]
    assert [e["kind"] for e in await _history(tenant.api, gauge["id"])] == ["sealed", "registered"]

    count = await _instrument_count(pool, tenant)
    first, second = await asyncio.gather(
        _act(tenant.api, gauge["id"], "replace"), _act(tenant.api, gauge["id"], "replace")
    )
    assert sorted([first.status_code, second.status_code]) == [201, 409]
    assert await _instrument_count(pool, tenant) == count + 1
    winner = first if first.status_code == 201 else second
    assert (await _get(tenant.api, gauge["id"]))["replaced_by"] == winner.json()["replacement"]["id"]


# --- who may act --------------------------------------------------------------------------------------


async def _others(
    tenant: Tenant,
    make_tenant: MakeTenant,
    make_lab: MakeLab,
    app_client: httpx.AsyncClient,
    pool: asyncpg.Pool,
    anonymous: Api,
    instrument_id: str,
) -> dict[str, tuple[Api, int]]:
    """Every caller who may not change ``instrument_id``, with the status they get."""
    stranger = await make_tenant()
    lab_with_request: LabAccount = await make_lab()
    await accepted_request(tenant, lab_with_request, instrument_id)
    lab_without: LabAccount = await make_lab()
    return {
        "another enterprise": (stranger.api, 404),
        "regulator of the region": (Api(app_client, await mint(pool, Role.REGULATOR, region_code="31")), 403),
        "regulator of another region": (Api(app_client, await mint(pool, Role.REGULATOR, region_code="44")), 404),
        "lab without a request": (lab_without.api, 404),
        "lab with a request": (lab_with_request.api, 403),
        "no key": (anonymous, 401),
    }


async def test_only_the_enterprise_and_admin_may_act(
    tenant: Tenant,
    make_tenant: MakeTenant,
    make_lab: MakeLab,
    app_client: httpx.AsyncClient,
    pool: asyncpg.Pool,
    anonymous: Api,
) -> None:
    """Access comes before the table: the same answer whether the action would be legal or not."""
    gauge = await tenant.register(**GAUGE, last_verified_on="2026-01-15")
    others = await _others(tenant, make_tenant, make_lab, app_client, pool, anonymous, gauge["id"])
    count = await _instrument_count(pool, tenant)
    for lifecycle in ("in_service", "sealed"):
        if lifecycle == "sealed":
            assert (await _act(tenant.api, gauge["id"], "seal")).status_code == 200
        current = await _get(tenant.api, gauge["id"])
        events = await _event_count(pool, gauge["id"])
        for who, (api, status) in others.items():
            for action in ACTIONS:
                response = await _act(api, gauge["id"], action)
                assert response.status_code == status, (who, action, lifecycle, response.text)
                problem(response, status)
        assert await _get(tenant.api, gauge["id"]) == current
        assert await _event_count(pool, gauge["id"]) == events
    assert await _instrument_count(pool, tenant) == count


async def test_the_enterprise_and_admin_may_act(tenant: Tenant, admin: Api, pool: asyncpg.Pool) -> None:
    enterprise_key = await _key_id(pool, "enterprise_id", tenant.id)
    for api, role in ((tenant.api, "enterprise"), (admin, "admin")):
        gauge = await tenant.register(**GAUGE, last_verified_on="2026-01-15")
        assert (await _act(api, gauge["id"], "seal")).json()["lifecycle"] == "sealed"
        assert (await _act(api, gauge["id"], "unseal")).json()["lifecycle"] == "in_service"
        response = await _act(api, gauge["id"], "replace")
        assert response.status_code == 201, response.text
        replacement = response.json()["replacement"]
        assert replacement["enterprise_id"] == tenant.id
        assert (await _act(api, replacement["id"], "scrap")).json()["lifecycle"] == "scrapped"
        events = await _history(tenant.api, gauge["id"])
        assert [e["kind"] for e in events] == ["replaced", "unsealed", "sealed", "registered"]
        assert {e["actor_role"] for e in events[:3]} == {role}
        assert events[3]["actor_role"] == "enterprise"
        assert events[3]["actor_key_id"] == enterprise_key
        assert (events[0]["actor_key_id"] == enterprise_key) is (role == "enterprise")
        [scrapped, registered] = await _history(tenant.api, replacement["id"])
        assert (scrapped["kind"], scrapped["actor_role"], registered["actor_role"]) == ("scrapped", role, role)


async def test_unknown_instrument_is_404_and_a_bad_id_400(tenant: Tenant) -> None:
    missing = str(uuid.uuid4())
    for action in ACTIONS:
        problem(await _act(tenant.api, missing, action), 404)
    problem(await tenant.api.get(f"/v1/instruments/{missing}/history"), 404)
    problem(await tenant.api.post("/v1/instruments/not-a-uuid/seal"), 400)
    problem(await tenant.api.get("/v1/instruments/not-a-uuid/history"), 400)


# --- history ------------------------------------------------------------------------------------------


EVENT_FIELDS = {
    "seq",
    "instrument_id",
    "kind",
    "effective_on",
    "from_lifecycle",
    "to_lifecycle",
    "certificate_id",
    "related_instrument_id",
    "reason",
    "detail",
    "actor_key_id",
    "actor_role",
    "occurred_at",
}


async def test_history_tells_the_whole_story_newest_first(
    tenant: Tenant, lab: LabAccount, pool: asyncpg.Pool, clock: FixedClock
) -> None:
    """Registration, change, result, lifecycle steps and revocation, each with actor and time."""
    enterprise_key = await _key_id(pool, "enterprise_id", tenant.id)
    lab_key = await _key_id(pool, "lab_id", lab.id)
    gauge = await tenant.register(**GAUGE, last_verified_on="2026-01-15")

    clock.set(NOW + dt.timedelta(minutes=1))
    patched = await tenant.api.patch(
        f"/v1/instruments/{gauge['id']}",
        json={"version": gauge["version"], "location": "锅炉房", "department": "动力科", "name": gauge["name"]},
    )
    assert patched.status_code == 200, patched.text

    clock.set(NOW + dt.timedelta(minutes=2))
    await accepted_request(tenant, lab, gauge["id"])
    recorded = await lab.record(gauge["id"])
    assert recorded.status_code == 201, recorded.text
    certificate = recorded.json()["certificate"]

    clock.set(NOW + dt.timedelta(minutes=3))
    assert (
        await _act(tenant.api, gauge["id"], "seal", {"reason": "停产", "effective_on": "2026-06-14"})
    ).status_code == 200
    clock.set(NOW + dt.timedelta(minutes=4))
    assert (await _act(tenant.api, gauge["id"], "unseal")).status_code == 200
    clock.set(NOW + dt.timedelta(minutes=5))
    revoked = await lab.api.post(
        f"/v1/certificates/{certificate['id']}/revoke", json={"reason": "标准器溯源失效", "effective_on": "2026-06-12"}
    )
    assert revoked.status_code == 200, revoked.text
    clock.set(NOW + dt.timedelta(minutes=6))
    assert (await _act(tenant.api, gauge["id"], "scrap", {"reason": "无法修复"})).status_code == 200

    events = await _history(tenant.api, gauge["id"])
    assert all(set(e) == EVENT_FIELDS for e in events)
    assert [e["kind"] for e in events] == [
        "scrapped",
        "certificate_revoked",
        "unsealed",
        "sealed",
        "result_recorded",
        "updated",
        "registered",
    ]
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs, reverse=True)
    assert len(set(seqs)) == len(seqs)
    assert {e["instrument_id"] for e in events} == {gauge["id"]}
    assert [e["occurred_at"] for e in events] == [
        (NOW + dt.timedelta(minutes=m)).isoformat().replace("+00:00", "Z") for m in (6, 5, 4, 3, 2, 1, 0)
    ]
    scrapped, revocation, unsealed, sealed, result, updated, registered = events

    assert {k: registered[k] for k in ("to_lifecycle", "actor_role", "actor_key_id", "certificate_id")} == {
        "to_lifecycle": "in_service",
        "actor_role": "enterprise",
        "actor_key_id": enterprise_key,
        "certificate_id": None,
    }
    assert updated["detail"]["fields"] == ["department", "location"]
    assert (updated["actor_role"], updated["actor_key_id"]) == ("enterprise", enterprise_key)
    assert {k: result[k] for k in ("certificate_id", "effective_on", "actor_role", "actor_key_id")} == {
        "certificate_id": certificate["id"],
        "effective_on": "2026-06-10",
        "actor_role": "lab",
        "actor_key_id": lab_key,
    }
    assert {k: sealed[k] for k in ("from_lifecycle", "to_lifecycle", "reason", "effective_on")} == {
        "from_lifecycle": "in_service",
        "to_lifecycle": "sealed",
        "reason": "停产",
        "effective_on": "2026-06-14",
    }
    assert (unsealed["from_lifecycle"], unsealed["to_lifecycle"], unsealed["effective_on"]) == (
        "sealed",
        "in_service",
        "2026-06-15",
    )
    assert {k: revocation[k] for k in ("certificate_id", "effective_on", "reason", "actor_role", "to_lifecycle")} == {
        "certificate_id": certificate["id"],
        "effective_on": "2026-06-12",
        "reason": "标准器溯源失效",
        "actor_role": "lab",
        "to_lifecycle": "failed",
    }
    assert (scrapped["from_lifecycle"], scrapped["to_lifecycle"], scrapped["reason"]) == (
        "failed",
        "scrapped",
        "无法修复",
    )


async def test_history_written_by_an_admin_names_the_admin(tenant: Tenant, admin: Api) -> None:
    response = await admin.post(tenant.instruments_url, json=GAUGE | {"name": "压力表", "serial_no": "ADM-1"})
    assert response.status_code == 201, response.text
    [event] = await _history(tenant.api, response.json()["id"])
    assert (event["kind"], event["actor_role"]) == ("registered", "admin")
    assert event["actor_key_id"] is not None


async def test_history_is_keyset_paged(tenant: Tenant) -> None:
    gauge = await tenant.register(**GAUGE, last_verified_on="2026-01-15")
    for _ in range(3):
        assert (await _act(tenant.api, gauge["id"], "seal")).status_code == 200
        assert (await _act(tenant.api, gauge["id"], "unseal")).status_code == 200
    everything = await _history(tenant.api, gauge["id"])
    assert len(everything) == 7
    url = f"/v1/instruments/{gauge['id']}/history"
    pages: list[list[dict[str, Any]]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 3} | ({"cursor": cursor} if cursor else {})
        page = (await tenant.api.get(url, params=params)).json()
        pages.append(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert [len(p) for p in pages] == [3, 3, 1]
    assert [e for p in pages for e in p] == everything
    exact = (await tenant.api.get(url, params={"limit": 7})).json()
    assert (len(exact["items"]), exact["next_cursor"]) == (7, None)
    for bad in ("garbage!", base64.urlsafe_b64encode(b'["a"]').decode(), base64.urlsafe_b64encode(b"{}").decode()):
        assert fields_of(problem(await tenant.api.get(url, params={"cursor": bad}), 400)) == ["cursor"], bad
    problem(await tenant.api.get(url, params={"limit": 0}), 400)
    problem(await tenant.api.get(url, params={"limit": 501}), 400)


async def test_history_visibility(
    tenant: Tenant,
    admin: Api,
    make_tenant: MakeTenant,
    make_lab: MakeLab,
    app_client: httpx.AsyncClient,
    pool: asyncpg.Pool,
    anonymous: Api,
) -> None:
    """Whoever may read the instrument may read its history; others get 404, no key 401."""
    gauge = await tenant.register(**GAUGE, last_verified_on="2026-01-15")
    others = await _others(tenant, make_tenant, make_lab, app_client, pool, anonymous, gauge["id"])
    readers = {"owner": tenant.api, "admin": admin} | {
        who: api for who, (api, status) in others.items() if status == 403
    }
    assert set(readers) == {"owner", "admin", "regulator of the region", "lab with a request"}
    expected = await _history(tenant.api, gauge["id"])
    for who, api in readers.items():
        assert await _history(api, gauge["id"]) == expected, who
    for who, (api, status) in others.items():
        if status == 403:
            continue
        response = await api.get(f"/v1/instruments/{gauge['id']}/history")
        assert response.status_code == status, (who, response.text)
        problem(response, status)
