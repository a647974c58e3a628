"""A verification request's states, what moves it between them, and its time limit.

Pure functions. The lab completes an accepted request within its service level in working days
(1987 管理办法 Art. 8 leaves the limit to SAMR and the provinces; domain.md §1.4).
"""

from __future__ import annotations

import datetime as dt
import enum

from service import dates
from service.errors import ConflictError, TransitionError
from service.instruments.rules import Lifecycle

__all__ = (
    "REQUESTABLE",
    "TRANSITIONS",
    "RequestAction",
    "RequestStatus",
    "due_by",
    "is_overdue",
    "transition",
)


class RequestStatus(enum.StrEnum):
    SUBMITTED = "submitted"
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    CANCELLED = "cancelled"
    COMPLETED = "completed"  # every item has a result


class RequestAction(enum.StrEnum):
    ACCEPT = "accept"  # the lab
    REJECT = "reject"  # the lab
    CANCEL = "cancel"  # the enterprise, before any result


_PAST = {RequestAction.ACCEPT: "accepted", RequestAction.REJECT: "rejected", RequestAction.CANCEL: "cancelled"}

#: action -> (the states it is allowed from, the state it leads to)
TRANSITIONS: dict[RequestAction, tuple[frozenset[RequestStatus], RequestStatus]] = {
    RequestAction.ACCEPT: (frozenset({RequestStatus.SUBMITTED}), RequestStatus.ACCEPTED),
    RequestAction.REJECT: (frozenset({RequestStatus.SUBMITTED}), RequestStatus.REJECTED),
    RequestAction.CANCEL: (frozenset({RequestStatus.SUBMITTED, RequestStatus.ACCEPTED}), RequestStatus.CANCELLED),
}

#: Lifecycles an instrument may be sent for verification in: in use, or out of use until verified.
#: A sealed one is unsealed first; scrapped and replaced ones are gone.
REQUESTABLE = frozenset({Lifecycle.IN_SERVICE, Lifecycle.FAILED, Lifecycle.PENDING_VERIFICATION})


def transition(action: RequestAction, status: RequestStatus, *, results: int) -> RequestStatus:
    """The state ``action`` leads to from ``status``.

    Raises:
        TransitionError: not allowed from ``status``; lists the actions that are.
        ConflictError: cancelling once results are recorded (they are evidence and stay).
    """
    allowed_from, target = TRANSITIONS[action]
    if status not in allowed_from:
        allowed = [
            a.value
            for a, (sources, _) in TRANSITIONS.items()
            if status in sources and not (a is RequestAction.CANCEL and results)
        ]
        article = "an" if status[0] in "aeiou" else "a"
        raise TransitionError(
            f"{article} {status} request cannot be {_PAST[action]}; allowed: {', '.join(allowed) or 'nothing'}",
            allowed=allowed,
        )
    if action is RequestAction.CANCEL and results:
        raise ConflictError(f"{results} result(s) are already recorded for this request: it can no longer be cancelled")
    return target


def due_by(accepted_on: dt.date, sla_working_days: int) -> dt.date:
    """The day an accepted request is due: accepted date + the lab's service level in working days."""
    return dates.add_working_days(accepted_on, sla_working_days)


def is_overdue(status: RequestStatus, due: dt.date | None, today: dt.date) -> bool:
    """An accepted request is overdue once its due date has passed without every result."""
    return status is RequestStatus.ACCEPTED and due is not None and today > due
