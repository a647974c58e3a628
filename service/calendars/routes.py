"""Calendar feeds: made, listed and revoked with an API key; read by calendar apps with the token
in their URL (``GET /v1/calendar/{token}.ics``), which is the only thing they can send."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import msgspec
from litestar import Controller, Request, delete, get, post
from litestar.openapi import ResponseSpec
from litestar.params import FromPath, JSONBody
from litestar.response import Stream

from service import dates
from service.auth import Principal, act_as_calendar, request_context
from service.calendars.queries import (
    due_batches,
    feed_token,
    feed_version,
    insert_feed,
    open_feed,
    revoke_feed,
    select_feed,
    select_feeds,
    token_sha256,
)
from service.calendars.rules import FeedHeader, calendar_end, calendar_start, event, reminder_offsets
from service.calendars.schemas import CalendarFeed, CalendarFeedCreate, CreatedCalendarFeed
from service.deps import ClockDep, Conn, Db, PrincipalDep, SettingsDep
from service.enterprises.access import readable_enterprise, writable_enterprise
from service.enterprises.queries import select_enterprise
from service.enterprises.schemas import Enterprise
from service.errors import ForbiddenError, InvalidInputError, NotFoundError
from service.files import file_chunks, spooled
from service.idempotency import SHOWN_ONCE
from service.instruments.rules import DueSoonWindows, Lifecycle, status_of
from service.pagination import Cursor, Limit, Page
from service.policy import Actor, access
from service.problems import problem_responses
from service.settings import Settings

__all__ = ("CalendarFeedController", "CalendarFeedReadController", "EnterpriseCalendarFeedController")

#: Where feeds are read, below the API's base URL.
FEED_PATH = "/v1/calendar"
_FEED_FILE = re.compile(r"^[A-Za-z0-9_-]{43}\.ics$")
_BATCH = 500
#: Bytes of a calendar kept in memory while it is written (about 1,500 events); beyond, on disk.
_IN_MEMORY = 1024 * 1024
# Calendar apps poll on their own schedule; a private cache may keep the feed for a quarter of an
# hour (a revocation reaches a subscriber at most that late), a shared cache never.
_CACHE_CONTROL = "private, max-age=900"


def _base_url(request: Request[Any, Any, Any], settings: Settings) -> str:
    return settings.public_url.rstrip("/") or str(request.base_url).rstrip("/")


def _owned(principal: Principal, enterprise: Enterprise) -> Enterprise:
    """Feeds are the enterprise's (and admins') to manage, like its keys: a regulator that reads the
    enterprise may not."""
    if not principal.may_write_enterprise(enterprise.id):
        raise ForbiddenError(f"a {principal.role} key may not manage an enterprise's calendar feeds")
    return enterprise


class EnterpriseCalendarFeedController(Controller):
    path = "/enterprises/{enterprise_id:str}/calendar-feeds"
    tags = ["Calendar"]

    @post(
        operation_id="CreateCalendarFeed",
        # The token in the URL is shown once and only its hash kept: an Idempotency-Key keeps this answer's status only.
        opt=access(Actor.ADMIN, Actor.OWNER) | {SHOWN_ONCE: True},
        summary="Create a calendar feed of due dates",
        description="The enterprise or an admin. Answers the feed with its `url` "
        f"(`…{FEED_PATH}/<token>.ics`), which calendar apps (Outlook, Google, Apple) subscribe to without a "
        "key: the token in it is shown this once and only its hash is stored. The feed holds one all-day "
        "event per instrument in service with a valid-until date, with an alarm per reminder day. Anyone "
        "holding the URL reads those due dates until the feed is revoked (`DELETE /v1/calendar-feeds/{id}`).",
        responses=problem_responses(400, 401, 403, 404, 413),
        status_code=201,
    )
    async def create_calendar_feed(
        self,
        request: Request[Any, Any, Any],
        db: Db,
        clock: ClockDep,
        settings: SettingsDep,
        principal: PrincipalDep,
        enterprise_id: FromPath[uuid.UUID],
        data: JSONBody[CalendarFeedCreate],
    ) -> CreatedCalendarFeed:
        enterprise = _owned(principal, await writable_enterprise(db, principal, enterprise_id, lock="share"))
        name = data.name.strip()
        if not name:
            raise InvalidInputError.for_field("name", "is blank: say whose calendar the feed is for")
        token = feed_token()
        feed = await insert_feed(
            db,
            enterprise_id=enterprise.id,
            name=name,
            digest=token_sha256(token),
            created_by=principal.key_id,
            now=clock.now(),
        )
        url = f"{_base_url(request, settings)}{FEED_PATH}/{token}.ics"
        return CreatedCalendarFeed(**msgspec.structs.asdict(feed), url=url)

    @get(
        operation_id="ListCalendarFeeds",
        opt=access(Actor.ADMIN, Actor.OWNER),
        summary="List an enterprise's calendar feeds",
        description="The enterprise or an admin. Newest first, revoked ones too, with when a calendar app last "
        "read each (to the minute); never a feed's URL or token.",
        responses=problem_responses(400, 401, 403, 404),
    )
    async def list_calendar_feeds(
        self,
        db: Db,
        principal: PrincipalDep,
        enterprise_id: FromPath[uuid.UUID],
        limit: Limit = 50,
        cursor: Cursor = None,
    ) -> Page[CalendarFeed]:
        enterprise = _owned(principal, await readable_enterprise(db, principal, enterprise_id))
        items, next_cursor = await select_feeds(db, enterprise.id, limit=limit, cursor=cursor)
        return Page(items=items, next_cursor=next_cursor)


class CalendarFeedController(Controller):
    path = "/calendar-feeds"
    tags = ["Calendar"]

    @delete(
        "/{feed_id:str}",
        operation_id="RevokeCalendarFeed",
        opt=access(Actor.ADMIN, Actor.OWNER),
        summary="Revoke a calendar feed",
        description="The enterprise or an admin. Its URL answers 404 from now on, like a URL that never "
        "existed; revoking twice is harmless.",
        responses=problem_responses(400, 401, 404),
    )
    async def revoke_calendar_feed(
        self, db: Db, clock: ClockDep, principal: PrincipalDep, feed_id: FromPath[uuid.UUID]
    ) -> None:
        found = await select_feed(db, feed_id)
        if found is None or not principal.may_write_enterprise(found.enterprise_id):
            raise NotFoundError(f"calendar feed {feed_id} not found")
        await revoke_feed(db, feed_id, clock.now())


async def _calendar(
    db: asyncpg.Connection, enterprise: Enterprise, *, header: FeedHeader, today: dt.date, base_url: str
) -> AsyncIterator[bytes]:
    """The calendar, written batch by batch as the instruments are read in ``db``'s transaction.
    ``today`` is the enterprise's local date, on which each instrument's status is told."""
    windows = DueSoonWindows.from_reminders(enterprise.reminder_days, enterprise.rotation_reminder_days)
    yield calendar_start(header).encode()
    async for batch in due_batches(db, enterprise.id, size=_BATCH):
        yield "".join(
            event(
                entry,
                header=header,
                offsets=reminder_offsets(entry.regime, enterprise.reminder_days, enterprise.rotation_reminder_days),
                status=status_of(
                    lifecycle=Lifecycle.IN_SERVICE,
                    regime=entry.regime,
                    last_verified_on=None,
                    valid_until=entry.valid_until,
                    today=today,
                    windows=windows,
                ),
                link=f"{base_url}/v1/instruments/{entry.id}",
            )
            for entry in batch
        ).encode()
    yield calendar_end().encode()


def _matches(if_none_match: str, etag: str) -> bool:
    """Whether an ``If-None-Match`` value names ``etag`` (compared weakly, RFC 9110 §13.1.2)."""
    tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return "*" in tags or etag.removeprefix("W/") in tags


class CalendarFeedReadController(Controller):
    path = "/"
    tags = ["Calendar"]
    opt = {"public": True}

    @get(
        "/{feed_file:str}",
        operation_id="GetCalendarFeed",
        summary="Read a calendar feed (no key: the token is in the URL)",
        description="`<token>.ics`, as `CreateCalendarFeed` answered it: the enterprise's due dates as "
        "iCalendar (RFC 5545) for calendar apps to subscribe to. One all-day event per instrument in service "
        "with a valid-until date, on that date (the last valid day), with a display alarm at each of the "
        "enterprise's reminder days before it (`rotation_reminder_days` for limited-life meters). Sealed, "
        "failed, scrapped, replaced and pending instruments get no reminders and are not in it. An unknown "
        "or revoked token is a 404, the same for both. Weak `ETag`: `If-None-Match` answers 304 while nothing "
        "in the feed changed. Limited per client address like the public certificate check.",
        media_type="text/calendar",
        responses={
            200: ResponseSpec(
                data_container=str,
                media_type="text/calendar",
                description="The calendar (RFC 5545, UTF-8, CRLF lines), streamed.",
                generate_examples=False,
            ),
            304: ResponseSpec(data_container=None, description="Nothing in the feed changed since that `ETag`."),
            **problem_responses(400, 404),
        },
        security=[],
    )
    async def get_calendar_feed(
        self,
        request: Request[Any, Any, Any],
        conn: Conn,
        clock: ClockDep,
        settings: SettingsDep,
        feed_file: FromPath[str],
    ) -> Stream:
        # Neither the token nor the path that carries it goes into an error: no detail names it.
        if not _FEED_FILE.match(feed_file):
            raise NotFoundError("no such calendar feed")
        digest = token_sha256(feed_file.removesuffix(".ics"))
        now = clock.now()
        request_id, _ = request_context(request)
        # The read is recorded in a transaction of its own: in the repeatable-read one below, that
        # write would fail when another read of the feed recorded itself meanwhile.
        async with conn.transaction():
            opened = await open_feed(conn, digest, request_id=request_id, now=now)
        if opened is None:
            raise NotFoundError("no such calendar feed")
        feed_id, enterprise_id = opened
        base_url = _base_url(request, settings)
        # Everything the answer says, its ETag and each event, is read from one snapshot: an
        # instrument whose due date moves meanwhile is in it once, as it was before or after.
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            await act_as_calendar(conn, digest, request_id, now)
            enterprise = await select_enterprise(conn, enterprise_id)
            if enterprise is None:  # revoked since it was opened
                raise NotFoundError("no such calendar feed")
            version = await feed_version(conn, enterprise_id)
            today = dates.local_today(now, enterprise.timezone)
            # Weak: the events' DTSTAMP is the instant of each read; everything else is the same
            # while the instruments, the enterprise's settings and its local date are.
            seed = f"{feed_id}|{enterprise.version}|{today}|{version.count}|{version.digest}|{base_url}"
            etag = f'W/"{hashlib.sha256(seed.encode()).hexdigest()[:32]}"'
            headers = {
                "ETag": etag,
                "Cache-Control": _CACHE_CONTROL,
                "Content-Disposition": 'inline; filename="due-dates.ics"',
            }
            if _matches(request.headers.get("if-none-match", ""), etag):
                return Stream((), status_code=304, headers=headers)
            header = FeedHeader(enterprise_name=enterprise.name, timezone=enterprise.timezone, generated_at=now)
            # Written out whole before it is sent, so that neither the snapshot nor the connection
            # waits on how fast a calendar app reads.
            calendar = _calendar(conn, enterprise, header=header, today=today, base_url=base_url)
            file = await spooled(calendar, in_memory=_IN_MEMORY)
        return Stream(file_chunks(file), media_type="text/calendar", headers=headers)
