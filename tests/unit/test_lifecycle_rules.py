"""The lifecycle transition table, cell by cell (issue 3 point 6; design.md §4; domain.md §1.5)."""

from __future__ import annotations

import datetime as dt

import pytest

from service.catalog.rules import Regime
from service.errors import ConflictError, TransitionError
from service.instruments.rules import Lifecycle
from service.lifecycle.rules import TRANSITIONS, Action, allowed_actions, transition

D = dt.date
L = Lifecycle
SEAL, UNSEAL, SCRAP, REPLACE = Action.SEAL, Action.UNSEAL, Action.SCRAP, Action.REPLACE

# The GAUGE of domain.md §5: verified 2026-01-15, valid until 2026-07-14.
VERIFIED, UNTIL = D(2026, 1, 15), D(2026, 7, 14)
TODAY = D(2026, 6, 15)

#: (action, from) -> the lifecycle it leads to, or None when refused. Every one of the 24 cells.
#: Unseal's target depends on the dates; here the validity still runs (the date cases are below).
TABLE: dict[tuple[Action, Lifecycle], Lifecycle | None] = {
    (SEAL, L.IN_SERVICE): L.SEALED,
    (SEAL, L.SEALED): None,
    (SEAL, L.FAILED): None,
    (SEAL, L.SCRAPPED): None,
    (SEAL, L.REPLACED): None,
    (SEAL, L.PENDING_VERIFICATION): L.SEALED,
    (UNSEAL, L.IN_SERVICE): None,
    (UNSEAL, L.SEALED): L.IN_SERVICE,
    (UNSEAL, L.FAILED): None,
    (UNSEAL, L.SCRAPPED): None,
    (UNSEAL, L.REPLACED): None,
    (UNSEAL, L.PENDING_VERIFICATION): None,
    (SCRAP, L.IN_SERVICE): L.SCRAPPED,
    (SCRAP, L.SEALED): L.SCRAPPED,
    (SCRAP, L.FAILED): L.SCRAPPED,
    (SCRAP, L.SCRAPPED): None,
    (SCRAP, L.REPLACED): None,
    (SCRAP, L.PENDING_VERIFICATION): L.SCRAPPED,
    (REPLACE, L.IN_SERVICE): L.REPLACED,
    (REPLACE, L.SEALED): L.REPLACED,
    (REPLACE, L.FAILED): L.REPLACED,
    (REPLACE, L.SCRAPPED): None,
    (REPLACE, L.REPLACED): None,
    (REPLACE, L.PENDING_VERIFICATION): L.REPLACED,
}

#: What a 409 lists from each lifecycle, in table order (seal, unseal, scrap, replace).
ALLOWED: dict[Lifecycle, list[str]] = {
    L.IN_SERVICE: ["seal", "scrap", "replace"],
    L.SEALED: ["unseal", "scrap", "replace"],
    L.FAILED: ["scrap", "replace"],
    L.SCRAPPED: [],
    L.REPLACED: [],
    L.PENDING_VERIFICATION: ["seal", "scrap", "replace"],
}


def _go(
    action: Action,
    lifecycle: Lifecycle,
    *,
    regime: Regime = Regime.PERIODIC,
    last_verified_on: dt.date | None = VERIFIED,
    valid_until: dt.date | None = UNTIL,
    effective_on: dt.date = TODAY,
) -> Lifecycle:
    return transition(
        action,
        lifecycle,
        regime=regime,
        last_verified_on=last_verified_on,
        valid_until=valid_until,
        effective_on=effective_on,
    )


def test_the_table_covers_every_action_and_lifecycle() -> None:
    assert set(TABLE) == {(a, lc) for a in Action for lc in Lifecycle}
    assert len(TABLE) == 24


@pytest.mark.parametrize(
    ("action", "lifecycle", "expected"),
    [(a, lc, t) for (a, lc), t in TABLE.items()],
    ids=[f"{a}-from-{lc}" for (a, lc) in TABLE],
)
def test_transition_cell(action: Action, lifecycle: Lifecycle, expected: Lifecycle | None) -> None:
    """Each cell: the target when allowed; otherwise a TransitionError listing what is allowed."""
    if expected is not None:
        assert _go(action, lifecycle) is expected
        assert action in allowed_actions(lifecycle)
        return
    with pytest.raises(TransitionError) as raised:
        _go(action, lifecycle)
    assert list(raised.value.allowed) == ALLOWED[lifecycle]
    assert isinstance(raised.value, ConflictError)
    assert (raised.value.status, raised.value.slug) == (409, "illegal-transition")
    assert str(lifecycle) in raised.value.detail
    assert action not in allowed_actions(lifecycle)


@pytest.mark.parametrize("lifecycle", list(Lifecycle))
def test_allowed_actions_in_table_order(lifecycle: Lifecycle) -> None:
    assert [a.value for a in allowed_actions(lifecycle)] == ALLOWED[lifecycle]


def test_the_table_is_consistent_with_allowed_actions() -> None:
    """One table in code: TRANSITIONS is the only source of allowed_actions."""
    for action, sources in TRANSITIONS.items():
        for lifecycle in Lifecycle:
            assert (action in allowed_actions(lifecycle)) == (lifecycle in sources)


