"""Content negotiation by ``Accept`` (RFC 9110 §12.5.1), as pure functions, and the ``Vary`` that
tells caches an answer was negotiated (§12.5.5).

Litestar's ``request.accept.best_match`` (2.25) gets the weights wrong twice over: a range weighted
``q=0``, which means "not acceptable", still matches, only last (litestar-org/litestar#5072); and
ranges are tried by weight alone, so in ``text/*;q=0.5, text/csv;q=0`` the wildcard took CSV,
which its own, more specific range refuses.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, MutableMapping, Sequence
from typing import Any, Final, NamedTuple

__all__ = ("VARY_STATE", "preferred_media_type", "vary_on", "with_vary")

#: Key of the request scope's state that lists the request headers the answer depends on; the app
#: adds them to the answer's ``Vary`` whatever the answer is (``service.app.MetregApp``), a 406
#: raised as an error included.
VARY_STATE: Final = "vary"


class _Range(NamedTuple):
    maintype: str
    subtype: str
    weight: float


def _weight_of(value: str) -> float:
    # A weight that is not a number is as if not sent (1), as Litestar reads it.
    try:
        weight = float(value)
    except ValueError:
        return 1.0
    return min(max(weight, 0.0), 1.0) if math.isfinite(weight) else 1.0


def _parse(text: str) -> _Range | None:
    kind, *parameters = (part.strip() for part in text.split(";"))
    maintype, slash, subtype = ("*/*" if kind == "*" else kind).lower().partition("/")
    if not (maintype and slash and subtype):
        return None
    weight = 1.0
    for parameter in parameters:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "q":
            weight = _weight_of(value.strip())
    return _Range(maintype, subtype, weight)


def _weight(ranges: Sequence[_Range], media_type: str) -> float:
    maintype, _, subtype = media_type.lower().partition("/")
    matching = [r for r in ranges if r.maintype in ("*", maintype) and r.subtype in ("*", subtype)]
    if not matching:
        return 0.0
    # The most specific range decides. Parameters do not narrow a match, so two ranges may name the
    # same type (text/csv;charset=latin1;q=0 and text/csv): the one that takes it more is the one meant.
    decisive = max(matching, key=lambda r: (r.maintype != "*", r.subtype != "*", r.weight))
    return decisive.weight


def preferred_media_type(accept: str, offered: Sequence[str]) -> str | None:
    """The one of ``offered`` that the ``Accept`` header value ``accept`` weighs highest, None when
    it takes none of them.

    Each offered type (``type/subtype``) has the weight of the most specific range that matches it:
    ``text/csv`` over ``text/*`` over ``*/*`` (or ``*``). A weight of 0, or no matching range, makes
    a type not acceptable. Equal weights go to the earlier of ``offered`` (the server's preference).
    Parameters other than the weight do not narrow a match; a part that is not a media range, and a
    weight that is not a number, are as if not sent.
    """
    ranges = [r for r in map(_parse, accept.split(",")) if r is not None]
    best, best_weight = None, 0.0
    for media_type in offered:
        weight = _weight(ranges, media_type)
        if weight > best_weight:
            best, best_weight = media_type, weight
    return best


def vary_on(state: MutableMapping[str, Any], name: str) -> None:
    """Note in the request scope's ``state`` that the answer depends on the request header ``name``."""
    names: list[str] = state.setdefault(VARY_STATE, [])
    if name not in names:
        names.append(name)


def with_vary(headers: Iterable[tuple[bytes, bytes]], names: Sequence[str]) -> list[tuple[bytes, bytes]]:
    """Raw response ``headers`` whose ``Vary`` also names ``names``: one ``Vary`` line with those it
    had (from any number of lines) and the missing ones after them, compared without case. ``*``
    already varies on everything and is left alone."""
    kept: list[tuple[bytes, bytes]] = []
    listed: list[str] = []
    for name, value in headers:
        if name.lower() == b"vary":
            listed += [v.strip() for v in value.decode("latin-1").split(",") if v.strip()]
        else:
            kept.append((name, value))
    if "*" not in listed:
        present = {v.lower() for v in listed}
        listed += [n for n in names if n.lower() not in present]
    return [*kept, (b"vary", ", ".join(listed).encode("latin-1"))]
