"""Calling a webhook: resolve, refuse internal addresses, pin the address, sign, POST once.

The name is resolved here and the connection goes to the address that was checked (``Host`` and
TLS SNI carry the name, so the certificate is verified for the name): a name that resolves to a
public address when checked and to an internal one when called (DNS rebinding) cannot turn a
webhook into a probe of metreg's own network. Connections are kept alive and pooled by name and
port, never by address, so a connection opened for one name is never reused for another name on
the same address, and one worker sends many notices to a receiver over a few connections instead
of opening one per notice.

The calls are made by :class:`WebhookClient`, a small HTTP/1.1 client on asyncio streams, not by
httpx: a webhook call is one POST whose answer is only a status line and headers, and httpx's
layers (client, transport, pool, AnyIO streams) cost about 1.4 ms of CPU a call, more than the
1 ms a notice that design.md §9's 1,000 notices a second per worker leaves for everything. An
answer's body is read only as far as keeping its connection needs, and never decides or delays
what a call came to.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as dt
import functools
import ipaddress
import socket
import ssl
import time

import httpx
import msgspec

from service.deliveries.attempt import Attempted
from service.deliveries.rules import Outcome, outcome_of_http
from service.webhooks.rules import is_public_address
from service.webhooks.signing import SIGNATURE_HEADER, sign

__all__ = (
    "USER_AGENT",
    "Answer",
    "MalformedAnswerError",
    "Target",
    "WebhookCall",
    "WebhookClient",
    "new_http_client",
    "post_webhook",
)

USER_AGENT = "metreg-webhooks/1"


#: How long an idle connection is kept for the next call: under the 5 s after which common servers
#: (uvicorn, gunicorn) close one, so that a call seldom meets a connection closing under it.
_KEEPALIVE_S = 4.0
#: The longest answer head (status line and headers) read; a longer one is a failed call.
_HEAD_BYTES = 64 * 1024
#: The most of an answer's body read, and for how long, so that its connection can carry the next call.
_DRAIN_BYTES = 64 * 1024
_DRAIN_S = 0.5


class MalformedAnswerError(Exception):
    """The receiver's answer is not HTTP/1.x."""


