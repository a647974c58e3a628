"""Configuration, read once from the environment into a frozen Struct.

Nothing else in metreg reads ``os.environ``: processes build a :class:`Settings` at start and pass it
down. Every variable is listed, with its default, in ``.env.example``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Annotated, Literal

import msgspec

__all__ = ("ENVIRONMENT", "Settings")

# Settings field -> environment variable.
ENVIRONMENT: dict[str, str] = {
    "database_url": "DATABASE_URL",
    "redis_url": "REDIS_URL",
    "host": "METREG_HOST",
    "port": "METREG_PORT",
    "db_pool_min": "METREG_DB_POOL_MIN",
    "db_pool_max": "METREG_DB_POOL_MAX",
    "log_level": "METREG_LOG_LEVEL",
    "log_format": "METREG_LOG_FORMAT",
    "max_body_bytes": "METREG_MAX_BODY_BYTES",
    "allow_private_webhooks": "METREG_ALLOW_PRIVATE_WEBHOOKS",
}


class Settings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Process configuration. Tests construct it directly."""

    database_url: str = "postgresql://postgres@127.0.0.1:5432/metreg"
    """PostgreSQL DSN: the only source of truth."""
    redis_url: str = "redis://127.0.0.1:6379/0"
    """Redis for the job queue (arq); checked by ``/readyz``."""
    host: str = "127.0.0.1"
    """Address ``metreg serve`` binds to."""
    port: Annotated[int, msgspec.Meta(ge=1, le=65535)] = 8000
    """Port ``metreg serve`` listens on."""
    db_pool_min: Annotated[int, msgspec.Meta(ge=0, le=100)] = 2
    """Connections each API process keeps open."""
    db_pool_max: Annotated[int, msgspec.Meta(ge=1, le=100)] = 10
    """Most connections each API process opens."""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    """Level of the application and access logs."""
    log_format: Literal["json", "text"] = "json"
    """``json``: one object a line, for machines; ``text``: for a terminal."""
    max_body_bytes: Annotated[int, msgspec.Meta(ge=1024, le=100 * 1024 * 1024)] = 1024 * 1024
    """Largest JSON request body accepted (larger: 413)."""
    allow_private_webhooks: bool = False
    """Accept webhook URLs on loopback, link-local and private addresses, and plain http (tests and
    local use only: otherwise a webhook could make metreg probe the network it runs in)."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``environ`` (default: the process environment).

        Raises:
            msgspec.ValidationError: a variable has a value of the wrong shape; the message names it.
        """
        source = os.environ if environ is None else environ
        found = {field: source[var] for field, var in ENVIRONMENT.items() if source.get(var, "") != ""}
        try:
            return msgspec.convert(found, cls, strict=False)
        except msgspec.ValidationError as exc:
            field = str(exc).rpartition("$.")[2].rstrip("`")
            raise msgspec.ValidationError(f"{ENVIRONMENT.get(field, field)}: {exc}") from None
