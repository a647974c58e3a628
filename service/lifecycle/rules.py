"""The lifecycle transitions an enterprise may take, as one table.

Sealing (封存) withdraws an instrument from use without pausing its validity; unsealing after
``valid_until`` leaves it waiting for verification (design.md §4, domain.md §1.5 status labels
[S-STATUS]). Scrapped and replaced instruments are final. Results move instruments too (a failure
to ``failed``, a pass back to ``in_service``): those are decided in ``service.certificates.rules``.
"""

from __future__ import annotations

import datetime as dt
import enum

from service.catalog.rules import Regime
from service.errors import TransitionError
from service.instruments.rules import Lifecycle

__all__ = ("TRANSITIONS", "Action", "allowed_actions", "transition")


class Action(enum.StrEnum):
    SEAL = "seal"
    UNSEAL = "unseal"
    SCRAP = "scrap"
    REPLACE = "replace"

    @property
    def past(self) -> str:
        return {"seal": "sealed", "unseal": "unsealed", "scrap": "scrapped", "replace": "replaced"}[self.value]


_L = Lifecycle
#: action -> the lifecycles it is allowed from. The target is fixed except for unseal (below).
TRANSITIONS: dict[Action, frozenset[Lifecycle]] = {
    Action.SEAL: frozenset({_L.IN_SERVICE, _L.PENDING_VERIFICATION}),
    Action.UNSEAL: frozenset({_L.SEALED}),
    Action.SCRAP: frozenset({_L.IN_SERVICE, _L.SEALED, _L.FAILED, _L.PENDING_VERIFICATION}),
    Action.REPLACE: frozenset({_L.IN_SERVICE, _L.SEALED, _L.FAILED, _L.PENDING_VERIFICATION}),
}


def allowed_actions(lifecycle: Lifecycle) -> list[Action]:
    """The actions allowed from ``lifecycle``, in table order."""
    return [action for action, sources in TRANSITIONS.items() if lifecycle in sources]


def transition(
    action: Action,
    lifecycle: Lifecycle,
    *,
    regime: Regime,
    last_verified_on: dt.date | None,
    valid_until: dt.date | None,
    effective_on: dt.date,
) -> Lifecycle:
    """The lifecycle ``action`` leads to, effective on the local date ``effective_on``.

    Unsealing returns the instrument to service only while its validity still runs on
    ``effective_on``; after ``valid_until``, or with no verification on record, it is
    ``pending_verification`` (design.md §4). A scrap-on-failure instrument with its initial
    verification never expires.

    Raises:
        TransitionError: not allowed from ``lifecycle``; lists the actions that are.
    """
    if lifecycle not in TRANSITIONS[action]:
        allowed = [a.value for a in allowed_actions(lifecycle)]
        raise TransitionError(
            f"an instrument that is {lifecycle} cannot be {action.past}; allowed: {', '.join(allowed) or 'nothing'}",
            allowed=allowed,
        )
    match action:
        case Action.SEAL:
            return Lifecycle.SEALED
        case Action.SCRAP:
            return Lifecycle.SCRAPPED
        case Action.REPLACE:
            return Lifecycle.REPLACED
        case Action.UNSEAL:
            never_expires = regime is Regime.INITIAL_ONLY_SCRAP_ON_FAILURE and last_verified_on is not None
            if never_expires or (valid_until is not None and effective_on <= valid_until):
                return Lifecycle.IN_SERVICE
            return Lifecycle.PENDING_VERIFICATION
    raise AssertionError(action)  # pragma: no cover - the match is exhaustive
