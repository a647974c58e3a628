"""``metreg import`` on a terminal: a progress bar while it works, and the problems as a table."""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from typing import Final

import click

from service.errors import RowProblem
from service.ledger.schemas import ImportReport

__all__ = ("ProgressBar", "problem_table", "summary")

_WIDTHS: Final = {"row": 5, "column": 16, "value": 20}


class ProgressBar:
    """Stage and row count on one line of stderr, redrawn in place (only on a terminal)."""

    def __init__(self, *, enabled: bool) -> None:
        self.enabled = enabled

    def __call__(self, stage: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        width = 30
        filled = width if total == 0 else width * done // total
        bar = "█" * filled + "·" * (width - filled)
        end = "\n" if stage == "done" else ""
        click.echo(f"\r{stage:<9} [{bar}] {done:>7}/{total:<7}", err=True, nl=False)
        if end:
            click.echo("", err=True)


def _display_width(text: str) -> int:
    # CJK characters take two columns of a terminal.
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _fit(text: str, width: int) -> str:
    out, used = "", 0
    for char in text:
        w = _display_width(char)
        if used + w > width - (1 if used + w < _display_width(text) else 0):
            out += "…"
            used += 1
            break
        out += char
        used += w
    return out + " " * max(0, width - used)


def problem_table(problems: Sequence[RowProblem]) -> str:
    """The problems as aligned columns: row, column, value, message (the message is never cut)."""
    lines = [
        f"{_fit('row', _WIDTHS['row'])}  {_fit('column', _WIDTHS['column'])}  {_fit('value', _WIDTHS['value'])}  "
        "problem"
    ]
    lines.append("-" * (sum(_WIDTHS.values()) + 6 + 40))
    for p in problems:
        column = p.column or (p.field or "(file)")
        lines.append(
            f"{_fit(str(p.row or ''), _WIDTHS['row'])}  {_fit(column, _WIDTHS['column'])}  "
            f"{_fit(p.value or '', _WIDTHS['value'])}  {p.message}"
        )
    return "\n".join(lines)


def summary(report: ImportReport) -> str:
    """What the import did (or would do), and the columns it did not import."""
    verb = "would be" if report.dry_run else "were"
    lines = [
        f"{report.rows} data rows read from the {report.format.upper()}"
        + (f" ({report.encoding})" if report.encoding else "")
        + (f", sheet {report.sheet!r}" if report.sheet else "")
        + f", header in row {report.header_row}",
        f"  {report.created} {verb} created, {report.updated} updated, {report.unchanged} unchanged",
    ]
    skipped = [c for c in report.columns if c.field is None and c.note]
    for column in skipped:
        lines.append(f"  column {column.column!r} not imported: {column.note}")
    if report.import_id:
        lines.append(f"  import {report.import_id} (GET /v1/imports/{report.import_id})")
    return "\n".join(lines)
