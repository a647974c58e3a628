"""Generating a register: enterprises and their instruments as rows, from a seed.

Pure functions (no I/O, no clock): everything is drawn from seeded ``random.Random`` instances, so
a seed, a size and a local "today" give the same register every time. Each enterprise draws from
its own generator (seeded by the register's parameters and its index), so enterprises can be
generated in any order, and by several loaders at once, with the same result.

Statuses come in fixed shares (:data:`SHARES`): instrument *k* of the register (counted across
enterprises) takes slot ``k % 100`` of a wheel that spreads each status evenly, so any 100
consecutive instruments hold the shares exactly. Dates are then drawn to give the status wanted,
and ``valid_until`` is derived by :func:`service.instruments.rules.derive`, the registration's own
rule; :func:`service.instruments.rules.status_of` confirms each row.
"""

from __future__ import annotations

import bisect
import datetime as dt
import functools
import hashlib
import itertools
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from random import Random
from typing import Any, Final, TypeVar

from service import dates
from service.catalog.rules import CatalogRule, Regime, effective_regime
from service.demo_register.trades import REGIONS, TRADES, Kind, Region, Trade
from service.enterprises.rules import credit_code_check_char
from service.instruments.rules import Derived, DueSoonWindows, Lifecycle, Status, derive, status_of

__all__ = (
    "COLUMNS",
    "SHARES",
    "EnterprisePlan",
    "EnterpriseSpec",
    "enterprise_plan",
    "plan_register",
    "register_digest",
    "wheel",
)

#: Share of each status in a generated register, in percent. A replaced instrument's successor is
#: one of the valid ones (same kind and place, verified on the day it went in).
SHARES: Final = (
    (Status.VALID, 48),
    (Status.DUE_SOON, 12),
    (Status.OVERDUE, 10),
    (Status.UNVERIFIED, 3),
    (Status.FAILED, 5),
    (Status.SEALED, 6),
    (Status.PENDING_VERIFICATION, 4),
    (Status.SCRAPPED, 6),
    (Status.REPLACED, 6),
)

#: The instruments columns a generated row fills, in the order of its tuple.
COLUMNS: Final = (
    "id",
    "enterprise_id",
    "catalog_code",
    "name",
    "model",
    "serial_no",
    "manufacturer",
    "management_no",
    "measuring_range",
    "accuracy_class",
    "location",
    "department",
    "legal_use",
    "regime",
    "cycle_months",
    "lifecycle",
    "last_verified_on",
    "valid_until",
    "validity_source",
    "replaces",
    "replaced_by",
    "created_at",
    "updated_at",
)

_TIMED: Final = frozenset({Status.VALID, Status.DUE_SOON, Status.OVERDUE})
_CIVIL_CODE_PERCENT: Final = 10
_LONG_REMINDERS_PERCENT: Final = 20
_YEAR: Final = 365
_LETTERS: Final = "ABCDEFGHJKLMNPQRSTUVWXYZ"
_SURNAMES: Final = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何林罗高"
_GIVEN_NAMES: Final = (
    "伟",
    "芳",
    "敏",
    "静",
    "磊",
    "洋",
    "勇",
    "军",
    "杰",
    "婷",
    "建华",
    "志强",
    "秀英",
    "海燕",
    "国平",
)
_Item = TypeVar("_Item")


def _spread(weights: Sequence[tuple[Any, int]]) -> list[Any]:
    """Lay out ``weights`` slots per item so that each item recurs at even intervals (stride scheduling)."""
    slots = [((k + 0.5) / count, order, item) for order, (item, count) in enumerate(weights) for k in range(count)]
    return [item for _, _, item in sorted(slots)]


_WHEEL: Final[tuple[Status, ...]] = tuple(_spread(SHARES))
_TRADE_WHEEL: Final[tuple[Trade, ...]] = tuple(_spread([(t, t.weight) for t in TRADES]))


def wheel() -> tuple[Status, ...]:
    """The 100 status slots, in the order instruments take them."""
    return _WHEEL


@dataclass(frozen=True, slots=True)
class EnterpriseSpec:
    """Where one enterprise sits in the register: what is known before its rows are drawn."""

    index: int
    trade: Trade
    region: Region
    size: int
    offset: int
    """Number of instruments of the enterprises before it (its first instrument's wheel position)."""
    key: str
    """Identifies this enterprise of this register (seed, size, index): a re-run finds it by its digest."""


def register_digest(key: str) -> bytes:
    """The SHA-256 kept as the "file" of the enterprise's import (instrument_imports.file_sha256)."""
    return hashlib.sha256(key.encode()).digest()


