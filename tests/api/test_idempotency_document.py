"""``Idempotent-Replayed`` in the OpenAPI document, held to what the API does.

The operations are the isolation matrix's (``tests/api/test_isolation_matrix.py``: the app's route
table, its world of tenant B, a sample request for each). Each write is driven to the answers it
can be made to give here, every request sent twice with one ``Idempotency-Key``; whether the second
answer carries ``Idempotent-Replayed`` is what happens. The document must carry the header on an
operation's answer exactly when some request answered with that status was replayed: the
expectation comes from the answers, not from a rule of the implementation.

Driven, for each write: its success; a revoked key (401); each caller it refuses, until one gets a
403; absent resources (404); a body over the limit (413: an import's also with too many rows); an
import's unreadable file and a form (415); a body that stalls (408); a spent rate limit (429). The
oversized and the stalled body go to every write, whether it documents 413 and 408 or not, so that
one answering them undocumented fails here.
Not driven here, and why: 400, 409 and 422 are both the key's own refusals (malformed, busy,
reused: never kept, tests/api/test_idempotency.py) and each operation's refusals for reasons of its
own (kept, as there too): no request works for every operation. 503 is an outage
(tests/api/test_outage.py).
"""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Mapping
from typing import Any

import asyncpg
import httpx
import pytest

from service.app import create_app
from service.auth import Role
from service.clock import FixedClock
from service.idempotency import HEADER, REPLAYED_HEADER
from tests.api.test_isolation_matrix import OPERATIONS, SAMPLES, Actor, Operation, Stranger, World, build_world
from tests.conftest import NOW, Api, app_settings, mint, running

MAX_BODY = 1024  # the least METREG_MAX_BODY_BYTES and METREG_MAX_IMPORT_BYTES take
# Who does an operation, when several may: B itself first, as the matrix's declared callers.
PREFERRED = [Actor.OWNER, Actor.LAB, Actor.REGULATOR, Actor.ADMIN]
WRITES = [op for op in OPERATIONS if op.method in ("POST", "PATCH")]
READS = [op for op in OPERATIONS if op.method not in ("POST", "PATCH")]
CSV = {"content-type": "text/csv"}
# Answers no request here gives (see the module's docstring).
NOT_DRIVEN = {400, 409, 422, 503}

Observed = dict[int, list[bool]]


def _settings(database_url: str, **extra: Any) -> Any:
    return app_settings(
        database_url,
        allow_private_webhooks=True,
        send_timeout_s=1.0,
        max_body_bytes=MAX_BODY,
        max_import_bytes=MAX_BODY,
        max_import_rows=1,
        client_timeout_s=0.05,
        **extra,
    )


