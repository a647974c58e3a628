"""``/v1/enterprises``: admins create enterprises; members read them; owners change their settings."""

from __future__ import annotations

import uuid
from typing import Any

import msgspec
from litestar import Controller, get, patch, post
from litestar.params import FromPath, JSONBody

from service.deps import AdminDep, ClockDep, Db, PrincipalDep
from service.enterprises.access import readable_enterprise, writable_enterprise
from service.enterprises.queries import UPDATABLE, insert_enterprise, update_enterprise
from service.enterprises.rules import credit_code_problem, is_valid_timezone, reminder_days_problem
from service.enterprises.schemas import Enterprise, EnterpriseCreate, EnterpriseUpdate
from service.errors import FieldError, ForbiddenError, InvalidInputError, StaleVersionError
from service.instruments.queries import recompute_validity
from service.policy import Actor, access
from service.problems import problem_responses

__all__ = ("EnterpriseController",)


#: The optional fields of the filing's title block: trimmed, and null (or absent) when unknown.
CONTACT = ("address", "contact_name", "contact_phone")


def _trimmed(value: Any) -> Any:
    return value.strip() if isinstance(value, str) else value


def _check_settings(
    *,
    name: Any,
    credit_code: str | None,
    timezone: Any,
    reminder_days: Any,
    rotation_reminder_days: Any,
    contact: dict[str, Any],
) -> None:
    problems: list[FieldError] = []
    if isinstance(name, str) and not name:
        problems.append(FieldError(field="name", message="must not be blank"))
    if credit_code is not None and (why := credit_code_problem(credit_code)):
        problems.append(FieldError(field="credit_code", message=why))
    if isinstance(timezone, str) and not is_valid_timezone(timezone):
        problems.append(FieldError(field="timezone", message=f"{timezone!r} is not an IANA time zone"))
    for name, days in (("reminder_days", reminder_days), ("rotation_reminder_days", rotation_reminder_days)):
        if isinstance(days, list) and (why := reminder_days_problem(days)):
            problems.append(FieldError(field=name, message=why))
    # Blank would print an empty line as if it were the value; null says "not kept", and the filing
    # leaves the line to fill in by hand.
    problems += [
        FieldError(field=field, message="must not be blank (null leaves it unset)")
        for field, value in contact.items()
        if isinstance(value, str) and not value
    ]
    if problems:
        raise InvalidInputError.for_fields(problems)


def _unique_emails(emails: list[str]) -> list[str]:
    """Addresses once each, compared without regard to case (as mail servers treat domains)."""
    seen: dict[str, str] = {}
    for email in emails:
        seen.setdefault(email.strip().lower(), email.strip())
    return list(seen.values())


class EnterpriseController(Controller):
    path = "/enterprises"
    tags = ["Enterprises"]

    @post(
        operation_id="CreateEnterprise",
        opt=access(Actor.ADMIN),
        summary="Create an enterprise",
        description="Admin only. The credit code must carry a valid GB 32100-2015 check character and be unique. "
        "`address`, `contact_name` and `contact_phone` are optional: they fill the title block of the filing "
        "table (GET /v1/enterprises/{id}/filing), which leaves a line blank for each one not given.",
        responses=problem_responses(400, 401, 403, 409, 413),
    )
    async def create_enterprise(
        self,
        db: Db,
        clock: ClockDep,
        admin: AdminDep,
        data: JSONBody[EnterpriseCreate],
    ) -> Enterprise:
        data = msgspec.structs.replace(
            data,
            name=data.name.strip(),
            credit_code=data.credit_code.strip().upper(),
            notify_emails=_unique_emails(data.notify_emails),
            **{f: _trimmed(getattr(data, f)) for f in CONTACT},
        )
        _check_settings(
            name=data.name,
            credit_code=data.credit_code,
            timezone=data.timezone,
            reminder_days=data.reminder_days,
            rotation_reminder_days=data.rotation_reminder_days,
            contact={f: getattr(data, f) for f in CONTACT},
        )
        return await insert_enterprise(db, data, clock.now())

    @get(
        "/{enterprise_id:str}",
        operation_id="GetEnterprise",
        opt=access(Actor.ADMIN, Actor.OWNER, Actor.REGULATOR),
        summary="Read an enterprise",
        description="Admins, the enterprise's own keys and regulators of its region.",
        responses=problem_responses(400, 401, 404),
    )
    async def get_enterprise(
        self,
        db: Db,
        principal: PrincipalDep,
        enterprise_id: FromPath[uuid.UUID],
    ) -> Enterprise:
        return await readable_enterprise(db, principal, enterprise_id)

    @patch(
        "/{enterprise_id:str}",
        operation_id="UpdateEnterprise",
        opt=access(Actor.ADMIN, Actor.OWNER),
        summary="Change an enterprise's settings",
        description="The enterprise itself or an admin; `region_code` is admin only. Changing "
        "`period_rule` recomputes every valid-until date that metreg computed (printed and certificate "
        "dates stay). Reminder settings (`reminder_days`, `rotation_reminder_days`, `overdue_repeat_days`, "
        "`escalate_after_days`, `notify_emails`, `digest`) apply from the next planning run. `address`, "
        "`contact_name` and `contact_phone` (the filing table's title block) are trimmed; `null` clears one.",
        responses=problem_responses(400, 401, 403, 404, 409, 413),
    )
    async def update_enterprise(
        self,
        db: Db,
        clock: ClockDep,
        principal: PrincipalDep,
        enterprise_id: FromPath[uuid.UUID],
        data: JSONBody[EnterpriseUpdate],
    ) -> Enterprise:
        current = await writable_enterprise(db, principal, enterprise_id, lock="update")
        if data.version is not msgspec.UNSET and data.version != current.version:
            raise StaleVersionError(f"enterprise is at version {current.version}, not {data.version}")
        changes = {f: v for f in UPDATABLE if (v := getattr(data, f)) is not msgspec.UNSET}
        if "region_code" in changes and not principal.is_admin:
            raise ForbiddenError("only an admin may change region_code: it decides which regulator sees you")
        if isinstance(changes.get("name"), str):
            changes["name"] = changes["name"].strip()
        if isinstance(changes.get("notify_emails"), list):
            changes["notify_emails"] = _unique_emails(changes["notify_emails"])
        for field in CONTACT:
            if field in changes:
                changes[field] = _trimmed(changes[field])
        _check_settings(
            name=changes.get("name"),
            credit_code=None,
            timezone=changes.get("timezone"),
            reminder_days=changes.get("reminder_days"),
            rotation_reminder_days=changes.get("rotation_reminder_days"),
            contact={f: changes[f] for f in CONTACT if f in changes},
        )
        now = clock.now()
        updated = await update_enterprise(db, enterprise_id, changes, now)
        if updated.period_rule != current.period_rule:
            await recompute_validity(db, enterprise_id, updated.period_rule, now)
        return updated
