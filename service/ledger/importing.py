"""Importing a ledger: cells to instrument facts, the registration rules, and what the import would do.

An import is planned in Python and written in SQL. :func:`plan_import` reads every row, applies the
rules of single registration (:func:`service.instruments.rules.derive`) and of a change
(:func:`service.instruments.registration.rederive`) to rows that match an instrument already in
the register, and says per row whether it creates, updates or leaves an instrument as it is. It
writes nothing; :func:`service.ledger.queries.write_import` writes a plan that has no problems, all
of it in the caller's transaction.

Matching: a row with a management number (管理编号) is that instrument; without one, or with one
the register does not know yet, the row is the instrument of the same manufacturer, model and
serial number (those of the three the file has columns for). Columns the file does not have leave
an existing instrument's values as they are; an empty cell in a column the file has clears the value.

A ledger lists what is in force: a cycle equal to the catalogue default is read as the default, and
a valid-until date equal to the one the rules compute is kept as computed, not as printed. So a
ledger metreg exported imports back with every field as it was.
"""

from __future__ import annotations

import datetime as dt
import functools
import unicodedata
import uuid
from collections.abc import Callable, Sequence
from typing import Any, Final

import msgspec

from service.catalog.rules import CatalogRule, LegalUse, effective_regime
from service.catalog.schemas import CatalogItem
from service.dates import PeriodRule
from service.db import Connection
from service.enterprises.schemas import Enterprise
from service.errors import MetregError, RowProblem, RuleViolationError
from service.instruments.queries import InstrumentRow
from service.instruments.registration import rederive, refuse_certificate_facts
from service.instruments.rules import Derived, Lifecycle, ValiditySource, derive, resolve_cycle
from service.instruments.schemas import InstrumentCreate
from service.ledger.columns import header_key, match_header
from service.ledger.reading import Table
from service.ledger.values import (
    CellError,
    cell_text,
    parse_cycle_months,
    parse_date,
    parse_legal_use,
    parse_lifecycle,
)

__all__ = (
    "IDENTITY",
    "Catalog",
    "ImportColumn",
    "ImportPlan",
    "PlannedRow",
    "identities_to_look_up",
    "identity",
    "map_columns",
    "parse_rows",
    "plan_rows",
)

#: Longest text each column holds (the limits of single registration, service/instruments/schemas.py).
_TEXT_LIMITS: Final = {
    "name": 200,
    "model": 100,
    "serial_no": 100,
    "manufacturer": 200,
    "management_no": 100,
    "measuring_range": 500,
    "accuracy_class": 100,
    "mpe": 500,
    "location": 500,
    "department": 500,
}
_REQUIRED: Final = ("name", "serial_no")
#: Identifiers are compared, so full-width and half-width forms of one number must be one number.
_IDENTIFIERS: Final = frozenset({"serial_no", "management_no"})
#: Empty text that is stored as '' rather than null (part of the identity).
_EMPTY_AS_BLANK: Final = frozenset({"model", "manufacturer"})


class ImportColumn(msgspec.Struct, frozen=True, kw_only=True):
    """How one header of the file was read."""

    column: str
    """The header as written in the file."""
    field: str | None
    """The instrument field it fills; null when the column is not imported."""
    note: str | None = None
    """Why a column is not imported, when it is not obvious (序号 and computed columns say nothing)."""


class Catalog:
    """The catalogue, found by code or by its Chinese or English name as a ledger writes it."""

    def __init__(self, items: Sequence[CatalogItem]) -> None:
        self._rules: dict[str, CatalogRule] = {}
        self._by_label: dict[str, str] = {}
        self._found: dict[str, str | None] = {}
        for item in items:
            self._rules[item.code] = msgspec.convert(msgspec.structs.asdict(item), CatalogRule, from_attributes=True)
            for label in (item.code, item.name_zh, item.name_en):
                self._by_label.setdefault(header_key(label), item.code)

    def code(self, label: str) -> str:
        """The code a cell names.

        Raises:
            CellError: no catalogue item has that code or name.
        """
        # A ledger names a few items many times over: each name is folded once.
        try:
            code = self._found[label]
        except KeyError:
            code = self._found[label] = self._by_label.get(header_key(label))
        if code is None:
            raise CellError("is not in the catalogue: give its code or name as GET /v1/catalog lists it")
        return code

    def rule(self, code: str | None) -> CatalogRule | None:
        return None if code is None else self._rules[code]


