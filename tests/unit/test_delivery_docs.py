"""The numbers README.md and .env.example give about delivery are the code's."""

from __future__ import annotations

import re
from pathlib import Path

from jobs.dispatch import BATCH
from jobs.runtime import PARALLEL_SENDS

ROOT = Path(__file__).parents[2]


def stated(pattern: str, *files: str) -> list[int]:
    """Every number ``pattern`` (one group) finds in ``files``, whitespace taken as any."""
    found = []
    for name in files:
        text = " ".join((ROOT / name).read_text().split())
        found += [int(n) for n in re.findall(pattern, text)]
    return found


def test_the_sends_a_delivery_job_has_in_flight_are_stated_as_parallel_sends() -> None:
    at_a_time = stated(r"side by side \(at most (\d+) at a time\)", "README.md")
    in_flight = stated(r"(\d+) calls in flight", "README.md", ".env.example")
    assert at_a_time
    assert in_flight
    assert set(at_a_time + in_flight) == {PARALLEL_SENDS}


def test_the_notices_of_a_delivery_job_are_stated_as_the_dispatch_batch() -> None:
    per_job = stated(r"one arq job per (\d+) notices", "README.md")
    up_to = stated(r"a batch of up to (\d+) notices", "README.md", ".env.example")
    assert per_job
    assert up_to
    assert set(per_job + up_to) == {BATCH}
