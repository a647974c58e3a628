"""Which webhook URLs metreg calls (design.md §6): https, public addresses, no credentials."""

from __future__ import annotations

import pytest

from service.webhooks.rules import is_public_address, url_problem


@pytest.mark.parametrize(
    ("url", "problem_contains"),
    [
        ("https://hooks.example.com/metreg", None),
        ("https://hooks.example.com:8443/a?b=c", None),
        ("https://8.8.8.8/hook", None),
        ("http://hooks.example.com/metreg", "https"),
        ("ftp://hooks.example.com/", "https URL"),
        ("hooks.example.com/metreg", "https URL"),
        ("https://user:pw@hooks.example.com/", "credentials"),
        ("https://localhost/hook", "internal name"),
        ("https://printer.local/hook", "internal name"),
        ("https://127.0.0.1/hook", "not a public address"),
        ("https://10.1.2.3/hook", "not a public address"),
        ("https://192.168.0.10/hook", "not a public address"),
        ("https://169.254.169.254/latest/meta-data", "not a public address"),
        ("https://[::1]/hook", "not a public address"),
        ("https://[::ffff:127.0.0.1]/hook", "not a public address"),
        ("https://[fd00::1]/hook", "not a public address"),
        ("https://0.0.0.0/hook", "not a public address"),
        ("https://hooks.example.com:99999/", "not a valid URL"),
        ("https://hooks.example.com/#frag", "fragment"),
    ],
)
def test_url_rules(url: str, problem_contains: str | None) -> None:
    found = url_problem(url, allow_private=False)
    if problem_contains is None:
        assert found is None
    else:
        assert found is not None
        assert problem_contains in found


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080/hook", "https://localhost/x", "http://10.0.0.2/x"])
def test_allow_private_admits_local_targets_for_tests(url: str) -> None:
    assert url_problem(url, allow_private=True) is None


def test_credentials_are_refused_even_when_private_targets_are_allowed() -> None:
    assert url_problem("http://a:b@127.0.0.1/", allow_private=True) is not None


@pytest.mark.parametrize(
    ("address", "public"),
    [("8.8.8.8", True), ("2001:4860:4860::8888", True), ("127.0.0.1", False), ("224.0.0.1", False)],
)
def test_public_addresses(address: str, public: bool) -> None:
    assert is_public_address(address) is public