class PlannedRow(msgspec.Struct, kw_only=True):
    """One data row: where it is, the facts it gives, and what the import does with it."""

    row: int
    given: dict[str, Any]
    """The fields the file gives, as read."""
    cells: Sequence[object] = ()
    """The row's cells as the file has them, for the report."""
    target: InstrumentRow | None = None
    """The instrument it matches, when there is one."""
    values: dict[str, Any] = msgspec.field(default_factory=dict)
    """What is stored: every writable field of a new instrument; the changed ones of a matched one."""
    outcome: str = "created"
    """``created``, ``updated``, ``unchanged``, or ``rejected`` for a row with problems."""


class ImportPlan(msgspec.Struct, kw_only=True):
    """What an import would do, and what stands in its way."""

    columns: list[ImportColumn]
    rows: list[PlannedRow]
    problems: list[RowProblem]

    def count(self, outcome: str) -> int:
        return sum(1 for r in self.rows if r.outcome == outcome)


Converter = Callable[[object], Any]


def map_columns(table: Table) -> tuple[list[ImportColumn], dict[int, str], list[RowProblem]]:
    """Each header's reading, the fields by column index, and problems with the header row itself."""
    columns: list[ImportColumn] = []
    fields: dict[int, str] = {}
    problems: list[RowProblem] = []
    first: dict[str, str] = {}
    for index, header in enumerate(table.headers):
        if not header.strip():
            continue
        field, note = match_header(header)
        if field is not None and field in first:
            problems.append(
                RowProblem(
                    row=table.header_row,
                    column=header,
                    field=field,
                    message=f"two columns hold {field}: {first[field]!r} and this one; keep one",
                    value=header,
                )
            )
            continue
        if field is not None:
            first[field] = header
            fields[index] = field
        columns.append(ImportColumn(column=header.strip(), field=field, note=note))
    for field in _REQUIRED:
        if field not in first:
            problems.append(
                RowProblem(
                    row=table.header_row,
                    column=None,
                    field=field,
                    message=f"the file has no {field} column (such as {_LABEL[field]}); every instrument needs one",
                )
            )
    return columns, fields, problems


_LABEL: Final = {"name": "计量器具名称", "serial_no": "出厂编号"}
_LABEL_OF: Final = {"manufacturer": "生产厂家 (manufacturer)", "model": "型号规格 (model)"}


def _text(field: str) -> Converter:
    limit = _TEXT_LIMITS[field]
    fold = field in _IDENTIFIERS
    blank: str | None = "" if field in _EMPTY_AS_BLANK else None

    def convert(value: object) -> str | None:
        text = cell_text(value)
        if fold:
            text = unicodedata.normalize("NFKC", text).strip()
        if not text:
            if field in _REQUIRED:
                raise CellError("must not be blank")
            return blank
        if len(text) > limit:
            raise CellError(f"is longer than {limit} characters")
        if "\x00" in text:
            raise CellError("holds a NUL character")
        return text

    return convert


def _optional(parse: Callable[[object], Any]) -> Converter:
    def convert(value: object) -> Any:
        return None if not cell_text(value) else parse(value)

    return convert


def _converters(catalog: Catalog) -> dict[str, Converter]:
    converters: dict[str, Converter] = {field: _text(field) for field in _TEXT_LIMITS}
    converters.update(
        catalog_code=_optional(lambda v: catalog.code(cell_text(v))),
        legal_use=parse_legal_use,
        lifecycle=parse_lifecycle,
        cycle_months=_optional(parse_cycle_months),
        last_verified_on=_optional(parse_date),
        valid_until=_optional(parse_date),
    )
    return converters


