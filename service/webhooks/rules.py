"""Which webhook URLs metreg will call (design.md §6).

https only, and never loopback, link-local, private or otherwise internal addresses: a webhook is a
request metreg makes from inside its own network on a client's behalf (server-side request
forgery). Names are checked here; the addresses a name resolves to are checked again by the worker
just before each call. ``allow_private`` (``METREG_ALLOW_PRIVATE_WEBHOOKS``) lifts both limits for
tests and local use.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

__all__ = ("is_public_address", "url_problem")

_INTERNAL_NAMES = ("localhost", ".localhost", ".local", ".internal", ".home.arpa")


def is_public_address(address: str) -> bool:
    """Whether an IP address is on the public internet (not loopback, private, link-local, …)."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def url_problem(url: str, *, allow_private: bool) -> str | None:
    """Why ``url`` may not be a webhook target, or None."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"is not a valid URL ({exc})"
    if parts.scheme not in ("https", "http") or not parts.hostname:
        return "must be an absolute https URL"
    if parts.scheme == "http" and not allow_private:
        return "must use https"
    if parts.username or parts.password:
        return "must not carry credentials; sign with the webhook secret instead"
    if parts.fragment:
        return "must not have a fragment"
    if port == 0:
        return "has an invalid port"
    if allow_private:
        return None
    host = parts.hostname.rstrip(".").lower()
    if host == "localhost" or host.endswith(_INTERNAL_NAMES):
        return f"{host} is an internal name"
    try:
        public = is_public_address(host)
    except ValueError:
        return None  # a name: its addresses are checked when it is called
    return None if public else f"{host} is not a public address"
