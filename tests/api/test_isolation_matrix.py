"""The isolation matrix: every operation, called by every kind of caller on tenant B's resources.

The operations come from the app's own route table (``guarded_handlers``), each with the access
policy its handler declares (``opt=access(...)``, ``service.policy``) and the statuses its OpenAPI
entry documents. One world of tenant B is built once per module: enterprise B (region 120101), an
instrument, lab L holding an accepted request for it and the certificate L issued, the notice that
result wrote, a webhook of B with a failed delivery, an API key of B, an import and a calendar feed
of B. Everything of B that a response could carry holds the marker ``SECRET-B-<token>`` (its
enterprise's name, address and contact too).

``violations`` calls one operation as one caller and says what is wrong with the answer:

- no key or a revoked key: 401;
- a caller the operation does not declare: 403 or 404, and never B's marker; a list without a
  tenant in its path may answer 2xx, still without the marker; a 404 for B's resource is the 404
  for a random id (same type, title, status, and detail but for the id): errors do not reveal
  existence;
- a declared caller: neither 401, 403 nor 404 (a write may meet 409 or 422), and where the sample
  says so the answer shows B's data; destructive operations get a fresh resource of B per declared
  caller so that the answer means something;
- every status is among the operation's documented responses; no 5xx; callers unrelated to B
  (other_enterprise, other_regulator, other_lab) never see the marker, whatever they may call.

A route needs one line in ``SAMPLES`` (its body, query, fresh resource); a route without one fails
here by name, and a route without an access declaration stops the app from starting.
"""

from __future__ import annotations

import dataclasses
import enum
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import asyncpg
import httpx
import pytest
from litestar import Litestar, get
from litestar.params import FromPath

from service.app import create_app, guarded_handlers
from service.auth import Role
from service.clock import FixedClock
from service.deps import Db, PrincipalDep
from service.errors import NotFoundError
from service.instruments.queries import select_instrument
from service.policy import Access, Actor, access
from service.problems import problem_responses
from service.settings import Settings
from tests.conftest import (
    ALL_CODES,
    GAUGE,
    NOW,
    Api,
    LabAccount,
    Tenant,
    app_settings,
    mint,
    new_credit_code,
    running,
)

REGION_B = "120101"  # Tianjin: no other test's enterprise lives there
REGULATOR_OF_B = "12"
OTHER_REGION = "46"  # Hainan
VERIFIED = "2026-06-01"  # valid until 2026-11-30: nothing of the world falls due while tests run

Ids = Mapping[str, str]


class Stranger(enum.StrEnum):
    """Callers without a working key."""

    NO_KEY = "no_key"
    REVOKED_KEY = "revoked_key"


Caller = Actor | Stranger
CALLERS: list[Caller] = [*Actor, *Stranger]
# Callers that have nothing to do with B: whatever they may call, they never see B's data.
OUTSIDERS = frozenset({Actor.OTHER_ENTERPRISE, Actor.OTHER_REGULATOR, Actor.OTHER_LAB})


# ---------------------------------------------------------------------------------------------
# The route table


@dataclasses.dataclass(frozen=True)
class Operation:
    operation_id: str
    method: str
    path: str  # as in the OpenAPI document: /v1/instruments/{instrument_id}
    params: tuple[str, ...]
    access: Access | None
    documented: frozenset[int]

    @property
    def is_list(self) -> bool:
        """A read without a resource in its path: it may answer anyone, with rows of their own."""
        return self.method == "GET" and not self.params

    def __str__(self) -> str:
        return f"{self.operation_id} ({self.method} {self.path})"