def plan_register(instruments: int, enterprises: int, seed: int) -> list[EnterpriseSpec]:
    """Split ``instruments`` over ``enterprises`` of mixed trades and regions.

    Trades recur in proportion to their weight; register sizes follow the trade's typical size
    with a log-normal spread, every enterprise keeping at least one instrument.

    Raises:
        ValueError: fewer instruments than enterprises, or either below one.
    """
    if enterprises < 1 or instruments < enterprises:
        raise ValueError("needs at least one enterprise and at least one instrument per enterprise")
    rng = Random(f"metreg demo register {seed}/{instruments}/{enterprises}")
    trades = [_TRADE_WHEEL[i % len(_TRADE_WHEEL)] for i in range(enterprises)]
    weights = [t.size * rng.lognormvariate(0, 0.6) for t in trades]
    sizes = _apportion(instruments - enterprises, weights)
    specs, offset = [], 0
    for i, trade in enumerate(trades):
        size = sizes[i] + 1
        key = f"metreg demo --instruments {instruments} --enterprises {enterprises} --seed {seed}: enterprise {i}"
        specs.append(EnterpriseSpec(i, trade, rng.choice(REGIONS), size, offset, key))
        offset += size
    return specs


def _apportion(total: int, weights: list[float]) -> list[int]:
    """``total`` split in proportion to ``weights`` by largest remainder (the parts add up exactly)."""
    scale = total / sum(weights)
    exact = [w * scale for w in weights]
    parts = [int(x) for x in exact]
    by_remainder = sorted(range(len(weights)), key=lambda i: parts[i] - exact[i])
    for i in by_remainder[: total - sum(parts)]:
        parts[i] += 1
    return parts


@dataclass(frozen=True, slots=True)
class _Replacement:
    predecessor: int
    successor: int
    kind: Kind
    on: dt.date


@dataclass(slots=True)
class EnterprisePlan:
    """One generated enterprise: its settings, and its instruments drawn on demand by :meth:`rows`."""

    spec: EnterpriseSpec
    id_base: int
    """High bits of its instruments' ids (drawn from the seed like everything else)."""
    name: str
    credit_code: str
    address: str
    contact_name: str
    contact_phone: str
    period_rule: dates.PeriodRule
    reminder_days: list[int]
    rotation_reminder_days: list[int]
    today: dt.date
    statuses: list[Status]
    """The status each instrument is generated to have on ``today``, by position."""
    management_nos: list[str]
    rules: dict[str, CatalogRule]
    seed_state: Any
    replacements: dict[int, _Replacement] = field(default_factory=dict)

    @property
    def windows(self) -> DueSoonWindows:
        return DueSoonWindows.from_reminders(self.reminder_days, self.rotation_reminder_days)

    def instrument_id(self, position: int) -> uuid.UUID:
        """The id of the instrument at ``position``: the enterprise's id with the position in its last bits.

        Computable for any position, so that a replaced instrument and its successor name each other
        wherever they are drawn, without keeping every id.
        """
        return uuid.UUID(int=self.id_base | position + 1, version=4)

    def rows(self, enterprise_id: uuid.UUID, now: dt.datetime) -> Iterator[tuple[Any, ...]]:
        """The instruments of ``enterprise_id`` as rows of :data:`COLUMNS`, drawn one at a time.

        Memory stays flat however large the enterprise: nothing but its statuses is kept.

        Raises:
            RuleViolationError: a drawn row breaks a registration rule (a bug in the generator).
        """
        rng = Random()
        rng.setstate(self.seed_state)
        draw = _Draw(self, rng)
        for position, status in enumerate(self.statuses):
            yield draw.row(position, status, enterprise_id, now)


def enterprise_plan(spec: EnterpriseSpec, rules: dict[str, CatalogRule], today: dt.date) -> EnterprisePlan:
    """The enterprise at ``spec``: its settings, its statuses and which instruments replaced which.

    ``rules`` are the catalogue rules by code; ``today`` is the enterprise's local date.
    """
    rng = Random(spec.key)
    digest = register_digest(spec.key)
    charset = "0123456789ABCDEFGHJKLMNPQRTUWXY"
    first17 = "91" + spec.region.code + "".join(charset[b % 31] for b in digest[:9])
    statuses = [_WHEEL[(spec.offset + p) % len(_WHEEL)] for p in range(spec.size)]
    prefix = spec.trade.prefix
    address, contact_name, contact_phone = _contact(spec)
    plan = EnterprisePlan(
        spec=spec,
        id_base=int.from_bytes(digest[16:]) & ~0xFFFF_FFFF_FFFF,
        name=rng.choice(spec.trade.names).format(city=spec.region.city, n=spec.index + 1),
        credit_code=first17 + credit_code_check_char(first17),
        address=address,
        contact_name=contact_name,
        contact_phone=contact_phone,
        period_rule=dates.PeriodRule.CIVIL_CODE
        if rng.randrange(100) < _CIVIL_CODE_PERCENT
        else dates.PeriodRule.INCLUSIVE_MINUS_ONE,
        reminder_days=[60, 14] if rng.randrange(100) < _LONG_REMINDERS_PERCENT else [30, 7],
        rotation_reminder_days=[90, 30],
        today=today,
        statuses=statuses,
        management_nos=[f"{prefix}-{p + 1:05d}" for p in range(spec.size)],
        rules=rules,
        seed_state=None,
    )
    _pair_replacements(plan, rng)
    plan.seed_state = rng.getstate()
    return plan


