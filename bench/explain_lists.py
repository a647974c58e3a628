"""EXPLAIN every keyset-paged list but the register's, on a large register: each page must be read
in index order and stop there.

Builds (once, and reuses) a database holding the ``metreg demo --instruments`` register and, by
set-based SQL, what accumulates beside it: notices, history, audit rows, verification requests
and their items, result documents, API keys, calendar feeds and imports (:func:`fill`; one
instrument of the largest enterprise with a long history and many documents). Then, for every
list and every kind of principal that may read it, runs the list's own query function as that
principal (under row-level security, with the settings the app gives its transaction) for the
first page and the page after it, and ``EXPLAIN (ANALYZE, BUFFERS)`` each read: as PostgreSQL first
plans the statement on a connection and as it may plan it from the sixth run on. Prints each plan's
shape, the rows its scans of the listed table read and its time; exits 1 if a page is sorted, reads
a large table sequentially, does not come from the list's index in page order, or (for a list whose
scope that index holds) reads more rows than it returns.

    python -m bench.explain_lists                          # 100,000 instruments, 2,000,000 notices
    python -m bench.explain_lists --instruments 10000 --enterprises 50 --fresh
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import msgspec

from bench.explain_filters import AS_PRINCIPAL, PagePlan, Recorder, explain_read, principal_settings
from service import migrate
from service.audit.queries import AuditFilter, select_entries
from service.auth import Principal, Role
from service.calendars.queries import select_feeds
from service.certificates.queries import select_instrument_certificates
from service.clock import SystemClock
from service.db import init_connection
from service.demo_register import load_register
from service.history.queries import select_events
from service.keys.queries import select_keys
from service.ledger.queries import select_imports
from service.notices.queries import NoticeFilters, select_notices
from service.pagination import GATHER
from service.requests.queries import RequestFilters, select_requests

__all__ = ("CASES", "LARGE", "ListCase", "Subjects", "Volumes", "build", "explain_case", "fill", "main", "subjects")

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/metreg_bench_lists"

#: The region of an enterprise holding a sliver of the audit trail (:func:`fill`).
REMOTE_REGION = "650102"
#: The entity id of the rows of one long history in the audit trail (:func:`fill`).
LONG_ENTITY_ID = "00000000-0000-4000-8000-000000000001"

#: The tables a list must never read sequentially: each is large in a register that has run a while.
LARGE = frozenset(
    {
        "instruments",
        "notices",
        "instrument_events",
        "audit_log",
        "verification_requests",
        "request_items",
        "certificates",
        "api_keys",
        "calendar_feeds",
        "instrument_imports",
    }
)


class Volumes(msgspec.Struct, frozen=True, kw_only=True):
    """How much of each thing :func:`fill` writes beside a register of ``instruments``."""

    instruments: int
    enterprises: int
    notices: int = 20
    """Per instrument: reminders, overdue notices, escalations, written over the last 18 months."""
    events: int = 10
    """Per instrument, besides the one its registration wrote."""
    audit: int = 20
    """Audit rows per instrument (the register's own writes are not audited row by row when generated)."""
    requests: int = 5
    """Verification requests per 10 instruments, one item each."""
    keys: int = 2
    """API keys per 10 instruments."""
    feeds: int = 120
    """Calendar feeds and imports, each, per enterprise."""
    long: int = 200
    """Events and result documents of the one instrument whose history is paged through."""

    @classmethod
    def scaled(cls, instruments: int, enterprises: int) -> Volumes:
        return cls(instruments=instruments, enterprises=enterprises)


# Everything beside the register, in statements of their own ($1: now, $2: how many, for those that
# have a count in _counts). Foreign keys
# and triggers are off (session_replication_role = replica): the rows are consistent by
# construction, and no audit row or notice schedule is wanted for them.
_FILL: list[tuple[str, str]] = [
    (
        "labs",
        """INSERT INTO labs (name, accreditation_no, region_code, created_at, updated_at)
           SELECT 'lab ' || g, 'CNAS L' || g, (ARRAY['310115', '110105', '440305', '330106'])[1 + g % 4],
                  $1::timestamptz, $1::timestamptz
           FROM generate_series(1, $2::int) g""",
    ),
    (
        "verification requests",
        """WITH e AS (SELECT id, row_number() OVER (ORDER BY id) - 1 AS k, count(*) OVER () AS n FROM enterprises),
                l AS (SELECT id, row_number() OVER (ORDER BY id) - 1 AS k, count(*) OVER () AS n FROM labs)
           INSERT INTO verification_requests (enterprise_id, lab_id, status, created_at, updated_at)
           SELECT e.id, l.id, 'submitted', t.at, t.at
           FROM generate_series(1, $2::int) g
           JOIN e ON e.k = (g::bigint * 7919) % e.n
           JOIN l ON l.k = (g::bigint * 31) % l.n
           CROSS JOIN LATERAL (SELECT $1::timestamptz - g * interval '7 minutes' AS at) t""",
    ),
    (
        "request items",
        """WITH i AS (SELECT id, enterprise_id, row_number() OVER (PARTITION BY enterprise_id ORDER BY id) - 1 AS k,
                             count(*) OVER (PARTITION BY enterprise_id) AS n FROM instruments),
                r AS (SELECT id, enterprise_id, row_number() OVER (ORDER BY created_at) AS g FROM verification_requests)
           INSERT INTO request_items (request_id, enterprise_id, instrument_id, position)
           SELECT r.id, r.enterprise_id, i.id, 1
           FROM r JOIN i ON i.enterprise_id = r.enterprise_id AND i.k = r.g % i.n""",
    ),
    (
        "result documents",
        """WITH l AS (SELECT id, row_number() OVER (ORDER BY id) - 1 AS lk, count(*) OVER () AS n FROM labs)
           INSERT INTO certificates (instrument_id, enterprise_id, lab_id, kind, number, outcome, performed_on,
                                     issued_on, legal_effect, effect_note, content_sha256, recorded_by_role,
                                     recorded_at)
           SELECT i.id, i.enterprise_id, l.id, 'verification_certificate', 'C' || i.g || '-' || k, 'pass',
                  $1::date - k * 300, $1::date - k * 300, 'history', 'generated', repeat('0', 64), 'lab',
                  $1::timestamptz - k * interval '300 days'
           FROM (SELECT id, enterprise_id, row_number() OVER (ORDER BY id) AS g FROM instruments) i
           CROSS JOIN generate_series(1, $2::int) k
           JOIN l ON l.lk = i.g % l.n""",
    ),
    (
        "notices",
        """INSERT INTO notices (enterprise_id, instrument_id, kind, audience, region_code, cycle, step, due_on,
                                status, next_attempt_at, created_at, updated_at)
           SELECT i.enterprise_id, i.id, CASE WHEN k % 10 = 0 THEN 'escalation' ELSE 'overdue' END,
                  CASE WHEN k % 10 = 0 THEN 'regulator' ELSE 'enterprise' END, e.region_code,
                  $1::date - 700, k, $1::date - k, 'delivered', $1::timestamptz, t.at, t.at
           FROM instruments i JOIN enterprises e ON e.id = i.enterprise_id
           CROSS JOIN generate_series(1, $2::int) k
           CROSS JOIN LATERAL (SELECT $1::timestamptz - (k * 37 + (hashtext(i.id::text) & 1023)) * interval '17 minutes'
                               AS at) t""",
    ),
    (
        "history",
        """INSERT INTO instrument_events (instrument_id, kind, detail, occurred_at)
           SELECT i.id, 'updated', '{}', $1::timestamptz FROM instruments i CROSS JOIN generate_series(1, $2::int) k""",
    ),
    (
        # Two years of keys, most of them expired by now: each one in 25 lasts, and one in 25
        # more ends a month from now; one in 16 is a regulator's. Some lasting keys were revoked.
        "API keys",
        """WITH e AS (SELECT id, region_code, row_number() OVER (ORDER BY id) - 1 AS k, count(*) OVER () AS n
                   FROM enterprises)
           INSERT INTO api_keys (prefix, secret_sha256, role, enterprise_id, region_code, name, created_at, expires_at,
                                 revoked_at)
           SELECT lpad(to_hex(g), 12, '0'), sha256(g::text::bytea), k.role,
                  CASE WHEN k.role = 'enterprise' THEN e.id END, CASE WHEN k.role = 'regulator' THEN e.region_code END,
                  'key ' || g, k.at,
                  CASE g % 25 WHEN 0 THEN NULL WHEN 12 THEN $1::timestamptz + interval '30 days'
                              ELSE k.at + interval '1 hour' END,
                  CASE WHEN g % 100 = 0 THEN k.at + interval '1 day' END
           FROM generate_series(1, $2::int) g JOIN e ON e.k = g % e.n
           CROSS JOIN LATERAL (SELECT CASE WHEN g % 16 = 7 THEN 'regulator' ELSE 'enterprise' END AS role,
                                      $1::timestamptz - g * (interval '730 days' / $2::int) AS at) k""",
    ),
    (
        # One enterprise's and one lab's keys, among everyone's: the subjects' own.
        "a scope's keys",
        """INSERT INTO api_keys (prefix, secret_sha256, role, enterprise_id, lab_id, name, created_at, expires_at)
           SELECT lpad(to_hex(16777216 * s.n + g), 12, '0'), sha256((s.role || g)::bytea), s.role, s.enterprise_id,
                  s.lab_id, s.role || ' key ' || g, t.at,
                  CASE WHEN g % 25 = 0 THEN NULL ELSE t.at + interval '7 days' END
           FROM (VALUES (1, 'enterprise', (SELECT enterprise_id FROM instruments GROUP BY 1 ORDER BY count(*) DESC, 1
                                           LIMIT 1), NULL::uuid),
                        (2, 'lab', NULL, (SELECT id FROM labs ORDER BY id LIMIT 1))) s (n, role, enterprise_id, lab_id)
           CROSS JOIN generate_series(1, $2::int) g
           CROSS JOIN LATERAL (SELECT $1::timestamptz - (g * 6 + s.n) * interval '1 day' AS at) t""",
    ),
    (
        "calendar feeds",
        """WITH e AS (SELECT id, row_number() OVER (ORDER BY id) - 1 AS k, count(*) OVER () AS n FROM enterprises)
           INSERT INTO calendar_feeds (enterprise_id, name, token_sha256, created_at)
           SELECT e.id, 'feed ' || g, sha256(('feed ' || g)::bytea), $1::timestamptz - g * interval '3 minutes'
           FROM generate_series(1, $2::int) g JOIN e ON e.k = g % e.n""",
    ),
    (
        "imports",
        """WITH e AS (SELECT id, row_number() OVER (ORDER BY id) - 1 AS k, count(*) OVER () AS n FROM enterprises)
           INSERT INTO instrument_imports (enterprise_id, file_name, file_sha256, format, rows, created, updated,
                                           unchanged, imported_at)
           SELECT e.id, 'ledger.csv', sha256(('import ' || g)::bytea), 'csv', 0, 0, 0, 0,
                  $1::timestamptz - g * interval '3 minutes'
           FROM generate_series(1, $2::int) g JOIN e ON e.k = g % e.n""",
    ),
    (
        "a long history",
        """INSERT INTO instrument_events (instrument_id, kind, detail, occurred_at)
           SELECT (SELECT id FROM instruments WHERE enterprise_id = (
                       SELECT enterprise_id FROM instruments GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1)
                   ORDER BY id LIMIT 1), 'updated', '{}', $1::timestamptz - k * interval '1 hour'
           FROM generate_series(1, $2::int) k""",
    ),
    (
        "many documents",
        """INSERT INTO certificates (instrument_id, enterprise_id, lab_id, kind, number, outcome, performed_on,
                                     issued_on, legal_effect, effect_note, content_sha256, recorded_by_role,
                                     recorded_at)
           SELECT i.id, i.enterprise_id, (SELECT id FROM labs ORDER BY id LIMIT 1), 'verification_certificate',
                  'L' || k, 'pass', $1::date - k, $1::date - k, 'history', 'generated', repeat('0', 64), 'lab',
                  $1::timestamptz - k * interval '1 day'
           FROM (SELECT id, enterprise_id FROM instruments WHERE enterprise_id = (
                     SELECT enterprise_id FROM instruments GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1)
                 ORDER BY id LIMIT 1) i
           CROSS JOIN generate_series(1, $2::int) k""",
    ),
    (
        # The register's own rows (an enterprise's and its import's, written as it loaded, at the
        # time of loading) predate what accumulated after them.
        "the register's audit rows",
        """UPDATE audit_log SET at = $1::timestamptz - interval '731 days'""",
    ),
    (
        # An enterprise of a region of its own, which holds a sliver of the trail: a regulator there
        # reads too little of it to walk everyone's rows for.
        "a remote enterprise",
        f"""INSERT INTO enterprises (name, credit_code, region_code, created_at, updated_at)
            VALUES ('remote', '91650102MA00000001', '{REMOTE_REGION}', $1::timestamptz, $1::timestamptz)""",
    ),
    (
        # Two years of changes, one every 730 days / n, round the enterprises by 7919 g mod n (the
        # entity must not follow from g mod 5 as well, or with 50 enterprises every row of some would
        # be one a regulator never reads), by 100 busy keys. Some are late, as the rows of a
        # transaction that began before others committed: written after rows of a later time.
        # One row in r (about 120 in all) is each of the rare cases: the rare actor's (key
        # 000000000001), a seal, a lab's, one instrument's long history, the remote enterprise's.
        "audit trail",
        f"""WITH k AS (SELECT array_agg(id ORDER BY prefix) AS ids FROM api_keys WHERE prefix <= '000000000065'),
                e AS (SELECT id, region_code, row_number() OVER (ORDER BY id) - 1 AS k, count(*) OVER () AS n
                      FROM enterprises WHERE region_code <> '{REMOTE_REGION}'),
                p AS (SELECT greatest($2::int / 120, 6) AS r, interval '730 days' / $2::int AS step,
                             (SELECT id FROM enterprises WHERE region_code = '{REMOTE_REGION}') AS remote)
            INSERT INTO audit_log (seq, at, actor_key_id, actor_role, action, entity, entity_id, operation,
                                   enterprise_id, region_code, prev_hash, hash)
            SELECT s.last + g,
                   $1::timestamptz - ($2 - g) * p.step - CASE WHEN g % 997 = 0 THEN 5 * p.step ELSE interval '0' END,
                   CASE WHEN g % p.r = 0 THEN k.ids[1] ELSE k.ids[2 + g * 31 % 100] END, 'enterprise',
                   CASE WHEN g % p.r = p.r / 2 THEN 'SealInstrument' ELSE 'UpdateInstrument' END,
                   CASE WHEN g % p.r = p.r / 3 THEN 'labs'
                        WHEN g % p.r IN (p.r / 4, p.r / 5) THEN 'instruments'
                        ELSE (ARRAY['instruments', 'instruments', 'certificates', 'webhooks',
                                    'api_keys'])[1 + g / 50 % 5]
                   END,
                   CASE WHEN g % p.r = p.r / 4 THEN '{LONG_ENTITY_ID}' ELSE g::text END, 'update',
                   CASE WHEN g % p.r = p.r / 5 THEN p.remote ELSE e.id END,
                   CASE WHEN g % p.r = p.r / 5 THEN '{REMOTE_REGION}' ELSE e.region_code END,
                   sha256(g::text::bytea), sha256(g::text::bytea)
            FROM (SELECT coalesce(max(seq), 0) AS last FROM audit_log) s
            CROSS JOIN p CROSS JOIN k
            CROSS JOIN generate_series(1, $2::int) g
            JOIN e ON e.k = (g::bigint * 7919) % e.n""",
    ),
]


def _counts(volumes: Volumes) -> dict[str, int]:
    per_ten = volumes.instruments // 10
    return {
        "labs": 20,
        "verification requests": volumes.requests * per_ten,
        "result documents": 3,
        "notices": volumes.notices,
        "history": volumes.events,
        "audit trail": volumes.audit * volumes.instruments,
        "API keys": volumes.keys * per_ten,
        "a scope's keys": 120,
        "calendar feeds": volumes.feeds * volumes.enterprises,
        "imports": volumes.feeds * volumes.enterprises,
        "a long history": volumes.long,
        "many documents": volumes.long,
    }


async def fill(dsn: str, volumes: Volumes, now: dt.datetime) -> None:
    """Write what a register accumulates beside its instruments (:class:`Volumes`), set-based, then
    analyse the database as autovacuum would have."""
    counts = _counts(volumes)
    conn = await asyncpg.connect(dsn, server_settings={"session_replication_role": "replica", "timezone": "UTC"})
    try:
        for label, sql in _FILL:
            args = (now, counts[label]) if label in counts else (now,) if "$1" in sql else ()
            await conn.execute(sql, *args)
        # The trail's rows went in without its triggers: its clock (schema/0027) is counted afresh.
        await conn.execute("SELECT audit_clock_recount()")
        await conn.execute("VACUUM ANALYZE")
    finally:
        await conn.close()


async def build(dsn: str, volumes: Volumes, now: dt.datetime) -> None:
    """A fresh, migrated database at ``dsn`` with the demo register of ``volumes`` and all of
    :func:`fill` beside it (the database is dropped first if it exists)."""
    await migrate.drop_database(dsn)
    await migrate.create_database(dsn)
    await migrate.migrate(dsn, now)
    started = time.perf_counter()
    await load_register(
        lambda: asyncpg.connect(dsn, server_settings={"timezone": "UTC"}),
        instruments=volumes.instruments,
        enterprises=volumes.enterprises,
        seed=1,
        jobs=2,
        now=now,
    )
    await fill(dsn, volumes, now)
    print(f"built {volumes.instruments:,} instruments and all beside them in {time.perf_counter() - started:.1f} s")


@dataclass(frozen=True, slots=True)
class Subjects:
    """Whose lists are read: the largest enterprise, its region, a lab that worked for it, and its
    instrument with the long history; the key that wrote a sliver of the audit trail, and the
    newest instant of the trail."""

    enterprise_id: uuid.UUID
    region_code: str
    lab_id: uuid.UUID
    instrument_id: uuid.UUID
    now: dt.datetime
    actor_key_id: uuid.UUID
    trail_end: dt.datetime

    def principal(self, kind: str) -> Principal:
        """A principal of ``kind``: admin, enterprise, lab, district (a regulator of the enterprise's
        region code), province (a regulator of its first two digits) or remote (a regulator of
        :data:`REMOTE_REGION`)."""
        key = uuid.uuid4()
        if kind == "admin":
            return Principal(key_id=key, role=Role.ADMIN)
        if kind == "enterprise":
            return Principal(key_id=key, role=Role.ENTERPRISE, enterprise_id=self.enterprise_id)
        if kind == "lab":
            return Principal(key_id=key, role=Role.LAB, lab_id=self.lab_id)
        if kind in ("district", "province", "remote"):
            region = {"district": self.region_code, "province": self.region_code[:2], "remote": REMOTE_REGION}[kind]
            return Principal(key_id=key, role=Role.REGULATOR, region_code=region)
        raise ValueError(kind)

    def days_ago(self, days: int) -> dt.datetime:
        """``days`` before the newest row of the audit trail."""
        return self.trail_end - dt.timedelta(days=days)


async def subjects(conn: asyncpg.Connection, now: dt.datetime) -> Subjects:
    """The :class:`Subjects` of the database :func:`build` made."""
    row = await conn.fetchrow(
        """SELECT i.id AS instrument_id, i.enterprise_id, e.region_code,
                  (SELECT lab_id FROM certificates c WHERE c.instrument_id = i.id ORDER BY c.recorded_at DESC LIMIT 1)
                      AS lab_id,
                  (SELECT id FROM api_keys ORDER BY prefix LIMIT 1) AS actor_key_id,
                  (SELECT at FROM audit_log ORDER BY seq DESC LIMIT 1) AS trail_end
           FROM instrument_events v JOIN instruments i ON i.id = v.instrument_id
           JOIN enterprises e ON e.id = i.enterprise_id
           GROUP BY i.id, e.region_code ORDER BY count(*) DESC LIMIT 1"""
    )
    assert row is not None, "no register here"
    return Subjects(now=now, **dict(row))


#: Buffers a page may touch besides those of its rows (:attr:`ListCase.buffers_per_row`): the
#: descents of its indexes, its InitPlans, the bounds of a time span (audit_seq_from, _until).
BUFFERS_PER_PAGE = 400

Read = Callable[[asyncpg.Connection, Principal, Subjects, int, str | None], Awaitable[tuple[list[Any], str | None]]]


@dataclass(frozen=True, slots=True)
class ListCase:
    """One list as one kind of principal reads it."""

    label: str
    principal: str
    """A kind of :meth:`Subjects.principal`."""
    read: Read
    table: str
    """The table it lists."""
    index: str
    """The index that must yield its page, in page order."""
    walks: bool = False
    """The index holds more than the principal's scope (a regulator's region), or than its filter
    (the keys that work now): the read keeps those rows as it walks, reading more than it returns."""
    gather_index: str | None = None
    """The index a page that gathers its rows and sorts them must read them from (a regulator's
    page of a region too small to walk for); None: any."""
    slack: int = 0
    """Rows a page may read beyond those it returns, where the index bounds its range only nearly
    (a time span on the trail's order: :func:`fill`'s late rows)."""
    buffers_per_row: int = 30
    """Buffers a page may touch for each row it reads (the row, the index entries that led to it,
    the rows joined to it and its policies' lookups), beyond :data:`BUFFERS_PER_PAGE`."""

    @property
    def name(self) -> str:
        return f"{self.label} as {self.principal}"


async def _notices(db: asyncpg.Connection, p: Principal, s: Subjects, limit: int, cursor: str | None) -> Any:
    return await select_notices(db, p, NoticeFilters(), limit=limit, cursor=cursor)


async def _history(db: asyncpg.Connection, p: Principal, s: Subjects, limit: int, cursor: str | None) -> Any:
    return await select_events(db, s.instrument_id, limit=limit, cursor=cursor)


async def _audit(db: asyncpg.Connection, p: Principal, s: Subjects, limit: int, cursor: str | None) -> Any:
    return await select_entries(db, p, AuditFilter(), limit=limit, cursor=cursor)


def _audit_where(where: Callable[[Subjects], AuditFilter]) -> Read:
    """The audit trail, filtered by ``where`` (of the subjects)."""

    async def read(db: asyncpg.Connection, p: Principal, s: Subjects, limit: int, cursor: str | None) -> Any:
        return await select_entries(db, p, where(s), limit=limit, cursor=cursor)

    return read


async def _requests(db: asyncpg.Connection, p: Principal, s: Subjects, limit: int, cursor: str | None) -> Any:
    return await select_requests(db, p, RequestFilters(), s.now, limit=limit, cursor=cursor)


async def _keys(db: asyncpg.Connection, p: Principal, s: Subjects, limit: int, cursor: str | None) -> Any:
    return await select_keys(db, role=None, enterprise_id=None, lab_id=None, active_at=None, limit=limit, cursor=cursor)


def _keys_where(where: Callable[[Subjects], dict[str, Any]]) -> Read:
    """The API keys, filtered by ``where`` (of the subjects: keyword arguments of select_keys)."""

    async def read(db: asyncpg.Connection, p: Principal, s: Subjects, limit: int, cursor: str | None) -> Any:
        given = {"role": None, "enterprise_id": None, "lab_id": None, "active_at": None} | where(s)
        return await select_keys(db, **given, limit=limit, cursor=cursor)

    return read


async def _feeds(db: asyncpg.Connection, p: Principal, s: Subjects, limit: int, cursor: str | None) -> Any:
    return await select_feeds(db, s.enterprise_id, limit=limit, cursor=cursor)


async def _imports(db: asyncpg.Connection, p: Principal, s: Subjects, limit: int, cursor: str | None) -> Any:
    return await select_imports(db, s.enterprise_id, limit=limit, cursor=cursor)


async def _documents(db: asyncpg.Connection, p: Principal, s: Subjects, limit: int, cursor: str | None) -> Any:
    return await select_instrument_certificates(db, s.instrument_id, s.now, limit=limit, cursor=cursor)


# Every keyset-paged list but the register (bench/explain_filters.py), for every kind of principal
# its route lets read it (labs may read neither notices nor the audit trail; keys are an admin's).
CASES: list[ListCase] = [
    ListCase(label="notices", principal="enterprise", read=_notices, table="notices", index="notices_enterprise"),
    *[
        ListCase(label="notices", principal=p, read=_notices, table="notices", index="notices_listing", walks=True)
        for p in ("district", "province")
    ],
    ListCase(label="notices", principal="admin", read=_notices, table="notices", index="notices_listing"),
    *[
        ListCase(
            label="history", principal=p, read=_history, table="instrument_events", index="instrument_events_instrument"
        )
        for p in ("enterprise", "district", "admin", "lab")
    ],
    ListCase(label="audit trail", principal="enterprise", read=_audit, table="audit_log", index="audit_log_enterprise"),
    *[
        ListCase(label="audit trail", principal=p, read=_audit, table="audit_log", index="audit_log_pkey", walks=True)
        for p in ("district", "province")
    ],
    ListCase(label="audit trail", principal="admin", read=_audit, table="audit_log", index="audit_log_pkey"),
    # A region holding a sliver of the trail gathers its rows rather than walk everyone's.
    ListCase(
        label="audit trail",
        principal="remote",
        read=_audit,
        table="audit_log",
        index="audit_log_region",
        gather_index="audit_log_region",
    ),
    # Each filter of the trail, where it picks a sliver of it (fill's rare cases).
    ListCase(
        label="audit trail of a rare actor",
        principal="admin",
        read=_audit_where(lambda s: AuditFilter(actor_key_id=s.actor_key_id)),
        table="audit_log",
        index="audit_log_actor",
    ),
    ListCase(
        label="audit trail of a rare action",
        principal="admin",
        read=_audit_where(lambda s: AuditFilter(action="SealInstrument")),
        table="audit_log",
        index="audit_log_action",
    ),
    ListCase(
        label="audit trail of a rare entity",
        principal="admin",
        read=_audit_where(lambda s: AuditFilter(entity="labs")),
        table="audit_log",
        index="audit_log_entity",
    ),
    *[
        ListCase(
            label=f"audit trail of one {what}",
            principal="admin",
            read=_audit_where(where),
            table="audit_log",
            index="audit_log_entity_id",
        )
        for what, where in [
            ("entity_id", lambda s: AuditFilter(entity_id=LONG_ENTITY_ID)),
            ("entity and entity_id", lambda s: AuditFilter(entity="instruments", entity_id=LONG_ENTITY_ID)),
        ]
    ],
    # A time span is a range of the trail's order, to within its late rows.
    *[
        ListCase(
            label=f"audit trail {what}",
            principal=p,
            read=_audit_where(where),
            table="audit_log",
            index=index,
            slack=16,
        )
        for what, where in [
            ("of an old span", lambda s: AuditFilter(since=s.days_ago(600), until=s.days_ago(550))),
            ("until an old instant", lambda s: AuditFilter(until=s.days_ago(600))),
        ]
        for p, index in [("admin", "audit_log_pkey"), ("enterprise", "audit_log_enterprise")]
    ],
    # A time span on a gathered page: its bounds in seq are found once (InitPlans), not for each
    # gathered row, which would bisect the trail once a row (audit_log_region holds no seq).
    ListCase(
        label="audit trail of a span",
        principal="remote",
        read=_audit_where(lambda s: AuditFilter(since=s.days_ago(725), until=s.days_ago(5))),
        table="audit_log",
        index="audit_log_region",
        gather_index="audit_log_region",
    ),
    ListCase(
        label="requests",
        principal="enterprise",
        read=_requests,
        table="verification_requests",
        index="verification_requests_enterprise",
    ),
    ListCase(
        label="requests",
        principal="lab",
        read=_requests,
        table="verification_requests",
        index="verification_requests_lab",
    ),
    *[
        ListCase(
            label="requests",
            principal=p,
            read=_requests,
            table="verification_requests",
            index="verification_requests_all",
            walks=True,
        )
        for p in ("district", "province")
    ],
    ListCase(
        label="requests",
        principal="admin",
        read=_requests,
        table="verification_requests",
        index="verification_requests_all",
    ),
    ListCase(label="API keys", principal="admin", read=_keys, table="api_keys", index="api_keys_listing"),
    *[
        ListCase(label=f"API keys {what}", principal="admin", read=_keys_where(where), table="api_keys", index=index)
        for what, where, index in [
            ("of an enterprise", lambda s: {"enterprise_id": s.enterprise_id}, "api_keys_enterprise"),
            ("of a lab", lambda s: {"lab_id": s.lab_id}, "api_keys_lab"),
            ("of regulators", lambda s: {"role": Role.REGULATOR}, "api_keys_role"),
        ]
    ],
    # The keys that work at an instant end as the clock moves: no index holds them, and the page
    # walks every key for them (service/keys/queries.py select_keys).
    ListCase(
        label="API keys that work now",
        principal="admin",
        read=_keys_where(lambda s: {"active_at": s.now}),
        table="api_keys",
        index="api_keys_listing",
        walks=True,
    ),
    *[
        ListCase(
            label="calendar feeds", principal=p, read=_feeds, table="calendar_feeds", index="calendar_feeds_enterprise"
        )
        for p in ("enterprise", "admin")
    ],
    *[
        ListCase(
            label="imports",
            principal=p,
            read=_imports,
            table="instrument_imports",
            index="instrument_imports_enterprise",
        )
        for p in ("enterprise", "district", "admin")
    ],
    *[
        ListCase(label="documents", principal=p, read=_documents, table="certificates", index="certificates_instrument")
        for p in ("enterprise", "district", "admin", "lab")
    ],
]


class Page(msgspec.Struct, frozen=True, kw_only=True):
    """One page of a list as explained: which page, and its plans as first planned and from the sixth run on."""

    page: str
    returned: int
    custom: PagePlan
    generic: PagePlan
    gathered: bool = False
    """A regulator's page of a region too small to walk for (service.pagination.walks_for_region):
    its rows gathered through each enterprise's index and sorted."""


async def explain_case(conn: asyncpg.Connection, case: ListCase, subjects: Subjects, *, limit: int) -> list[Page]:
    """EXPLAIN ANALYZE the list's first page and the page after it (when there is one), as the
    case's principal reads them: each read's statements are those its query function sends, taken
    as it reads the page (as that principal, rolled back)."""
    principal = subjects.principal(case.principal)
    pages = []
    cursor: str | None = None
    for page in ("first page", "after a cursor"):
        recorder = Recorder(conn)
        transaction = conn.transaction()
        await transaction.start()
        try:
            await conn.execute("SET LOCAL ROLE metreg_api")
            await conn.execute(AS_PRINCIPAL, *principal_settings(principal))
            items, following = await case.read(recorder.connection(), principal, subjects, limit, cursor)
        finally:
            await transaction.rollback()
        (sql, args), *_ = recorder.reads[-1:]
        custom, generic = await explain_read(
            conn, sql, args, principal=principal, setup=recorder.setup, table=case.table, large=LARGE
        )
        gathered = any(statement.startswith(GATHER) for statement in recorder.setup)
        pages.append(Page(page=page, returned=len(items), custom=custom, generic=generic, gathered=gathered))
        if following is None:
            break
        cursor = following
    return pages


def misplanned(case: ListCase, plan: PagePlan, *, limit: int, gathered: bool = False) -> list[str]:
    """What is wrong with ``plan`` of a page of ``case`` (nothing: it is read in index order, and
    stops; or, ``gathered``, its region's rows are found by index and sorted)."""
    wrong = []
    if plan.sorted and not gathered:
        wrong.append("sorted")
    if plan.sequential:
        wrong.append("sequential scan")
    if not gathered and not any(scan.endswith(f" on {case.index}") and scan.startswith("Index") for scan in plan.scans):
        wrong.append(f"not from {case.index}")
    if gathered and case.gather_index and not any(scan.endswith(f" on {case.gather_index}") for scan in plan.scans):
        wrong.append(f"not gathered from {case.gather_index}")
    if not case.walks and not gathered and plan.read > limit + 1 + case.slack:
        wrong.append(f"read {plan.read} rows")
    if plan.buffers > case.buffers_per_row * max(plan.read, plan.rows) + BUFFERS_PER_PAGE:
        wrong.append(f"{plan.buffers} buffers")
    if plan.jit:
        wrong.append("JIT")
    if plan.parallel:
        wrong.append("parallel")
    # A span's bounds (service/audit/queries.py) are each a bisection of the trail: once a page.
    if any("audit_seq_" in condition for condition in plan.row_filters):
        wrong.append("a span's bound evaluated for each row")
    return wrong


async def explain(dsn: str, now: dt.datetime, limit: int) -> bool:
    conn = await asyncpg.connect(dsn)
    await init_connection(conn)
    try:
        found = await subjects(conn, now)
        sizes = await conn.fetchrow(
            """SELECT (SELECT count(*) FROM instruments) AS instruments, (SELECT count(*) FROM notices) AS notices,
                      (SELECT count(*) FROM audit_log) AS audit,
                      (SELECT count(*) FROM verification_requests) AS requests"""
        )
        assert sizes is not None
        print(
            f"register: {sizes['instruments']:,} instruments, {sizes['notices']:,} notices, {sizes['audit']:,} audit "
            f"rows, {sizes['requests']:,} requests; EXPLAIN ANALYZE of pages of {limit}"
        )
        print("each as first planned (custom) and as planned from its sixth run on a connection (generic)\n")
        ok = True
        for case in CASES:
            for page in await explain_case(conn, case, found, limit=limit):
                shown = []
                for plan in (page.custom, page.generic):
                    wrong = misplanned(case, plan, limit=limit, gathered=page.gathered)
                    ok &= not wrong
                    mark = ", ".join(wrong).upper() or "index"
                    scans = [scan for scan in plan.scans if scan.endswith(f" on {case.index}")] or plan.scans[:1]
                    others = len(plan.scans) - len(scans)
                    scans += [f"{others} more scans"] if others else []
                    shown.append(
                        f"{plan.milliseconds:8.2f} ms  read {plan.read:7}  {plan.buffers:7} buffers  {mark:14} "
                        f"{'; '.join(scans)}"
                    )
                label = f"{case.name}, {page.page}"
                print(f"  {label:48} {shown[0]}\n  {'':48} {shown[1]}")
        return ok
    finally:
        await conn.close()


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dsn", default=os.environ.get("METREG_BENCH_LISTS_DATABASE_URL", DEFAULT_DSN))
    parser.add_argument("--instruments", type=int, default=100_000)
    parser.add_argument("--enterprises", type=int, default=500)
    parser.add_argument("--limit", type=int, default=50)
    parser.add_argument("--fresh", action="store_true", help="drop and rebuild the database")
    parser.add_argument("--drop", action="store_true", help="drop the database when done")
    args = parser.parse_args(argv)
    now = SystemClock().now()
    volumes = Volumes.scaled(args.instruments, args.enterprises)
    if args.fresh:
        await migrate.drop_database(args.dsn)
    await migrate.create_database(args.dsn)
    await migrate.migrate(args.dsn, now)
    conn = await asyncpg.connect(args.dsn)
    # The instruments, the documents and the remote enterprise fill writes: another size, half-built,
    # or filled by an older fill (without the audit trail's rare rows), starts over.
    present = await conn.fetchrow(
        """SELECT (SELECT count(*) FROM instruments) AS instruments,
                  (SELECT count(*) FROM certificates WHERE number LIKE 'L%') AS last,
                  (SELECT count(*) FROM enterprises WHERE region_code = $1) AS remote""",
        REMOTE_REGION,
    )
    await conn.close()
    assert present is not None
    if (present["instruments"], present["last"], present["remote"]) != (args.instruments, volumes.long, 1):
        await build(args.dsn, volumes, now)
    ok = await explain(args.dsn, now, args.limit)
    if args.drop:
        await migrate.drop_database(args.dsn)
    print("every list is read in index order" if ok else "A LIST IS MISPLANNED", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
