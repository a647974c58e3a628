"""``/v1/deliveries``: a failed delivery tried again once the receiver is fixed."""

from __future__ import annotations

import uuid

from litestar import Controller, post
from litestar.params import FromPath

from service.auth import refuse_labs
from service.deliveries.queries import reopen_delivery
from service.deps import ClockDep, Db, PrincipalDep
from service.errors import ConflictError, NotFoundError
from service.notices.queries import select_delivery
from service.notices.schemas import Delivery
from service.policy import Actor, access
from service.problems import problem_responses

__all__ = ("DeliveryController",)


class DeliveryController(Controller):
    path = "/deliveries"
    tags = ["Notices"]

    @post(
        "/{delivery_id:str}/retry",
        operation_id="RetryDelivery",
        opt=access(Actor.ADMIN, Actor.OWNER),
        summary="Try a delivery again",
        description="For a `failed` delivery (or a `pending` one, to try it now rather than at its next "
        "scheduled time): the worker tries it again within seconds with a fresh series of tries, and its "
        "notice is back in the outbox. A delivered one is a 409, as is one of a cancelled notice. Every "
        "attempt stays visible on the notice. Only the owner of the target may: an enterprise its webhooks and "
        "e-mails, a regulator the webhooks of its region (another owner's delivery is a 404).",
        status_code=202,
        responses=problem_responses(400, 401, 403, 404, 409),
    )
    async def retry_delivery(
        self, db: Db, clock: ClockDep, principal: PrincipalDep, delivery_id: FromPath[uuid.UUID]
    ) -> Delivery:
        refuse_labs(principal, "notices")
        found = await select_delivery(db, principal, delivery_id)
        if found is None:
            raise NotFoundError(f"delivery {delivery_id} not found")
        # Serialise with the worker (it holds the notice row while it claims deliveries), then
        # decide on the statuses as they stand under that lock.
        current = await db.fetchrow(
            """SELECT n.status AS notice, d.status AS delivery
               FROM notices n JOIN deliveries d ON d.notice_id = n.id
               WHERE d.id = $1 FOR UPDATE OF n""",
            delivery_id,
        )
        assert current is not None
        if current["notice"] == "cancelled":
            raise ConflictError("the notice was cancelled (its cycle no longer governs): nothing to deliver")
        if current["delivery"] == "delivered":
            raise ConflictError("the delivery was delivered already")
        await reopen_delivery(db, delivery_id, found.notice_id, clock.now())
        updated = await select_delivery(db, principal, delivery_id)
        assert updated is not None
        return updated
