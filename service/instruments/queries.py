"""Instrument rows: SQL, the asyncpg calls, and the read model built from them.

The status filters are SQL twins of :func:`service.instruments.rules.status_of`, written so that
each is a range of ``instruments_due`` or ``instruments_lifecycle_due`` (enterprise, [lifecycle,]
due_key, id): a page costs the rows it returns, whatever the size of the register.
"""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Final

import asyncpg
import msgspec

from service import dates
from service.catalog.rules import CatalogRule, LegalUse, Regime
from service.enterprises.queries import enterprise_columns, enterprise_from
from service.enterprises.schemas import Enterprise
from service.errors import DuplicateError
from service.instruments.rules import (
    Assessment,
    DueSoonWindows,
    Lifecycle,
    Status,
    ValiditySource,
    assess,
)
from service.instruments.schemas import Instrument
from service.pagination import Params, decode_cursor, read_in_page_order, split_page

__all__ = (
    "STATUS_PREDICATES",
    "InstrumentFilters",
    "InstrumentRow",
    "db_value",
    "insert_instrument",
    "instrument_in_enterprise",
    "instrument_in_enterprise_sql",
    "list_query",
    "prefer_ordered_scan",
    "recompute_validity",
    "register_enterprise",
    "register_enterprise_sql",
    "select_by_identities",
    "select_by_numbers",
    "select_enterprise_id",
    "select_instrument",
    "select_instrument_in_enterprise",
    "select_instruments",
    "select_instruments_in_enterprises",
    "select_register_batches",
    "status_predicate",
    "to_instrument",
    "to_instruments",
    "update_instrument",
)


class InstrumentRow(msgspec.Struct, frozen=True, gc=False):
    """An instrument as stored, with its catalogue rule (null when uncatalogued).

    Fields in the order of :data:`_COLUMNS`: :func:`_row` builds it by position. Not tracked by the
    garbage collector (``gc=False``): frozen, it refers to nothing that could refer back to it, and
    a page makes hundreds of these records, each of which would count towards the next collection.
    """

    id: uuid.UUID
    enterprise_id: uuid.UUID
    catalog_code: str | None
    name: str
    model: str
    serial_no: str
    manufacturer: str
    management_no: str | None
    measuring_range: str | None
    accuracy_class: str | None
    mpe: str | None
    location: str | None
    department: str | None
    legal_use: LegalUse
    regime: Regime
    cycle_months: int | None
    lifecycle: Lifecycle
    last_verified_on: dt.date | None
    valid_until: dt.date | None
    validity_source: ValiditySource
    current_certificate_id: uuid.UUID | None
    current_certificate_number: str | None
    replaces: uuid.UUID | None
    replaced_by: uuid.UUID | None
    version: int
    created_at: dt.datetime
    updated_at: dt.datetime
    rule: CatalogRule | None = None


# Columns of InstrumentRow, then those of its CatalogRule (prefixed c_), over instruments i.
_COLUMNS = """
           i.id, i.enterprise_id, i.catalog_code, i.name, i.model, i.serial_no, i.manufacturer,
           i.management_no, i.measuring_range, i.accuracy_class, i.mpe, i.location, i.department,
           i.legal_use, i.regime, i.cycle_months, i.lifecycle, i.last_verified_on, i.valid_until,
           i.validity_source, i.current_certificate_id, cc.number AS current_certificate_number,
           i.replaces, i.replaced_by, i.version, i.created_at, i.updated_at,
           c.regime AS c_regime, c.compulsory_uses AS c_compulsory_uses,
           c.legal_max_cycle_months AS c_legal_max_cycle_months,
           c.default_cycle_months AS c_default_cycle_months, c.regulation AS c_regulation
"""
_CATALOG = """LEFT JOIN catalog_items c ON c.code = i.catalog_code
               LEFT JOIN certificates cc ON cc.id = i.current_certificate_id"""
_SELECT = f"SELECT {_COLUMNS} FROM instruments i {_CATALOG}"


def _written(write: str) -> str:
    """``write`` (an INSERT or UPDATE of instruments) and the read of its row, in one statement."""
    return f"WITH i AS ({write} RETURNING *) SELECT {_COLUMNS} FROM i {_CATALOG}"


# str → member, for building rows positionally: a dict lookup is several times cheaper than calling the enum.
_LEGAL_USES: Final = {m.value: m for m in LegalUse}
_REGIMES: Final = {m.value: m for m in Regime}
_LIFECYCLES: Final = {m.value: m for m in Lifecycle}
_VALIDITY_SOURCES: Final = {m.value: m for m in ValiditySource}


