"""Credit codes (GB 32100-2015), time zones and reminder offsets."""

from __future__ import annotations

import pytest

from service.enterprises.rules import (
    credit_code_check_char,
    credit_code_problem,
    is_valid_timezone,
    reminder_days_problem,
)


@pytest.mark.parametrize("code", ["91350100M000100Y43", "91110000600037341L", "9144030071526726XG"])
def test_real_credit_codes_pass(code: str) -> None:
    assert credit_code_problem(code) is None


@pytest.mark.parametrize(
    ("code", "why"),
    [
        ("91350100M000100Y44", "check character"),
        ("91350100M000100Y4", "18 characters"),
        ("91350100M000100Y433", "18 characters"),
        ("91350100M00010OY43", "capital letters"),  # O is not in the character set
        ("91350100m000100y43", "capital letters"),
    ],
)
def test_bad_credit_codes_are_explained(code: str, why: str) -> None:
    problem = credit_code_problem(code)
    assert problem is not None
    assert why in problem


def test_check_character_wraps_31_to_zero() -> None:
    # Find a 17-character body whose weighted sum is 0 mod 31: its check character is '0', not '31'.
    body = "00000000000000000"
    assert credit_code_check_char(body) == "0"


def test_time_zones() -> None:
    assert is_valid_timezone("Asia/Shanghai")
    assert is_valid_timezone("Europe/Berlin")
    assert not is_valid_timezone("Mars/Olympus_Mons")
    assert not is_valid_timezone("")


@pytest.mark.parametrize(
    ("days", "ok"),
    [
        ([30, 7], True),
        ([90], True),
        ([7, 30], False),
        ([30, 30], False),
        ([0], False),
        ([-7], False),
        ([], False),
        ([400], False),
    ],
)
def test_reminder_days(days: list[int], ok: bool) -> None:
    assert (reminder_days_problem(days) is None) is ok
