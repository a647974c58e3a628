"""``Idempotency-Key``: a POST or PATCH of the authenticated API sent with one is done once, and its
retries get the first answer again (design.md §5; draft-ietf-httpapi-idempotency-key-header, as
Stripe does it). Without the header nothing changes.

A key belongs to the API key that sent it and is kept with the answer in ``idempotency_keys``
(schema/0015), in the request's own transaction (``service.db.provide_db``), so that no effect is
ever committed without its answer nor an answer without its effect:

1. :func:`before_request`, the ``/v1`` router's hook, gives a POST or PATCH an exchange, found
   again through the request's scope and, by :func:`after_request` (which is handed the response
   alone), through a context variable: both hooks run in the request's own task.
2. Authentication (``service.auth.provide_principal``) ends with :func:`claim`. With a key it reads
   the body, takes the request's fingerprint (method, path and query, ``If-Match``, the body's
   SHA-256; a route that takes no body ignores one, with a key as without, so it is neither read
   nor fingerprinted) and claims the key: a new one is inserted unanswered, and a savepoint taken.
   A key already answered with the same fingerprint is replayed: its status, body, Content-Type,
   Location and ETag, with ``Idempotent-Replayed: true``, and the handler never runs; with another
   fingerprint it is a 422. A key another transaction holds makes the insert wait on the unique
   index until that one ends (then as above: its answer, or the key is free again after a
   rollback), at most ``METREG_IDEMPOTENCY_WAIT``; then 409.
3. The handler runs.
4. Litestar hands the response to :func:`after_request` before it tears the dependencies down
   (``litestar/routes/http.py``: ``to_response`` runs inside the exit stack holding the cleanup
   group), so the rendered answer is written into the claimed row and the teardown's COMMIT makes
   both durable at once. The same bytes are sent.
5. A refusal the handler raises (a :class:`~service.errors.MetregError` of 4xx) is also the key's
   answer: ``provide_db`` calls :func:`keep_refusal`, which rolls back to the savepoint (the
   handler's work, not the claim), keeps the problem document and lets the transaction commit;
   the exception handler then sends that same document. As in the draft and at Stripe, a key names
   one request and its one outcome: a retry after a lost answer learns what happened rather than
   what would happen now (a 409 for a stale version stays that 409; the version never goes back).
   Everything else rolls the whole transaction back, claim included, and keeps nothing: a 5xx, a
   lost database, the 409 of a concurrent change that says "retry", a body that fails validation
   before the handler is reached (no handler ran, as at Stripe), or larger than Litestar's limit
   (its 413). Such a key is free for the retry. Refusals of authentication (401, and an admin-only
   route's 403) come before or around the claim and are not kept either.

Answers that carry a secret shown once (a new API key, a calendar feed's URL, a webhook's signing
secret) are not kept: no copy of them outlives the answer (metreg keeps only hashes of the first
two, and the third where deliveries sign with it, not where any key could read it back). The key
is still claimed, so a retry does nothing twice, but it is told so (409) instead of getting the
secret again. Such a route says so with ``opt={SHOWN_ONCE: True}``.
"""

from __future__ import annotations

import contextvars
import dataclasses
import datetime as dt
import hashlib
import re
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, ClassVar, Final

import asyncpg
import msgspec
from litestar import Request
from litestar.enums import MediaType, ParamType
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.spec import (
    OpenAPIHeader,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Parameter,
    Reference,
    Schema,
)
from litestar.response import Response
from litestar.serialization import get_serializer
from litestar.utils.helpers import get_enum_string_value

from service.errors import (
    AnswerWithheldError,
    IdempotencyKeyBusyError,
    IdempotencyKeyReusedError,
    InvalidInputError,
    MetregError,
)
from service.problems import PROBLEM_MEDIA_TYPE, domain_problem, with_idempotency_responses
from service.settings import Settings

__all__ = (
    "HEADER",
    "OPENAPI_HEADERS",
    "READ_BODY",
    "REPLAYED_HEADER",
    "SHOWN_ONCE",
    "IdempotentOperation",
    "IdempotentReplay",
    "after_request",
    "before_request",
    "claim",
    "keep_refusal",
    "prepare",
    "purge_expired",
    "replay",
)