def operations(app: Litestar) -> list[Operation]:
    """Every guarded operation of ``app``, with its declared access and documented statuses."""
    documented = {
        op["operationId"]: frozenset(int(status) for status in op.get("responses", {}))
        for item in app.openapi_schema.to_schema()["paths"].values()
        for op in item.values()
        if isinstance(op, dict) and "operationId" in op
    }
    found = []
    for route, handler in guarded_handlers(app):
        operation_id = handler.operation_id if isinstance(handler.operation_id, str) else handler.handler_name
        policy = handler.opt.get("access")
        for method in sorted(handler.http_methods):
            found.append(
                Operation(
                    operation_id=operation_id,
                    method=method,
                    path=route.path_format,
                    params=tuple(route.path_parameters),
                    access=policy if isinstance(policy, Access) else None,
                    documented=documented.get(operation_id, frozenset()),
                )
            )
    return sorted(found, key=lambda op: op.operation_id)


# ---------------------------------------------------------------------------------------------
# The world of tenant B


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# Every webhook of the world: nothing listens there, so a ping (or a delivery by another test's
# worker) is refused at once.
HOOK_URL = f"http://127.0.0.1:{_closed_port()}/hooks"


@dataclasses.dataclass(frozen=True)
class World:
    client: httpx.AsyncClient
    marker: str
    keys: Mapping[Caller, str | None]
    ids: Ids  # B's resources by the name of the path parameter that takes them

    def api(self, caller: Caller) -> Api:
        return Api(self.client, self.keys[caller])

    def on(self, client: httpx.AsyncClient) -> World:
        """The same world through another app on the same database."""
        return dataclasses.replace(self, client=client)

    @property
    def owner(self) -> Tenant:
        return Tenant({"id": self.ids["enterprise_id"]}, self.api(Actor.OWNER))

    @property
    def lab(self) -> LabAccount:
        return LabAccount({"id": self.ids["lab_id"]}, self.api(Actor.LAB))

    # Fresh resources of B, for declared callers of destructive operations.

    async def fresh_instrument(self, *, sealed: bool = False) -> dict[str, str]:
        instrument = await self.owner.register(**GAUGE, last_verified_on=VERIFIED)
        if sealed:
            response = await self.owner.api.post(f"/v1/instruments/{instrument['id']}/seal")
            assert response.status_code == 200, response.text
        return {"instrument_id": instrument["id"]}

    async def fresh_request(self, *, accept: bool = False) -> dict[str, str]:
        ids = await self.fresh_instrument()
        body = {"lab_id": self.ids["lab_id"], "instrument_ids": [ids["instrument_id"]]}
        response = await self.owner.api.post("/v1/verification-requests", json=body)
        assert response.status_code == 201, response.text
        if accept:
            await self.lab.accept(response.json()["id"])
        return ids | {"request_id": response.json()["id"]}

    async def fresh_certificate(self) -> dict[str, str]:
        ids = await self.fresh_request(accept=True)
        response = await self.lab.record(ids["instrument_id"])
        assert response.status_code == 201, response.text
        return ids | {"certificate_id": response.json()["certificate"]["id"]}

    async def fresh_key(self) -> dict[str, str]:
        admin = Api(self.client, self.keys[Actor.ADMIN])
        body = {"role": "enterprise", "name": f"{self.marker}-fresh", "enterprise_id": self.ids["enterprise_id"]}
        response = await admin.post("/v1/api-keys", json=body)
        assert response.status_code == 201, response.text
        return {"key_id": response.json()["id"]}

    async def fresh_calendar_feed(self) -> dict[str, str]:
        response = await self.owner.api.post(
            f"/v1/enterprises/{self.ids['enterprise_id']}/calendar-feeds", json={"name": "x"}
        )
        assert response.status_code == 201, response.text
        return {"feed_id": response.json()["id"]}

    async def fresh_webhook(self) -> dict[str, str]:
        # A URL of its own: B may have one webhook per URL.
        response = await self.owner.api.post("/v1/webhooks", json={"url": f"{HOOK_URL}/{uuid.uuid4().hex[:8]}"})
        assert response.status_code == 201, response.text
        return {"webhook_id": response.json()["webhook"]["id"]}


