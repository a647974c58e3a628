"""``create_app(settings)``: every piece of the HTTP service wired in one place."""

from __future__ import annotations

import gc
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import cast

import asyncpg
import msgspec
import redis.asyncio as aioredis
from litestar import Litestar, Router, get
from litestar.datastructures import State
from litestar.enums import ScopeType
from litestar.handlers import HTTPRouteHandler
from litestar.openapi import OpenAPIConfig, ResponseSpec
from litestar.openapi.plugins import ScalarRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme
from litestar.response import Response
from litestar.routes import HTTPRoute
from litestar.types import (
    HTTPResponseStartEvent,
    HTTPScope,
    LifeSpanReceive,
    LifeSpanScope,
    LifeSpanSend,
    Message,
    Receive,
    Scope,
    Send,
)

from service.audit.routes import AuditController
from service.auth import bearer_token, parse_key
from service.calendars.routes import (
    FEED_PATH,
    CalendarFeedController,
    CalendarFeedReadController,
    EnterpriseCalendarFeedController,
)
from service.catalog.routes import CatalogController
from service.certificates.routes import (
    CertificateController,
    InstrumentCertificateController,
    PublicCertificateController,
)
from service.clock import Clock, SystemClock
from service.db import FairPool, create_pool
from service.deliveries.routes import DeliveryController
from service.deps import dependencies
from service.enterprises.routes import EnterpriseController
from service.errors import UnavailableError
from service.history.routes import HistoryController
from service.idempotency import OPENAPI_HEADERS, IdempotentReplay, after_request, before_request, prepare, replay
from service.instruments.routes import EnterpriseInstrumentController, InstrumentController
from service.keys.routes import ApiKeyController
from service.labs.routes import LabController
from service.ledger.export_routes import LedgerExportController
from service.ledger.routes import ImportController, LedgerImportController
from service.lifecycle.routes import LifecycleController
from service.limits import RateLimiter, receive_in_time
from service.logs import configure_logging, logged_path, request_id_var
from service.negotiation import VARY_STATE, with_vary
from service.notices.routes import NoticeController
from service.policy import Access
from service.problems import PROBLEM_MEDIA_TYPE, exception_handlers, problem_body
from service.requests.routes import VerificationRequestController
from service.settings import Settings
from service.webhooks.routes import WebhookController

__all__ = ("MetregApp", "create_app", "guarded_handlers")

log = logging.getLogger("metreg.access")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# "reader" authenticates too: the only read it offers is the authenticated one.
_AUTHENTICATED = frozenset({"principal", "admin", "reader"})
_SLASHES = re.compile(r"/{2,}")
# Routes that take no key, limited per client address instead: path prefix -> bucket name.
_KEYLESS = (("/v1/public/", "address"), (f"{FEED_PATH}/", "calendar"))

API_DESCRIPTION = """\
The legal register of measuring instruments: what each instrument is, whether it may be used today
and until when, and why.

Authenticate with `Authorization: Bearer mr_…` (the certificate check under `/v1/public` needs no
key, nor do calendar feeds under `/v1/calendar`, whose secret token is in their URL). Roles:
`admin` (everything; the only role that creates enterprises, labs and keys), `enterprise` (one
enterprise's register, settings, verification requests, lifecycle actions and calendar feeds),
`lab` (its lab record, the requests addressed to it and their instruments; records results),
`regulator` (reads every enterprise whose region code starts with its prefix; records in-service
inspections and revokes certificates). A resource outside the key's scope answers 404, an action
its role may not take 403. Keys may end by themselves (`expires_at`) and may be rotated
(`POST /v1/api-keys/{id}/rotate`: the old key keeps working for a grace period). Every change is
recorded in a hash-chained audit trail (`GET /v1/audit`).

Errors are RFC 9457 `application/problem+json` with a `request_id` and, for input errors, an
`errors` list naming each field: 400 malformed, 408 a body that arrived too slowly, 409 conflict
(duplicate, stale `version`, or a state change the current state does not allow, with `allowed`
listing those it does), 413 too large, 422 a legal or domain rule broken, 429 too many requests for
the key (or, for the public check and calendar feeds, the address): wait `Retry-After` seconds;
503 the database is not reachable for a moment (a restart, a failover): retry after `Retry-After`
seconds. Send `X-Request-ID` to choose the id; every response carries it. Lists are keyset-paged:
`limit` (1–500, default 50), and `cursor` = the previous page's `next_cursor` (null on the last
page). Dates are `YYYY-MM-DD` local dates of the enterprise; instants are RFC 3339 UTC.

Every POST and PATCH takes an optional `Idempotency-Key` header: the first answer to a request with
it is kept (a day by default) and sent again, with `Idempotent-Replayed: true`, to a retry with the
same key and request from the same API key, which changes nothing. The same key with another request
is a 422; a retry while the first still runs waits for it, then replays, or answers 409. Server errors
(5xx) are not kept. Answers holding a secret shown once (a new API key, a calendar feed's URL) are not
kept either: their retries get a 409.

An instrument's `status` is one of valid, due_soon, overdue, failed, sealed, scrapped, replaced,
pending_verification, unverified, computed for the enterprise's local today (or `as_of`).
"""