def _rule(record: asyncpg.Record) -> CatalogRule:
    """The catalogue rule in the ``c_`` columns of a record of a catalogued instrument."""
    return CatalogRule(
        code=record[2],
        regime=_REGIMES[record[27]],
        compulsory_uses=tuple(_LEGAL_USES[u] for u in record[28]),
        legal_max_cycle_months=record[29],
        default_cycle_months=record[30],
        regulation=record[31],
    )


def _row(record: asyncpg.Record, rule: CatalogRule | None = None) -> InstrumentRow:
    """The row of a record whose first columns are :data:`_COLUMNS`, in order (later ones ignored);
    ``rule`` is its catalogue rule when the caller has it already (:func:`_rows`).

    Built by position, not through a dict and ``msgspec.convert``: ~1.5 µs a row instead of ~12,
    paid by every row of a list page.
    """
    return InstrumentRow(
        record[0],
        record[1],
        record[2],
        record[3],
        record[4],
        record[5],
        record[6],
        record[7],
        record[8],
        record[9],
        record[10],
        record[11],
        record[12],
        _LEGAL_USES[record[13]],
        _REGIMES[record[14]],
        record[15],
        _LIFECYCLES[record[16]],
        record[17],
        record[18],
        _VALIDITY_SOURCES[record[19]],
        record[20],
        record[21],
        record[22],
        record[23],
        record[24],
        record[25],
        record[26],
        rule if rule is not None or record[2] is None else _rule(record),
    )


def _rows(records: Sequence[asyncpg.Record]) -> list[InstrumentRow]:
    """:func:`_row` of each record of one statement, each catalogue rule built once: in one
    statement's rows a catalogue code always comes with the same rule."""
    rules: dict[str, CatalogRule] = {}
    rows = []
    for record in records:
        code = record[2]
        rule = None if code is None else rules.get(code)
        if code is not None and rule is None:
            rule = rules[code] = _rule(record)
        rows.append(_row(record, rule))
    return rows


def to_instrument(row: InstrumentRow, enterprise: Enterprise, as_of: dt.date) -> Instrument:
    """The API's view of ``row`` on the enterprise's local date ``as_of``."""
    return to_instruments([row], enterprise, as_of)[0]


# assess's answers by everything it reads. It is a pure function of hashable values, so an answer
# stands for every later read of the same facts on the same local day under the same enterprise
# rules: the rows of a page that share their facts, a page read again, the next page. Emptied
# when it holds _ASSESSED_MAX answers (a few MB), as an export of a large register does in passing.
_ASSESSED: dict[tuple[object, ...], Assessment] = {}
_ASSESSED_MAX = 4096


def to_instruments(rows: Sequence[InstrumentRow], enterprise: Enterprise, as_of: dt.date) -> list[Instrument]:
    """The API's view of each of ``rows`` (instruments of ``enterprise``) on its local date
    ``as_of``: :func:`to_instrument` of each, with the enterprise's due-soon windows worked out once
    and :func:`assess` run once for each distinct set of what it reads (:data:`_ASSESSED`)."""
    windows = DueSoonWindows.from_reminders(enterprise.reminder_days, enterprise.rotation_reminder_days)
    period_rule = enterprise.period_rule
    items = []
    for row in rows:
        facts = (
            row.rule,
            row.regime,
            row.lifecycle,
            row.cycle_months,
            row.last_verified_on,
            row.valid_until,
            row.validity_source,
            row.current_certificate_number,
            period_rule,
            windows,
            as_of,
        )
        found = _ASSESSED.get(facts)
        if found is None:
            if len(_ASSESSED) >= _ASSESSED_MAX:
                _ASSESSED.clear()
            found = _ASSESSED[facts] = assess(
                item=row.rule,
                regime=row.regime,
                lifecycle=row.lifecycle,
                own_cycle_months=row.cycle_months,
                last_verified_on=row.last_verified_on,
                valid_until=row.valid_until,
                validity_source=row.validity_source,
                rule=period_rule,
                windows=windows,
                today=as_of,
                certificate_number=row.current_certificate_number,
            )
        # By position, in Instrument's field order: a third of the cost of keywords, paid per row of a list.
        items.append(
            Instrument(
                row.id,
                row.enterprise_id,
                row.catalog_code,
                row.name,
                row.model,
                row.serial_no,
                row.manufacturer,
                row.management_no,
                row.measuring_range,
                row.accuracy_class,
                row.mpe,
                row.location,
                row.department,
                row.legal_use,
                found.compulsory,
                found.regime,
                found.traceability,
                found.cycle_months,
                row.lifecycle,
                row.last_verified_on,
                found.valid_until,
                found.next_due,
                found.status,
                found.status_reason,
                found.days_until_due,
                found.required_action,
                found.basis,
                row.current_certificate_id,
                row.current_certificate_number,
                row.replaces,
                row.replaced_by,
                as_of,
                row.version,
                row.created_at,
                row.updated_at,
            )
        )
    return items