async def build_world(client: httpx.AsyncClient, pool: asyncpg.Pool) -> World:
    marker = f"SECRET-B-{uuid.uuid4().hex[:8]}"
    admin = Api(client, await mint(pool, Role.ADMIN))

    async def created(api: Api, url: str, body: dict[str, Any]) -> dict[str, Any]:
        response = await api.post(url, json=body)
        assert response.status_code == 201, response.text
        return response.json()  # type: ignore[no-any-return]

    async def enterprise(name: str, region_code: str, **extra: str) -> str:
        body = {"name": name, "credit_code": new_credit_code(), "region_code": region_code} | extra
        return str((await created(admin, "/v1/enterprises", body))["id"])

    async def lab(name: str) -> str:
        body = {"name": name, "accreditation_no": f"{name}-accreditation", "region_code": REGION_B, "scope": ALL_CODES}
        return str((await created(admin, "/v1/labs", body))["id"])

    async def key(role: Role, **scope: Any) -> str:
        return await mint(pool, role, **{k: uuid.UUID(v) if k.endswith("_id") else v for k, v in scope.items()})

    b = await enterprise(
        f"{marker}-enterprise", REGION_B, address=f"{marker}-address", contact_name=f"{marker}-contact"
    )
    a = await enterprise("企业A", "310115")
    lab_l, lab_m = await lab(f"{marker}-lab"), await lab("其他实验室")
    keys: dict[Caller, str | None] = {
        Actor.ADMIN: admin.key,
        Actor.OWNER: await key(Role.ENTERPRISE, enterprise_id=b),
        Actor.OTHER_ENTERPRISE: await key(Role.ENTERPRISE, enterprise_id=a),
        Actor.REGULATOR: await key(Role.REGULATOR, region_code=REGULATOR_OF_B),
        Actor.OTHER_REGULATOR: await key(Role.REGULATOR, region_code=OTHER_REGION),
        Actor.LAB: await key(Role.LAB, lab_id=lab_l),
        Actor.OTHER_LAB: await key(Role.LAB, lab_id=lab_m),
        Stranger.NO_KEY: None,
    }
    owner = Tenant({"id": b}, Api(client, keys[Actor.OWNER]))
    lab_account = LabAccount({"id": lab_l}, Api(client, keys[Actor.LAB]))

    revoked = await created(admin, "/v1/api-keys", {"role": "enterprise", "name": "revoked", "enterprise_id": b})
    assert (await admin.delete(f"/v1/api-keys/{revoked['id']}")).status_code == 204
    keys[Stranger.REVOKED_KEY] = revoked["key"]
    api_key = await created(admin, "/v1/api-keys", {"role": "enterprise", "name": f"{marker}-key", "enterprise_id": b})

    instrument = await owner.register(
        **GAUGE,
        name=f"{marker}-gauge",
        serial_no=f"{marker}-serial",
        management_no=f"{marker}-management-no",
        manufacturer=f"{marker}-maker",
        last_verified_on=VERIFIED,
    )
    request = await created(
        owner.api,
        "/v1/verification-requests",
        {"lab_id": lab_l, "instrument_ids": [instrument["id"]], "note": f"{marker}-note"},
    )
    await lab_account.accept(request["id"])
    recorded = await lab_account.record(instrument["id"], number=f"{marker}-certificate")
    assert recorded.status_code == 201, recorded.text
    certificate = recorded.json()["certificate"]
    webhook = await created(owner.api, "/v1/webhooks", {"url": f"{HOOK_URL}/{marker}"})
    imported = await owner.api.post(
        f"/v1/enterprises/{b}/instruments/import",
        content=f"计量器具名称,出厂编号,检定周期\n{marker}-imported,{marker}-imported-serial,12\n".encode(),
        params={"file_name": f"{marker}-ledger.csv"},
        headers={"content-type": "text/csv"},
    )
    assert imported.status_code == 201, imported.text
    feed = await created(owner.api, f"/v1/enterprises/{b}/calendar-feeds", {"name": f"{marker}-calendar"})
    async with pool.acquire() as conn:
        notice_id = await conn.fetchval(
            "SELECT id FROM notices WHERE certificate_id = $1", uuid.UUID(certificate["id"])
        )
        # A delivery that failed, as the worker would have left it (the worker is not run here).
        delivery_id = await conn.fetchval(
            """INSERT INTO deliveries (notice_id, channel, webhook_id, target, status, attempts, next_attempt_at,
                                      last_error, created_at, updated_at)
               VALUES ($1, 'webhook', $2, $3, 'failed', 1, $4, 'connection refused', $4, $4) RETURNING id""",
            notice_id,
            uuid.UUID(webhook["webhook"]["id"]),
            webhook["webhook"]["url"],
            NOW,
        )
        await conn.execute("UPDATE notices SET status = 'failed', closed_at = $2 WHERE id = $1", notice_id, NOW)
    ids = {
        "enterprise_id": b,
        "instrument_id": instrument["id"],
        "lab_id": lab_l,
        "request_id": request["id"],
        "certificate_id": certificate["id"],
        "notice_id": str(notice_id),
        "webhook_id": webhook["webhook"]["id"],
        "delivery_id": str(delivery_id),
        "key_id": api_key["id"],
        "import_id": imported.json()["import_id"],
        "feed_id": feed["id"],
    }
    return World(client=client, marker=marker, keys=keys, ids=ids)