def parse_rows(
    table: Table,
    fields: dict[int, str],
    catalog: Catalog,
    progress: Callable[[int], None] | None = None,
) -> tuple[list[PlannedRow], list[RowProblem]]:
    """Each data row's cells read as the fields their columns hold; a problem for each cell that fails.

    ``progress`` is told the number of rows read, every 10,000 rows.
    """
    converters = _converters(catalog)
    plan = [(index, field, table.headers[index].strip(), converters[field]) for index, field in fields.items()]
    rows: list[PlannedRow] = []
    problems: list[RowProblem] = []
    for count, (number, cells) in enumerate(table.rows, start=1):
        if progress is not None and count % 10_000 == 0:
            progress(count)
        given: dict[str, Any] = {}
        width = len(cells)
        for index, field, header, convert in plan:
            cell = cells[index] if index < width else None
            try:
                given[field] = convert(cell)
            except CellError as exc:
                problems.append(
                    RowProblem(row=number, column=header, field=field, message=str(exc), value=cell_text(cell)[:200])
                )
        rows.append(PlannedRow(row=number, given=given, cells=cells))
    return rows, problems


#: What tells instruments apart without a management number (the register's unique identity).
IDENTITY: Final = ("manufacturer", "model", "serial_no")


def identity(values: dict[str, Any], parts: Sequence[str] = IDENTITY) -> tuple[str, ...]:
    """A row's identity over ``parts``: the key it matches the register by without a management number.

    ``parts`` are the identity columns the file has: a ledger without a 生产厂家 column matches by
    model and serial alone, rather than as instruments without a manufacturer.
    """
    return tuple(values.get(part) or "" for part in parts)


def identities_to_look_up(
    rows: Sequence[PlannedRow], by_number: Sequence[InstrumentRow], parts: Sequence[str]
) -> list[tuple[str, ...]]:
    """The identities the register must be searched for: of rows that no management number
    finds, and of rows that give their instrument another identity (which may be another's).

    A re-imported ledger finds every row by its number, unchanged: nothing more is read.
    """
    known = {i.management_no: i for i in by_number}
    wanted: set[tuple[str, ...]] = set()
    for row in rows:
        if not row.given.get("serial_no"):
            continue
        key = identity(row.given, parts)
        instrument = known.get(row.given.get("management_no"))
        if instrument is None or key != tuple(getattr(instrument, part) for part in parts):
            wanted.add(key)
    return sorted(wanted)


class _RefusedRowError(Exception):
    def __init__(self, field: str, message: str, value: object) -> None:
        super().__init__(message)
        self.field, self.message, self.value = field, message, value


