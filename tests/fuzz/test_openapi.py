"""Every operation of the OpenAPI document, fuzzed by schemathesis with valid keys.

The app runs on a database of the fuzzer's own, at the tests' fixed instant, through
schemathesis's ASGI transport (which runs the app's lifespan on an event loop of its own). A
module fixture first builds a world through the API: an enterprise whose instruments are overdue,
due, verified, corrected, failed, calibrated, revoked, sealed, replaced and scrapped; a lab;
verification requests accepted, submitted, rejected and cancelled; notices of several kinds with
failed webhook and e-mail deliveries; webhooks on a local receiver whose answers carry hostile
``Retry-After`` headers; calendar feeds to read and to revoke. Well-formed ids and dates in
generated paths and bodies are mostly swapped for real ones, so the fuzzer reaches handler logic
rather than 404s, and every case is sent with an admin, enterprise (the world's owner), lab or
regulator key, mostly one the operation serves.

Each case, positive or negative, must answer with no 5xx, a status its operation documents, and
a body of the documented media type and schema. Runs are bounded and deterministic: the coverage
phase, then ``METREG_FUZZ_EXAMPLES`` derandomized examples per operation (15 by default, 1000 in
``make fuzz``); ``METREG_FUZZ_SEED`` explores other inputs instead.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from litestar import Litestar
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from jobs.plan import plan
from jobs.worker import run_burst
from service.app import create_app
from service.auth import Role
from service.clock import FixedClock
from service.db import init_connection
from service.keys.queries import create_key
from service.keys.schemas import ApiKeyCreate
from service.settings import Settings
from tests.conftest import (
    ALL_CODES,
    BASE_DSN,
    GAUGE,
    NOW,
    REDIS_URL,
    Api,
    fresh_database,
    new_credit_code,
    running,
    worker_settings,
)
from tests.conftest import app_settings as base_settings
from tests.receivers import Received, WebhookReceiver

# Read at import: the conftest clears METREG_* variables around every test.
EXAMPLES = int(os.environ.get("METREG_FUZZ_EXAMPLES", "15"))
SEED = os.environ.get("METREG_FUZZ_SEED")
ROLES = ("admin", "owner", "lab", "regulator")
# Whom an operation mostly serves (two cases in three use one of their keys; the rest any key), so
# that cases get past the role checks often enough to reach the rules behind them.
CALLERS = {
    "RegisterInstrument": ("owner",),
    "UpdateInstrument": ("owner",),
    "UpdateEnterprise": ("owner",),
    "SealInstrument": ("owner",),
    "UnsealInstrument": ("owner",),
    "ScrapInstrument": ("owner",),
    "ReplaceInstrument": ("owner",),
    "CreateVerificationRequest": ("owner",),
    "CancelVerificationRequest": ("owner",),
    "AcceptVerificationRequest": ("lab",),
    "RejectVerificationRequest": ("lab",),
    "RecordResult": ("lab", "regulator"),
    "RevokeCertificate": ("lab", "regulator"),
    "CreateWebhook": ("owner", "regulator"),
    "CreateCalendarFeed": ("owner",),
    "RevokeCalendarFeed": ("owner",),
}
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@dataclass
class World:
    keys: dict[str, str] = field(default_factory=dict)
    """Role -> a key of that role."""
    ids: dict[str, list[Any]] = field(default_factory=dict)
    """Path parameter or body field name (or ``OperationId.name``, for that operation only) -> real
    values for it."""

    def real(self, case: schemathesis.Case[Any], name: str) -> list[Any]:
        operation_id = case.operation.definition.raw.get("operationId")
        return self.ids.get(f"{operation_id}.{name}") or self.ids.get(name) or []


def app_settings(database_url: str) -> Settings:
    # Rate limits off (the conftest default): the clock stands still, so buckets would not refill.
    return base_settings(database_url, allow_private_webhooks=True, send_timeout_s=1.0, log_level="ERROR")


# Retry-After values a careless parser chokes on (a superscript digit, more seconds than a
# timedelta holds, more digits than int() reads), then ordinary ones.
RETRY_AFTER = ["²", "9" * 20, "9" * 5000, "-1", "1.5", "Wed, 21 Oct 2015 07:28:00 GMT", "120"]


def receiver_answer(number: int, request: Received) -> tuple[int, dict[str, str]]:
    """Notices fail for good (410), so the world holds failed deliveries; pings succeed or not in
    turn. Every answer carries the next of the Retry-After values."""
    headers = {"Retry-After": RETRY_AFTER[number % len(RETRY_AFTER)]}
    if request.headers.get("metreg-event") == "ping":
        return (200 if number % 2 else 503), headers
    return 410, headers


async def _key(pool: asyncpg.Pool, role: Role, **scope: Any) -> tuple[str, str]:
    """(key, its id)."""
    async with pool.acquire() as conn:
        created = await create_key(conn, ApiKeyCreate(role=role, name=f"fuzz {role}", **scope), NOW)
    return created.key, str(created.id)


class Builder:
    """Writes the world through the API, failing loudly when a step is refused."""

    def __init__(self, client: httpx.AsyncClient, world: World) -> None:
        self.client = client
        self.world = world

    async def call(self, role: str, method: str, url: str, status: int, body: Any = None) -> Any:
        response = await Api(self.client, self.world.keys[role]).request(method, url, json=body)
        assert response.status_code == status, f"{method} {url}: {response.text}"
        return response.json() if response.content else None

    async def gauge(self, enterprise_id: str, serial_no: str, **fields: Any) -> str:
        body = {"name": "一般压力表", "serial_no": serial_no} | GAUGE | fields
        created = await self.call("owner", "POST", f"/v1/enterprises/{enterprise_id}/instruments", 201, body)
        return str(created["id"])

    async def result(self, instrument_id: str, number: str, role: str = "lab", **fields: Any) -> str:
        body = {
            "kind": "verification_certificate",
            "number": number,
            "performed_on": "2026-06-10",
            "issued_on": "2026-06-12",
        } | fields
        recorded = await self.call(role, "POST", f"/v1/instruments/{instrument_id}/certificates", 201, body)
        self.world.ids["number"].append(number)
        return str(recorded["certificate"]["id"])


async def build_world(client: httpx.AsyncClient, pool: asyncpg.Pool, database_url: str, hook_url: str) -> World:
    """One enterprise's register in most of the states the API can show, and its notices and deliveries."""
    world = World()
    ids = world.ids = {name: [] for name in ("instrument_id", "certificate_id", "number", "webhook_id")}
    build = Builder(client, world)
    world.keys["admin"], _ = await _key(pool, Role.ADMIN)
    enterprise = await build.call(
        "admin",
        "POST",
        "/v1/enterprises",
        201,
        {"name": "模糊测试企业", "credit_code": new_credit_code(), "region_code": "310115"},
    )
    e = enterprise["id"]
    world.keys["owner"], _ = await _key(pool, Role.ENTERPRISE, enterprise_id=uuid.UUID(e))
    world.keys["regulator"], _ = await _key(pool, Role.REGULATOR, region_code="3101")
    # E-mail notices too (no SMTP server is configured: they fail and say so).
    await build.call("owner", "PATCH", f"/v1/enterprises/{e}", 200, {"notify_emails": ["ops@example.com"]})
    lab_body = {"name": "模糊测试计量所", "accreditation_no": "(2026)国量标沪证字第001号", "region_code": "310115"}
    lab = await build.call("admin", "POST", "/v1/labs", 201, lab_body | {"scope": ALL_CODES})
    world.keys["lab"], _ = await _key(pool, Role.LAB, lab_id=uuid.UUID(lab["id"]))
    # Keys the fuzzer may revoke: never one it calls with.
    spare_keys = [(await _key(pool, Role.ENTERPRISE, enterprise_id=uuid.UUID(e)))[1] for _ in range(3)]

    names = ["overdue", "escalated", "due_soon", "verified", "corrected", "failed", "revoked"]
    names += ["awaiting", "awaiting_too", "waiting", "rejected", "cancelled", "sealed", "replaced", "scrapped", "free"]
    lvo = {"overdue": "2025-12-01", "escalated": "2025-10-01", "due_soon": "2026-01-01"}
    i = {
        name: await build.gauge(e, f"FZ-{name}", **({"last_verified_on": lvo[name]} if name in lvo else {}))
        for name in names
    }
    i["calibrated"] = await build.gauge(e, "FZ-cal", legal_use="none", cycle_months=12)
    ids["instrument_id"] += i.values()

    def request_of(*instruments: str) -> dict[str, Any]:
        return {"lab_id": lab["id"], "instrument_ids": [i[n] for n in instruments]}

    worked = ("verified", "corrected", "failed", "calibrated", "revoked")
    accepted = await build.call("owner", "POST", "/v1/verification-requests", 201, request_of(*worked))
    await build.call("lab", "POST", f"/v1/verification-requests/{accepted['id']}/accept", 200)
    # Accepted, its instruments still awaiting results: the lab may record them.
    open_request = await build.call(
        "owner", "POST", "/v1/verification-requests", 201, request_of("awaiting", "awaiting_too")
    )
    await build.call("lab", "POST", f"/v1/verification-requests/{open_request['id']}/accept", 200)
    submitted = await build.call("owner", "POST", "/v1/verification-requests", 201, request_of("waiting"))
    rejected = await build.call("owner", "POST", "/v1/verification-requests", 201, request_of("rejected"))
    await build.call("lab", "POST", f"/v1/verification-requests/{rejected['id']}/reject", 200, {"reason": "停产"})
    cancelled = await build.call("owner", "POST", "/v1/verification-requests", 201, request_of("cancelled"))
    await build.call("owner", "POST", f"/v1/verification-requests/{cancelled['id']}/cancel", 200, {})
    ids["request_id"] = [r["id"] for r in (accepted, open_request, submitted, rejected, cancelled)]

    ids["certificate_id"] += [
        await build.result(i["verified"], "沪计检/2026/FZ-001"),
        await build.result(i["corrected"], "FZ-002"),
        await build.result(
            i["failed"], "FZ-003", kind="result_notice", failed_items=["示值误差"], signatories={"verifier": "张三"}
        ),
        await build.result(
            i["calibrated"],
            "FZ-004",
            kind="calibration_certificate",
            as_found=[{"point": "1.0 MPa", "reference": "1.000", "measured": "1.012", "mpe": "±0.016", "unit": "MPa"}],
            as_left=[{"point": "1.0 MPa", "error": "0.002", "mpe": "±0.016", "uncertainty": "0.003"}],
        ),
        revoked := await build.result(i["revoked"], "FZ-005"),
        await build.result(i["verified"], "FZ-006", role="regulator", kind="inspection_record", outcome="pass"),
    ]
    ids["certificate_id"].append(
        await build.result(
            i["corrected"],
            "FZ-007",
            supersedes=ids["certificate_id"][1],
            correction_reason="出厂编号抄错",
        )
    )
    await build.call("regulator", "POST", f"/v1/certificates/{revoked}/revoke", 200, {"reason": "抽查不合格"})
    await build.call("owner", "POST", f"/v1/instruments/{i['sealed']}/seal", 200, {"reason": "停用"})
    await build.call("owner", "POST", f"/v1/instruments/{i['scrapped']}/scrap", 200, {})
    replaced = await build.call(
        "owner",
        "POST",
        f"/v1/instruments/{i['replaced']}/replace",
        201,
        {"replacement": {"name": "一般压力表", "serial_no": "FZ-successor"} | GAUGE},
    )
    ids["instrument_id"].append(replaced["replacement"]["id"])

    # Each at a URL of its own (an owner has one webhook per URL); the receiver answers them all.
    for n, role in enumerate(("owner", "regulator", "owner", "regulator")):
        webhook = await build.call(role, "POST", "/v1/webhooks", 201, {"url": f"{hook_url}?webhook={n}"})
        ids["webhook_id"].append(webhook["webhook"]["id"])
    # Deleting the webhooks the other operations use would leave them nothing but 404s.
    ids["DeleteWebhook.webhook_id"] = ids["webhook_id"][2:]
    ids["webhook_id"] = ids["webhook_id"][:2]
    # Feeds to read (by the file name in their URL) and others to revoke.
    feeds = [
        await build.call("owner", "POST", f"/v1/enterprises/{e}/calendar-feeds", 201, {"name": f"日历 {n}"})
        for n in range(4)
    ]
    ids["feed_file"] = [f["url"].rsplit("/", 1)[1] for f in feeds[:2]]
    ids["RevokeCalendarFeed.feed_id"] = [f["id"] for f in feeds[2:]]
    async with pool.acquire() as conn:
        assert (await plan(conn, NOW)).ran
    await run_burst(worker_settings(database_url), FixedClock(NOW))
    # In an order fixed by the world, not by its random ids, so a run picks the same rows every time.
    order = {instrument_id: n for n, instrument_id in enumerate(ids["instrument_id"])}
    listed = [await build.call(role, "GET", "/v1/notices?limit=500", 200) for role in ("owner", "regulator")]
    notices = sorted(
        (n for page in listed for n in page["items"]),
        key=lambda n: (order[n["instrument_id"]], n["kind"], n["audience"], n["step"]),
    )
    ids["notice_id"] = [n["id"] for n in notices]
    details = [await build.call("admin", "GET", f"/v1/notices/{n['id']}", 200) for n in notices]
    ids["delivery_id"] = [
        d["id"] for detail in details for d in sorted(detail["deliveries"], key=lambda d: (d["channel"], d["target"]))
    ]
    assert {n["kind"] for n in notices} >= {"overdue", "escalation", "result_recorded"}, notices
    assert ids["delivery_id"]

    ids |= {
        "enterprise_id": [e],
        "lab_id": [lab["id"]],
        "RevokeApiKey.key_id": spare_keys,
        "CheckCertificate.number": ids.pop("number"),
        "RecordResult.instrument_id": [i["awaiting"], i["awaiting_too"], i["verified"], i["calibrated"]],
        # Body fields: the world's rows, and dates the rules accept (generated ones are mostly
        # outside 1900-2999 or after today).
        "instrument_ids": [[i["free"]], [i["free"], i["waiting"]]],
        "supersedes": ids["certificate_id"][:2],
        "performed_on": ["2026-06-10", "2026-06-15", "2025-06-01"],
        "issued_on": ["2026-06-12", "2026-06-15"],
        "effective_on": ["2026-06-15", "2026-06-12"],
        "last_verified_on": ["2026-06-01", "2025-12-01"],
        "valid_until": ["2026-11-30", "2026-06-30"],
    }
    return world