HEADER: Final = "Idempotency-Key"
REPLAYED_HEADER: Final = "Idempotent-Replayed"
#: ``opt`` of a route whose answer carries a secret shown once: its answer is not kept.
SHOWN_ONCE: Final = "shown_once"
#: What the claim's statement may take beyond its lock wait before the client gives up on it.
_MARGIN_S: Final = 10.0
#: ``opt`` of a route that reads its body itself, under a limit of its own (Litestar's is off):
#: ``async (request) -> bytes``, which must return the same bytes when the handler calls it again.
READ_BODY: Final = "read_body"

_WRITES = frozenset({"POST", "PATCH"})
# Printable ASCII, and no space at either end: HTTP drops those, so such a key would not arrive whole.
_KEY_PATTERN = r"^[!-~]([ -~]{0,253}[!-~])?$"
_KEY = re.compile(_KEY_PATTERN)
# Request headers that change what a write does: part of its fingerprint.
_FINGERPRINTED = ("if-match",)
# Response headers a client acts on, kept and replayed with the body.
_KEPT_HEADERS = frozenset({"location", "etag"})
_SAVEPOINT = "idempotency_claimed"

_CLAIM = "SELECT * FROM idempotency_claim($1, $2, $3, $4, $5, $6)"
_ANSWER = """UPDATE idempotency_keys SET status = $2, media_type = $3, headers = $4, body = $5
             WHERE key_id = principal_key() AND idempotency_key = $1"""


class _Stored(msgspec.Struct, frozen=True, kw_only=True):
    """A key's earlier request and its answer, as ``idempotency_claim`` returns them."""

    request: str
    fingerprint: bytes
    created_at: dt.datetime
    status: int
    media_type: str
    headers: dict[str, str]
    body: bytes | None


class IdempotentReplay(Exception):  # noqa: N818  # not an error: the way out of the dependencies with an answer
    """Raised by :func:`claim` for a key already answered: :func:`replay` sends the answer."""

    def __init__(self, stored: _Stored) -> None:
        super().__init__(stored.request)
        self.stored = stored


class _Claim:
    """A key this request's transaction holds, until its answer is written."""

    __slots__ = ("answered", "db", "handler", "key")

    def __init__(self, db: asyncpg.Connection, key: str, handler: HTTPRouteHandler) -> None:
        self.db = db
        self.key = key
        self.handler = handler
        self.answered = False

    async def write(self, status: int, media_type: str, headers: dict[str, str], body: bytes) -> None:
        kept = None if self.handler.opt.get(SHOWN_ONCE) and status < 400 else body
        await self.db.execute(_ANSWER, self.key, status, media_type, headers, kept)
        self.answered = True


class _Exchange:
    """The idempotency side of one POST or PATCH: its claim, once it holds one."""

    __slots__ = ("claim",)

    def __init__(self) -> None:
        self.claim: _Claim | None = None


_current: contextvars.ContextVar[_Exchange | None] = contextvars.ContextVar("idempotency_exchange", default=None)


async def before_request(request: Request[Any, Any, Any]) -> None:
    """Open the exchange of a POST or PATCH. It lives in a context variable, not the request:
    ``after_request`` is given only the response; and it is set for every request, so no request
    sees another's."""
    _current.set(_Exchange() if request.method in _WRITES else None)


def _key_of(request: Request[Any, Any, Any]) -> str | None:
    """The request's Idempotency-Key, None without one.

    Raises:
        InvalidInputError: several, or one that is not 1–255 printable ASCII characters.
    """
    values = request.headers.getall(HEADER, [])
    if not values:
        return None
    if len(values) > 1:
        raise InvalidInputError.for_field(HEADER, "send it once")
    if not _KEY.match(values[0]):
        raise InvalidInputError.for_field(
            HEADER, "must be 1 to 255 printable ASCII characters, not starting or ending with a space"
        )
    return values[0]


def _fingerprint(request: Request[Any, Any, Any], body: bytes) -> tuple[str, bytes]:
    """The request line (``POST /v1/…?…``) and the SHA-256 that tells one request from another."""
    query = request.scope.get("query_string", b"").decode("latin-1")
    line = f"{request.method} {request.scope['path']}{'?' if query else ''}{query}"
    parts = [line.encode(), *(request.headers.get(h, "").encode("latin-1") for h in _FINGERPRINTED)]
    digest = hashlib.sha256()
    for part in (*parts, hashlib.sha256(body).digest()):
        digest.update(len(part).to_bytes(8, "big"))  # length-prefixed: no two requests hash alike by shifting bytes
        digest.update(part)
    return line, digest.digest()