@pytest.fixture(scope="module")
async def world(database_url: str, pool: asyncpg.Pool) -> AsyncIterator[World]:
    app = create_app(_settings(database_url), clock=FixedClock(NOW))
    async with (
        running(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://metreg.test") as client,
    ):
        yield await build_world(client, pool)


@pytest.fixture(scope="module")
async def limited(database_url: str, pool: asyncpg.Pool) -> AsyncIterator[Api]:
    """A key whose rate limit is spent, on an app that limits (its clock stands still: no refill)."""
    app = create_app(_settings(database_url, rate_limit=0.001, rate_burst=1), clock=FixedClock(NOW))
    async with (
        running(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://metreg.test") as client,
    ):
        api = Api(client, await mint(pool, Role.ADMIN))
        assert (await api.get("/v1/catalog")).status_code == 200
        assert (await api.get("/v1/catalog")).status_code == 429
        yield api


async def _twice(api: Api, method: str, url: str, **kw: Any) -> tuple[int, bool]:
    """Send the request twice with one Idempotency-Key: the first answer's status, and whether the
    second was that answer replayed."""
    key = {HEADER: f"document-{uuid.uuid4()}"}
    headers = kw.pop("headers", {})
    first = await api.request(method, url, headers=headers | key, **kw)
    again = await api.request(method, url, headers=headers | key, **kw)
    replayed = again.headers.get(REPLAYED_HEADER) == "true"
    if replayed:
        assert (again.status_code, again.content) == (first.status_code, first.content)
    return first.status_code, replayed


def _url(op: Operation, ids: Mapping[str, str]) -> str:
    return op.path.format(**{p: ids[p] for p in op.params})


def _ledger(rows: int) -> bytes:
    lines = ["计量器具名称,出厂编号,检定周期", *(f"压力表,DOC-{uuid.uuid4().hex[:10]},12" for _ in range(rows))]
    return ("\n".join(lines) + "\n").encode()


def _import(op: Operation) -> bool:
    return op.operation_id == "ImportInstruments"


async def _stalls() -> AsyncIterator[bytes]:
    """A body whose second part never comes (the server gives up after METREG_CLIENT_TIMEOUT)."""
    yield b'{"name": '
    await asyncio.Event().wait()
    yield b"}"


async def _drive(op: Operation, world: World, limited: Api) -> Observed:
    """Every answer of ``op`` driven here: its status -> whether each such request was replayed."""
    sample, seen = SAMPLES[op.operation_id], defaultdict(list)
    assert op.access is not None
    allowed = [c for c in PREFERRED if op.access.allows(c)]
    caller, ids = allowed[0], dict(world.ids)
    if sample.fresh is not None:
        ids |= await sample.fresh(world)
    body = sample.body(ids, caller) if sample.body else None
    url = _url(op, ids)

    def saw(observation: tuple[int, bool]) -> None:
        seen[observation[0]].append(observation[1])

    api = world.api(caller)
    if _import(op):
        saw(await _twice(api, op.method, url, content=_ledger(1), headers=CSV))
    else:
        saw(await _twice(api, op.method, url, json=body))
    saw(await _twice(world.api(Stranger.REVOKED_KEY), op.method, url, json=body))
    for refused in (c for c in Actor if not op.access.allows(c)):
        theirs = sample.body(world.ids, refused) if sample.body else None
        if (await world.api(refused).request(op.method, _url(op, world.ids), json=theirs)).status_code == 403:
            saw(await _twice(world.api(refused), op.method, _url(op, world.ids), json=theirs))
            break
    absent = {name: str(uuid.uuid4()) for name in world.ids}
    for someone in allowed:
        theirs = sample.body(absent, someone) if sample.body else None
        if (await world.api(someone).request(op.method, _url(op, absent), json=theirs)).status_code == 404:
            saw(await _twice(world.api(someone), op.method, _url(op, absent), json=theirs))
            break
    if _import(op):
        saw(await _twice(api, op.method, url, content=b"x" * (MAX_BODY + 1), headers=CSV))  # bytes: read first
        saw(await _twice(api, op.method, url, content=_ledger(2), headers=CSV))  # rows: read by the import
    else:
        saw(await _twice(api, op.method, url, json={"padding": "x" * MAX_BODY}))
    if 415 in op.documented:
        saw(await _twice(api, op.method, url, content=b"--x\r\n", headers={"content-type": "multipart/form-data"}))
        saw(await _twice(api, op.method, url, content=bytes(range(256)), headers=CSV))  # neither CSV nor XLSX
    saw(await _twice(api, op.method, url, content=_stalls(), headers={"content-type": "application/json"}))
    saw(await _twice(limited, op.method, url, json=body))
    return dict(seen)


def _documented(spec: dict[str, Any], op: Operation) -> dict[int, bool]:
    """``op``'s documented answers: status -> whether the header is documented on it."""
    operation = spec["paths"][op.path][op.method.lower()]
    reference = {"$ref": f"#/components/headers/{REPLAYED_HEADER}"}
    return {
        int(status): (response.get("headers") or {}).get(REPLAYED_HEADER) == reference
        for status, response in operation["responses"].items()
    }


@pytest.mark.parametrize("op", WRITES, ids=lambda op: op.operation_id)
async def test_idempotent_replayed_is_documented_on_the_answers_a_retry_replays(
    op: Operation, world: World, limited: Api
) -> None:
    documented = _documented((await world.client.get("/docs/openapi.json")).json(), op)
    observed = await _drive(op, world, limited)
    assert set(observed) <= set(documented), f"{op}: answered {sorted(observed)}, documents {sorted(documented)}"
    wrong = {
        status: f"replayed {replays.count(True)} of {len(replays)}, documented {documented[status]}"
        for status, replays in observed.items()
        if any(replays) != documented[status]
    }
    assert not wrong, f"{op}: {wrong}"
    # What was not driven: documented, and on 4xx with the header (the operation's own refusals).
    assert set(documented) - set(observed) <= NOT_DRIVEN, f"{op}: no request here answers {sorted(documented)}"
    for status in set(documented) - set(observed):
        assert documented[status] == (status < 500), f"{op}: {status}"


@pytest.mark.parametrize("op", READS, ids=lambda op: op.operation_id)
async def test_no_read_replays_or_documents_the_header(op: Operation, world: World) -> None:
    assert op.access is not None
    caller = next(c for c in PREFERRED if op.access.allows(c))
    sample = SAMPLES[op.operation_id]
    ids = dict(world.ids) | (await sample.fresh(world) if sample.fresh is not None else {})
    params = sample.query(ids) if sample.query else None
    status, replayed = await _twice(world.api(caller), op.method, _url(op, ids), params=params)
    assert not replayed, f"{op}: {status}"
    documented = _documented((await world.client.get("/docs/openapi.json")).json(), op)
    assert not any(documented.values()), op
