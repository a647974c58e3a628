"""Enterprises (使用单位) in and out of the API."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated

import msgspec

from service.dates import PeriodRule
from service.types import NO_NUL, Name, RegionCode, Text

__all__ = ("PHONE_PATTERN", "Enterprise", "EnterpriseCreate", "EnterpriseUpdate")

Timezone = Annotated[str, Text(64, description="IANA time zone of the enterprise's local dates.")]
ReminderDays = Annotated[
    list[int],
    msgspec.Meta(
        max_length=10,
        description="Days before valid-until on which reminders fall due: 1–366, strictly decreasing.",
    ),
]


RepeatDays = Annotated[
    int, msgspec.Meta(ge=1, le=366, description="Days between overdue notices after the first (default 7).")
]
EscalateDays = Annotated[
    int,
    msgspec.Meta(
        ge=1,
        le=3660,
        description="Days overdue after which the regulator of the enterprise's region is told once (default 30).",
    ),
]
Email = Annotated[
    str,
    msgspec.Meta(max_length=254, pattern=r"^[^@\s\x00]+@[^@\s\x00]+\.[^@\s\x00]+$", description="An e-mail address."),
]
NotifyEmails = Annotated[
    list[Email], msgspec.Meta(max_length=20, description="Where reminders and notices are e-mailed.")
]

#: What a phone number is written with, at home and abroad: an optional leading +, digits, spaces,
#: hyphens and parentheses (at least one digit), then optionally an extension (转123, 分机 123,
#: ext. 123, x123, #123). schema/0018_enterprise_contact.sql checks the same pattern; leading
#: and trailing spaces are allowed only because the API trims before it stores.
PHONE_PATTERN = r"^ *\+?[0-9 ()-]*[0-9][0-9 ()-]*( *(转|分机|[Ee][Xx][Tt]\.?|[Xx]|#) *[0-9]{1,8})? *$"
_ADDRESS = (
    "单位地址, printed in the title block of the filing table (GET /v1/enterprises/{id}/filing); "
    "without it that line is left blank to fill in by hand."
)
_CONTACT_NAME = "联系人: whom the regulator asks about the filing, printed in the filing table's title block."
_CONTACT_PHONE = (
    "联系电话 of the contact, printed in the filing table's title block: digits, spaces, `+`, `-`, "
    "parentheses and an optional extension (`转123`, `ext. 123`)."
)
Address = Annotated[str, Text(300, min_length=1, description=_ADDRESS)]
ContactName = Annotated[str, Text(100, min_length=1, description=_CONTACT_NAME)]
ContactPhone = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=40,
        pattern=PHONE_PATTERN,
        description=_CONTACT_PHONE,
        examples=["021-5012 3456 转 8012", "+86 21 5012 3456"],
    ),
]


class EnterpriseCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A new enterprise. Only an admin creates one."""

    name: Name
    credit_code: Annotated[
        str,
        msgspec.Meta(
            max_length=64,
            pattern=NO_NUL,
            description="统一社会信用代码: 18 characters ending in the GB 32100-2015 check character.",
            examples=["91350100M000100Y43"],
        ),
    ]
    region_code: RegionCode
    timezone: Timezone = "Asia/Shanghai"
    period_rule: PeriodRule = PeriodRule.INCLUSIVE_MINUS_ONE
    reminder_days: ReminderDays = msgspec.field(default_factory=lambda: [30, 7])
    rotation_reminder_days: ReminderDays = msgspec.field(default_factory=lambda: [90, 30])
    overdue_repeat_days: RepeatDays = 7
    escalate_after_days: EscalateDays = 30
    notify_emails: NotifyEmails = msgspec.field(default_factory=list)
    digest: bool = False
    address: Address | None = None
    contact_name: ContactName | None = None
    contact_phone: ContactPhone | None = None


class EnterpriseUpdate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Changes to an enterprise; absent fields stay as they are, ``null`` clears a nullable one.

    ``region_code`` decides which regulator sees the enterprise, so only an admin may change it.
    """

    name: Name | msgspec.UnsetType = msgspec.UNSET
    region_code: RegionCode | msgspec.UnsetType = msgspec.UNSET
    timezone: Timezone | msgspec.UnsetType = msgspec.UNSET
    period_rule: PeriodRule | msgspec.UnsetType = msgspec.UNSET
    reminder_days: ReminderDays | msgspec.UnsetType = msgspec.UNSET
    rotation_reminder_days: ReminderDays | msgspec.UnsetType = msgspec.UNSET
    overdue_repeat_days: RepeatDays | msgspec.UnsetType = msgspec.UNSET
    escalate_after_days: EscalateDays | msgspec.UnsetType = msgspec.UNSET
    notify_emails: NotifyEmails | msgspec.UnsetType = msgspec.UNSET
    digest: bool | msgspec.UnsetType = msgspec.UNSET
    address: Address | msgspec.UnsetType | None = msgspec.UNSET
    contact_name: ContactName | msgspec.UnsetType | None = msgspec.UNSET
    contact_phone: ContactPhone | msgspec.UnsetType | None = msgspec.UNSET
    version: int | msgspec.UnsetType = msgspec.UNSET
    """The version last read; when given, a stale one is refused with 409."""


class Enterprise(msgspec.Struct, frozen=True, kw_only=True):
    """An enterprise and its settings.

    ``period_rule`` decides how a cycle becomes a valid-until date; ``reminder_days`` (periodic and
    calibrated instruments) and ``rotation_reminder_days`` (limited-life meters) are the reminder
    offsets, and the largest of each is the window in which an instrument is ``due_soon``.
    ``overdue_repeat_days`` and ``escalate_after_days`` pace the overdue series and the one
    escalation to the regulator; ``notify_emails`` receive notices by e-mail, as one daily digest
    when ``digest`` is true. ``address``, ``contact_name`` and ``contact_phone`` fill the title
    block of the filing table; null when not given.
    """

    id: uuid.UUID
    name: str
    credit_code: str
    region_code: str
    timezone: str
    period_rule: PeriodRule
    reminder_days: list[int]
    rotation_reminder_days: list[int]
    overdue_repeat_days: int
    escalate_after_days: int
    notify_emails: list[str]
    digest: bool
    # Described, not constrained: a row read back is not validated again.
    address: Annotated[str | None, msgspec.Meta(description=_ADDRESS)]
    contact_name: Annotated[str | None, msgspec.Meta(description=_CONTACT_NAME)]
    contact_phone: Annotated[str | None, msgspec.Meta(description=_CONTACT_PHONE)]
    version: int
    created_at: dt.datetime
    updated_at: dt.datetime
