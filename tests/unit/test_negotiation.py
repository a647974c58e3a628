"""Which format an ``Accept`` header takes (service.negotiation, RFC 9110 §12.5.1)."""

from __future__ import annotations

import pytest

from service.negotiation import VARY_STATE, preferred_media_type, vary_on, with_vary

CSV = "text/csv"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
BOTH = (CSV, XLSX)


@pytest.mark.parametrize(
    ("accept", "offered", "chosen"),
    [
        # Anything goes: the server's preference.
        ("*/*", BOTH, CSV),
        ("*", BOTH, CSV),
        ("text/html,application/xhtml+xml,*/*;q=0.8", BOTH, CSV),
        # By name, by type, in any case.
        (CSV, BOTH, CSV),
        (XLSX, BOTH, XLSX),
        ("TEXT/CSV", BOTH, CSV),
        ("text/*", BOTH, CSV),
        ("application/*", BOTH, XLSX),
        (f"{CSV}; charset=utf-8", BOTH, CSV),
        # The higher weight wins; equal weights go to the server's preference.
        (f"text/csv;q=0.5, {XLSX}", BOTH, XLSX),
        (f"{XLSX};q=0.9, text/csv;q=0.8", BOTH, XLSX),
        (f"{XLSX};q=0.8, text/csv;q=0.8", BOTH, CSV),
        (f"text/csv;q=0.001, {XLSX};q=0", BOTH, CSV),
        # q=0: not acceptable, never a last resort.
        (f"text/csv;q=0, {XLSX}", BOTH, XLSX),
        (f"text/csv;q=0.0, {XLSX};q=0.1", BOTH, XLSX),
        ("text/csv;q=0", BOTH, None),
        ("text/csv;Q=0", BOTH, None),
        ("*/*;q=0", BOTH, None),
        (f"{XLSX};q=0", (XLSX,), None),
        # The most specific range decides, whatever a wider one says.
        ("text/csv;q=0, */*", BOTH, XLSX),
        ("text/csv;q=0, text/*", BOTH, None),
        ("text/*;q=0.5, text/csv;q=0", BOTH, None),
        ("*/*;q=0, text/csv", BOTH, CSV),
        ("*/*;q=0.1, application/*;q=0", BOTH, CSV),
        ("text/csv;charset=latin1;q=0, text/csv", BOTH, CSV),
        # Nothing offered is named.
        ("application/json", BOTH, None),
        ("text/plain, application/*+json", BOTH, None),
        (CSV, (XLSX,), None),
        # What is not a media range or a weight is as if not sent.
        ("csv, application/json", BOTH, None),
        ("text/csv;q=high", BOTH, CSV),
        ("text/csv;q=nan, */*;q=0", BOTH, CSV),
        (f"text/csv;q=2, {XLSX}", BOTH, CSV),
        ("text/csv;q=-1, */*", BOTH, XLSX),
        (" , ;q=1, */*", BOTH, CSV),
        ("", BOTH, None),
    ],
)
def test_the_most_specific_range_weighs_each_offer_and_the_heaviest_wins(
    accept: str, offered: tuple[str, ...], chosen: str | None
) -> None:
    assert preferred_media_type(accept, offered) == chosen


@pytest.mark.parametrize(
    ("headers", "sent"),
    [
        ([], "Accept"),
        ([(b"vary", b"Origin")], "Origin, Accept"),
        ([(b"Vary", b"Origin"), (b"vary", b"Accept-Encoding")], "Origin, Accept-Encoding, Accept"),
        ([(b"vary", b"origin, ACCEPT")], "origin, ACCEPT"),
        ([(b"vary", b"*")], "*"),
    ],
)
def test_vary_names_what_it_had_and_then_what_is_missing(headers: list[tuple[bytes, bytes]], sent: str) -> None:
    other = (b"content-type", b"text/csv")
    merged = with_vary([other, *headers], ["Accept"])
    assert merged == [other, (b"vary", sent.encode())]


def test_a_route_notes_each_header_once() -> None:
    state: dict[str, object] = {}
    vary_on(state, "Accept")
    vary_on(state, "Accept")
    assert state == {VARY_STATE: ["Accept"]}