class _Matcher:
    """Finds the instrument each row is, and refuses rows that repeat another or would merge two."""

    def __init__(self, existing: Sequence[InstrumentRow], parts: Sequence[str]) -> None:
        self.parts = tuple(parts)
        self.by_number = {i.management_no: i for i in existing if i.management_no is not None}
        self.by_identity: dict[tuple[str, ...], list[InstrumentRow]] = {}
        for instrument in existing:
            key = tuple(getattr(instrument, part) for part in self.parts)
            self.by_identity.setdefault(key, []).append(instrument)
        self.numbers: dict[str, int] = {}
        self.identities: dict[tuple[str, ...], int] = {}
        self.claimed: dict[uuid.UUID, int] = {}

    def match(self, row: PlannedRow) -> InstrumentRow | None:
        number = row.given.get("management_no")
        key = identity(row.given, self.parts)
        serial = row.given.get("serial_no")
        if number is not None and (earlier := self.numbers.setdefault(number, row.row)) != row.row:
            raise _RefusedRowError("management_no", f"row {earlier} has the same management number", number)
        if (earlier := self.identities.setdefault(key, row.row)) != row.row:
            raise _RefusedRowError("serial_no", f"row {earlier} has the same {self._named()}", serial)
        target = self.by_number.get(number) if number is not None else None
        same = self._same(key, target)
        if target is None and same is not None:
            if number is not None and same.management_no not in (None, number):
                raise _RefusedRowError(
                    "management_no",
                    f"this {self._named()} are registered under management number {same.management_no!r}",
                    number,
                )
            target = same
        elif target is not None and same is not None and same.id != target.id:
            raise _RefusedRowError("serial_no", f"another instrument of the register has this {self._named()}", serial)
        if target is not None and (earlier := self.claimed.setdefault(target.id, row.row)) != row.row:
            raise _RefusedRowError("serial_no", f"row {earlier} is the same instrument", serial)
        return target

    def _named(self) -> str:
        names = {"manufacturer": "manufacturer", "model": "model", "serial_no": "serial number"}
        shown = [names[part] for part in self.parts]
        return shown[0] if len(shown) == 1 else f"{', '.join(shown[:-1])} and {shown[-1]}"

    def _same(self, key: tuple[str, ...], target: InstrumentRow | None) -> InstrumentRow | None:
        """The instrument of this identity; refused when the file's columns cannot say which one."""
        found = self.by_identity.get(key, [])
        if len(found) > 1 and (target is None or target not in found):
            missing = " and ".join(_LABEL_OF[p] for p in IDENTITY if p not in self.parts)
            raise _RefusedRowError(
                "serial_no",
                f"{len(found)} instruments of the register have this {self._named()}: add the {missing} "
                "column, or the management number, to say which one",
                key[-1],
            )
        if len(found) > 1:
            return target
        return found[0] if found else None


async def plan_rows(
    db: Connection,
    rows: list[PlannedRow],
    existing: Sequence[InstrumentRow],
    *,
    catalog: Catalog,
    enterprise: Enterprise,
    today: dt.date,
    headers: dict[str, str],
    positions: dict[str, int] | None = None,
    parts: Sequence[str] = IDENTITY,
    skip: frozenset[int] = frozenset(),
) -> list[RowProblem]:
    """Match each row to the register and apply the rules; fills each row's outcome and values.

    ``existing`` holds every instrument of the enterprise that shares a management number or an
    identity (over the identity ``parts`` the file has) with a row; ``headers`` and ``positions``
    give each field's header and column index in the file, so that the report shows the cell as
    written (`2年`, not 24); rows numbered in ``skip`` (cells that could not be read) are not
    planned. The database is read only for a matched instrument whose governing certificate decides
    the change.
    """
    matcher = _Matcher(existing, parts)
    problems: list[RowProblem] = []

    where = positions or {}

    def problem(row: PlannedRow, field: str | None, message: str, value: object = None) -> None:
        column = headers.get(field) if field else None
        index = where.get(field) if field else None
        if index is not None and index < len(row.cells):
            value = cell_text(row.cells[index])[:200] or None
        shown = None if value is None else str(value)
        problems.append(RowProblem(row=row.row, column=column, field=field, message=message, value=shown))

    for row in rows:
        if row.row in skip:
            continue
        try:
            row.target = matcher.match(row)
            if row.target is None:
                row.values = _new(row.given, catalog, enterprise.period_rule, today)
            else:
                row.values, row.outcome = await _change(db, row.given, row.target, catalog, enterprise, today)
        except _RefusedRowError as refused:
            problem(row, refused.field, refused.message, refused.value)
        except MetregError as exc:
            for error in exc.errors:
                problem(row, error.field, error.message, row.given.get(error.field))
            if not exc.errors:
                problem(row, None, exc.detail)
    return problems


#: What a registration without those fields gets (model, manufacturer, legal use, lifecycle).
_DEFAULTS: Final = {
    f.name: f.default
    for f in msgspec.structs.fields(InstrumentCreate)
    if f.default is not msgspec.NODEFAULT and f.default is not None
}