def _takes_body(handler: HTTPRouteHandler) -> bool:
    """Whether ``handler`` reads a request body: Litestar's ``data``, or its own (``READ_BODY``)."""
    return "data" in handler.parsed_fn_signature.parameters or READ_BODY in handler.opt


async def claim(request: Request[Any, Any, Any], db: asyncpg.Connection, now: dt.datetime) -> None:
    """Claim the request's Idempotency-Key for the transaction ``db`` is in, whose principal is set.

    Does nothing for a request without the header (or not a POST or PATCH).

    Raises:
        InvalidInputError: a malformed key (400).
        IdempotentReplay: the key was answered for the same request: send that answer.
        IdempotencyKeyReusedError: the key was used for another request (422).
        IdempotencyKeyBusyError: another request with it is still running after the wait (409).
        AnswerWithheldError: the key's request is done, but its answer held a secret shown once (409).
    """
    exchange = _current.get()
    if exchange is None:
        return
    key = _key_of(request)
    if key is None:
        return
    handler = request.route_handler
    read_body: Callable[[Request[Any, Any, Any]], Awaitable[bytes]] | None = handler.opt.get(READ_BODY)
    if read_body is not None:
        body = await read_body(request)
    elif _takes_body(handler):
        body = await request.body()
    else:
        # Left unread, as without a key. Read for the fingerprint alone, a body the route ignores
        # made the key turn its answer into a 413 (too large) or a 408 (too slow), which an
        # operation without a body does not document; nor does a body tell its requests apart.
        body = b""
    line, fingerprint = _fingerprint(request, body)
    settings: Settings = request.app.state.settings
    try:
        row = await db.fetchrow(
            _CLAIM,
            key,
            line,
            fingerprint,
            now,
            dt.timedelta(seconds=settings.idempotency_ttl_s),
            max(1, round(settings.idempotency_wait_s * 1000)),
            # The wait is the lock's: the pool's command timeout must not cut it short into a 500
            # when METREG_IDEMPOTENCY_WAIT is longer.
            timeout=settings.idempotency_wait_s + _MARGIN_S,
        )
    except asyncpg.LockNotAvailableError:
        raise IdempotencyKeyBusyError.for_field(
            HEADER, "a request with this key is still running: retry once it has finished"
        ) from None
    assert row is not None
    if row["claimed"]:
        await db.execute(f"SAVEPOINT {_SAVEPOINT}")
        exchange.claim = _Claim(db, key, handler)
        return
    stored = msgspec.convert(dict(row), _Stored)
    if stored.fingerprint != fingerprint:
        raise IdempotencyKeyReusedError.for_field(
            HEADER, f"this key was used for another request ({stored.request}); use a new key for a new request"
        )
    if stored.body is None:
        raise AnswerWithheldError.for_field(
            HEADER,
            f"this request was done at {stored.created_at.isoformat()} and answered {stored.status}; that answer "
            "held a secret shown only once, which is not kept: it cannot be repeated",
        )
    raise IdempotentReplay(stored)


async def after_request(response: Any) -> Any:
    """Write the answer into the request's claimed key, in its transaction, and send the same bytes.

    Raises:
        RuntimeError: an answer that cannot be kept whole (a stream, a file) or a server error, on a
            request holding a key: the request fails (500) and its transaction rolls back rather
            than commit an effect without its answer.
    """
    exchange = _current.get()
    if exchange is None or exchange.claim is None or exchange.claim.answered:
        return response
    handler = exchange.claim.handler
    if type(response) is not Response:
        raise RuntimeError(f"{handler.handler_name} answers with a {type(response).__name__}, which cannot be replayed")
    status = response.status_code or handler.status_code
    if status >= 500:
        raise RuntimeError(f"{handler.handler_name} returned a {status}: a server error must be raised")
    # As Response.to_asgi_response chooses: the response's, the handler's, else JSON.
    media_type = get_enum_string_value(response.media_type or handler.media_type or MediaType.JSON)
    body = response.render(response.content, media_type, get_serializer(handler.resolve_type_encoders()))
    headers = {name.lower(): str(value) for name, value in response.headers.items() if name.lower() in _KEPT_HEADERS}
    await exchange.claim.write(status, media_type, headers, body)
    response.content, response.status_code, response.media_type = body, status, media_type
    return response