@pytest.fixture(scope="module")
async def fuzz_database() -> AsyncIterator[str]:
    """A database of the fuzzer's own: what it writes (webhooks of any region, say) reaches no other test."""
    async with fresh_database("metreg_fuzz") as dsn:
        yield dsn


@pytest.fixture(scope="module")
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver(respond=receiver_answer).running() as running_receiver:
        yield running_receiver


@pytest.fixture(scope="module")
async def world(fuzz_database: str, receiver: WebhookReceiver) -> World:
    app = create_app(app_settings(fuzz_database), clock=FixedClock(NOW))
    async with (
        asyncpg.create_pool(fuzz_database, min_size=1, max_size=2, init=init_connection) as pool,
        running(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://metreg.test") as client,
    ):
        return await build_world(client, pool, fuzz_database, receiver.url)


@pytest.fixture
def fuzz_app(world: World, fuzz_database: str) -> Litestar:
    """The app under test: schemathesis starts its lifespan on the first call and ends it after the test."""
    return create_app(app_settings(fuzz_database), clock=FixedClock(NOW))


def _document() -> dict[str, Any]:
    """The OpenAPI document as served at /docs/openapi.json (building the app connects to nothing)."""
    app = create_app(Settings(database_url=BASE_DSN, redis_url=REDIS_URL, log_level="ERROR"))
    return app.openapi_schema.to_schema()


# Strings that look like something they are not (digits int() refuses, numbers out of range,
# invisible or reordering characters, NUL), drawn for one generated string in ten where they fit.
TRICKY = ["²", "¹²³", "½", "Ⅻ", "٣", "①", "0", "-0", "+1", "1e999", "0x1F", "9" * 30, " ", "\t", "\x00"]
TRICKY += ["\u200b", "\u202e"]  # zero-width space, right-to-left override
# An explicit configuration, so no schemathesis.toml or environment changes what runs.
schema = schemathesis.openapi.from_dict(
    _document(),
    config=schemathesis.Config.from_dict(
        {
            "dictionaries": {"tricky": {"values": TRICKY}},
            "generation": {"dictionaries": {"string": {"dictionary": "tricky", "probability": 0.1}}},
        }
        | ({"seed": int(SEED)} if SEED else {})
    ),
)


def _chooser(case: schemathesis.Case[Any]) -> random.Random:
    """Choices seeded by the case's content: the same case always gets the same key and ids."""
    return random.Random(repr((case.operation.label, case.path_parameters, case.query, case.body)))


def _with_real_ids(case: schemathesis.Case[Any], world: World, choose: random.Random) -> None:
    """Two in three well-formed ids (and dates) in the path or body become real ones; a malformed one
    stays as it is."""
    for values in (case.path_parameters, case.body):
        if not isinstance(values, dict):
            continue
        for name, generated in values.items():
            real = world.real(case, name)
            if real and _is_valid(generated, real[0]) and choose.random() < 2 / 3:
                values[name] = choose.choice(real)


def _is_valid(generated: Any, real: Any) -> bool:
    """Whether a generated value has the shape of the real one: a uuid, a date, a list of them, a string."""
    if isinstance(real, list):
        return isinstance(generated, list) and bool(generated) and all(_is_valid(g, real[0]) for g in generated)
    return isinstance(generated, str) and _shape(generated) == _shape(real)


def _shape(text: str) -> str:
    for shape, parse in (("uuid", uuid.UUID), ("date", dt.date.fromisoformat)):
        try:
            parse(text)
        except ValueError:
            continue
        return shape
    return "text"


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    derandomize=SEED is None,
    database=None,
    deadline=None,
    # One app per operation on purpose: schemathesis ends its lifespan after each.
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
def test_every_operation_answers_as_documented(case: schemathesis.Case[Any], world: World, fuzz_app: Litestar) -> None:
    choose = _chooser(case)
    _with_real_ids(case, world, choose)
    callers = CALLERS.get(case.operation.definition.raw.get("operationId", ""), ROLES)
    key = world.keys[choose.choice(callers if choose.random() < 2 / 3 else ROLES)]
    case.call_and_validate(app=fuzz_app, headers={"Authorization": f"Bearer {key}"}, checks=CHECKS)
