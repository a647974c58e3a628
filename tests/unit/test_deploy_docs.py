"""README's deploy order, and `make run` keeping it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]


def _readme() -> str:
    return " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())


def test_the_readme_says_to_stop_the_worker_and_the_api_before_migrating() -> None:
    assert "Deploy order: stop the worker and the API, `metreg migrate`, then start the new release's." in _readme()


MAKE = shutil.which("make")


@pytest.mark.skipif(MAKE is None, reason="make is not installed")
def test_make_run_migrates_before_it_starts_the_worker_and_the_api() -> None:
    assert MAKE is not None
    # -n prints the recipe without running it; the arguments are fixed.
    dry_run = subprocess.run([MAKE, "-n", "run"], cwd=ROOT, capture_output=True, text=True, check=True).stdout  # noqa: S603
    commands = [line.strip() for line in dry_run.splitlines()]
    migrate = next(i for i, c in enumerate(commands) if "metreg migrate" in c)
    worker = next(i for i, c in enumerate(commands) if "metreg worker" in c)
    serve = next(i for i, c in enumerate(commands) if "metreg serve" in c)
    assert migrate < worker <= serve
    assert "make run keeps this order" in _readme().replace("`", "")