async def keep_refusal(request: Request[Any, Any, Any], exc: MetregError) -> bool:
    """Make a 4xx the handler raised the answer of the request's key: the handler's work is rolled
    back to the claim and the problem document written. False when there is nothing to keep (no
    key, or not a 4xx): the caller then rolls everything back as usual.

    Should the database be lost while the refusal is written or committed, the request answers the
    503 of any outage (``service.problems``), not the refusal: the key is free for the retry, or,
    had the COMMIT gone through before the session ended, the retry gets the refusal."""
    exchange = _current.get()
    pending = exchange.claim if exchange is not None else None
    if pending is None or pending.answered or not 400 <= exc.status < 500:
        return False
    problem = domain_problem(request, exc)
    body = problem.render(problem.content, PROBLEM_MEDIA_TYPE)
    await pending.db.execute(f"ROLLBACK TO SAVEPOINT {_SAVEPOINT}")
    await pending.write(exc.status, PROBLEM_MEDIA_TYPE, {}, body)
    return True


def replay(request: Request[Any, Any, Any], exc: IdempotentReplay) -> Response[bytes]:
    """The exception handler of :class:`IdempotentReplay`: the answer as it was first sent."""
    stored = exc.stored
    assert stored.body is not None
    return Response(
        stored.body,
        status_code=stored.status,
        media_type=stored.media_type,
        headers={**stored.headers, REPLAYED_HEADER: "true"},
    )


async def purge_expired(db: asyncpg.Connection, now: dt.datetime, *, batch: int = 5000) -> int:
    """Delete the keys expired at ``now``, ``batch`` rows a statement (each its own transaction, so
    that no request waits long behind the purge); the count deleted.

    A row a request is claiming again meanwhile (its expired record renewed in place) is waited for
    and then kept: the outer condition is checked again on the row as that request left it.
    """
    total = 0
    while True:
        deleted: int = await db.fetchval(
            # By row address: an IN over the keys is planned as a semi-join over every expired row,
            # and each batch would read the whole backlog again (quadratic after the worker was down).
            """WITH gone AS (
                   DELETE FROM idempotency_keys
                   WHERE expires_at <= $1 AND ctid = ANY (ARRAY(
                       SELECT ctid FROM idempotency_keys WHERE expires_at <= $1 ORDER BY expires_at LIMIT $2))
                   RETURNING 1)
               SELECT count(*) FROM gone""",
            now,
            batch,
        )
        total += deleted
        if deleted < batch:
            return total


_PARAMETER = Parameter(
    name=HEADER,
    param_in=ParamType.HEADER,
    required=False,
    description="Makes a retry of this request safe: its first answer (status, body, `Location`, `ETag`) is kept "
    "for `METREG_IDEMPOTENCY_TTL` seconds (default a day) and sent again, with `Idempotent-Replayed: true`, "
    "to a request with the same key, method, path, query, `If-Match` and body (for an operation that takes one: "
    "one that takes none ignores any body, with a key as without) from the same API key, which does nothing "
    "again. Choose a new random key (a UUID) per request. The same key with another request is a 422; "
    "while the first is still running the second waits for it, up to `METREG_IDEMPOTENCY_WAIT` seconds, then "
    "gets a 409. The operation's refusals (4xx) are kept too; not kept, so that their retries run again: server "
    "errors (5xx), a body that fails validation or is over its size limit (413), an admin-only "
    "operation's 403, a 409 that asks to retry. An answer holding a secret shown once "
    "(a new API key, a calendar feed's URL, a webhook's signing secret) is not kept: its retry gets a 409.",
    schema=Schema(type=OpenAPIType.STRING, min_length=1, max_length=255, pattern=_KEY_PATTERN),
)


#: The headers the operations' answers refer to, for the app's OpenAPI components: described once
#: there rather than in each answer of each write.
OPENAPI_HEADERS: Final = {
    REPLAYED_HEADER: OpenAPIHeader(
        description="`true` on an answer sent again for a request with an `Idempotency-Key` already answered: the "
        "first answer as it was (status, body, `Location`, `ETag`), and nothing was done again. Absent otherwise.",
        schema=Schema(type=OpenAPIType.STRING, enum=["true"]),
    )
}
_REPLAYED = Reference(ref=f"#/components/headers/{REPLAYED_HEADER}")
# Refusals that come before the key is claimed on every route (authentication, a body too slow to
# arrive, rate limits), never kept.
_NEVER_KEPT = frozenset({401, 408, 429})


