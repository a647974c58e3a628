"""Local receivers for delivery tests: a webhook endpoint and an SMTP server, each in a thread.

Both run outside the test's event loop, as real servers on loopback ports, so the worker reaches
them over real sockets exactly as it reaches a customer's endpoint.
"""

from __future__ import annotations

import email
import email.policy
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class WebhookReceiver:
    """Answers each POST with ``respond(request_number, request)`` (default 200) and keeps them all.

    ``respond`` gives the status, or the status and headers to answer with."""

    respond: Callable[[int, Received], int | tuple[int, dict[str, str]]] = lambda n, r: 200
    requests: list[Received] = field(default_factory=list)
    url: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    answers: dict[int, int] = field(default_factory=dict)
    """Request number -> the status it was answered with."""

    @property
    def statuses(self) -> list[int]:
        """The statuses answered so far, in the order the requests arrived."""
        with self._lock:
            return [self.answers[n] for n in sorted(self.answers)]

    @contextmanager
    def running(self) -> Iterator[WebhookReceiver]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                got = Received(self.path, {k.lower(): v for k, v in self.headers.items()}, self.rfile.read(length))
                with receiver._lock:
                    number = len(receiver.requests)
                    receiver.requests.append(got)
                answer = receiver.respond(number, got)
                status, headers = answer if isinstance(answer, tuple) else (answer, {})
                with receiver._lock:
                    receiver.answers[number] = status
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            request_queue_size = 128  # two workers at once must not find the backlog full

        server = Server(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        self.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/metreg"
        try:
            yield self
        finally:
            server.shutdown()
            server.server_close()


class _Collect:
    def __init__(self, inbox: list[EmailMessage], refuse: Callable[[str], str | None]) -> None:
        self.inbox = inbox
        self.refuse = refuse

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        if (reply := self.refuse(address)) is not None:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.inbox.append(message)
        return "250 Message accepted"


@contextmanager
def smtp_server(refuse: Callable[[str], str | None] = lambda address: None) -> Iterator[tuple[str, list[EmailMessage]]]:
    """An SMTP server on a free loopback port: yields ``smtp://127.0.0.1:<port>`` and the inbox.

    ``refuse(address)`` may return an SMTP reply (``"550 no such user"``) to refuse a recipient.
    """
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    inbox: list[EmailMessage] = []
    controller = Controller(_Collect(inbox, refuse), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield f"smtp://127.0.0.1:{port}", inbox
    finally:
        controller.stop()
