"""Identity rules for enterprises: the unified social credit code and administrative region codes."""

from __future__ import annotations

import itertools
import re
from zoneinfo import ZoneInfo, available_timezones

__all__ = ("credit_code_check_char", "credit_code_problem", "is_valid_timezone", "reminder_days_problem")

# GB 32100-2015 §4: the 31 characters a code may use (digits and capitals without I, O, S, V, Z),
# and the weights of positions 1–17 for the check character (§5, modulus 31).
_CHARSET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)
_SHAPE = re.compile(rf"^[{_CHARSET}]{{18}}$")


def credit_code_check_char(first17: str) -> str:
    """The 18th character of a credit code whose first 17 characters are ``first17`` (GB 32100-2015)."""
    total = sum(_CHARSET.index(c) * w for c, w in zip(first17, _WEIGHTS, strict=True))
    return _CHARSET[(31 - total % 31) % 31]


def credit_code_problem(code: str) -> str | None:
    """Why ``code`` is not a valid 统一社会信用代码, or None when it is.

    Checks the length (18), the character set and the check character of GB 32100-2015. Positions
    3–8 carry the registering authority's region code, but it is not compared with the enterprise's
    ``region_code``: an enterprise may operate away from where it registered.
    """
    if len(code) != 18:
        return f"must be 18 characters, got {len(code)}"
    if not _SHAPE.match(code):
        return "may contain only digits and the capital letters A–Y without I, O, S, V and Z"
    expected = credit_code_check_char(code[:17])
    if code[17] != expected:
        return f"check character is {code[17]!r} but GB 32100-2015 gives {expected!r}"
    return None


# The machine's own zone and the placeholder zone are not places an enterprise can be.
_TIMEZONES = frozenset(available_timezones()) - {"localtime", "Factory", "posixrules"}


def is_valid_timezone(name: str) -> bool:
    """Whether ``name`` is an IANA time zone this machine knows (``Asia/Shanghai``)."""
    if name not in _TIMEZONES:
        return False
    ZoneInfo(name)
    return True


def reminder_days_problem(days: list[int]) -> str | None:
    """Why a list of reminder offsets is unusable, or None: 1–366 days, strictly decreasing."""
    if not days:
        return "must hold at least one offset"
    if any(not 1 <= d <= 366 for d in days):
        return "each offset must be between 1 and 366 days"
    if any(a <= b for a, b in itertools.pairwise(days)):
        return "offsets must be strictly decreasing, e.g. [30, 7]"
    return None
