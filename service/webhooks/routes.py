"""``/v1/webhooks``: where an enterprise (or a regulator's region) wants its notices delivered."""

from __future__ import annotations

import secrets
import uuid

import msgspec
from litestar import Controller, Response, delete, get, post
from litestar.params import FromPath, JSONBody

from service.auth import Principal, Role, refuse_labs
from service.db import Connection
from service.deliveries.payload import Ping
from service.deliveries.rules import Outcome
from service.deliveries.webhook import WebhookCall, new_http_client, post_webhook
from service.deps import ClockDep, Db, PrincipalDep, SettingsDep
from service.enterprises.access import writable_enterprise
from service.errors import InvalidInputError, NotFoundError, RuleViolationError
from service.idempotency import SHOWN_ONCE
from service.policy import Actor, access
from service.problems import problem_responses
from service.webhooks.queries import deactivate_webhook, insert_webhook, select_webhook_target, select_webhooks
from service.webhooks.rules import url_problem
from service.webhooks.schemas import PingResult, Webhook, WebhookCreate, WebhookCreated

__all__ = ("WebhookController",)


async def _owner(db: Connection, principal: Principal, data: WebhookCreate) -> tuple[uuid.UUID | None, str | None]:
    """The new webhook's owner: the caller's enterprise or region; an admin names one."""
    refuse_labs(principal, "webhooks")
    if principal.role is Role.ADMIN:
        if (data.enterprise_id is None) == (data.region_code is None):
            raise InvalidInputError.for_field(
                "enterprise_id", "an admin names exactly one owner: enterprise_id or region_code"
            )
        if data.enterprise_id is not None:
            await writable_enterprise(db, principal, data.enterprise_id, lock="share")
        return data.enterprise_id, data.region_code
    if data.enterprise_id is not None or data.region_code is not None:
        raise InvalidInputError.for_field("enterprise_id", "is implied by the key: omit enterprise_id and region_code")
    if principal.role is Role.ENTERPRISE:
        return principal.enterprise_id, None
    return None, principal.region_code


class WebhookController(Controller):
    path = "/webhooks"
    tags = ["Webhooks"]

    @post(
        operation_id="CreateWebhook",
        # Its answer holds the signing secret, shown once: not kept for a retry to see again.
        opt=access(Actor.ADMIN, Actor.OWNER, Actor.OTHER_ENTERPRISE, Actor.REGULATOR, Actor.OTHER_REGULATOR)
        | {SHOWN_ONCE: True},
        summary="Register a webhook",
        description="For the caller's enterprise (enterprise key) or region (regulator key); admins name "
        "`enterprise_id` or `region_code`. https only, and no loopback, link-local or private address "
        "(unless the server runs with METREG_ALLOW_PRIVATE_WEBHOOKS=true). Every call carries "
        "`Metreg-Signature: t=<unix>,v1=<hex HMAC-SHA256 of 't.body'>` made with the `secret`, which is "
        "returned here once. An owner has one active webhook per URL: a second at a URL it already has is a "
        "409 naming `url` and the webhook there (delete that one first to replace it). Different owners may "
        "share a URL; each of their webhooks gets its own deliveries, signed with its own secret.",
        responses=problem_responses(400, 401, 403, 404, 409, 413, 422),
    )
    async def create_webhook(
        self,
        db: Db,
        clock: ClockDep,
        settings: SettingsDep,
        principal: PrincipalDep,
        data: JSONBody[WebhookCreate],
    ) -> Response[WebhookCreated]:
        enterprise_id, region_code = await _owner(db, principal, data)
        url = data.url.strip()
        if why := url_problem(url, allow_private=settings.allow_private_webhooks):
            raise RuleViolationError.for_field("url", why)
        secret = data.secret or f"whsec_{secrets.token_urlsafe(32)}"
        webhook = await insert_webhook(
            db,
            enterprise_id=enterprise_id,
            region_code=region_code,
            url=url,
            events=sorted(set(data.events)),
            secret=secret,
            now=clock.now(),
        )
        return Response(WebhookCreated(webhook=webhook, secret=secret), status_code=201)

    @get(
        operation_id="ListWebhooks",
        opt=access(Actor.ADMIN, Actor.OWNER),
        summary="List webhooks",
        description="The caller's active webhooks (its enterprise's or its region's; admins: all). Secrets "
        "are never shown again.",
        responses=problem_responses(401, 403),
    )
    async def list_webhooks(self, db: Db, principal: PrincipalDep) -> list[Webhook]:
        refuse_labs(principal, "webhooks")
        return await select_webhooks(db, principal)

    @post(
        "/{webhook_id:str}/ping",
        operation_id="PingWebhook",
        opt=access(Actor.ADMIN, Actor.OWNER),
        summary="Send a test call to a webhook",
        description='Sends `{"kind": "ping", "webhook_id", "sent_at"}` signed like every notice '
        "(`Metreg-Event: ping`) and answers how it went: `delivered` (a 2xx), the status code or error, and "
        "the time it took. Nothing is retried or recorded.",
        status_code=200,
        responses=problem_responses(400, 401, 403, 404),
    )
    async def ping_webhook(
        self,
        db: Db,
        clock: ClockDep,
        settings: SettingsDep,
        principal: PrincipalDep,
        webhook_id: FromPath[uuid.UUID],
    ) -> PingResult:
        refuse_labs(principal, "webhooks")
        target = await select_webhook_target(db, principal, webhook_id)
        if target is None:
            raise NotFoundError(f"webhook {webhook_id} not found")
        url, secret = target
        now = clock.now()
        body = msgspec.json.encode(Ping(kind="ping", webhook_id=webhook_id, sent_at=now))
        async with new_http_client(settings.send_timeout_s) as client:
            call = WebhookCall(
                url=url,
                secret=secret,
                event="ping",
                delivery_id=f"ping-{uuid.uuid4()}",
                body=body,
                timestamp=int(now.timestamp()),
            )
            sent = await post_webhook(
                client, call, allow_private=settings.allow_private_webhooks, deadline_s=settings.send_timeout_s
            )
        return PingResult(
            delivered=sent.outcome is Outcome.DELIVERED,
            status_code=sent.status_code,
            error=sent.error,
            duration_ms=sent.duration_ms,
        )

    @delete(
        "/{webhook_id:str}",
        operation_id="DeleteWebhook",
        opt=access(Actor.ADMIN, Actor.OWNER),
        summary="Delete a webhook",
        description="It is called no more; deliveries already made stay visible on their notices.",
        responses=problem_responses(400, 401, 403, 404),
    )
    async def delete_webhook(
        self, db: Db, clock: ClockDep, principal: PrincipalDep, webhook_id: FromPath[uuid.UUID]
    ) -> None:
        refuse_labs(principal, "webhooks")
        if not await deactivate_webhook(db, principal, webhook_id, clock.now()):
            raise NotFoundError(f"webhook {webhook_id} not found")