def _contact(spec: EnterpriseSpec) -> tuple[str, str, str]:
    """The address, contact person and phone of the enterprise at ``spec`` (its filing's title block).

    Drawn from a generator of their own: drawing them from the register's would change every
    instrument of a register generated before they existed.
    """
    rng = Random(f"{spec.key}: contact")
    region = spec.region
    address = f"{region.district}{rng.choice(region.roads)}{rng.randrange(1, 3000)}号"
    person = rng.choice(_SURNAMES) + rng.choice(_GIVEN_NAMES)
    digits = "".join(str(rng.randrange(10)) for _ in range(7))
    line = f"{region.area_code}-{rng.randrange(2, 9)}{digits[:3]} {digits[3:]}"
    phone = f"{line} 转 {rng.randrange(800, 900)}" if rng.randrange(3) == 0 else line
    return address, person, phone


def _pair_replacements(plan: EnterprisePlan, rng: Random) -> None:
    """Give each replaced instrument a successor among the valid ones.

    An enterprise too small to hold a valid instrument beside a replaced one (a register of one)
    gets a valid instrument in that slot instead: a replacement without its successor would be a
    register the API cannot produce.
    """
    valid = [p for p, s in enumerate(plan.statuses) if s is Status.VALID]
    for position, status in enumerate(plan.statuses):
        if status is not Status.REPLACED:
            continue
        if not valid:
            plan.statuses[position] = Status.VALID
            continue
        successor = valid.pop()
        kind = _pick(rng, plan.spec.trade.kinds)
        on = plan.today - dt.timedelta(days=_between(rng, 1, 120))
        link = _Replacement(position, successor, kind, on)
        plan.replacements[position] = plan.replacements[successor] = link


# Drawing is most of the generator's time, and Random.choice and .randrange spend theirs checking
# arguments: these draw the same way from one random() each (still deterministic for a seed).
def _one(rng: Random, items: Sequence[_Item]) -> _Item:
    return items[int(rng.random() * len(items))]


def _between(rng: Random, low: int, high: int) -> int:
    """An integer in [low, high)."""
    return low + int(rng.random() * (high - low))


def _pick(rng: Random, kinds: Sequence[Kind]) -> Kind:
    """A kind, in proportion to its weight."""
    cumulative = _cumulative(tuple(kinds))
    return kinds[bisect.bisect_right(cumulative, rng.random() * cumulative[-1])]


@functools.cache
def _cumulative(kinds: tuple[Kind, ...]) -> tuple[int, ...]:
    return tuple(itertools.accumulate(k.weight for k in kinds))


@dataclass(frozen=True, slots=True)
class _Facts:
    """What the rules make of one kind: computed once per enterprise, read for every row."""

    rule: CatalogRule | None
    regime: Regime
    cycle: int
    """Months of the cycle (or use life) that applies; 0 for a kind verified once."""
    window: int
    use: str
    regime_value: str