def _new(given: dict[str, Any], catalog: Catalog, rule: PeriodRule, today: dt.date) -> dict[str, Any]:
    values = {**_DEFAULTS, **given}
    if values["lifecycle"] is Lifecycle.REPLACED:
        raise RuleViolationError.for_field(
            "lifecycle", "an instrument becomes replaced by the replace operation, not by an import"
        )
    item = catalog.rule(values.get("catalog_code"))
    values["cycle_months"] = _own_cycle(item, values["legal_use"], values.get("cycle_months"))
    facts = (item, values["legal_use"], values["cycle_months"], values.get("last_verified_on"))
    derived = _derive(*facts, None, rule, today)
    printed = values.get("valid_until")
    if printed is not None and printed != derived.valid_until:
        derived = _derive(*facts, printed, rule, today)
    values.update(msgspec.structs.asdict(derived))
    return values


def _own_cycle(item: CatalogRule | None, legal_use: LegalUse, cycle_months: int | None) -> int | None:
    """The cycle a row gives, or None when it is the catalogue default for the item and use.

    A ledger (metreg's own export among them) lists the cycle in force, not whether it is the
    instrument's own: read as its own, the catalogue default would be frozen into the instrument
    and a later change of the catalogue would not reach it.
    """
    if cycle_months is None:
        return None
    try:
        default = resolve_cycle(item, effective_regime(item, legal_use), None).months
    except RuleViolationError:
        return cycle_months  # no default applies: the cycle is the instrument's own
    return None if cycle_months == default else cycle_months


@functools.lru_cache(maxsize=4096)
def _derive(
    item: CatalogRule | None,
    legal_use: LegalUse,
    cycle_months: int | None,
    last_verified_on: dt.date | None,
    printed_valid_until: dt.date | None,
    rule: PeriodRule,
    today: dt.date,
) -> Derived:
    # A ledger repeats the same few items, uses, cycles and dates; the rules are pure, so each
    # combination is worked out once. Errors are not cached (lru_cache stores results only).
    return derive(
        item=item,
        legal_use=legal_use,
        cycle_months=cycle_months,
        last_verified_on=last_verified_on,
        printed_valid_until=printed_valid_until,
        rule=rule,
        today=today,
    )


async def _change(
    db: Connection,
    given: dict[str, Any],
    target: InstrumentRow,
    catalog: Catalog,
    enterprise: Enterprise,
    today: dt.date,
) -> tuple[dict[str, Any], str]:
    """The fields of ``target`` the row changes, re-derived exactly as a PATCH would, and the outcome."""
    changes = {k: v for k, v in given.items() if v != getattr(target, k)}
    item = catalog.rule(changes.get("catalog_code", target.catalog_code))
    legal_use = changes.get("legal_use", target.legal_use)
    if "cycle_months" in changes:
        own = _own_cycle(item, legal_use, changes["cycle_months"])
        if own == target.cycle_months:
            del changes["cycle_months"]  # the catalogue default, which it already follows
        else:
            changes["cycle_months"] = own
    if changes.get("valid_until") is not None and target.validity_source is not ValiditySource.CERTIFICATE:
        cycle = changes.get("cycle_months", target.cycle_months)
        verified = changes.get("last_verified_on", target.last_verified_on)
        try:
            computed = _derive(item, legal_use, cycle, verified, None, enterprise.period_rule, today).valid_until
        except RuleViolationError:
            computed = None  # the rules refuse the row: rederive below says why
        if changes["valid_until"] == computed:
            changes["valid_until"] = None  # the date metreg computes: kept as computed, not printed
    if target.validity_source is ValiditySource.CERTIFICATE and changes.get("valid_until", 0) is None:
        del changes["valid_until"]  # an empty cell leaves the certificate's date; a different one is refused
    if not changes:
        return {}, "unchanged"
    if "lifecycle" in changes:
        raise RuleViolationError.for_field(
            "lifecycle",
            f"is {target.lifecycle} in the register: the state changes by its own operations "
            "(seal, unseal, scrap, replace, a recorded result), not by an import",
        )
    refuse_certificate_facts(target, changes)
    changes.update(await rederive(db, target, changes, item, enterprise, today))
    # An empty valid-until cell asks for the computed date, which may be the one stored.
    changes = {k: v for k, v in changes.items() if v != getattr(target, k)}
    return changes, "updated" if changes else "unchanged"