# ---------------------------------------------------------------------------------------------
# Samples: what to send to each operation


Body = Callable[[Ids, Caller], Any]
Fresh = Callable[[World], Awaitable[Mapping[str, str]]]


@dataclasses.dataclass(frozen=True)
class Sample:
    """How to call an operation: its body and query (from B's ids and the caller), whether declared
    callers need a fresh resource of B (``fresh``), and whether a declared caller's answer must show
    B's data (``reveals``)."""

    body: Body | None = None
    query: Callable[[Ids], dict[str, str]] | None = None
    fresh: Fresh | None = None
    reveals: bool = False


def _serial() -> str:
    return f"SN-{uuid.uuid4().hex[:10]}"


def _instrument(ids: Ids, caller: Caller) -> dict[str, Any]:
    return GAUGE | {"name": "一般压力表", "serial_no": _serial(), "last_verified_on": VERIFIED}


def _result(ids: Ids, caller: Caller) -> dict[str, Any]:
    """A verification under lab L's name; for regulators an in-service inspection."""
    number, dates = f"M-{uuid.uuid4().hex[:10]}", {"performed_on": "2026-06-10", "issued_on": "2026-06-12"}
    if caller in (Actor.REGULATOR, Actor.OTHER_REGULATOR):
        return {"kind": "inspection_record", "number": number, "outcome": "pass"} | dates
    return {"kind": "verification_certificate", "number": number, "lab_id": ids["lab_id"]} | dates


def _webhook(ids: Ids, caller: Caller) -> dict[str, Any]:
    """An admin names the owner (B); every other key owns what it creates, at a URL of its own (an
    owner may have one webhook per URL)."""
    body = {"url": f"{HOOK_URL}/{uuid.uuid4().hex[:8]}"}
    return (body | {"enterprise_id": ids["enterprise_id"]}) if caller is Actor.ADMIN else body


def _fixed(body: dict[str, Any]) -> Body:
    return lambda ids, caller: body


