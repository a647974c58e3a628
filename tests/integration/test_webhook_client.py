"""The shared webhook client against a real keep-alive server on loopback: connections are reused
for one name, never across names that resolve to the same address."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest

from service.deliveries.rules import Outcome
from service.deliveries.webhook import WebhookCall, new_http_client, post_webhook

#: A name the (patched) resolver gives the loopback address.
ALIAS = "hooks.metreg.test"


class _Connections:
    """An HTTP/1.1 server that keeps connections open and notes the Host of each request on each."""

    def __init__(self) -> None:
        self.hosts: list[list[str]] = []
        self.port = 0

    def protocol(self) -> asyncio.Protocol:
        seen: list[str] = []
        self.hosts.append(seen)

        class Handler(asyncio.Protocol):
            def __init__(self) -> None:
                self.buffer = bytearray()

            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                self.transport = cast(asyncio.Transport, transport)

            def data_received(self, data: bytes) -> None:
                self.buffer += data
                while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
                    fields = dict(
                        line.split(b":", 1) for line in bytes(self.buffer[:end]).split(b"\r\n")[1:] if b":" in line
                    )
                    headers = {k.strip().lower(): v.strip() for k, v in fields.items()}
                    length = int(headers.get(b"content-length", b"0"))
                    if len(self.buffer) < end + 4 + length:
                        return
                    del self.buffer[: end + 4 + length]
                    seen.append(headers[b"host"].decode())
                    self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")

        return Handler()


@pytest.fixture
async def server() -> AsyncIterator[_Connections]:
    connections = _Connections()
    listening = await asyncio.get_running_loop().create_server(connections.protocol, "127.0.0.1", 0)
    connections.port = listening.sockets[0].getsockname()[1]
    try:
        yield connections
    finally:
        listening.close()
        await listening.wait_closed()


def _call(url: str, n: int) -> WebhookCall:
    return WebhookCall(url=url, secret="whsec_test", event="overdue", delivery_id=f"d{n}", body=b"{}", timestamp=0)


async def test_calls_to_one_name_share_a_connection_and_two_names_on_one_address_never_do(
    server: _Connections, monkeypatch: pytest.MonkeyPatch
) -> None:
    resolve = socket.getaddrinfo

    def aliased(host: Any, *args: Any, **kwargs: Any) -> Any:
        return resolve("127.0.0.1" if host == ALIAS else host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", aliased)
    urls = [f"http://127.0.0.1:{server.port}/hooks", f"http://{ALIAS}:{server.port}/hooks"]
    async with new_http_client(2.0) as client:
        for n in range(6):
            sent = await post_webhook(client, _call(urls[n % 2], n), allow_private=True, deadline_s=2.0)
            assert (sent.outcome, sent.status_code) == (Outcome.DELIVERED, 200)
    assert sorted(server.hosts) == [
        [f"127.0.0.1:{server.port}"] * 3,
        [f"{ALIAS}:{server.port}"] * 3,
    ]


async def test_a_name_that_turns_internal_is_refused_even_with_a_connection_open(
    server: _Connections, monkeypatch: pytest.MonkeyPatch
) -> None:
    resolve = socket.getaddrinfo
    monkeypatch.setattr(
        socket, "getaddrinfo", lambda host, *a, **k: resolve("127.0.0.1" if host == ALIAS else host, *a, **k)
    )
    url = f"http://{ALIAS}:{server.port}/hooks"
    async with new_http_client(2.0) as client:
        opened = await post_webhook(client, _call(url, 0), allow_private=True, deadline_s=2.0)
        assert opened.outcome is Outcome.DELIVERED
        # The same client, now refusing private addresses: the open connection is not a way round the check.
        refused = await post_webhook(client, _call(url, 1), allow_private=False, deadline_s=2.0)
    assert (refused.outcome, refused.error) == (Outcome.FAILED, f"{ALIAS} resolves to a non-public address")
    assert server.hosts == [[f"{ALIAS}:{server.port}"]]


async def test_an_answer_whose_body_never_ends_is_still_the_status_it_gave() -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n{")
        await writer.drain()
        await reader.read()  # the body is never sent: hold the connection until the caller drops it
        writer.close()

    listening = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = listening.sockets[0].getsockname()[1]
    try:
        async with new_http_client(2.0) as client:
            sent = await post_webhook(
                client, _call(f"http://127.0.0.1:{port}/hooks", 0), allow_private=True, deadline_s=2.0
            )
    finally:
        listening.close()
        await listening.wait_closed()
    assert (sent.outcome, sent.status_code, sent.error) == (Outcome.DELIVERED, 200, None)


class _Scripted:
    """A server that answers each request on a connection with the next of ``answers`` (raw bytes),
    counting connections; ``b""`` closes the connection instead of answering."""

    def __init__(self, answers: list[bytes], *, hang_up: bool = False) -> None:
        self.answers = answers
        self.hang_up = hang_up
        """Close each connection after its first answer, silently (as on an idle time-out)."""
        self.hung_up = asyncio.Event()
        self.connections = 0
        self.requests = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                await reader.readexactly(length)
                answer = self.answers[self.requests % len(self.answers)]
                self.requests += 1
                if not answer:
                    break
                writer.write(answer)
                await writer.drain()
                if self.hang_up:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            await writer.wait_closed()
            if self.hang_up:
                self.hung_up.set()


async def _post_all(
    answers: list[bytes], calls: int, *, hang_up: bool = False
) -> tuple[_Scripted, list[tuple[Outcome, int | None, str | None]]]:
    scripted = _Scripted(answers, hang_up=hang_up)
    listening = await asyncio.start_server(scripted.handle, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{listening.sockets[0].getsockname()[1]}/hooks"
    got = []
    try:
        async with new_http_client(2.0) as client:
            for n in range(calls):
                sent = await post_webhook(client, _call(url, n), allow_private=True, deadline_s=2.0)
                got.append((sent.outcome, sent.status_code, sent.error))
                if hang_up:
                    # The receiver's close has reached this end; one turn of the loop takes it in.
                    await scripted.hung_up.wait()
                    scripted.hung_up.clear()
                    await asyncio.sleep(0)
    finally:
        listening.close()
        await listening.wait_closed()
    return scripted, got


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\n\r\n",
    ],
    ids=["chunked", "connection-close", "http-1.0", "no-length"],
)
async def test_an_answer_that_cannot_be_framed_or_asks_to_close_delivers_on_a_connection_of_its_own(
    answer: bytes,
) -> None:
    scripted, got = await _post_all([answer], 3)
    assert got == [(Outcome.DELIVERED, 200, None)] * 3
    assert scripted.connections == 3


async def test_a_body_and_an_interim_answer_are_read_and_the_connection_kept() -> None:
    answer = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 503 Busy\r\nRetry-After: 120\r\nContent-Length: 4\r\n\r\nbusy"
    scripted, got = await _post_all([answer], 3)
    assert got == [(Outcome.RETRY, 503, "answered 503")] * 3
    assert scripted.connections == 1


async def test_a_connection_the_receiver_closed_is_not_reused_and_garbage_is_a_failed_try() -> None:
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    # Answered, then closed by the receiver without a word: the next call opens a new connection.
    scripted, got = await _post_all([ok], 2, hang_up=True)
    assert got == [(Outcome.DELIVERED, 200, None)] * 2
    assert scripted.connections == 2
    _, got = await _post_all([b"SMTP ready\r\n\r\n"], 1)
    assert got == [(Outcome.RETRY, None, "connection failed (MalformedAnswerError)")]


async def test_an_https_receiver_without_a_verified_handshake_is_not_sent_to() -> None:
    # A plain-text server on an https URL: the handshake fails before a byte of the notice is written.
    async def plain(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    listening = await asyncio.start_server(plain, "127.0.0.1", 0)
    url = f"https://127.0.0.1:{listening.sockets[0].getsockname()[1]}/hooks"
    try:
        async with new_http_client(2.0) as client:
            sent = await post_webhook(client, _call(url, 0), allow_private=True, deadline_s=2.0)
    finally:
        listening.close()
        await listening.wait_closed()
    assert (sent.outcome, sent.status_code) == (Outcome.RETRY, None)
    assert str(sent.error).startswith("connection failed (SSL")


async def test_an_answer_with_bare_line_feeds_is_read_and_its_connection_kept() -> None:
    # h11 (httpx) accepts bare LF line ends; refusing them would time out and re-send every notice.
    scripted, got = await _post_all([b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok"], 3)
    assert got == [(Outcome.DELIVERED, 200, None)] * 3
    assert scripted.connections == 1


async def test_bytes_after_an_answer_are_never_read_as_the_next_calls_answer() -> None:
    # A body longer than it said: the rest would be the next call's "answer" on a reused connection.
    scripted, got = await _post_all([b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 410 Gone\r\n\r\n"], 3)
    assert got == [(Outcome.DELIVERED, 200, None)] * 3
    assert scripted.connections == 3


async def test_two_different_content_lengths_are_a_malformed_answer() -> None:
    _, got = await _post_all([b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 5\r\n\r\nok"], 1)
    assert got == [(Outcome.RETRY, None, "connection failed (MalformedAnswerError)")]
    _, got = await _post_all([b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok"], 1)
    assert got == [(Outcome.DELIVERED, 200, None)]