class _Connection:
    __slots__ = ("idle_since", "reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.idle_since = 0.0

    def usable(self, now: float) -> bool:
        """Still open on both ends, not idle too long (a receiver closes idle connections too), and
        with nothing unread: bytes the receiver sent after its answer (a 408 before it hangs up, a
        body longer than it said) would be read as the next call's answer."""
        return (
            now - self.idle_since < _KEEPALIVE_S
            and not self.writer.is_closing()
            and not self.reader.at_eof()
            # asyncio offers no public peek; CPython's StreamReader has kept its buffer here since 3.4.
            and not getattr(self.reader, "_buffer", b"")
        )

    def close(self) -> None:
        self.writer.close()


class Answer(msgspec.Struct, frozen=True):
    status: int
    headers: dict[str, str]
    """Lower-case names; a repeated header keeps its last value."""


class Target(msgspec.Struct, frozen=True):
    """Where a webhook URL posts to, as sent: IDNA, lower case, percent-encoded."""

    scheme: str
    host: str
    """Without IPv6 brackets: as it is resolved and pooled."""
    port: int
    authority: str
    """The ``Host`` header: the name, and the port when the URL gives one."""
    path: str
    """The request target: path and query."""


@functools.lru_cache(maxsize=4096)
def _target(url: str) -> Target:
    """``url`` taken apart once: a worker posts to the same few URLs over and over."""
    parsed = httpx.URL(url)
    host = parsed.raw_host.decode("ascii")
    authority = host if ":" not in host else f"[{host}]"
    if parsed.port is not None:
        authority = f"{authority}:{parsed.port}"
    return Target(
        scheme=parsed.scheme,
        host=host,
        port=parsed.port or (443 if parsed.scheme == "https" else 80),
        authority=authority,
        path=parsed.raw_path.decode("ascii"),
    )


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """The system's trust store, loaded once (tens of milliseconds) and only if a URL is https."""
    return ssl.create_default_context()


class WebhookClient:
    """POSTs over HTTP/1.1, at most ``connections`` kept idle, reused per (scheme, name, port)."""

    def __init__(self, timeout_s: float, connections: int) -> None:
        self.timeout_s = timeout_s
        self.connections = connections
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._idle_count = 0

    async def __aenter__(self) -> WebhookClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        for pool in self._idle.values():
            for connection in pool:
                connection.close()
        self._idle.clear()
        self._idle_count = 0

    def _take(self, key: tuple[str, str, int]) -> _Connection | None:
        pool = self._idle.get(key)
        now = time.monotonic()
        while pool:
            connection = pool.pop()
            self._idle_count -= 1
            if connection.usable(now):
                return connection
            connection.close()
        return None

    def _give_back(self, key: tuple[str, str, int], connection: _Connection) -> None:
        if self._idle_count >= self.connections:
            # Room for this one: the longest idle of the fullest origin goes.
            fullest = max(self._idle.values(), key=len)
            fullest.pop(0).close()
            self._idle_count -= 1
        connection.idle_since = time.monotonic()
        self._idle.setdefault(key, []).append(connection)
        self._idle_count += 1

    async def post(
        self, target: Target, address: str, headers: dict[str, str], body: bytes, *, deadline: float
    ) -> Answer:
        """POST ``body`` to ``target`` at ``address`` (checked by the caller) and read the answer head.

        Raises:
            OSError, EOFError, MalformedAnswerError, asyncio.LimitOverrunError: no answer, or not HTTP.
        """
        key = (target.scheme, target.host, target.port)
        connection = self._take(key)
        if connection is None:
            tls = target.scheme == "https"
            reader, writer = await asyncio.open_connection(
                address,
                target.port,
                ssl=_tls_context() if tls else None,
                server_hostname=target.host if tls else None,
                limit=_HEAD_BYTES,
            )
            connection = _Connection(reader, writer)
        kept = False
        try:
            lines = [f"POST {target.path} HTTP/1.1", f"Host: {target.authority}"]
            lines += [f"{name}: {value}" for name, value in headers.items()]
            lines.append(f"Content-Length: {len(body)}")
            connection.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
            await connection.writer.drain()
            version, answer = await _read_head(connection.reader)
            kept = await _drain(connection.reader, version, answer, deadline)
            return answer
        finally:
            if kept:
                self._give_back(key, connection)
            else:
                connection.close()


#: Header lines an answer may have (h11 allows about as many bytes); more is not an answer.
_MAX_HEADER_LINES = 100


async def _read_head(reader: asyncio.StreamReader) -> tuple[str, Answer]:
    """The answer's version and head, past any interim (1xx) answers.

    Lines may end in CRLF or a bare LF, as h11 (which httpx uses) also accepts: a receiver that
    answers so would otherwise time out every call and get each notice again on every retry.
    A repeated Content-Length with another value is refused: it leaves the body's end unknown.
    """
    while True:
        lines: list[str] = []
        while (line := await reader.readuntil(b"\n")) not in (b"\r\n", b"\n"):
            if len(lines) == _MAX_HEADER_LINES:
                raise MalformedAnswerError(f"more than {_MAX_HEADER_LINES} header lines")
            lines.append(line.rstrip(b"\r\n").decode("latin-1"))
        if not lines:
            raise MalformedAnswerError("an empty line instead of a status line")
        status_line, *fields = lines
        version, _, rest = status_line.partition(" ")
        code = rest[:3]
        if version not in ("HTTP/1.1", "HTTP/1.0") or len(code) != 3 or not code.isdigit():
            raise MalformedAnswerError(status_line[:80])
        headers: dict[str, str] = {}
        for field in fields:
            name, colon, value = field.partition(":")
            if not colon:
                raise MalformedAnswerError(field[:80])
            name, value = name.strip().lower(), value.strip()
            if name == "content-length" and headers.get(name, value) != value:
                raise MalformedAnswerError("two different Content-Length headers")
            headers[name] = value
        if not 100 <= int(code) < 200:
            return version, Answer(int(code), headers)


async def _drain(reader: asyncio.StreamReader, version: str, answer: Answer, deadline: float) -> bool:
    """Read a short answer's body to its end, which is what lets the connection be kept (True); a
    long, slow or unframed one is left unread and its connection closed. The status decided the
    call already: nothing here changes what it came to, and it ends before the call's deadline."""
    headers = answer.headers
    if version != "HTTP/1.1" or headers.get("connection", "").lower() == "close" or "transfer-encoding" in headers:
        return False
    length = headers.get("content-length", "")
    if not (length.isascii() and length.isdigit()) or int(length) > _DRAIN_BYTES:
        return False
    if int(length) == 0:
        return True
    budget = min(_DRAIN_S, deadline - time.monotonic() - 0.05)
    if budget <= 0:
        return False
    try:
        async with asyncio.timeout(budget):
            await reader.readexactly(int(length))
    except (TimeoutError, EOFError, OSError):
        return False
    return True


def new_http_client(timeout_s: float, *, connections: int = 200) -> WebhookClient:
    """A client for webhook calls: redirects are not followed, no proxies, at most ``connections``
    kept idle (per name and port; the longest idle goes first), each opened to a checked address.

    :func:`post_webhook` bounds each call by its deadline (``timeout_s`` for the ping route's).
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


def _retry_after(answer: Answer) -> dt.timedelta | None:
    """The receiver's ``Retry-After`` in seconds; None when it is not ASCII digits (an HTTP date, ``²``).

    Any number will do: more than nine digits (decades) reads as 10⁹ seconds, which neither int()
    nor timedelta refuses; the delivery rules cap the wait at hours anyway.
    """
    value = answer.headers.get("retry-after", "")
    if not (value.isascii() and value.isdigit()):
        return None
    digits = value.lstrip("0") or "0"
    return dt.timedelta(seconds=int(digits) if len(digits) <= 9 else 10**9)


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

    target = _target(call.url)
    host = target.host
    try:
        addresses = await _resolve(host, target.port)
    except OSError as exc:
        return Attempted(outcome=Outcome.RETRY, duration_ms=took(), error=f"{host} does not resolve ({exc})")
    if not allow_private:
        internal = [a for a in addresses if not is_public_address(a)]
        if internal:
            return Attempted(
                outcome=Outcome.FAILED, duration_ms=took(), error=f"{host} resolves to a non-public address"
            )
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "Metreg-Event": call.event,
        "Metreg-Delivery": call.delivery_id,
        SIGNATURE_HEADER: sign(call.secret, call.timestamp, call.body),
    }
    try:
        answer = await client.post(target, addresses[0], headers, call.body, deadline=deadline)
    except (OSError, EOFError, MalformedAnswerError, asyncio.LimitOverrunError) as exc:
        return Attempted(outcome=Outcome.RETRY, duration_ms=took(), error=f"connection failed ({type(exc).__name__})")
    status = answer.status
    outcome = outcome_of_http(status)
    error = None
    if outcome is not Outcome.DELIVERED:
        error = "redirects are not followed" if 300 <= status < 400 else f"answered {status}"
    return Attempted(
        outcome=outcome, duration_ms=took(), status_code=status, error=error, retry_after=_retry_after(answer)
    )
