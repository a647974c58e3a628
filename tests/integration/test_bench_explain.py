"""The EXPLAIN script runs end to end on a tiny register (so `make bench` cannot rot).

Plans on a few thousand rows say nothing about a million, so this checks that the script builds,
explains every case and reports, not which plans it finds.
"""

from __future__ import annotations

import uuid

import pytest

from bench import explain_filters, explain_lists, explain_planner, import_cost
from tests.conftest import BASE_DSN


async def test_explain_filters_runs_on_a_tiny_register(capsys: pytest.CaptureFixture[str]) -> None:
    dsn = f"{BASE_DSN.rsplit('/', 1)[0]}/metreg_bench_test_{uuid.uuid4().hex[:8]}"
    code = await explain_filters.main(
        ["--dsn", dsn, "--instruments", "3000", "--enterprises", "20", "--large", "1000", "--drop"]
    )
    out = capsys.readouterr()
    assert code in (0, 1)
    assert "loaded 3,000 instruments" in out.out
    for case in explain_filters.CASES:
        rows = [line for line in out.out.splitlines() if line.startswith(f"  {case.label:34} ")]
        assert len(rows) == 2, case.label  # once for the large, once for the small enterprise
    assert "1,000 instruments" in out.out


async def test_explain_lists_runs_on_a_tiny_register(capsys: pytest.CaptureFixture[str]) -> None:
    dsn = f"{BASE_DSN.rsplit('/', 1)[0]}/metreg_bench_test_{uuid.uuid4().hex[:8]}"
    code = await explain_lists.main(["--dsn", dsn, "--instruments", "2000", "--enterprises", "10", "--drop"])
    out = capsys.readouterr()
    assert code in (0, 1)
    assert "built 2,000 instruments" in out.out
    for case in explain_lists.CASES:
        first = [line for line in out.out.splitlines() if line.startswith(f"  {case.name}, first page ")]
        assert len(first) == 1, case.name  # then the same page as planned from the sixth run on
    assert "40,000 notices" in out.out


async def test_explain_planner_runs_on_a_tiny_register_and_reads_only_due_rows(
    capsys: pytest.CaptureFixture[str],
) -> None:
    dsn = f"{BASE_DSN.rsplit('/', 1)[0]}/metreg_bench_test_{uuid.uuid4().hex[:8]}"
    code = await explain_planner.main(
        ["--dsn", dsn, "--instruments", "3000", "--enterprises", "20", "--large", "1000", "--drop", "--limit", "5"]
    )
    out = capsys.readouterr()
    assert "loaded 3,000 instruments" in out.out
    lines = [line for line in out.out.splitlines() if " ms  read " in line]
    assert len(lines) == 2 * len(explain_planner.STATEMENTS)
    # The second run of the day finds and creates nothing: planning is idempotent.
    assert all(line.split("found")[1].split()[0] == "0" for line in lines if "second run" in line)
    assert any(line.split("found")[1].split()[0] != "0" for line in lines if "first run" in line)
    runs = [line.split("created")[1].split()[0] for line in out.out.splitlines() if "plan() in all" in line]
    assert len(runs) == 3  # the day before, kept; then the day's first and second runs
    assert runs[0] != "0"
    assert runs[1] != "0"
    assert runs[2] == "0"
    # The second run reads no instrument at all: nothing's day has come again.
    assert all(" read         0 instruments" in line for line in lines if "second run" in line)
    # On a tiny register the planner may scan a whole enterprise's rows; the bound still holds.
    assert code == 0, out.out


async def test_import_cost_prices_every_secondary_index_of_the_register(capsys: pytest.CaptureFixture[str]) -> None:
    dsn = f"{BASE_DSN.rsplit('/', 1)[0]}/metreg_bench_test_{uuid.uuid4().hex[:8]}"
    results = await import_cost.measure(dsn, rows=300, runs=1)
    out = capsys.readouterr().out
    labels = [label for label, _ in results]
    # Every index but the primary key is taken away once: an index added later is priced too.
    indexed = {"instruments_due", "instruments_lifecycle_due", "instruments_catalog_due", "instruments_use_due",
               "instruments_search", "instruments_identity", "instruments_management_no"}  # fmt: skip
    assert {label.removeprefix("without ") for label in labels if label.startswith("without instruments")} >= indexed
    assert labels[0] == "as the schema has it"
    assert labels[-2:] == ["without triggers (foreign keys, notice schedule)", "table and primary key only"]
    assert all(f"  {label} " in out for label in labels)
    assert "INSERT of 300 new instruments onto 300" in out