@dataclasses.dataclass
class IdempotentOperation(Operation):
    """The OpenAPI operation of a route that takes ``Idempotency-Key``: the header among its
    parameters, and ``Idempotent-Replayed`` on each answer that may be a kept one.

    :func:`prepare` fits each route with a subclass of its own that says what happens there."""

    #: Whether its successes are kept, and so may be replayed (not when they show a secret once).
    successes_replayed: ClassVar[bool] = True
    #: Its 4xx that never come from its handler, so are never kept and never replayed.
    never_kept: ClassVar[frozenset[int]] = _NEVER_KEPT

    def __post_init__(self) -> None:
        self.parameters = [*(self.parameters or []), _PARAMETER]
        self.responses = {
            status: dataclasses.replace(response, headers={**(response.headers or {}), REPLAYED_HEADER: _REPLAYED})
            if isinstance(response, OpenAPIResponse) and self._may_be_replayed(status)
            else response
            for status, response in (self.responses or {}).items()
        }

    def _may_be_replayed(self, status: str) -> bool:
        code = int(status) if status.isdigit() else 0
        return (200 <= code < 300 and self.successes_replayed) or (400 <= code < 500 and code not in self.never_kept)


def _never_kept(handler: HTTPRouteHandler, parameters: set[str]) -> frozenset[int]:
    """The 4xx of ``handler``'s route that are never its handler's, so never kept:

    - 413 where Litestar's body limit reads the body: its refusal is Litestar's, raised while the
      body is read for the key's fingerprint, and rolls the claim back. A route that reads its body
      itself (``READ_BODY``, the import) refuses with its own 413 too (too many rows), which is kept.
    - 403 of an admin-only route (``admin``): ``provide_admin`` refuses while the dependencies are
      resolved, before Litestar holds them for cleanup, so ``service.db.provide_db`` is never handed
      the refusal: its generator is closed as it is let go, and the claim rolls back with the rest.
      No such handler refuses with a 403 of its own.
    """
    never = set(_NEVER_KEPT)
    if READ_BODY not in handler.opt:
        never.add(413)
    if "admin" in parameters:
        never.add(403)
    return frozenset(never)


def prepare(handlers: Iterable[HTTPRouteHandler]) -> None:
    """Fit every POST and PATCH handler of the authenticated API for Idempotency-Key, or refuse to start.

    Each must authenticate on the request's transaction (``principal`` or ``admin``, never a
    connection of its own: its own transactions could commit without the key's answer) and have a
    bounded body (Litestar's limit, or ``opt[READ_BODY]``). Its OpenAPI entry gains the header, the
    answers it may cause, and ``Idempotent-Replayed`` on the answers that may be replayed.
    """
    for handler in handlers:
        if not handler.http_methods & _WRITES:
            continue
        where = f"{handler.handler_name} ({', '.join(sorted(handler.http_methods))})"
        parameters = set(handler.parsed_fn_signature.parameters)
        if not parameters & {"principal", "admin"} or parameters & {"conn", "reader"}:
            raise RuntimeError(
                f"{where} takes Idempotency-Key: it must authenticate with principal or admin and write "
                "through db, in the request's one transaction"
            )
        if handler.resolve_request_max_body_size() is None and READ_BODY not in handler.opt:
            raise RuntimeError(f"{where} reads an unbounded body: declare how it reads it, opt={{READ_BODY: …}}")
        shown_once = bool(handler.opt.get(SHOWN_ONCE))
        # The class the route declares (fitted once already if another app was made of this handler).
        declared = vars(handler.operation_class).get("_declared", handler.operation_class)
        base = IdempotentOperation if declared is Operation else declared
        if not issubclass(base, IdempotentOperation):
            raise RuntimeError(f"{where} has an OpenAPI operation class that does not derive from IdempotentOperation")
        # The route's own: its successes are kept unless they show a secret once.
        handler.operation_class = type(
            base.__name__,
            (base,),
            {
                "__module__": base.__module__,
                "_declared": declared,
                "successes_replayed": base.successes_replayed and not shown_once,
                "never_kept": _never_kept(handler, parameters),
            },
        )
        handler.responses = with_idempotency_responses(handler.responses, shown_once=shown_once)
