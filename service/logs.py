"""Structured logs: one JSON object a line, carrying the request id of the request being served."""

from __future__ import annotations

import contextvars
import datetime as dt
import logging
import re
import sys
from typing import Any

import msgspec

__all__ = ("JsonFormatter", "configure_logging", "logged_path", "request_id_var")

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)

# Attributes every LogRecord has; anything else was passed through ``extra=`` and is logged as a field.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "color_message"}
_encoder = msgspec.json.Encoder(enc_hook=str)
# A calendar feed's URL is its credential (/v1/calendar/<token>.ics): everything after that prefix
# is left out of logs, however the path spells it (routing reads // as /); and so is anything shaped
# like a token (43 URL-safe characters; ids are 36) in any other path, such as a mistyped feed URL.
_FEED_URL = re.compile(r"^(/+v1/+calendar/).*", re.DOTALL)
_TOKEN_LIKE = re.compile(r"[A-Za-z0-9_-]{40,}")


def logged_path(path: str) -> str:
    """``path`` as logs may show it: a calendar feed's token replaced by ``…``."""
    return _TOKEN_LIKE.sub("…", _FEED_URL.sub(r"\1…", path))


class JsonFormatter(logging.Formatter):
    """Format records as JSON with time (UTC), level, logger, message, request id and extras."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = request_id_var.get()
        if request_id is not None:
            entry["request_id"] = request_id
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return _encoder.encode(entry).decode()


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = {k: v for k, v in vars(record).items() if k not in _STANDARD}
        request_id = request_id_var.get()
        prefix = f"[{request_id}] " if request_id else ""
        suffix = " " + " ".join(f"{k}={v}" for k, v in extras.items()) if extras else ""
        return prefix + line + suffix


def configure_logging(level: str, fmt: str) -> None:
    """Send every log record (metreg's, uvicorn's, asyncpg's) to stderr in one format."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter() if fmt == "json" else _TextFormatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "litestar"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # metreg logs its own access line with the request id; uvicorn's would be a second, poorer one.
    logging.getLogger("uvicorn.access").disabled = True
    # httpx logs each request's full URL at INFO, and a webhook URL often carries its receiver's
    # secret in the path or query: keys and secrets are never logged.
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