SAMPLES: dict[str, Sample] = {
    "ListCatalogItems": Sample(),
    "CreateEnterprise": Sample(
        body=lambda ids, c: {"name": "新企业", "credit_code": new_credit_code(), "region_code": REGION_B}
    ),
    "GetEnterprise": Sample(reveals=True),
    "UpdateEnterprise": Sample(body=_fixed({"digest": False, "contact_phone": "022-2345 6789"})),
    "CreateLab": Sample(
        body=lambda ids, c: {"name": "新实验室", "accreditation_no": _serial(), "region_code": REGION_B, "scope": []}
    ),
    "GetLab": Sample(reveals=True),
    "CreateApiKey": Sample(
        body=lambda ids, c: {"role": "enterprise", "name": "k", "enterprise_id": ids["enterprise_id"]}
    ),
    "RevokeApiKey": Sample(),  # revoking twice is harmless: B's key serves every caller
    "ListApiKeys": Sample(query=lambda ids: {"enterprise_id": ids["enterprise_id"]}, reveals=True),
    "GetApiKey": Sample(reveals=True),
    "RotateApiKey": Sample(body=_fixed({"grace_seconds": 60}), fresh=World.fresh_key),
    "ListAuditEntries": Sample(query=lambda ids: {"enterprise_id": ids["enterprise_id"]}, reveals=True),
    "RegisterInstrument": Sample(body=_instrument),
    "ListInstruments": Sample(reveals=True),
    "GetInstrument": Sample(reveals=True),
    "UpdateInstrument": Sample(body=_fixed({"version": 1, "location": "二号车间"}), fresh=World.fresh_instrument),
    "SealInstrument": Sample(fresh=World.fresh_instrument),
    "UnsealInstrument": Sample(fresh=lambda w: w.fresh_instrument(sealed=True)),
    "ScrapInstrument": Sample(fresh=World.fresh_instrument),
    "ReplaceInstrument": Sample(body=lambda ids, c: {"replacement": _instrument(ids, c)}, fresh=World.fresh_instrument),
    "GetInstrumentHistory": Sample(reveals=True),
    "CreateVerificationRequest": Sample(
        body=lambda ids, c: {
            "enterprise_id": ids["enterprise_id"],
            "lab_id": ids["lab_id"],
            "instrument_ids": [ids["instrument_id"]],
        },
        fresh=World.fresh_instrument,
    ),
    "ListVerificationRequests": Sample(query=lambda ids: {"enterprise_id": ids["enterprise_id"]}, reveals=True),
    "GetVerificationRequest": Sample(reveals=True),
    "AcceptVerificationRequest": Sample(fresh=World.fresh_request),
    "RejectVerificationRequest": Sample(body=_fixed({"reason": "超出授权范围"}), fresh=World.fresh_request),
    "CancelVerificationRequest": Sample(body=_fixed({"reason": "不再需要"}), fresh=World.fresh_request),
    "RecordResult": Sample(body=_result, fresh=lambda w: w.fresh_request(accept=True)),
    "ListInstrumentCertificates": Sample(reveals=True),
    "GetCertificate": Sample(reveals=True),
    "RevokeCertificate": Sample(body=_fixed({"reason": "监督抽查不合格"}), fresh=World.fresh_certificate),
    "ListNotices": Sample(query=lambda ids: {"instrument_id": ids["instrument_id"]}, reveals=True),
    "GetNotice": Sample(reveals=True),
    "CreateWebhook": Sample(body=_webhook),
    "ListWebhooks": Sample(reveals=True),
    "PingWebhook": Sample(),
    "DeleteWebhook": Sample(fresh=World.fresh_webhook),
    "RetryDelivery": Sample(),  # a failed or pending delivery may be retried again and again
    # The matrix sends JSON, which is no ledger: an allowed caller gets a 400, a stranger never
    # gets as far as the body.
    "ImportInstruments": Sample(body=_fixed({"计量器具名称": "x"})),
    "ListImports": Sample(reveals=True),
    # A CSV shows B's instruments as text; the filing is an XLSX, a zip in which no marker is legible.
    "ExportLedger": Sample(query=lambda ids: {"format": "csv"}, reveals=True),
    "ExportFiling": Sample(),
    "GetImport": Sample(reveals=True),
    "CreateCalendarFeed": Sample(body=_fixed({"name": "设备科日历"})),
    "ListCalendarFeeds": Sample(reveals=True),
    "RevokeCalendarFeed": Sample(fresh=World.fresh_calendar_feed),
}