async def select_instrument(
    db: asyncpg.Connection, instrument_id: uuid.UUID, *, for_update: bool = False
) -> InstrumentRow | None:
    lock = " FOR UPDATE OF i" if for_update else ""
    record = await db.fetchrow(f"{_SELECT} WHERE i.id = $1{lock}", instrument_id)
    return _row(record) if record else None


async def select_instrument_in_enterprise(
    db: asyncpg.Connection, instrument_id: uuid.UUID
) -> tuple[InstrumentRow, Enterprise | None] | None:
    """The instrument and its enterprise in one statement (None: the enterprise is not visible).

    A read of one instrument is a handful of round trips in all (transaction, key, row, commit);
    reading the enterprise in the same statement saves one of them.
    """
    record = await db.fetchrow(instrument_in_enterprise_sql("$1"), instrument_id)
    return None if record is None else instrument_in_enterprise(record)


def instrument_in_enterprise_sql(instrument: str, extra: str = "") -> str:
    """The SELECT of :func:`select_instrument_in_enterprise` for the instrument ``instrument`` (a
    placeholder), with ``extra`` columns after the enterprise's: for a read that is part of a
    larger statement (``service.auth.AuthenticatedReader``)."""
    return f"""SELECT {_COLUMNS}, {enterprise_columns("e")}{extra} FROM instruments i {_CATALOG}
               LEFT JOIN enterprises e ON e.id = i.enterprise_id WHERE i.id = {instrument}"""


def instrument_in_enterprise(record: asyncpg.Record) -> tuple[InstrumentRow, Enterprise | None]:
    """The row and enterprise of a record read by :func:`instrument_in_enterprise_sql`."""
    return _row(record), enterprise_from(dict(record))


async def select_instruments_in_enterprises(
    db: asyncpg.Connection, instrument_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, tuple[InstrumentRow, Enterprise]]:
    """Many instruments, each with its enterprise, in one statement (a batch of notices to send);
    an instrument whose enterprise is not visible is left out."""
    records = await db.fetch(
        f"""SELECT {_COLUMNS}, {enterprise_columns("e")} FROM instruments i {_CATALOG}
            JOIN enterprises e ON e.id = i.enterprise_id WHERE i.id = ANY ($1::uuid[])""",
        list(instrument_ids),
    )
    found: dict[uuid.UUID, tuple[InstrumentRow, Enterprise]] = {}
    for record in records:
        enterprise = enterprise_from(dict(record))
        if enterprise is not None:
            row = _row(record)
            found[row.id] = (row, enterprise)
    return found


async def select_enterprise_id(db: asyncpg.Connection, instrument_id: uuid.UUID) -> uuid.UUID | None:
    """The enterprise an instrument belongs to (it never changes), without reading the rest."""
    found: uuid.UUID | None = await db.fetchval("SELECT enterprise_id FROM instruments WHERE id = $1", instrument_id)
    return found


# The SQL twin of rules.status_of, as templates: {d} is the local date, {wp} and {wr} the due-soon
# windows in days of periodic and limited-life instruments. Each predicate bounds due_key so that
# its index range is tight.
_IN_SERVICE = "i.lifecycle = 'in_service'"
_WINDOW = "CASE WHEN i.regime = 'initial_only_limited_life' THEN {wr} ELSE {wp} END"
_NO_EXPIRY = "(i.regime = 'initial_only_scrap_on_failure' AND i.last_verified_on IS NOT NULL)"
STATUS_PREDICATES: dict[Status, str] = {
    Status.OVERDUE: f"{_IN_SERVICE} AND i.due_key < {{d}}",
    Status.DUE_SOON: f"""{_IN_SERVICE} AND i.due_key >= {{d}}
        AND i.due_key <= {{d}} + greatest({{wp}}, {{wr}})
        AND i.due_key <= {{d}} + {_WINDOW}""",
    Status.VALID: f"""{_IN_SERVICE} AND i.due_key > {{d}} + least({{wp}}, {{wr}})
        AND i.due_key > {{d}} + {_WINDOW}
        AND (i.valid_until IS NOT NULL OR {_NO_EXPIRY})""",
    Status.UNVERIFIED: f"{_IN_SERVICE} AND i.due_key = 'infinity'::date AND NOT {_NO_EXPIRY}",
    **{
        Status(state.value): f"i.lifecycle = '{state.value}'"
        for state in Lifecycle
        if state is not Lifecycle.IN_SERVICE
    },
}


