"""Health, problem+json for every error, request ids, and the OpenAPI document."""

from __future__ import annotations

import gc

import httpx

from service.app import create_app
from service.clock import FixedClock
from tests.conftest import Api, app_settings, problem, running


async def test_healthz_and_readyz(anonymous: Api) -> None:
    assert (await anonymous.get("/healthz")).json() == {"status": "ok", "checks": {}}
    ready = await anonymous.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ok", "checks": {"postgresql": "ok", "redis": "ok"}}


async def test_unknown_route_is_problem_json_with_request_id(anonymous: Api) -> None:
    body = problem(await anonymous.get("/v1/nothing-here"), 404)
    assert body["detail"] == "no resource at GET /v1/nothing-here"


async def test_wrong_method_is_405_problem_json(admin: Api) -> None:
    response = await admin.delete("/v1/catalog")
    body = problem(response, 405)
    assert "DELETE" in body["detail"]


async def test_request_id_is_echoed_when_sane_and_minted_otherwise(anonymous: Api) -> None:
    echoed = await anonymous.get("/healthz", headers={"X-Request-ID": "trace-42"})
    assert echoed.headers["x-request-id"] == "trace-42"
    minted = await anonymous.get("/healthz", headers={"X-Request-ID": "bad id with spaces\x7f"})
    assert minted.headers["x-request-id"] != "bad id with spaces\x7f"
    assert len(minted.headers["x-request-id"]) == 32


async def test_openapi_documents_every_operation_with_its_errors(app_client: httpx.AsyncClient) -> None:
    spec = (await app_client.get("/docs/openapi.json")).json()
    operations = [
        (path, method, op)
        for path, item in spec["paths"].items()
        for method, op in item.items()
        if method in {"get", "post", "patch", "put", "delete"}
    ]
    assert len(operations) >= 13
    seen_ids = set()
    for path, method, op in operations:
        assert op.get("operationId"), (path, method)
        assert op.get("summary"), (path, method)
        seen_ids.add(op["operationId"])
        # Keyless: the certificate check, and calendar feeds (their token is in the URL).
        if path.startswith(("/v1/public/", "/v1/calendar/")):
            assert not op.get("security"), (path, method)
            assert not spec.get("security"), (path, method)
        elif path.startswith("/v1/"):
            assert "401" in op["responses"], (path, method)
            problem_schema = op["responses"]["401"]["content"]["application/problem+json"]
            assert problem_schema, (path, method)
            assert op.get("security") or spec.get("security"), (path, method)
    assert len(seen_ids) == len(operations)
    assert {"RegisterInstrument", "ListInstruments", "GetInstrument", "UpdateInstrument"} <= seen_ids


async def test_docs_page_is_served(app_client: httpx.AsyncClient) -> None:
    response = await app_client.get("/docs")
    assert response.status_code == 200
    assert "text/html" in response.headers["content-type"]


async def test_catalogue_is_seeded_and_readable_by_any_key(admin: Api, anonymous: Api) -> None:
    problem(await anonymous.get("/v1/catalog"), 401)
    items = {item["code"]: item for item in (await admin.get("/v1/catalog")).json()}
    assert len(items) >= 19
    gauge = items["pressure_gauge"]
    assert gauge["legal_max_cycle_months"] == 6
    assert gauge["regulation"] == "JJG 52-2013"
    assert gauge["compulsory_uses"] == ["safety_protection"]
    assert items["clinical_thermometer_glass"]["regime"] == "initial_only_scrap_on_failure"
    assert items["water_meter_dn25"]["regime"] == "initial_only_limited_life"


async def test_what_started_the_app_is_frozen_while_it_runs_and_thawed_when_it_stops(
    database_url: str, clock: FixedClock
) -> None:
    """Kept out of the collector's full passes while serving; collectable again once stopped, so
    that a process that runs apps one after another (tests) leaves nothing uncollectable behind."""
    app = create_app(app_settings(database_url), clock=clock)
    async with running(app):
        assert gc.get_freeze_count() > 0
    assert gc.get_freeze_count() == 0