# On every answer. The API serves JSON to programs: nothing may be framed, sniffed as another type,
# cached by a shared cache, or leak the URL onwards. The docs page loads its viewer's scripts, so
# it goes without the content policy that forbids them.
_SECURITY_HEADERS: tuple[tuple[str, str], ...] = (
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    ("Strict-Transport-Security", "max-age=31536000; includeSubDomains"),
    ("Cross-Origin-Resource-Policy", "same-origin"),
)
_API_ONLY_HEADERS: tuple[tuple[str, str], ...] = (
    ("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'"),
    ("Cache-Control", "no-store"),
)
# As ASGI carries them: lower-case names, bytes.
_SECURITY_RAW = tuple((name.lower().encode(), value.encode()) for name, value in _SECURITY_HEADERS)
_API_RAW = _SECURITY_RAW + tuple((name.lower().encode(), value.encode()) for name, value in _API_ONLY_HEADERS)


class MetregApp(Litestar):
    """Litestar with what every HTTP exchange gets at the door: a request id, security headers,
    rate limits, a bound on slow request bodies, and an access line.

    This lives at the ASGI entry point rather than in middleware because Litestar answers unknown
    routes (404) and wrong methods (405) before its middleware runs, and those answers need a
    request id too; and a refused request should cost no routing, no connection and no parsing.
    """

    async def __call__(
        self,
        scope: Scope | LifeSpanScope,
        receive: Receive | LifeSpanReceive,
        send: Send | LifeSpanSend,
    ) -> None:
        if scope["type"] != ScopeType.HTTP:
            await super().__call__(scope, receive, send)
            return
        http_send = cast(Send, send)
        scope = cast(HTTPScope, scope)
        incoming = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"x-request-id"), "")
        request_id = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status = 500
        extra_headers = _SECURITY_RAW if scope["path"].startswith("/docs") else _API_RAW

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                # One pass over the raw headers: MutableScopeHeaders.setdefault decodes and scans them
                # all for each name, ~0.1 ms a response (make bench, "Instrument read").
                headers = [(k, v) for k, v in message.get("headers", ()) if k.lower() != b"x-request-id"]
                if vary := scope["state"].get(VARY_STATE):
                    headers = with_vary(headers, vary)
                present = {k.lower() for k, _ in headers}
                headers.append((b"x-request-id", request_id.encode("latin-1")))
                headers.extend(h for h in extra_headers if h[0] not in present)
                message["headers"] = headers
            await http_send(message)

        try:
            wait = await self._rate_limited(scope)
            if wait is not None:
                await _answer_429(send_with_id, request_id, wait)
                return
            settings: Settings = self.state.settings
            bounded = receive_in_time(cast(Receive, receive), settings.client_timeout_s)
            await super().__call__(scope, bounded, send_with_id)
        finally:
            log.info(
                "%s %s %s",
                scope["method"],
                logged_path(scope["path"]),
                status,
                extra={"status": status, "duration_ms": round((time.perf_counter() - started) * 1000, 2)},
            )
            request_id_var.reset(token)

    async def _rate_limited(self, scope: HTTPScope) -> int | None:
        """Seconds to wait when the request's key (or, for the public check and calendar feeds, its
        address) has used up its bucket; None otherwise. Requests without a well-formed key are not counted: they
        are refused before any query runs."""
        limiter: RateLimiter | None = getattr(self.state, "limiter", None)
        if limiter is None:
            return None
        settings: Settings = self.state.settings
        path = _SLASHES.sub("/", scope["path"])  # routing treats // as /, so must the limits
        keyless = next((bucket for prefix, bucket in _KEYLESS if path.startswith(prefix)), None)
        if keyless is not None:
            if settings.public_rate_limit <= 0:
                return None
            client = scope.get("client")
            address = client[0] if client else "unknown"
            rate, burst = settings.public_rate_limit, settings.public_rate_burst
            return await limiter.retry_after(f"{keyless}:{address}", rate, burst)
        if not path.startswith("/v1/") or settings.rate_limit <= 0:
            return None
        header = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"authorization"), "")
        token = bearer_token(header)
        parsed = parse_key(token) if token else None
        if parsed is None:
            return None
        return await limiter.retry_after(f"key:{parsed[0]}", settings.rate_limit, settings.rate_burst)