def sample_for(op: Operation) -> Sample:
    if op.operation_id not in SAMPLES:
        pytest.fail(
            f"{op} has no sample: add a line to SAMPLES in {__name__} with the body it takes and, if it "
            "destroys or uses up B's resource, a fresh one (Sample(body=..., fresh=...))",
            pytrace=False,
        )
    return SAMPLES[op.operation_id]


# ---------------------------------------------------------------------------------------------
# The check


async def _send(world: World, op: Operation, sample: Sample, ids: Ids, caller: Caller) -> httpx.Response:
    missing = [p for p in op.params if p not in ids]
    assert not missing, f"{op}: the world has no resource for path parameter(s) {missing}"
    return await world.api(caller).request(
        op.method,
        op.path.format(**{p: ids[p] for p in op.params}),
        json=sample.body(ids, caller) if sample.body else None,
        params=sample.query(ids) if sample.query else None,
    )


def _problem_facts(response: httpx.Response, ids: Mapping[str, str] | None = None) -> tuple[Any, ...]:
    body = response.json() if response.headers.get("content-type", "").startswith("application/") else {}
    detail = str(body.get("detail"))
    for name, value in (ids or {}).items():
        detail = detail.replace(value, f"<{name}>")
    return response.status_code, body.get("type"), body.get("title"), body.get("status"), detail


async def violations(op: Operation, sample: Sample, world: World, caller: Caller) -> list[str]:
    """What is wrong with ``op``'s answer to ``caller`` on B's resources (empty: nothing)."""
    if op.access is None:
        return [f"{op} declares no access policy"]
    allowed = isinstance(caller, Actor) and op.access.allows(caller)
    ids = dict(world.ids)
    if allowed and sample.fresh is not None:
        ids |= await sample.fresh(world)
    response = await _send(world, op, sample, ids, caller)
    found = _judged(op, sample, world, caller, allowed, response)
    if response.status_code == 404 and not allowed:
        absent = {name: str(uuid.uuid4()) for name in ids}
        theirs, nobodys = (
            _problem_facts(response, ids),
            _problem_facts(await _send(world, op, sample, absent, caller), absent),
        )
        if theirs != nobodys:
            found.append(f"{op} as {caller}: B's existing resource answers {theirs}, an absent one {nobodys}")
    return found


def _judged(
    op: Operation, sample: Sample, world: World, caller: Caller, allowed: bool, response: httpx.Response
) -> list[str]:
    status, label = response.status_code, f"{op} as {caller}: {response.status_code}"
    shows_b = world.marker.lower() in response.text.lower()
    found = []
    if status not in op.documented:
        found.append(f"{label} is not among its documented responses {sorted(op.documented)}")
    if isinstance(caller, Stranger):
        if status != 401:
            found.append(f"{label}, expected 401")
    elif allowed:
        if status in (401, 403, 404) or status >= 500:
            found.append(f"{label}: declared allowed but refused: {response.text[:300]}")
        elif sample.reveals and 200 <= status < 300 and not shows_b:
            found.append(f"{label}: declared allowed, but the answer shows none of B's data")
    elif not (status in (403, 404) or (op.is_list and 200 <= status < 300)):
        found.append(f"{label}, but it is not declared allowed (403 or 404 expected): {response.text[:300]}")
    if shows_b and (not allowed or caller in OUTSIDERS):
        found.append(f"{label}: the answer carries B's marker {world.marker}: {response.text[:300]}")
    return found


# ---------------------------------------------------------------------------------------------
# Fixtures and tests


def _settings(database_url: str) -> Settings:
    # The world's webhooks refuse connections on loopback: pings are quick.
    return app_settings(database_url, allow_private_webhooks=True, send_timeout_s=1.0)


