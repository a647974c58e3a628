"""``/v1/api-keys``: admins mint, list and revoke keys; a key may read the keys of its own scope
and rotate itself (the new key has no more power or life than the old one)."""

from __future__ import annotations

import uuid
from typing import Annotated

from litestar import Controller, delete, get, post
from litestar.params import FromPath, JSONBody, QueryParameter

from service.auth import Principal, Role
from service.deps import AdminDep, ClockDep, Db, PrincipalDep
from service.errors import NotFoundError
from service.idempotency import SHOWN_ONCE
from service.keys.queries import create_key, revoke_key, rotate_key, select_key, select_keys
from service.keys.schemas import ApiKey, ApiKeyCreate, ApiKeyRotation, CreatedApiKey
from service.pagination import Cursor, Limit, Page
from service.policy import Actor, access
from service.problems import problem_responses

__all__ = ("ApiKeyController",)


async def _same_scope(db: Db, principal: Principal, key_id: uuid.UUID) -> ApiKey:
    """The key, if the caller is an admin or a key of the same role and scope (the same enterprise,
    lab or region); any other caller is told it does not exist."""
    found = await select_key(db, key_id)
    if found is None or not (principal.is_admin or _scope(principal) == _scope(found)):
        raise NotFoundError(f"API key {key_id} not found")
    return found


def _scope(key: Principal | ApiKey) -> tuple[object, ...]:
    return key.role, key.enterprise_id, key.lab_id, key.region_code


class ApiKeyController(Controller):
    path = "/api-keys"
    tags = ["API keys"]

    @post(
        operation_id="CreateApiKey",
        summary="Create an API key",
        description="Admin only. The response's `key` is the secret: it is shown this once and only its "
        "hash is stored. `expires_at` (optional) ends it by itself.",
        responses=problem_responses(400, 401, 403, 413, 422),
        # The key is shown once and only its hash kept: an Idempotency-Key keeps this answer's status only.
        opt=access(Actor.ADMIN) | {SHOWN_ONCE: True},
    )
    async def create_api_key(
        self,
        db: Db,
        clock: ClockDep,
        admin: AdminDep,
        data: JSONBody[ApiKeyCreate],
    ) -> CreatedApiKey:
        return await create_key(db, data, clock.now())

    @get(
        operation_id="ListApiKeys",
        summary="List API keys",
        description="Admin only. Newest first, with when each was last used (to the minute), when it "
        "ends and what replaced it; never a secret. `active=true` keeps the keys that work now.",
        responses=problem_responses(400, 401, 403),
        opt=access(Actor.ADMIN),
    )
    async def list_api_keys(
        self,
        db: Db,
        clock: ClockDep,
        admin: AdminDep,
        role: Annotated[Role | None, QueryParameter()] = None,
        enterprise_id: Annotated[uuid.UUID | None, QueryParameter()] = None,
        lab_id: Annotated[uuid.UUID | None, QueryParameter()] = None,
        active: Annotated[bool, QueryParameter(description="Only keys that work now.")] = False,
        limit: Limit = 50,
        cursor: Cursor = None,
    ) -> Page[ApiKey]:
        items, next_cursor = await select_keys(
            db,
            role=role,
            enterprise_id=enterprise_id,
            lab_id=lab_id,
            active_at=clock.now() if active else None,
            limit=limit,
            cursor=cursor,
        )
        return Page(items=items, next_cursor=next_cursor)

    @get(
        "/{key_id:str}",
        operation_id="GetApiKey",
        summary="An API key",
        description="An admin, or a key of the same role and scope (the same enterprise, lab or "
        "region): to see when it was last used, when it ends and what replaced it.",
        responses=problem_responses(400, 401, 404),
        opt=access(Actor.ADMIN, Actor.OWNER),
    )
    async def get_api_key(self, db: Db, principal: PrincipalDep, key_id: FromPath[uuid.UUID]) -> ApiKey:
        return await _same_scope(db, principal, key_id)

    @post(
        "/{key_id:str}/rotate",
        operation_id="RotateApiKey",
        summary="Rotate an API key",
        description="An admin, or the key itself. Answers a new key of the same role, "
        "scope and name (its `key` shown this once); the old key keeps working for `grace_seconds` "
        "(default 86400, at most 30 days, 0: ends now) and then stops, so that its users can switch "
        "without an outage. The new key ends when the old one would have (or at `expires_at`, which "
        "only an admin may set later than that). A revoked, expired or already rotated key is a 409.",
        responses=problem_responses(400, 401, 404, 409, 413, 422),
        status_code=201,
        # The key itself may too: a caller the vocabulary has no name for (the matrix holds the rest).
        opt=access(Actor.ADMIN) | {SHOWN_ONCE: True},
    )
    async def rotate_api_key(
        self,
        db: Db,
        clock: ClockDep,
        principal: PrincipalDep,
        key_id: FromPath[uuid.UUID],
        data: JSONBody[ApiKeyRotation | None] = None,
    ) -> CreatedApiKey:
        # Not even a sibling: a leaked key must not be able to take its successor over.
        old = (
            await select_key(db, key_id, for_update=True) if principal.is_admin or principal.key_id == key_id else None
        )
        if old is None:
            raise NotFoundError(f"API key {key_id} not found")
        return await rotate_key(db, old, data or ApiKeyRotation(), clock.now(), extend=principal.is_admin)

    @delete(
        "/{key_id:str}",
        operation_id="RevokeApiKey",
        summary="Revoke an API key",
        description="Admin only. The key stops working at once, whatever its grace period, and so do the keys "
        "it was rotated to (of its own role and scope); revoking twice is harmless.",
        responses=problem_responses(400, 401, 403, 404),
        opt=access(Actor.ADMIN),
    )
    async def revoke_api_key(
        self,
        db: Db,
        clock: ClockDep,
        admin: AdminDep,
        key_id: FromPath[uuid.UUID],
    ) -> None:
        if await revoke_key(db, key_id, clock.now()) is None:
            raise NotFoundError(f"API key {key_id} not found")