async def _answer_429(send: Send, request_id: str, wait: int) -> None:
    body = problem_body(429, f"too many requests: retry in {wait} s", request_id)
    start: HTTPResponseStartEvent = {
        "type": "http.response.start",
        "status": 429,
        "headers": [
            (b"content-type", PROBLEM_MEDIA_TYPE.encode()),
            (b"content-length", str(len(body)).encode()),
            (b"retry-after", str(wait).encode()),
        ],
    }
    await send(start)
    await send({"type": "http.response.body", "body": body, "more_body": False})


class Health(msgspec.Struct, frozen=True, kw_only=True):
    status: str
    checks: dict[str, str] = msgspec.field(default_factory=dict)


@get("/healthz", operation_id="Healthz", summary="Process is alive", tags=["Operations"], opt={"public": True})
async def healthz() -> Health:
    return Health(status="ok")


@get(
    "/readyz",
    operation_id="Readyz",
    summary="PostgreSQL and Redis answer",
    description="503 while either does not; load balancers should stop routing here until it is 200.",
    responses={503: ResponseSpec(data_container=Health, description="PostgreSQL or Redis does not answer.")},
    tags=["Operations"],
    opt={"public": True},
)
async def readyz(state: State) -> Response[Health]:
    checks: dict[str, str] = {}
    try:
        async with state.db_pool.acquire(wait_s=2) as conn:
            await conn.fetchval("SELECT 1", timeout=2)
        checks["postgresql"] = "ok"
    except UnavailableError as exc:
        checks["postgresql"] = f"unavailable: {type(exc.__cause__).__name__}"
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        checks["postgresql"] = f"unavailable: {type(exc).__name__}"
    try:
        await state.redis.ping()
        checks["redis"] = "ok"
    except (OSError, TimeoutError, aioredis.RedisError) as exc:
        checks["redis"] = f"unavailable: {type(exc).__name__}"
    ready = all(v == "ok" for v in checks.values())
    return Response(Health(status="ok" if ready else "unavailable", checks=checks), status_code=200 if ready else 503)


def guarded_handlers(app: Litestar) -> Iterator[tuple[HTTPRoute, HTTPRouteHandler]]:
    """Every HTTP handler that must authenticate and declare its callers, with its route: all but
    the OpenAPI document and its viewer, the public ones, and Litestar's automatic OPTIONS answers
    (no data)."""
    for route in app.routes:
        if not isinstance(route, HTTPRoute) or route.path.startswith("/docs"):
            continue
        for handler in route.route_handlers:
            if handler.opt.get("public") or handler.http_methods == {"OPTIONS"}:
                continue
            yield route, handler


