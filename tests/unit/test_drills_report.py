"""The fault drills' arithmetic, table and JSON, and the receiver's counting: checked without any
fault, so that ``make drills`` cannot rot between runs."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import httpx
import pytest

from drills.receiver import Received, WebhookReceiver
from drills.report import DrillResult, Tally, judge, table, tally, write_json

A, B, C, D = "a", "b", "c", "d"


def test_every_notice_accepted_once_is_delivered_nothing_lost_nothing_duplicated() -> None:
    assert tally({A, B, C}, {A: 1, B: 1, C: 1}) == Tally(
        expected=3, delivered=3, failed=0, lost=0, resent_after_crash=0, duplicated=0
    )


def test_a_notice_neither_accepted_nor_failed_is_lost_and_a_failed_one_is_not() -> None:
    counts = tally({A, B, C}, {A: 1}, failed={B})
    assert (counts.delivered, counts.failed, counts.lost) == (1, 1, 1)


def test_a_second_acceptance_is_allowed_only_for_a_call_in_flight_at_the_crash() -> None:
    counts = tally({A, B, C}, {A: 2, B: 2, C: 1}, in_flight={A})
    assert (counts.resent_after_crash, counts.duplicated) == (1, 1)


def test_three_acceptances_are_a_duplicate_even_after_a_crash() -> None:
    counts = tally({A}, {A: 3}, in_flight={A})
    assert (counts.resent_after_crash, counts.duplicated) == (0, 1)


def test_calls_the_register_did_not_record_are_duplicates_unless_in_flight() -> None:
    counts = tally({A, B, C}, {A: 1, B: 1, C: 1}, unrecorded_calls={A: 1, B: 0, C: -1})
    assert counts.duplicated == 1
    assert tally({A}, {A: 2}, in_flight={A}, unrecorded_calls={A: 1}).duplicated == 0


def test_notices_of_others_and_a_failed_then_delivered_notice_count_right() -> None:
    counts = tally({A, B}, {A: 1, D: 5}, failed={A, D})
    assert (counts.expected, counts.delivered, counts.failed, counts.lost, counts.duplicated) == (2, 1, 0, 1, 0)


def test_judge_names_each_failed_check() -> None:
    counts = tally({A, B}, {A: 2}, failed={B})
    checks = judge(counts, answers_5xx=3, extra={"own check": True}, failed_expected=1)
    assert checks == {
        "nothing lost": True,
        "no unexpected duplicate": False,
        "no 5xx but 503": False,
        "failed as the drill expects": True,
        "own check": True,
    }


def result(name: str, passed: bool) -> DrillResult:
    counts = tally({A, B, C}, {A: 1, B: 2}, in_flight={B})
    return DrillResult(
        drill=name,
        tally=counts,
        answers_5xx=0 if passed else 2,
        answers_503=7,
        answers_total=100,
        passed=passed,
        seconds=12.4,
        checks={"nothing lost": passed},
        notes=["a note"],
    )


def test_table_has_one_row_per_drill_with_its_counts_and_says_what_failed() -> None:
    text = table([result("worker SIGKILL", True), result("Redis restart", False)])
    lines = text.splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header == [
        "drill",
        "expected",
        "delivered",
        "failed",
        "lost",
        "re-sent*",
        "duplicated",
        "5xx",
        "503",
        "seconds",
        "verdict",
    ]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:4]]
    assert rows[0] == ["worker SIGKILL", "3", "2", "0", "1", "1", "0", "0", "7", "12", "pass"]
    assert rows[1][0] == "Redis restart"
    assert rows[1][-1] == "FAIL"
    assert "Redis restart: failed checks: nothing lost" in lines
    assert "worker SIGKILL: a note" in lines


def test_json_holds_every_drill_and_the_run_verdict(tmp_path: Path) -> None:
    started = dt.datetime(2026, 6, 15, 4, 0, tzinfo=dt.UTC)
    path = write_json([result("worker SIGKILL", True), result("Redis restart", False)], started, 61.23, tmp_path)
    run = json.loads(path.read_text())
    assert path == tmp_path / "latest.json"
    assert (run["started_at"], run["seconds"], run["passed"]) == ("2026-06-15T04:00:00Z", 61.2, False)
    first = run["drills"][0]
    assert first["drill"] == "worker SIGKILL"
    assert first["tally"] == {
        "expected": 3,
        "delivered": 2,
        "failed": 0,
        "lost": 1,
        "resent_after_crash": 1,
        "duplicated": 0,
    }
    assert (first["answers_5xx"], first["answers_503"], first["passed"]) == (0, 7, True)


@pytest.mark.timeout(30)
async def test_the_receiver_counts_calls_and_accepted_calls_per_notice() -> None:
    def answer(number: int, request: Received) -> int:
        return 503 if number == 0 else 200

    with WebhookReceiver(respond=answer).running() as receiver:
        async with httpx.AsyncClient() as client:
            for notice in (A, A, B):
                await client.post(receiver.url, json={"notice_id": notice})
            await client.post(receiver.url, json={"notice_id": C}, headers={"Metreg-Event": "ping"})
    assert receiver.statuses == [503, 200, 200, 200]
    assert receiver.calls() == {A: 2, B: 1}
    assert receiver.accepted() == {A: 1, B: 1}