def test_final_lifecycles_allow_nothing_and_say_so() -> None:
    for final in (L.SCRAPPED, L.REPLACED):
        for action in Action:
            with pytest.raises(TransitionError) as raised:
                _go(action, final)
            assert raised.value.allowed == ()
            assert "nothing" in raised.value.detail


@pytest.mark.parametrize(
    ("rule", "regime", "last_verified_on", "valid_until", "effective_on", "expected"),
    [
        ("unseal before valid_until: back in service", Regime.PERIODIC, VERIFIED, UNTIL, D(2026, 6, 15), L.IN_SERVICE),
        ("unseal on valid_until (last valid day): in service", Regime.PERIODIC, VERIFIED, UNTIL, UNTIL, L.IN_SERVICE),
        (
            "unseal the day after valid_until: pending verification",
            Regime.PERIODIC,
            VERIFIED,
            UNTIL,
            D(2026, 7, 15),
            L.PENDING_VERIFICATION,
        ),
        (
            "unseal long after valid_until: pending verification",
            Regime.PERIODIC,
            VERIFIED,
            UNTIL,
            D(2027, 3, 1),
            L.PENDING_VERIFICATION,
        ),
        ("unseal never verified: pending verification", Regime.PERIODIC, None, None, TODAY, L.PENDING_VERIFICATION),
        (
            "unseal verified but without validity (voided): pending",
            Regime.PERIODIC,
            VERIFIED,
            None,
            TODAY,
            L.PENDING_VERIFICATION,
        ),
        (
            "unseal not-controlled instrument after its calibration interval: pending",
            Regime.NOT_CONTROLLED,
            VERIFIED,
            UNTIL,
            D(2026, 8, 1),
            L.PENDING_VERIFICATION,
        ),
        (
            "unseal limited-life meter within its use life: in service",
            Regime.INITIAL_ONLY_LIMITED_LIFE,
            D(2020, 6, 16),
            D(2026, 6, 15),
            D(2026, 6, 15),
            L.IN_SERVICE,
        ),
        (
            "unseal limited-life meter after its use life: pending",
            Regime.INITIAL_ONLY_LIMITED_LIFE,
            D(2020, 6, 16),
            D(2026, 6, 15),
            D(2026, 6, 16),
            L.PENDING_VERIFICATION,
        ),
        (
            "scrap-on-failure with its initial verification never expires",
            Regime.INITIAL_ONLY_SCRAP_ON_FAILURE,
            D(2019, 3, 1),
            None,
            D(2999, 12, 31),
            L.IN_SERVICE,
        ),
        (
            "scrap-on-failure never verified: pending verification",
            Regime.INITIAL_ONLY_SCRAP_ON_FAILURE,
            None,
            None,
            TODAY,
            L.PENDING_VERIFICATION,
        ),
    ],
)
def test_unseal_by_dates(
    rule: str,
    regime: Regime,
    last_verified_on: dt.date | None,
    valid_until: dt.date | None,
    effective_on: dt.date,
    expected: Lifecycle,
) -> None:
    got = _go(
        UNSEAL,
        L.SEALED,
        regime=regime,
        last_verified_on=last_verified_on,
        valid_until=valid_until,
        effective_on=effective_on,
    )
    assert got is expected, rule


@pytest.mark.parametrize("action", [SEAL, SCRAP, REPLACE])
def test_other_targets_do_not_depend_on_dates(action: Action) -> None:
    """Sealing does not pause validity and scrap/replace are final: only unseal reads the dates."""
    expired = _go(action, L.IN_SERVICE, effective_on=D(2027, 1, 1))
    unverified = _go(action, L.IN_SERVICE, last_verified_on=None, valid_until=None)
    assert expired is unverified is TABLE[(action, L.IN_SERVICE)]


def test_a_refusal_comes_before_any_date_reasoning() -> None:
    """Unsealing an in-service instrument is refused even when its validity would allow service."""
    with pytest.raises(TransitionError) as raised:
        _go(UNSEAL, L.IN_SERVICE, regime=Regime.INITIAL_ONLY_SCRAP_ON_FAILURE, valid_until=None)
    assert list(raised.value.allowed) == ["seal", "scrap", "replace"]


@pytest.mark.parametrize(
    ("action", "lifecycle", "words"),
    [
        (SEAL, L.FAILED, "cannot be sealed"),
        (UNSEAL, L.IN_SERVICE, "cannot be unsealed"),
        (SCRAP, L.SCRAPPED, "cannot be scrapped"),
        (REPLACE, L.REPLACED, "cannot be replaced"),
    ],
)
def test_the_refusal_names_the_action_in_words(action: Action, lifecycle: Lifecycle, words: str) -> None:
    """The 409 detail is read by people: 'scrapped' and 'replaced', not 'scraped' or 'replaceed'."""
    with pytest.raises(TransitionError) as raised:
        _go(action, lifecycle)
    assert words in raised.value.detail