class _Draw:
    """Draws the rows of one enterprise in order from its generator."""

    def __init__(self, plan: EnterprisePlan, rng: Random) -> None:
        self.plan = plan
        self.rng = rng
        self.windows = plan.windows
        self.facts: dict[Kind, _Facts] = {}
        for kind in plan.spec.trade.kinds:
            rule = plan.rules[kind.catalog_code] if kind.catalog_code else None
            regime = effective_regime(rule, kind.use)
            cycle = kind.cycle_months or (rule.default_cycle_months if rule else None) or 0
            window = self.windows.for_regime(regime)
            self.facts[kind] = _Facts(rule, regime, cycle, window, kind.use.value, regime.value)
        kinds = plan.spec.trade.kinds
        self.expiring = [k for k in kinds if self.facts[k].regime is not Regime.INITIAL_ONLY_SCRAP_ON_FAILURE]

    def _derive(self, kind: Kind, verified: dt.date | None) -> Derived:
        """What registration stores for these facts: the one place ``valid_until`` comes from."""
        return derive(
            item=self.facts[kind].rule,
            legal_use=kind.use,
            cycle_months=kind.cycle_months,
            last_verified_on=verified,
            printed_valid_until=None,
            rule=self.plan.period_rule,
            today=self.plan.today,
        )

    def _status(self, lifecycle: Lifecycle, verified: dt.date | None, derived: Derived) -> Status:
        return status_of(
            lifecycle=lifecycle,
            regime=derived.regime,
            last_verified_on=verified,
            valid_until=derived.valid_until,
            today=self.plan.today,
            windows=self.windows,
        )

    def row(self, position: int, status: Status, enterprise_id: uuid.UUID, now: dt.datetime) -> tuple[Any, ...]:
        plan, rng = self.plan, self.rng
        link = plan.replacements.get(position)
        if link is not None:
            kind = link.kind
        elif status in (Status.DUE_SOON, Status.OVERDUE):
            kind = _pick(rng, self.expiring)  # a thermometer never lapses
        else:
            kind = _pick(rng, plan.spec.trade.kinds)
        facts = self.facts[kind]
        lifecycle = Lifecycle.IN_SERVICE if status in _TIMED or status is Status.UNVERIFIED else Lifecycle(status)
        verified, derived = self._dated(kind, facts, status, link, position)
        if self._status(lifecycle, verified, derived) is not status:
            raise AssertionError(f"generated {kind.catalog_code} verified on {verified} is not {status}")
        made = (verified or plan.today).year - _between(rng, 0, 3)
        serial = f"{made}{_one(rng, _LETTERS)}{position + 1:06d}"
        replaces = plan.instrument_id(link.predecessor) if link and link.successor == position else None
        replaced_by = plan.instrument_id(link.successor) if link and link.predecessor == position else None
        trade = plan.spec.trade
        return (
            plan.instrument_id(position),
            enterprise_id,
            kind.catalog_code,
            _one(rng, kind.names),
            _one(rng, kind.models),
            serial,
            _one(rng, kind.makers),
            plan.management_nos[position],
            kind.measuring_range,
            kind.accuracy_class,
            _one(rng, trade.places),
            _one(rng, trade.departments),
            facts.use,
            derived.regime.value,
            kind.cycle_months,
            lifecycle.value,
            verified,
            derived.valid_until,
            derived.validity_source.value,
            replaces,
            replaced_by,
            now,
            now,
        )

    def _dated(
        self, kind: Kind, facts: _Facts, status: Status, link: _Replacement | None, position: int
    ) -> tuple[dt.date | None, Derived]:
        """A last verification date that gives ``status`` today, and what registration derives from it."""
        today, rng = self.plan.today, self.rng
        if link is not None and link.successor == position:
            verified: dt.date | None = link.on  # installed with its verification on the day of the replacement
        elif link is not None:
            # Replaced near the end of its period (a limited-life meter at the end of its use life).
            cycle = facts.cycle
            lived = dates.add_months(link.on, -cycle) if cycle else link.on - dt.timedelta(days=2 * _YEAR)
            verified = min(link.on, lived + dt.timedelta(days=_between(rng, 0, 60)))
        elif status is Status.UNVERIFIED or (status is Status.PENDING_VERIFICATION and rng.random() < 0.5):
            verified = None
        elif status not in _TIMED:
            verified = today - dt.timedelta(days=_between(rng, 30, 6 * _YEAR))
        elif facts.regime is Regime.INITIAL_ONLY_SCRAP_ON_FAILURE:
            verified = today - dt.timedelta(days=_between(rng, 30, 8 * _YEAR))
        else:
            return self._timed(kind, facts, status)
        return verified, self._derive(kind, verified)

    def _timed(self, kind: Kind, facts: _Facts, status: Status) -> tuple[dt.date, Derived]:
        """A verification date whose derived valid-until is valid, due soon or overdue today."""
        today, rng, window = self.plan.today, self.rng, facts.window
        period = (dates.add_months(today, facts.cycle) - today).days
        for _ in range(20):
            if status is Status.DUE_SOON:
                days_left = _between(rng, 0, window + 1)
            elif status is Status.OVERDUE:
                # Mostly lapsed within the last two months; a tail forgotten for years.
                days_left = -_between(rng, 1, 60) if rng.random() < 2 / 3 else -_between(rng, 60, 4 * _YEAR)
            else:
                days_left = _between(rng, window + 1, max(window + 2, period - 1))
            # The inverse of the period rule is only approximate (month ends clamp): the status of
            # what derive() gives decides, and a miss draws again.
            verified = today + dt.timedelta(days=days_left + 1 - period)
            if verified > today:
                continue
            derived = self._derive(kind, verified)
            if self._status(Lifecycle.IN_SERVICE, verified, derived) is status:
                return verified, derived
        raise AssertionError(f"no verification date gives {status} for {kind.catalog_code}")  # pragma: no cover
