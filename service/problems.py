"""Every error as RFC 9457 ``application/problem+json``, registered once on the app.

Domain errors (``service.errors``) map by their class; Litestar's own exceptions (validation,
malformed JSON, unknown route, wrong method, oversized body) are reshaped so that clients see one
format; database outages become 503; anything else is a 500 with a generic detail, and the
traceback goes to the log with the request id.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Iterator, Mapping
from typing import Any

import asyncpg
import msgspec
from litestar import Request
from litestar.exceptions import HTTPException, SerializationException, ValidationException
from litestar.openapi.datastructures import ResponseSpec
from litestar.response import Response
from litestar.types import ExceptionHandler, ExceptionHandlersMap

from service.errors import FieldError, MetregError, RowProblem, RowsRejectedError, TransitionError

__all__ = (
    "PROBLEM_MEDIA_TYPE",
    "RETRY_UNAVAILABLE_S",
    "Problem",
    "domain_problem",
    "exception_handlers",
    "problem_body",
    "problem_responses",
    "with_idempotency_responses",
)

PROBLEM_MEDIA_TYPE = "application/problem+json"
log = logging.getLogger("metreg.errors")

_PHRASES = {
    400: ("invalid-input", "Bad Request"),
    401: ("unauthorized", "Unauthorized"),
    403: ("forbidden", "Forbidden"),
    404: ("not-found", "Not Found"),
    405: ("method-not-allowed", "Method Not Allowed"),
    406: ("not-acceptable", "Not Acceptable"),
    408: ("request-timeout", "Request Timeout"),
    409: ("conflict", "Conflict"),
    413: ("payload-too-large", "Payload Too Large"),
    415: ("unsupported-media-type", "Unsupported Media Type"),
    422: ("rule-violation", "Unprocessable Content"),
    429: ("too-many-requests", "Too Many Requests"),
    500: ("internal", "Internal Server Error"),
    503: ("unavailable", "Service Unavailable"),
}


class Problem(msgspec.Struct, kw_only=True, omit_defaults=True):
    """An error, as RFC 9457 problem details."""

    type: str
    title: str
    status: int
    detail: str
    request_id: str | None = None
    errors: list[FieldError] = msgspec.field(default_factory=list)
    allowed: list[str] | None = None
    """For a refused state change (409): the actions the current state allows."""
    rows: list[RowProblem] | None = None
    """For a rejected table (an import): every problem, by row and column."""


def _document(
    status: int,
    detail: str,
    request_id: str | None,
    *,
    slug: str | None = None,
    errors: list[FieldError] | None = None,
    allowed: list[str] | None = None,
    rows: list[RowProblem] | None = None,
) -> Problem:
    default_slug, title = _PHRASES.get(status, ("error", "Error"))
    return Problem(
        type=f"urn:metreg:problem:{slug or default_slug}",
        title=title,
        status=status,
        detail=detail,
        request_id=request_id,
        errors=errors or [],
        allowed=allowed,
        rows=rows,
    )


def problem_body(status: int, detail: str, request_id: str | None) -> bytes:
    """A problem document for answers given before a request reaches a handler (rate limits)."""
    return msgspec.json.encode(_document(status, detail, request_id))


def _problem(
    request: Request[Any, Any, Any],
    status: int,
    detail: str,
    *,
    slug: str | None = None,
    errors: list[FieldError] | None = None,
    headers: dict[str, str] | None = None,
    allowed: list[str] | None = None,
    rows: list[RowProblem] | None = None,
) -> Response[Problem]:
    request_id = request.scope.get("state", {}).get("request_id")
    body = _document(status, detail, request_id, slug=slug, errors=errors, allowed=allowed, rows=rows)
    return Response(body, status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers)


def domain_problem(request: Request[Any, Any, Any], exc: MetregError) -> Response[Problem]:
    """The answer to a domain error (also what an ``Idempotency-Key`` keeps of a refusal)."""
    allowed = list(exc.allowed) if isinstance(exc, TransitionError) else None
    rows = list(exc.rows) if isinstance(exc, RowsRejectedError) else None
    headers = {"Retry-After": str(RETRY_UNAVAILABLE_S)} if exc.status == 503 else None
    return _problem(
        request,
        exc.status,
        exc.detail,
        slug=exc.slug,
        errors=list(exc.errors),
        allowed=allowed,
        rows=rows,
        headers=headers,
    )


_NAMED_FIELD = re.compile(r"(?:unknown|missing required) field `([^`]+)`")


def _field_errors(extra: Any) -> list[FieldError]:
    """Litestar's validation ``extra`` as field errors addressed by path.

    msgspec reports an unknown or missing field at the enclosing object (``items[0]``) and names the
    field in the message; the client wants the field itself (``items[0].serial_no``).
    """
    found: list[FieldError] = []
    for item in extra if isinstance(extra, list) else []:
        if not isinstance(item, dict):
            continue
        message = str(item.get("message", "invalid value"))
        key = str(item.get("key") or "")
        named = _NAMED_FIELD.search(message)
        if named:
            key = f"{key}.{named[1]}" if key and key != "data" else named[1]
        elif key == "data":
            key = "body"
        found.append(FieldError(field=key or "body", message=message))
    return found


def _on_http_exception(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Problem]:
    status = exc.status_code
    if status >= 500:
        return _on_internal(request, exc)
    if isinstance(exc, ValidationException):
        errors = _field_errors(exc.extra)
        detail = "; ".join(f"{e.field}: {e.message}" for e in errors) or str(exc.detail)
        return _problem(request, 400, detail, errors=errors)
    detail = str(exc.detail)
    if status == 404:
        detail = f"no resource at {request.method} {request.url.path}"
    elif status == 405:
        detail = f"{request.method} is not allowed on {request.url.path}"
    elif status == 413:
        limit = request.route_handler.resolve_request_max_body_size()
        detail = f"the request body is larger than the {limit} bytes this endpoint accepts"
    elif isinstance(exc.__cause__, SerializationException):
        detail = f"the request body is not valid JSON ({detail.removeprefix('JSON is malformed: ')})"
    headers = {k: v for k, v in (exc.headers or {}).items() if k.lower() == "allow"}
    return _problem(request, status, detail, headers=headers or None)


#: Seconds a client is asked to wait after a 503: the pool opens a fresh connection for every request
#: while the database is away, so the first request after it is back succeeds.
RETRY_UNAVAILABLE_S = 1


#: What a lost database looks like from here.
_UNAVAILABLE: tuple[type[Exception], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    # The server ends the session: shut down (fast), crashed, or pg_terminate_backend.
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    # asyncpg's protocol can be left mid-operation on a session the server ended while it was
    # idle in the pool ("cannot switch to state 15"): the same outage, seen one step later.
    asyncpg.InternalClientError,
    asyncpg.InterfaceError,
    ConnectionError,
)


def _on_unavailable(request: Request[Any, Any, Any], exc: Exception) -> Response[Problem]:
    log.warning("database unavailable: %s", type(exc).__name__)
    return _problem(
        request,
        503,
        "the database is not reachable; try again shortly",
        slug="unavailable",
        headers={"Retry-After": str(RETRY_UNAVAILABLE_S)},
    )


def _on_grouped(request: Request[Any, Any, Any], exc: ExceptionGroup[Exception]) -> Response[Problem]:
    """What failed while the dependencies were torn down after the handler raised: Litestar throws
    the handler's error into each generator and groups whatever else comes out, caused by the
    handler's error (``litestar/_kwargs/cleanup.py``), such as ``service.db.provide_db``'s COMMIT of
    a refusal kept for an ``Idempotency-Key`` or its ROLLBACK after a bug.

    One failure is answered as it would be alone: a lost database is the 503 of any outage (the
    commit may or may not have happened: the retry finds out), a deadlock or serialization failure
    the 409 that says to retry. Several that are all a lost database are one 503; anything else is
    a 500. The group holds only what the teardown raised: a bug of the handler's that caused it is
    logged here with its traceback, since the answer (a 503, a 409) says nothing of it."""
    leaves = list(_leaves(exc))
    handler = _handler_for(leaves[0]) if len(leaves) == 1 else None
    if handler is not None and handler is not _on_internal:
        response = handler(request, leaves[0])
    elif exc.split(_UNAVAILABLE)[1] is None:
        response = _on_unavailable(request, leaves[0])
    else:
        return _on_internal(request, exc)  # logged with its traceback, and so with what caused it
    for cause in _bugs_behind(exc):
        log.error("unhandled %s, then the transaction could not end", type(cause).__name__, exc_info=cause)
    return response


def _leaves(group: ExceptionGroup[Exception]) -> Iterator[Exception]:
    for inner in group.exceptions:
        if isinstance(inner, ExceptionGroup):
            yield from _leaves(inner)
        else:
            yield inner


def _bugs_behind(group: ExceptionGroup[Exception]) -> list[BaseException]:
    """The errors that caused ``group`` (its cause and context chain) that are answered by no mapping
    of their own: what would have been a 500 had the teardown gone well."""
    found: list[BaseException] = []
    seen: set[int] = set()
    cause = group.__cause__ or group.__context__
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if (
            not isinstance(cause, Exception)
            or _handler_for(cause) is _on_internal
            or (isinstance(cause, HTTPException) and cause.status_code >= 500)
        ):
            found.append(cause)
        cause = cause.__cause__ or cause.__context__
    return found


def _handler_for(exc: Exception) -> ExceptionHandler[Any]:
    """The handler :func:`exception_handlers` maps ``exc`` to, found by its class's MRO as Litestar
    finds one."""
    handlers = _handlers()
    return next((handlers[cls] for cls in type(exc).__mro__ if cls in handlers), _on_internal)


def _on_unique_violation(request: Request[Any, Any, Any], exc: asyncpg.UniqueViolationError) -> Response[Problem]:
    # Queries translate the violations they expect; this is the net under them.
    log.warning("unmapped unique violation on %s", exc.constraint_name)
    return _problem(request, 409, "the write conflicts with an existing record", slug="duplicate")


def _on_unstorable_text(request: Request[Any, Any, Any], exc: asyncpg.PostgresError) -> Response[Problem]:
    return _problem(request, 400, "the input holds a character that cannot be stored (such as NUL)")


def _on_concurrent_change(request: Request[Any, Any, Any], exc: asyncpg.PostgresError) -> Response[Problem]:
    log.warning("transaction aborted by a concurrent one: %s", type(exc).__name__)
    return _problem(request, 409, "a concurrent change got in the way; nothing was written, retry", slug="conflict")


def _on_internal(request: Request[Any, Any, Any], exc: Exception) -> Response[Problem]:
    log.error("unhandled %s", type(exc).__name__, exc_info=exc)
    return _problem(request, 500, "an unexpected error occurred; it has been logged with the request id")


def _handlers() -> dict[int | type[Exception], ExceptionHandler[Any]]:
    return {
        MetregError: domain_problem,
        HTTPException: _on_http_exception,
        asyncpg.UniqueViolationError: _on_unique_violation,
        asyncpg.CharacterNotInRepertoireError: _on_unstorable_text,
        asyncpg.UntranslatableCharacterError: _on_unstorable_text,
        asyncpg.DeadlockDetectedError: _on_concurrent_change,
        asyncpg.SerializationError: _on_concurrent_change,
        **dict.fromkeys(_UNAVAILABLE, _on_unavailable),
        ExceptionGroup: _on_grouped,
        Exception: _on_internal,
    }


def exception_handlers() -> ExceptionHandlersMap:
    """The app-level handlers (404/405 are raised before middleware: they must live on the app)."""
    return _handlers()


_DESCRIPTIONS = {
    400: "Malformed input: the `errors` list names each offending field.",
    401: "No API key, or a key that is unknown, expired or revoked.",
    403: "The key's role may not take this action.",
    404: "Not found, or outside the key's scope.",
    406: "None of the formats this operation writes is acceptable to the `Accept` header; `detail` lists them.",
    409: "Conflicts with the current state: a duplicate, a stale `version`, or a state change the current "
    "state does not allow (`allowed` then lists the actions it does).",
    408: "The request body arrived too slowly (`METREG_CLIENT_TIMEOUT`).",
    413: "The request body is too large (or, for an import, has too many rows); `detail` names the limit.",
    415: "The body is not of a type this operation reads; `detail` says which it reads.",
    422: "Well-formed input that breaks a legal or domain rule; `errors` names the field (for an import, "
    "`rows` lists every problem by row and column).",
    429: "Too many requests from this key (from this address, for the public check and calendar feeds): wait the "
    "`Retry-After` seconds.",
    503: "The database is not reachable for the moment (restarting, failing over): retry after the `Retry-After` "
    "seconds.",
}


def problem_responses(*statuses: int) -> dict[int, ResponseSpec]:
    """OpenAPI response entries for the error statuses an operation can return.

    Every operation may answer 429 (rate limits) and 503 (the database is away), and one that takes
    a body 408 (a slow client).
    """
    statuses = (*statuses, *((408,) if 413 in statuses else ()), 429, 503)
    return {
        status: ResponseSpec(
            data_container=Problem,
            description=_DESCRIPTIONS[status],
            media_type=PROBLEM_MEDIA_TYPE,
            generate_examples=False,
        )
        for status in statuses
    }


# What an operation that takes an Idempotency-Key may answer because of it (service.idempotency).
_IDEMPOTENCY_CLAUSES = {
    400: "an `Idempotency-Key` that is not 1–255 printable ASCII characters",
    409: "a request with the same `Idempotency-Key` still running (retry it later)",
    422: "an `Idempotency-Key` already used for another request (method, path, query, `If-Match` or body)",
}
_WITHHELD_CLAUSE = (
    "a request with the same `Idempotency-Key` still running (retry it later), or done already: its answer held "
    "a secret shown once, which is not kept, so it is not repeated"
)


def with_idempotency_responses(
    responses: Mapping[int, ResponseSpec] | None, *, shown_once: bool = False
) -> dict[int, ResponseSpec]:
    """``responses`` (an operation's, from :func:`problem_responses`) with the answers an
    ``Idempotency-Key`` adds: each status gains its clause, or its entry when it had none (once:
    applied again, it changes nothing). ``shown_once``: the operation's answer holds a secret
    shown once, so a retry's 409 may also mean that it was done already."""
    merged = dict(responses or {})
    for status, clause in (_IDEMPOTENCY_CLAUSES | ({409: _WITHHELD_CLAUSE} if shown_once else {})).items():
        spec = merged.get(status)
        if spec is not None and clause.lower() in spec.description.lower():
            continue
        if spec is None:
            merged[status] = ResponseSpec(
                data_container=Problem,
                description=f"{clause[0].upper()}{clause[1:]}.",
                media_type=PROBLEM_MEDIA_TYPE,
                generate_examples=False,
            )
        else:
            merged[status] = dataclasses.replace(spec, description=f"{spec.description.rstrip('.')}; or {clause}.")
    return dict(sorted(merged.items()))