@pytest.fixture(scope="module")
async def world(database_url: str, pool: asyncpg.Pool) -> AsyncIterator[World]:
    app = create_app(_settings(database_url), clock=FixedClock(NOW))
    async with (
        running(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://metreg.test") as client,
    ):
        yield await build_world(client, pool)


OPERATIONS = operations(create_app(_settings("postgresql://unused/unused")))


@pytest.mark.parametrize("caller", CALLERS, ids=str)
@pytest.mark.parametrize("op", OPERATIONS, ids=lambda op: op.operation_id)
async def test_matrix(op: Operation, caller: Caller, world: World) -> None:
    problems = await violations(op, sample_for(op), world, caller)
    assert not problems, "\n".join(problems)


def test_every_sample_belongs_to_a_route() -> None:
    assert set(SAMPLES) <= {op.operation_id for op in OPERATIONS}


def test_a_route_without_a_sample_fails_by_name() -> None:
    op = dataclasses.replace(OPERATIONS[0], operation_id="BrandNewOperation")
    with pytest.raises(pytest.fail.Exception, match=r"BrandNewOperation \(.*\) has no sample"):
        sample_for(op)


# The "done when" demonstration: a route that declares its callers but does not check them. Its
# unfiltered read runs twice: on a connection that row-level security does not hold (as a table
# without policies would be), where the matrix must catch it; and on the app's own connection,
# where PostgreSQL's policies are the second line and return no row of another tenant.


def _unguarded(read_with: Callable[[Db], Any], operation_id: str) -> Any:
    @get(
        f"/v1/test-unguarded/{operation_id}/{{instrument_id:str}}",
        operation_id=operation_id,
        summary="Read an instrument without checking who asks",
        responses=problem_responses(400, 401, 404),
        opt=access(Actor.ADMIN, Actor.OWNER),
    )
    async def unguarded(db: Db, principal: PrincipalDep, instrument_id: FromPath[uuid.UUID]) -> dict[str, str]:
        row = await select_instrument(await read_with(db), instrument_id)
        if row is None:
            raise NotFoundError(f"instrument {instrument_id} not found")
        return {"id": str(row.id), "name": row.name, "serial_no": row.serial_no}

    return unguarded


async def _report(world: World, database_url: str, handler: Any) -> dict[Actor, list[str]]:
    app = create_app(_settings(database_url), clock=FixedClock(NOW))
    app.register(handler)
    (op,) = [op for op in operations(app) if op.operation_id == handler.operation_id]
    async with (
        running(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://metreg.test") as client,
    ):
        return {caller: await violations(op, Sample(reveals=True), world.on(client), caller) for caller in Actor}


async def test_the_matrix_reports_a_route_that_does_not_check_the_caller(
    world: World, database_url: str, pool: asyncpg.Pool
) -> None:
    async def without_policies(db: Db) -> Any:
        return pool  # the tests' own pool: the database owner, whom row-level security does not hold

    report = await _report(world, database_url, _unguarded(without_policies, "UnguardedGetInstrument"))
    assert report[Actor.ADMIN] == report[Actor.OWNER] == []
    for caller in (Actor.OTHER_ENTERPRISE, Actor.REGULATOR, Actor.OTHER_REGULATOR, Actor.LAB, Actor.OTHER_LAB):
        assert any("it is not declared allowed" in p for p in report[caller]), report[caller]
        assert any("carries B's marker" in p for p in report[caller]), report[caller]


async def test_row_level_security_holds_where_a_handler_forgets_its_check(world: World, database_url: str) -> None:
    async def app_connection(db: Db) -> Any:
        return db

    report = await _report(world, database_url, _unguarded(app_connection, "UnguardedButPolicedGetInstrument"))
    # Admin and owner read it; nobody else gets a row, though the handler checks nothing.
    assert report[Actor.ADMIN] == report[Actor.OWNER] == []
    for caller in (Actor.OTHER_ENTERPRISE, Actor.OTHER_REGULATOR, Actor.OTHER_LAB):
        assert report[caller] == [], report[caller]
    # A regulator of B's region and the lab with B's request see it in the database too (the
    # policies mirror who may read an instrument); only the handler's missing check lets them.
    for caller in (Actor.REGULATOR, Actor.LAB):
        assert any("it is not declared allowed" in p for p in report[caller]), report[caller]
