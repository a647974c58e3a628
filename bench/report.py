"""The bench's result: one figure a line, its runs, the target beside it, pass or miss; as a table
for the terminal (and README) and as JSON for keeping."""

from __future__ import annotations

import datetime as dt
import enum
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec

__all__ = ("Figure", "Goal", "Report", "figure", "render", "write")


class Goal(enum.StrEnum):
    AT_LEAST = ">="
    UNDER = "<"


class Figure(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    unit: str
    runs: list[float]
    median: float
    min: float
    max: float
    goal: Goal | None = None
    target: float | None = None
    passed: bool | None = None
    """None for a figure shown for context, without a target of its own."""
    note: str = ""


def figure(
    name: str,
    unit: str,
    runs: Sequence[float],
    *,
    goal: Goal | None = None,
    target: float | None = None,
    note: str = "",
) -> Figure:
    """A figure from its runs; judged on the median."""
    if not runs:
        raise ValueError(f"{name}: no runs")
    median = statistics.median(runs)
    passed = None
    if goal is not None and target is not None:
        passed = median >= target if goal is Goal.AT_LEAST else median < target
    return Figure(
        name=name,
        unit=unit,
        runs=list(runs),
        median=median,
        min=min(runs),
        max=max(runs),
        goal=goal,
        target=target,
        passed=passed,
        note=note,
    )


class Report(msgspec.Struct, frozen=True, kw_only=True):
    started_at: dt.datetime
    seconds: float
    machine: dict[str, Any]
    scale: dict[str, Any]
    figures: list[Figure]
    details: dict[str, Any] = msgspec.field(default_factory=dict)
    """Each measurement's runs in full (load results, planner and delivery counts)."""


def _number(value: float, unit: str) -> str:
    if unit in {"×", "s"}:
        return f"{value:.2f}"
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.1f}"


def render(report: Report) -> str:
    """A Markdown table: figure, median [min–max], target, mark."""
    lines = ["| Figure | Median [min–max] | Target | |", "|---|---|---|---|"]
    for f in report.figures:
        measured = f"{_number(f.median, f.unit)} {f.unit} [{_number(f.min, f.unit)}–{_number(f.max, f.unit)}]"
        target = f"{f.goal.value} {_number(f.target, f.unit)} {f.unit}" if f.goal and f.target is not None else ""
        mark = {True: "pass", False: "**MISS**", None: ""}[f.passed]
        name = f"{f.name} ({f.note})" if f.note else f.name
        lines.append(f"| {name} | {measured} | {target} | {mark} |")
    return "\n".join(lines)


def write(report: Report, folder: Path) -> Path:
    """``<UTC timestamp>.json`` and ``latest.json`` in ``folder``; returns the first."""
    folder.mkdir(parents=True, exist_ok=True)
    data = msgspec.json.format(msgspec.json.encode(report))
    path = folder / f"{report.started_at.strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_bytes(data)
    (folder / "latest.json").write_bytes(data)
    return path