def _require_authentication(app: Litestar) -> None:
    """Refuse to start when a route neither authenticates nor declares itself public, or does not
    declare who may call it.

    Authentication is a dependency (it shares the request's connection and transaction), so a
    handler that forgets to ask for ``principal`` would be open to anyone; this makes that a
    start-up error instead. Every authenticated handler also declares its callers
    (``opt=access(...)``, ``service.policy``), which the isolation matrix test holds it to.
    """
    for route, handler in guarded_handlers(app):
        if not set(handler.parsed_fn_signature.parameters) & _AUTHENTICATED:
            raise RuntimeError(f"{handler.handler_name} at {route.path} neither authenticates nor is public")
        if not isinstance(handler.opt.get("access"), Access):
            raise RuntimeError(
                f"{handler.handler_name} at {route.path} declares no access policy: "
                "add opt=access(Actor.…) (service.policy) to its decorator, or opt={'public': True}"
            )


def create_app(settings: Settings | None = None, *, clock: Clock | None = None) -> Litestar:
    """Build the HTTP service from ``settings`` (default: the environment) and ``clock``."""
    settings = settings or Settings.from_env()
    clock = clock or SystemClock()
    configure_logging(settings.log_level, settings.log_format)

    @asynccontextmanager
    async def resources(app: Litestar) -> AsyncIterator[None]:
        app.state.clock = clock
        app.state.settings = settings
        app.state.db_pool = FairPool(await create_pool(settings))
        app.state.redis = aioredis.from_url(  # type: ignore[no-untyped-call]  # untyped in redis-py 5
            settings.redis_url, socket_timeout=2, socket_connect_timeout=2
        )
        app.state.limiter = RateLimiter(app.state.redis, clock, f"{settings.queue_name}:rate")
        # What it took to start (modules, routes, the app: ~90,000 objects) lives as long as the
        # app, yet each full collection scanned it again, and requests in flight (a register page's
        # rows) bring one on every few hundred requests: ~45 ms each, ~0.15 ms of CPU a request on
        # the bench's list. Frozen, a full collection scans only what requests made. Thawed on the
        # way out, so that an app stopped in a longer-lived process (tests) leaves nothing behind.
        gc.freeze()
        try:
            yield
        finally:
            gc.unfreeze()
            await app.state.redis.aclose()
            await app.state.db_pool.close()

    api = Router(
        path="/v1",
        route_handlers=[
            CatalogController,
            EnterpriseController,
            LabController,
            ApiKeyController,
            EnterpriseInstrumentController,
            InstrumentController,
            LifecycleController,
            HistoryController,
            VerificationRequestController,
            InstrumentCertificateController,
            CertificateController,
            NoticeController,
            WebhookController,
            DeliveryController,
            AuditController,
            LedgerImportController,
            LedgerExportController,
            ImportController,
            EnterpriseCalendarFeedController,
            CalendarFeedController,
        ],
        security=[{"bearer": []}],
        # Idempotency-Key (service.idempotency): a write claims its key as it authenticates; these
        # hooks carry the answer into the key's row, and the replay of a key's answer is sent here.
        before_request=before_request,
        after_request=after_request,
        exception_handlers={IdempotentReplay: replay},
    )
    # Outside the bearer-secured router: anyone holding a QR label may check it.
    public = Router(path="/v1/public", route_handlers=[PublicCertificateController])
    # Outside it too: calendar apps send no key, the feed's token is in its URL.
    calendar = Router(path=FEED_PATH, route_handlers=[CalendarFeedReadController])
    app = MetregApp(
        route_handlers=[healthz, readyz, api, public, calendar],
        dependencies=dependencies(),
        exception_handlers=exception_handlers(),
        lifespan=[resources],
        request_max_body_size=settings.max_body_bytes,
        logging_config=None,
        openapi_config=OpenAPIConfig(
            title="metreg",
            version="1",
            description=API_DESCRIPTION,
            path="/docs",
            render_plugins=[ScalarRenderPlugin(version="1.25.11", path="/")],
            components=Components(
                security_schemes={
                    "bearer": SecurityScheme(
                        type="http", scheme="bearer", description="An API key: `mr_<prefix>_<secret>`."
                    )
                },
                headers=dict(OPENAPI_HEADERS),
            ),
        ),
    )
    _require_authentication(app)
    prepare(handler for _, handler in guarded_handlers(app))
    return app
