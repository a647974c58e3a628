"""The app refuses to start with a write that an Idempotency-Key could not cover (service.idempotency.prepare)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from litestar import Litestar, Request, post
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.spec import Operation

from service.deps import AdminDep, Conn, Db, PrincipalDep, ReaderDep, dependencies
from service.idempotency import READ_BODY, SHOWN_ONCE, IdempotentOperation, prepare
from service.policy import Actor, access
from service.problems import problem_responses


def _handlers(*handlers: HTTPRouteHandler) -> list[HTTPRouteHandler]:
    app = Litestar(route_handlers=list(handlers), dependencies=dependencies(), openapi_config=None)
    return [h for route in app.routes for h in getattr(route, "route_handlers", []) if h.http_methods != {"OPTIONS"}]


def test_a_write_on_the_requests_transaction_is_fitted_with_the_header_and_its_answers() -> None:
    @post("/v1/things", opt=access(Actor.ADMIN), responses=problem_responses(400, 401, 409))
    async def make_thing(db: Db, principal: PrincipalDep) -> None:
        return None

    [handler] = _handlers(make_thing)
    prepare([handler])
    fitted = handler.operation_class
    assert fitted.__mro__[1] is IdempotentOperation  # a class of the route's own
    assert handler.responses is not None
    assert "Idempotency-Key" in handler.responses[409].description
    assert handler.responses[409].description.startswith("Conflicts with the current state")
    assert handler.responses[422].description.startswith("An `Idempotency-Key` already used")
    first = dict(handler.responses)
    prepare([handler])  # again: nothing doubles
    assert handler.responses == first
    assert handler.operation_class.__mro__[1] is IdempotentOperation


def test_each_route_says_which_of_its_refusals_are_never_its_handlers() -> None:
    """Litestar's 413 and an admin-only route's 403 are not kept; an import's own 413 is."""

    @post("/v1/things", opt=access(Actor.ADMIN))
    async def make_thing(db: Db, principal: PrincipalDep) -> None:
        return None

    @post("/v1/admin-things", opt=access(Actor.ADMIN))
    async def make_admin_thing(db: Db, admin: AdminDep) -> None:
        return None

    async def read(request: Request[Any, Any, Any]) -> bytes:
        return b""

    @post("/v1/files", opt=access(Actor.ADMIN) | {READ_BODY: read}, request_max_body_size=None)
    async def take_file(request: Request[Any, Any, Any], db: Db, principal: PrincipalDep) -> None:
        return None

    handlers = _handlers(make_thing, make_admin_thing, take_file)
    prepare(handlers)
    never = {h.handler_name: h.operation_class.never_kept for h in handlers}  # type: ignore[attr-defined]
    assert never == {
        "make_thing": {401, 408, 413, 429},
        "make_admin_thing": {401, 403, 408, 413, 429},
        "take_file": {401, 408, 429},
    }


@pytest.mark.parametrize("kind", ["conn", "reader"])
def test_a_write_with_a_connection_of_its_own_is_refused(kind: str) -> None:
    if kind == "conn":

        @post("/v1/things", opt=access(Actor.ADMIN))
        async def make_thing(conn: Conn, principal: PrincipalDep) -> None:
            return None

    else:

        @post("/v1/things", opt=access(Actor.ADMIN))
        async def make_thing(reader: ReaderDep) -> None:
            return None

    with pytest.raises(RuntimeError, match=r"make_thing \(POST\) takes Idempotency-Key: it must authenticate"):
        prepare(_handlers(make_thing))


def test_a_write_reading_an_unbounded_body_must_say_how() -> None:
    @post("/v1/files", opt=access(Actor.ADMIN), request_max_body_size=None)
    async def take_file(request: Request[Any, Any, Any], db: Db, principal: PrincipalDep) -> None:
        return None

    with pytest.raises(RuntimeError, match=r"take_file \(POST\) reads an unbounded body"):
        prepare(_handlers(take_file))

    async def read(request: Request[Any, Any, Any]) -> bytes:
        return b""

    @post("/v1/files", opt=access(Actor.ADMIN) | {READ_BODY: read}, request_max_body_size=None)
    async def take_bounded_file(request: Request[Any, Any, Any], db: Db, principal: PrincipalDep) -> None:
        return None

    prepare(_handlers(take_bounded_file))


def test_a_custom_operation_class_must_derive_from_idempotent_operation() -> None:
    @dataclasses.dataclass
    class Custom(Operation):
        pass

    @post("/v1/things", opt=access(Actor.ADMIN), operation_class=Custom)
    async def make_thing(db: Db, principal: PrincipalDep) -> None:
        return None

    with pytest.raises(RuntimeError, match="does not derive from IdempotentOperation"):
        prepare(_handlers(make_thing))


def test_a_write_showing_a_secret_once_documents_no_replayed_success() -> None:
    @post("/v1/secrets", opt=access(Actor.ADMIN) | {SHOWN_ONCE: True})
    async def make_secret(db: Db, principal: PrincipalDep) -> None:
        return None

    [handler] = _handlers(make_secret)
    prepare([handler])
    assert issubclass(handler.operation_class, IdempotentOperation)
    assert handler.operation_class.successes_replayed is False

    @dataclasses.dataclass
    class Replaying(IdempotentOperation):
        pass

    @post("/v1/secrets", opt=access(Actor.ADMIN) | {SHOWN_ONCE: True}, operation_class=Replaying)
    async def make_other_secret(db: Db, principal: PrincipalDep) -> None:
        return None

    [other] = _handlers(make_other_secret)
    prepare([other])  # a class of its own that replays successes is fitted not to
    assert issubclass(other.operation_class, Replaying)
    assert other.operation_class.successes_replayed is False  # type: ignore[attr-defined]
