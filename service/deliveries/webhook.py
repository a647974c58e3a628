"""Calling a webhook: resolve, refuse internal addresses, pin the address, sign, POST once.

The name is resolved here and the connection goes to the address that was checked (the client's
network backend connects a name only to the address :func:`post_webhook` last checked for it;
``Host`` and TLS SNI carry the name, so the certificate is verified for the name): a name that
resolves to a public address when checked and to an internal one when called (DNS rebinding)
cannot turn a webhook into a probe of metreg's own network. Connections are kept alive and
pooled by name, never by address, so a connection opened for one name is never reused for
another name on the same address, and one worker sends many notices to a receiver over a few
connections instead of opening one per notice. An answer's body is read only as far as keeping its
connection needs (:func:`_drain`), and never decides or delays what a call came to.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as dt
import ipaddress
import socket
import time
from collections.abc import Iterable

import httpcore
import httpx
import msgspec

from service.deliveries.attempt import Attempted
from service.deliveries.rules import Outcome, outcome_of_http
from service.webhooks.rules import is_public_address
from service.webhooks.signing import SIGNATURE_HEADER, sign

__all__ = ("USER_AGENT", "WebhookCall", "WebhookClient", "new_http_client", "post_webhook")

USER_AGENT = "metreg-webhooks/1"


#: How long an idle connection is kept for the next call.
_KEEPALIVE_S = 5.0


class _PinnedBackend(httpcore.AsyncNetworkBackend):
    """Opens a connection to a name only at the address checked for it (never resolves by itself)."""

    def __init__(self) -> None:
        self._network = httpcore.AnyIOBackend()
        self.checked: dict[str, str] = {}
        """Each name's address, as :func:`post_webhook` last checked it."""

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's signature)
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        address = self.checked.get(host)
        if address is None:
            raise httpcore.ConnectError(f"{host} was not checked before connecting")
        return await self._network.connect_tcp(address, port, timeout, local_address, socket_options)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's signature)
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("webhooks are not called over Unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self._network.sleep(seconds)


class WebhookClient(httpx.AsyncClient):
    """The client webhook calls share (:func:`new_http_client`)."""

    def __init__(self, timeout_s: float, connections: int) -> None:
        self.pins = _PinnedBackend()
        limits = httpx.Limits(
            max_connections=connections, max_keepalive_connections=connections, keepalive_expiry=_KEEPALIVE_S
        )
        transport = httpx.AsyncHTTPTransport(limits=limits, trust_env=False)
        # httpx builds its connection pool with the default network backend and takes no other:
        # the same pool (httpx's own arguments, pinned httpx 0.28), connecting through the pins.
        transport._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=self.pins,
        )
        super().__init__(timeout=httpx.Timeout(timeout_s), follow_redirects=False, trust_env=False, transport=transport)


def new_http_client(timeout_s: float, *, connections: int = 200) -> WebhookClient:
    """A client for webhook calls: no redirects, no proxies from the environment, at most
    ``connections`` open, kept alive per name and opened only to checked addresses (an idle one
    is closed to make room for a call to another name).

    Its time-outs bound each phase of a call; :func:`post_webhook` bounds the whole call.
    """
    return WebhookClient(timeout_s, connections)


# Lookups block a thread until the resolver answers or gives up, and a call that times out does
# not free it: they get threads of their own, so slow names cannot starve the loop's default pool.
_RESOLVER = concurrent.futures.ThreadPoolExecutor(max_workers=32, thread_name_prefix="metreg-dns")


