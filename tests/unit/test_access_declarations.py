"""The app refuses to start when an authenticated route does not declare who may call it."""

from __future__ import annotations

from typing import Any

import pytest
from litestar import Litestar, get
from litestar.params import FromPath

from service.app import _require_authentication, create_app, guarded_handlers
from service.deps import PrincipalDep, dependencies
from service.policy import Access, Actor, access
from service.settings import Settings


def _app(opt: dict[str, Any] | None) -> Litestar:
    @get("/v1/things/{thing_id:str}", opt=opt)
    async def read_thing(principal: PrincipalDep, thing_id: FromPath[str]) -> str:
        return thing_id

    return Litestar(route_handlers=[read_thing], dependencies=dependencies(), openapi_config=None)


def test_a_route_that_declares_its_callers_passes() -> None:
    _require_authentication(_app(access(Actor.ADMIN, Actor.OWNER)))


@pytest.mark.parametrize(
    "opt",
    [None, {}, {"access": {"admin", "owner"}}, {"access": None}],
    ids=["no-opt", "empty-opt", "a-plain-set", "none"],
)
def test_a_route_without_an_access_declaration_is_refused_naming_handler_and_path(opt: dict[str, Any] | None) -> None:
    with pytest.raises(RuntimeError, match=r"read_thing at /v1/things/\{thing_id:str\} declares no access policy"):
        _require_authentication(_app(opt))


def test_public_routes_need_no_declaration() -> None:
    @get("/v1/open", opt={"public": True})
    async def open_route() -> str:
        return "ok"

    _require_authentication(Litestar(route_handlers=[open_route], openapi_config=None))


def test_every_route_of_the_service_declares_an_access_policy() -> None:
    """create_app would refuse to start otherwise; this names the routes it checked."""
    app = create_app(Settings(database_url="postgresql://unused/unused", redis_url="redis://unused"))
    declared = {handler.operation_id: handler.opt["access"] for _, handler in guarded_handlers(app)}
    assert len(declared) >= 30
    assert all(isinstance(policy, Access) for policy in declared.values())
    assert declared["GetInstrument"].allowed == {Actor.ADMIN, Actor.OWNER, Actor.REGULATOR, Actor.LAB}


def test_authentication_is_still_checked_first() -> None:
    @get("/v1/anyone", opt=access(Actor.ADMIN))
    async def anyone() -> str:
        return "ok"

    with pytest.raises(RuntimeError, match="anyone at /v1/anyone neither authenticates nor is public"):
        _require_authentication(Litestar(route_handlers=[anyone], openapi_config=None))