def status_predicate(status: Status, bind: Callable[[Any], str], *, day: dt.date, windows: DueSoonWindows) -> str:
    """The SQL condition for ``status``; ``bind`` turns a value into a placeholder (only those used)."""
    template = STATUS_PREDICATES[status]
    values = {"d": (day, "date"), "wp": (windows.periodic_days, "int"), "wr": (windows.rotation_days, "int")}
    return template.format(**{k: f"{bind(v)}::{t}" for k, (v, t) in values.items() if f"{{{k}}}" in template})


class InstrumentFilters(msgspec.Struct, frozen=True, kw_only=True):
    """List filters, all optional; ``as_of`` is the local date statuses are computed for."""

    as_of: dt.date
    status: Status | None = None
    catalog_code: str | None = None
    legal_use: LegalUse | None = None
    due_before: dt.date | None = None
    q: str | None = None


class _PageKey(msgspec.Struct, frozen=True, array_like=True):
    due: dt.date | None
    id: uuid.UUID


def _like_pattern(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def list_query(
    enterprise: Enterprise, filters: InstrumentFilters, *, limit: int, cursor: str | None
) -> tuple[str, list[Any]]:
    """The SQL and arguments of one page of the register (``limit + 1`` rows, to see a next page).

    Raises:
        InvalidInputError: the cursor was not made by this list.
    """
    windows = DueSoonWindows.from_reminders(enterprise.reminder_days, enterprise.rotation_reminder_days)
    bind = Params(enterprise.id)
    where = ["i.enterprise_id = $1"]
    if filters.status is not None:
        where.append(status_predicate(filters.status, bind, day=filters.as_of, windows=windows))
    if filters.catalog_code is not None:
        where.append(f"i.catalog_code = {bind(filters.catalog_code)}")
    if filters.legal_use is not None:
        where.append(f"i.legal_use = {bind(filters.legal_use.value)}")
    if filters.due_before is not None:
        where.append(f"i.due_key < {bind(filters.due_before)}::date")
    if filters.q:
        pattern = bind(_like_pattern(filters.q))
        # Through the trigram index, which row-level security would keep ILIKE from (0009_search.sql).
        where.append(f"i.id IN (SELECT instrument_search($1, {pattern}))")
    if cursor is not None:
        key = decode_cursor(cursor, _PageKey)
        # date.max is how asyncpg spells PostgreSQL's 'infinity' date, the due_key of rows that never lapse.
        where.append(f"(i.due_key, i.id) > ({bind(key.due or dt.date.max)}::date, {bind(key.id)}::uuid)")
    sql = f"{_SELECT} WHERE {' AND '.join(where)} ORDER BY i.due_key, i.id LIMIT {bind(limit + 1)}"
    return sql, bind.values


async def prefer_ordered_scan(db: asyncpg.Connection, filters: InstrumentFilters) -> None:
    """Steer the rest of the transaction's page reads to an index scan in page order (not search).

    Every filter but search has an (enterprise_id, …, due_key, id) index that yields rows in page
    order, so a page stops after limit + 1 matches. Row-level security and the status predicates
    make the planner expect far fewer matches than there are, and it then prefers to read every
    match in the range and sort them: by bitmap scan, on an enterprise of 100,000 instruments 3,000
    rows and 220 ms for a page an ordered scan reads in 2 ms (make bench, "List 100 rows
    filtered"); and by the ordered index itself once PostgreSQL plans the statement generically
    (from its sixth run on a connection), which no bitmap setting prevents: hence no sort at all
    (nor JIT, nor parallel workers: see :func:`service.pagination.read_in_page_order`, which every
    other list uses).
    Search keeps both: its trigram index has no order to offer.
    """
    if filters.q is None:
        await read_in_page_order(db)


def register_enterprise_sql(enterprise: str) -> str:
    """The SELECT of the enterprise ``enterprise`` (a placeholder) whose register a page reads, for
    ``service.auth.AuthenticatedReader.transaction`` (read back by :func:`register_enterprise`)."""
    return f"SELECT {enterprise_columns('e')} FROM enterprises e WHERE e.id = {enterprise}"


def register_enterprise(record: asyncpg.Record | None) -> Enterprise | None:
    """The enterprise of a record read by :func:`register_enterprise_sql` (None: none visible)."""
    return None if record is None else enterprise_from(dict(record))


async def select_instruments(
    db: asyncpg.Connection,
    enterprise: Enterprise,
    filters: InstrumentFilters,
    *,
    limit: int,
    cursor: str | None,
    steered: bool = False,
) -> tuple[list[Instrument], str | None]:
    """One page of the enterprise's register in due order (what lapses first comes first).

    ``steered``: the transaction began with :data:`service.pagination.PAGE_ORDER` for a page without search, as
    :func:`prefer_ordered_scan` would set it. Returns the page and the cursor of the next one
    (None on the last page).
    """
    sql, args = list_query(enterprise, filters, limit=limit, cursor=cursor)
    if not steered:
        await prefer_ordered_scan(db, filters)
    rows, next_cursor = split_page(
        _rows(await db.fetch(sql, *args)), limit, lambda last: _PageKey(due=last.valid_until, id=last.id)
    )
    return to_instruments(rows, enterprise, filters.as_of), next_cursor


async def select_register_batches(
    db: asyncpg.Connection, enterprise_id: uuid.UUID, *, batch_rows: int, compulsory_only: bool = False
) -> AsyncIterator[list[InstrumentRow]]:
    """The enterprise's whole register, ``batch_rows`` rows at a time, in ledger order: by management
    number (numbered instruments first), then as registered.

    A server-side cursor in the caller's transaction: memory holds one batch whatever the size of
    the register, and every batch comes from the same snapshot. ``compulsory_only`` keeps the
    instruments under legal control that are still kept (not scrapped or replaced): those a filing
    lists.
    """
    where = "i.enterprise_id = $1"
    if compulsory_only:
        where += " AND i.regime <> 'not_controlled' AND i.lifecycle NOT IN ('scrapped', 'replaced')"
    cursor = await db.cursor(
        f"{_SELECT} WHERE {where} ORDER BY i.management_no NULLS LAST, i.created_at, i.id", enterprise_id
    )
    while records := await cursor.fetch(batch_rows):
        yield _rows(records)


# Columns a write sets from the request, in a fixed order (never from client-supplied names).
WRITABLE = (
    "catalog_code",
    "name",
    "model",
    "serial_no",
    "manufacturer",
    "management_no",
    "measuring_range",
    "accuracy_class",
    "mpe",
    "location",
    "department",
    "legal_use",
    "regime",
    "cycle_months",
    "lifecycle",
    "last_verified_on",
    "valid_until",
    "validity_source",
    "current_certificate_id",
    "replaces",
    "replaced_by",
)


def _translate_duplicate(exc: asyncpg.UniqueViolationError, values: dict[str, Any]) -> DuplicateError:
    if exc.constraint_name == "instruments_management_no":
        return DuplicateError.for_field(
            "management_no", f"management number {values.get('management_no')!r} is already in use"
        )
    return DuplicateError.for_field(
        "serial_no",
        "an instrument with this manufacturer, model and serial number is already registered",
    )


def db_value(value: Any) -> Any:
    """``value`` as a parameter: an enum member as its value."""
    return value.value if isinstance(value, enum.Enum) else value


async def insert_instrument(
    db: asyncpg.Connection, enterprise_id: uuid.UUID, values: dict[str, Any], now: dt.datetime
) -> InstrumentRow:
    """Insert a registration (``values`` keyed by :data:`WRITABLE`) and return the stored row."""
    columns = [c for c in WRITABLE if c in values]
    placeholders = ", ".join(f"${i}" for i in range(3, len(columns) + 3))
    insert = f"""INSERT INTO instruments (enterprise_id, created_at, updated_at, {", ".join(columns)})
                 VALUES ($1, $2, $2, {placeholders})"""
    try:
        record = await db.fetchrow(_written(insert), enterprise_id, now, *(db_value(values[c]) for c in columns))
    except asyncpg.UniqueViolationError as exc:
        raise _translate_duplicate(exc, values) from None
    assert record is not None
    return _row(record)


async def update_instrument(
    db: asyncpg.Connection, instrument_id: uuid.UUID, values: dict[str, Any], now: dt.datetime
) -> InstrumentRow:
    """Apply ``values`` (keyed by :data:`WRITABLE`), bump the version, return the stored row."""
    columns = [c for c in WRITABLE if c in values]
    assignments = "".join(f", {c} = ${i}" for i, c in enumerate(columns, start=3))
    update = f"UPDATE instruments SET version = version + 1, updated_at = $2{assignments} WHERE id = $1"
    try:
        record = await db.fetchrow(_written(update), instrument_id, now, *(db_value(values[c]) for c in columns))
    except asyncpg.UniqueViolationError as exc:
        raise _translate_duplicate(exc, values) from None
    assert record is not None  # the caller holds the row lock
    return _row(record)


async def recompute_validity(
    db: asyncpg.Connection, enterprise_id: uuid.UUID, rule: dates.PeriodRule, now: dt.datetime
) -> int:
    """Recompute every ``valid_until`` metreg computed for the enterprise under ``rule``.

    Printed dates are certificate facts and stay. The computation is :func:`dates.valid_until`
    itself (not a SQL copy of it), applied to the rows and written back in one statement.
    Returns the number of instruments whose date changed.
    """
    rows = await db.fetch(
        """SELECT i.id, i.last_verified_on, coalesce(i.cycle_months, c.default_cycle_months) AS cycle, i.valid_until
           FROM instruments i LEFT JOIN catalog_items c ON c.code = i.catalog_code
           WHERE i.enterprise_id = $1 AND i.validity_source = 'computed' AND i.last_verified_on IS NOT NULL
             AND i.regime <> 'initial_only_scrap_on_failure'
           FOR UPDATE OF i""",
        enterprise_id,
    )
    ids: list[uuid.UUID] = []
    untils: list[dt.date] = []
    for row in rows:
        if row["cycle"] is None:
            continue
        until = dates.valid_until(row["last_verified_on"], row["cycle"], rule)
        if until != row["valid_until"]:
            ids.append(row["id"])
            untils.append(until)
    if ids:
        await db.execute(
            """UPDATE instruments i SET valid_until = u.valid_until, version = i.version + 1, updated_at = $3
               FROM unnest($1::uuid[], $2::date[]) AS u(id, valid_until) WHERE i.id = u.id""",
            ids,
            untils,
            now,
        )
    return len(ids)


_IDENTITY_PARTS: Final = ("manufacturer", "model", "serial_no")


async def select_by_numbers(
    db: asyncpg.Connection, enterprise_id: uuid.UUID, management_nos: list[str]
) -> list[InstrumentRow]:
    """The enterprise's instruments with one of ``management_nos``, locked for update (an index
    probe per number, so the cost follows the numbers, not the register)."""
    if not management_nos:
        return []
    records = await db.fetch(
        f"{_SELECT} WHERE i.enterprise_id = $1 AND i.management_no = ANY($2::text[]) FOR UPDATE OF i",
        enterprise_id,
        management_nos,
    )
    return [_row(r) for r in records]


async def select_by_identities(
    db: asyncpg.Connection,
    enterprise_id: uuid.UUID,
    identities: list[tuple[str, ...]],
    parts: Sequence[str] = _IDENTITY_PARTS,
) -> list[InstrumentRow]:
    """The enterprise's instruments with one of ``identities``, locked for update.

    ``identities`` are values of the identity columns named in ``parts``: manufacturer, model and
    serial, in that order, or a subset that includes the serial. The full identity is an index
    probe per key; a subset reads the enterprise's part of the unique index.
    """
    if not set(parts) <= set(_IDENTITY_PARTS) or "serial_no" not in parts:
        raise ValueError(f"identity parts must include serial_no and be among {_IDENTITY_PARTS}: {parts}")
    if not identities:
        return []
    keys = ", ".join(f"${n}::text[]" for n in range(2, 2 + len(parts)))
    match = " AND ".join(f"i.{part} = k.{part}" for part in parts)
    records = await db.fetch(
        f"""{_SELECT}
            JOIN unnest({keys}) AS k({", ".join(parts)}) ON {match}
            WHERE i.enterprise_id = $1
            FOR UPDATE OF i""",
        enterprise_id,
        *(list(column) for column in zip(*identities, strict=True)),
    )
    return [_row(r) for r in records]
