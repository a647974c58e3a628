"""What a drill comes to: the counts, the verdict, the table and the JSON.

The arithmetic is kept apart from the drills so that it is tested without any fault: a notice is
*delivered* when its receiver accepted it (answered 2xx) at least once, *failed* when the register
shows it failed after its last try (visible in the API, not lost), and *lost* when it is neither.
A notice accepted more than once is a duplicate: *allowed* when the drill knows the first call was
on the wire when the crash came (design.md §6: receivers deduplicate on ``notice_id``),
*unexpected* otherwise. Calls a receiver got that the register did not record as tries are
duplicates too (they were sent behind the register's back).
"""

from __future__ import annotations

import collections
import datetime as dt
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path

import msgspec

__all__ = ("DrillResult", "Tally", "table", "tally", "write_json")


class Tally(msgspec.Struct, frozen=True, kw_only=True):
    expected: int
    delivered: int
    failed: int
    lost: int
    resent_after_crash: int
    """Notices accepted twice because the first call was in flight at the crash (allowed)."""
    duplicated: int
    """Notices accepted more than once, or called more often than recorded, for no crash (unexpected)."""


def tally(
    expected: Collection[str],
    accepted: Mapping[str, int],
    *,
    failed: Collection[str] = (),
    in_flight: Collection[str] = (),
    unrecorded_calls: Mapping[str, int] | None = None,
) -> Tally:
    """Count a drill's notices.

    ``accepted``: notice id -> calls its receiver answered 2xx; ``failed``: notices the register
    shows failed; ``in_flight``: notices whose call was on the wire at a crash;
    ``unrecorded_calls``: notice id -> calls received beyond the tries the register recorded.
    Notices outside ``expected`` are ignored (another drill's, or a ping).
    """
    wanted = set(expected)
    got = {n for n, calls in accepted.items() if calls > 0 and n in wanted}
    twice = {n for n, calls in accepted.items() if calls > 1 and n in wanted}
    allowed = {n for n in twice if n in in_flight and accepted[n] == 2}
    unrecorded = {n for n, extra in (unrecorded_calls or {}).items() if extra > 0 and n in wanted}
    failed_visibly = set(failed) & wanted - got
    return Tally(
        expected=len(wanted),
        delivered=len(got),
        failed=len(failed_visibly),
        lost=len(wanted - got - failed_visibly),
        resent_after_crash=len(allowed),
        duplicated=len((twice - allowed) | (unrecorded - allowed)),
    )


class DrillResult(msgspec.Struct, kw_only=True):
    drill: str
    tally: Tally
    answers_5xx: int
    """Server errors other than 503 (the designed answer while a dependency is down)."""
    answers_503: int = 0
    answers_total: int = 0
    passed: bool
    seconds: float
    checks: dict[str, bool] = msgspec.field(default_factory=dict)
    """What the verdict rests on, each check by name."""
    notes: list[str] = msgspec.field(default_factory=list)

    @property
    def verdict(self) -> str:
        return "pass" if self.passed else "FAIL"


def judge(tally_: Tally, answers_5xx: int, extra: Mapping[str, bool], *, failed_expected: int = 0) -> dict[str, bool]:
    """The checks every drill makes, plus its own ``extra`` ones."""
    return {
        "nothing lost": tally_.lost == 0,
        "no unexpected duplicate": tally_.duplicated == 0,
        "no 5xx but 503": answers_5xx == 0,
        "failed as the drill expects": tally_.failed == failed_expected,
        **extra,
    }


_COLUMNS = (
    ("drill", 22),
    ("expected", 8),
    ("delivered", 9),
    ("failed", 6),
    ("lost", 4),
    ("re-sent*", 8),
    ("duplicated", 10),
    ("5xx", 4),
    ("503", 5),
    ("seconds", 7),
    ("verdict", 7),
)


def _row(result: DrillResult) -> Sequence[object]:
    t = result.tally
    return (
        result.drill,
        t.expected,
        t.delivered,
        t.failed,
        t.lost,
        t.resent_after_crash,
        t.duplicated,
        result.answers_5xx,
        result.answers_503,
        f"{result.seconds:.0f}",
        result.verdict,
    )


def table(results: Iterable[DrillResult]) -> str:
    """The results as a Markdown table (readable in a terminal, pasteable into the README)."""
    lines = [
        "| " + " | ".join(name.ljust(width) for name, width in _COLUMNS) + " |",
        "|" + "|".join("-" * (width + 2) for _, width in _COLUMNS) + "|",
    ]
    notes: list[str] = []
    for result in results:
        cells = (
            str(c).rjust(w) if i else str(c).ljust(w)
            for i, (c, (_, w)) in enumerate(zip(_row(result), _COLUMNS, strict=True))
        )
        lines.append("| " + " | ".join(cells) + " |")
        failed_checks = [name for name, ok in result.checks.items() if not ok]
        if failed_checks:
            notes.append(f"{result.drill}: failed checks: {', '.join(failed_checks)}")
        notes.extend(f"{result.drill}: {note}" for note in result.notes)
    lines.append("")
    lines.append("* re-sent after a crash, allowed by design (the call was on the wire; receivers dedupe on notice_id)")
    return "\n".join(lines + notes)


class Run(msgspec.Struct, kw_only=True):
    started_at: dt.datetime
    seconds: float
    passed: bool
    drills: list[DrillResult]


def write_json(results: Sequence[DrillResult], started_at: dt.datetime, seconds: float, directory: Path) -> Path:
    """``latest.json`` in ``directory``: the run and every drill's counts, checks and notes."""
    directory.mkdir(parents=True, exist_ok=True)
    run = Run(
        started_at=started_at, seconds=round(seconds, 1), passed=all(r.passed for r in results), drills=list(results)
    )
    path = directory / "latest.json"
    path.write_bytes(msgspec.json.format(msgspec.json.encode(run)) + b"\n")
    return path


def counted(values: Iterable[str]) -> dict[str, int]:
    return dict(collections.Counter(values))
