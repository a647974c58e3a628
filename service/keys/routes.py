"""``/v1/api-keys``: admins mint and revoke keys."""

from __future__ import annotations

import uuid

from litestar import Controller, delete, post
from litestar.params import FromPath, JSONBody

from service.deps import AdminDep, ClockDep, Db
from service.errors import NotFoundError
from service.keys.queries import create_key, revoke_key
from service.keys.schemas import ApiKeyCreate, CreatedApiKey
from service.policy import Actor, access
from service.problems import problem_responses

__all__ = ("ApiKeyController",)


class ApiKeyController(Controller):
    path = "/api-keys"
    tags = ["API keys"]

    @post(
        operation_id="CreateApiKey",
        opt=access(Actor.ADMIN),
        summary="Create an API key",
        description="Admin only. The response's `key` is the secret: it is shown this once and only its "
        "hash is stored.",
        responses=problem_responses(400, 401, 403, 413, 422),
    )
    async def create_api_key(
        self,
        db: Db,
        clock: ClockDep,
        admin: AdminDep,
        data: JSONBody[ApiKeyCreate],
    ) -> CreatedApiKey:
        return await create_key(db, data, clock.now())

    @delete(
        "/{key_id:str}",
        operation_id="RevokeApiKey",
        opt=access(Actor.ADMIN),
        summary="Revoke an API key",
        description="Admin only. The key stops working at once; revoking twice is harmless.",
        responses=problem_responses(400, 401, 403, 404),
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
