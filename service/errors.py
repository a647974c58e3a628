"""Domain errors and their problem+json shape (RFC 9457).

Handlers and queries raise these; one exception handler in ``service.problems`` turns them into
responses, so no handler builds an error response by hand. The hierarchy::

    MetregError                      any error a client caused or may see
    ├── InvalidInputError     400    malformed input; names the offending fields
    ├── UnauthorizedError     401    no key, or a key that is unknown, malformed or revoked
    ├── ForbiddenError        403    a valid key that may not take this action
    ├── NotFoundError         404    absent, or outside the caller's scope (indistinguishable)
    ├── NotAcceptableError    406    no representation the client's Accept header takes
    ├── ConflictError         409    the write collides with the current state
    │   ├── DuplicateError           a unique fact already exists (serial, credit code, number)
    │   ├── StaleVersionError        optimistic concurrency: the client's version is old
    │   ├── TransitionError          a state change the current state does not allow; lists those it does
    │   ├── IdempotencyKeyBusyError  another request with the same Idempotency-Key is still running
    │   └── AnswerWithheldError      the Idempotency-Key's request is done, but its answer held a secret
    ├── PayloadTooLargeError  413
    ├── UnsupportedMediaError 415    a file that is not of a type the endpoint reads
    ├── RuleViolationError    422    well-formed input that breaks a legal or domain rule
    │   ├── RowsRejectedError        a table (an imported ledger) with rows that break them; lists each
    │   └── IdempotencyKeyReusedError  an Idempotency-Key already used for another request
    └── UnavailableError      503    a dependency (PostgreSQL, Redis) does not answer
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Self

import msgspec

__all__ = (
    "AnswerWithheldError",
    "ConflictError",
    "DuplicateError",
    "FieldError",
    "ForbiddenError",
    "IdempotencyKeyBusyError",
    "IdempotencyKeyReusedError",
    "InvalidInputError",
    "MetregError",
    "NotAcceptableError",
    "NotFoundError",
    "PayloadTooLargeError",
    "RowProblem",
    "RowsRejectedError",
    "RuleViolationError",
    "StaleVersionError",
    "TransitionError",
    "UnauthorizedError",
    "UnavailableError",
    "UnsupportedMediaError",
)


class FieldError(msgspec.Struct, frozen=True, kw_only=True):
    """One problem with one input field, addressed by its JSON path (``instruments[3].serial_no``)."""

    field: str
    message: str


class RowProblem(msgspec.Struct, frozen=True, kw_only=True):
    """One problem in a table a client sent: where it is (row and column as the file shows them), why, and the value."""

    row: int | None
    """The row number as a spreadsheet shows it (the header is usually row 1); null for the whole file."""
    column: str | None
    """The column's header as written in the file; null for the whole row or file."""
    field: str | None
    """The instrument field the column was read as."""
    message: str
    value: str | None = None
    """The offending cell as read."""


class MetregError(Exception):
    """Base of every error metreg reports to a client."""

    status: int = 500
    slug: str = "internal"
    title: str = "Internal Server Error"

    def __init__(self, detail: str, *, errors: Sequence[FieldError] = ()) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = tuple(errors)

    @classmethod
    def for_field(cls, field: str, message: str) -> Self:
        """Build the error for a single field, with the field named in the detail too."""
        return cls.for_fields([FieldError(field=field, message=message)])

    @classmethod
    def for_fields(cls, errors: Sequence[FieldError]) -> Self:
        """Build the error for several fields at once; the detail names each."""
        return cls("; ".join(f"{e.field}: {e.message}" for e in errors), errors=errors)

    def nested(self, prefix: str) -> Self:
        """The same error with its fields addressed inside ``prefix`` (``replacement.serial_no``)."""
        if not self.errors:
            return self
        return self.for_fields([FieldError(field=f"{prefix}.{e.field}", message=e.message) for e in self.errors])


class InvalidInputError(MetregError):
    status, slug, title = 400, "invalid-input", "Bad Request"


class UnauthorizedError(MetregError):
    status, slug, title = 401, "unauthorized", "Unauthorized"


class ForbiddenError(MetregError):
    status, slug, title = 403, "forbidden", "Forbidden"


class NotFoundError(MetregError):
    status, slug, title = 404, "not-found", "Not Found"


class NotAcceptableError(MetregError):
    status, slug, title = 406, "not-acceptable", "Not Acceptable"


class ConflictError(MetregError):
    status, slug, title = 409, "conflict", "Conflict"


class DuplicateError(ConflictError):
    slug = "duplicate"


class StaleVersionError(ConflictError):
    slug = "stale-version"


class TransitionError(ConflictError):
    """An action the current state does not allow; ``allowed`` lists the actions it does."""

    slug = "illegal-transition"

    def __init__(self, detail: str, *, allowed: Sequence[str]) -> None:
        super().__init__(detail)
        self.allowed = tuple(allowed)


class IdempotencyKeyBusyError(ConflictError):
    slug = "idempotency-key-busy"


class AnswerWithheldError(ConflictError):
    slug = "idempotent-answer-withheld"


class PayloadTooLargeError(MetregError):
    status, slug, title = 413, "payload-too-large", "Payload Too Large"


class UnsupportedMediaError(MetregError):
    status, slug, title = 415, "unsupported-media-type", "Unsupported Media Type"


class RuleViolationError(MetregError):
    status, slug, title = 422, "rule-violation", "Unprocessable Content"


class RowsRejectedError(RuleViolationError):
    """Rows of a table that break the rules; nothing of the table was written."""

    slug = "rows-rejected"

    def __init__(self, detail: str, *, rows: Sequence[RowProblem]) -> None:
        super().__init__(detail)
        self.rows = tuple(rows)


class IdempotencyKeyReusedError(RuleViolationError):
    slug = "idempotency-key-reused"


class UnavailableError(MetregError):
    status, slug, title = 503, "unavailable", "Service Unavailable"
