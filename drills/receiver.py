"""A webhook receiver on a loopback port, in a thread: the drills' endpoint and the tests'.

It runs outside any event loop, as a real server, so the worker reaches it over real sockets
exactly as it reaches a customer's endpoint, and it keeps every request it got: the drills count
deliveries per ``notice_id`` from it.
"""

from __future__ import annotations

import collections
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ("Received", "WebhookReceiver", "notice_ids")


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

    def calls(self) -> collections.Counter[str]:
        """Calls received per ``notice_id``, answered or not."""
        with self._lock:
            return notice_ids(self.requests)

    def accepted(self) -> collections.Counter[str]:
        """Calls per ``notice_id`` that were answered 2xx: the notice reached its receiver."""
        with self._lock:
            return notice_ids([r for n, r in enumerate(self.requests) if 200 <= self.answers.get(n, 0) < 300])

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

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a caller that gave up waiting (a drilled time-out) is not the receiver's error

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


def notice_ids(requests: list[Received]) -> collections.Counter[str]:
    """How many calls each notice got (``ping`` events, which carry no notice, left out)."""
    return collections.Counter(r.json()["notice_id"] for r in requests if r.headers.get("metreg-event") != "ping")
