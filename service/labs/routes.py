"""``/v1/labs``: admins register labs; a lab reads itself."""

from __future__ import annotations

import uuid

import msgspec
from litestar import Controller, get, post
from litestar.params import FromPath, JSONBody

from service.catalog.queries import select_unknown_codes
from service.deps import AdminDep, ClockDep, Db, PrincipalDep
from service.errors import FieldError, InvalidInputError, NotFoundError, RuleViolationError
from service.labs.queries import insert_lab, select_lab
from service.labs.schemas import Lab, LabCreate
from service.policy import Actor, access
from service.problems import problem_responses

__all__ = ("LabController",)


class LabController(Controller):
    path = "/labs"
    tags = ["Labs"]

    @post(
        operation_id="CreateLab",
        opt=access(Actor.ADMIN),
        summary="Register a lab",
        description="Admin only. Every `scope` entry must be a catalogue code; `sla_working_days` is the "
        "time limit of an accepted verification request (default 10 working days).",
        responses=problem_responses(400, 401, 403, 413, 422),
    )
    async def create_lab(
        self,
        db: Db,
        clock: ClockDep,
        admin: AdminDep,
        data: JSONBody[LabCreate],
    ) -> Lab:
        data = msgspec.structs.replace(
            data,
            name=data.name.strip(),
            accreditation_no=data.accreditation_no.strip(),
            scope=list(dict.fromkeys(code.strip() for code in data.scope)),
        )
        for field in ("name", "accreditation_no"):
            if not getattr(data, field):
                raise InvalidInputError.for_field(field, "must not be blank")
        unknown = await select_unknown_codes(db, data.scope)
        if unknown:
            errors = [
                FieldError(field=f"scope[{data.scope.index(code)}]", message=f"{code!r} is not in the catalogue")
                for code in unknown
            ]
            raise RuleViolationError.for_fields(errors)
        return await insert_lab(db, data, clock.now())

    @get(
        "/{lab_id:str}",
        operation_id="GetLab",
        opt=access(Actor.ADMIN, Actor.LAB),
        summary="Read a lab",
        description="Admins, and the lab's own keys.",
        responses=problem_responses(400, 401, 404),
    )
    async def get_lab(self, db: Db, principal: PrincipalDep, lab_id: FromPath[uuid.UUID]) -> Lab:
        lab = await select_lab(db, lab_id)
        if lab is None or not (principal.is_admin or principal.lab_id == lab.id):
            raise NotFoundError(f"lab {lab_id} not found")
        return lab