async def _resolve(host: str, port: int) -> list[str]:
    try:
        return [str(ipaddress.ip_address(host))]  # a literal needs no lookup
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    infos = await loop.run_in_executor(_RESOLVER, socket.getaddrinfo, host, port, 0, socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _retry_after(response: httpx.Response) -> dt.timedelta | None:
    """The receiver's ``Retry-After`` in seconds; None when it is not ASCII digits (an HTTP date, ``²``).

    Any number will do: more than nine digits (decades) reads as 10⁹ seconds, which neither int()
    nor timedelta refuses; the delivery rules cap the wait at hours anyway.
    """
    value = response.headers.get("retry-after", "")
    if not (value.isascii() and value.isdigit()):
        return None
    digits = value.lstrip("0") or "0"
    return dt.timedelta(seconds=int(digits) if len(digits) <= 9 else 10**9)


#: The most of an answer's body read, and for how long, so that its connection can carry the next call.
_DRAIN_BYTES = 64 * 1024
_DRAIN_S = 0.5


async def _drain(response: httpx.Response, deadline: float) -> None:
    """Read a short answer's body to its end, which is what lets the connection be kept; a long or
    slow one is cut off (its connection is closed instead). The status decided the call already:
    nothing here changes what it came to, and it ends before the call's deadline."""
    budget = min(_DRAIN_S, deadline - time.monotonic() - 0.05)
    if budget <= 0:
        return
    read = 0
    try:
        async with asyncio.timeout(budget):
            async for chunk in response.aiter_raw():
                read += len(chunk)
                if read > _DRAIN_BYTES:
                    return
    except (TimeoutError, httpx.HTTPError, httpx.StreamError, OSError):
        return


class WebhookCall(msgspec.Struct, frozen=True, kw_only=True):
    """One signed POST: where, with which secret, and what."""

    url: str
    secret: str
    event: str
    delivery_id: str
    body: bytes
    timestamp: int
    """Unix seconds, signed with the body."""


async def post_webhook(
    client: WebhookClient, call: WebhookCall, *, allow_private: bool, deadline_s: float
) -> Attempted:
    """POST the call once, signed, and say how it went (never raises for the network).

    ``deadline_s`` bounds the whole call, from resolving the name to the status line.
    """
    started = time.monotonic()
    try:
        async with asyncio.timeout(deadline_s):
            return await _post(
                client, call, allow_private=allow_private, started=started, deadline=started + deadline_s
            )
    except TimeoutError:
        return Attempted(outcome=Outcome.RETRY, duration_ms=int((time.monotonic() - started) * 1000), error="timed out")


async def _post(
    client: WebhookClient, call: WebhookCall, *, allow_private: bool, started: float, deadline: float
) -> Attempted:
    def took() -> int:
        return int((time.monotonic() - started) * 1000)

    url = httpx.URL(call.url)
    # As the connection pool names it (IDNA, lower case, no IPv6 brackets).
    host = url.raw_host.decode("ascii")
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        addresses = await _resolve(host, port)
    except OSError as exc:
        return Attempted(outcome=Outcome.RETRY, duration_ms=took(), error=f"{host} does not resolve ({exc})")
    if not allow_private:
        internal = [a for a in addresses if not is_public_address(a)]
        if internal:
            return Attempted(
                outcome=Outcome.FAILED, duration_ms=took(), error=f"{host} resolves to a non-public address"
            )
    client.pins.checked[host] = addresses[0]
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "Metreg-Event": call.event,
        "Metreg-Delivery": call.delivery_id,
        SIGNATURE_HEADER: sign(call.secret, call.timestamp, call.body),
    }
    try:
        async with client.stream("POST", url, content=call.body, headers=headers) as response:
            status = response.status_code
            retry_after = _retry_after(response)
            await _drain(response, deadline)
    except httpx.TimeoutException:
        return Attempted(outcome=Outcome.RETRY, duration_ms=took(), error="timed out")
    except (httpx.TransportError, OSError) as exc:
        return Attempted(outcome=Outcome.RETRY, duration_ms=took(), error=f"connection failed ({type(exc).__name__})")
    outcome = outcome_of_http(status)
    error = None
    if outcome is not Outcome.DELIVERED:
        error = "redirects are not followed" if 300 <= status < 400 else f"answered {status}"
    return Attempted(outcome=outcome, duration_ms=took(), status_code=status, error=error, retry_after=retry_after)
