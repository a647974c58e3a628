"""Local receivers for delivery tests: a webhook endpoint and an SMTP server, each in a thread.

Both run outside the test's event loop, as real servers on loopback ports, so the worker reaches
them over real sockets exactly as it reaches a customer's endpoint. The webhook receiver lives in
``drills.receiver``, which the fault drills (``make drills``) share.
"""

from __future__ import annotations

import email
import email.policy
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller

from drills.receiver import Received, WebhookReceiver, notice_ids

__all__ = ("Received", "WebhookReceiver", "notice_ids", "smtp_server")


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
